//! Replaces small files atomically: write a temporary file, fsync it, rename it over the old one,
//! fsync the directory. A crash leaves either the old or the new content, never a mix.

use std::io::Write;
use std::path::Path;

use super::durability;
use super::error::{Result, StorageError};
use super::file_names::temp_path;
use super::segment::sync_dir;

pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temp = temp_path(path);
    let mut file = std::fs::File::create(&temp).map_err(StorageError::io("creating", &temp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(StorageError::io("writing", &temp))?;
    drop(file);
    durability::file_synced(&temp, None);
    std::fs::rename(&temp, path).map_err(StorageError::io("renaming", &temp))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        write_atomically(&path, b"a much longer first version").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!temp_path(&path).exists());
    }
}
