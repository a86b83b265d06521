//! One preallocated, memory-mapped file: a commit-log segment or a queue-index file.
//!
//! Writers and readers share the mapping without locks on the bytes. The invariant that makes this
//! sound: a byte range is written only while no reader can see it (above the position the store
//! has published), and is never written again after it is published, except by recovery and
//! retention, which run before readers exist or on ranges no reader can reach.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Advice, MmapRaw};

use super::error::{Result, StorageError};
use super::file_names::temp_path;

pub struct MappedFile {
    path: PathBuf,
    map: MmapRaw,
    len: u64,
    // Keeps the descriptor open for fsync of the file's metadata.
    _file: File,
}

impl MappedFile {
    /// Creates `path` with `len` bytes reserved on disk (fallocate), under a temporary name
    /// renamed into place, so that a crash never leaves a half-created file under the real name
    /// and a later write through the map can never meet a full disk.
    pub fn create(path: &Path, len: u64) -> Result<MappedFile> {
        let temp = temp_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(StorageError::io("creating", &temp))?;
        if let Err(error) = preallocate(&file, len) {
            let _ = std::fs::remove_file(&temp);
            return Err(StorageError::io("preallocating", &temp)(error));
        }
        std::fs::rename(&temp, path).map_err(StorageError::io("renaming", &temp))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        MappedFile::map(path, file)
    }

    /// Maps an existing file at its current length.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(StorageError::io("opening", path))?;
        MappedFile::map(path, file)
    }

    fn map(path: &Path, file: File) -> Result<MappedFile> {
        let len = file
            .metadata()
            .map_err(StorageError::io("reading metadata of", path))?
            .len();
        let map = MmapRaw::map_raw(&file).map_err(StorageError::io("memory-mapping", path))?;
        Ok(MappedFile {
            path: path.to_owned(),
            map,
            len,
            _file: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes `[offset, offset + len)` of the file.
    ///
    /// The caller must only read ranges that are published (see the module comment).
    pub fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        assert!(
            offset + len as u64 <= self.len,
            "read past the end of {}",
            self.path.display()
        );
        // SAFETY: in bounds (checked above); the mapping lives as long as `self`; the range is
        // published, so no one writes it while this borrow lives (module invariant).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len) }
    }

    /// Writable bytes `[offset, offset + len)` of the file.
    ///
    /// # Safety
    /// The caller must be the only writer of this range and no reader may see it until the
    /// returned borrow ends (see the module comment).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: u64, len: usize) -> &mut [u8] {
        assert!(
            offset + len as u64 <= self.len,
            "write past the end of {}",
            self.path.display()
        );
        std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset as usize), len)
    }

    /// Faults in the pages of `[offset, offset + len)` (clamped to the file) for writing, so that
    /// a later write there takes no page fault (MADV_POPULATE_WRITE). The bytes do not change,
    /// so this may run while the writer writes nearby.
    pub fn prefault(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let len = len.min(self.len.saturating_sub(offset));
        if len == 0 {
            return Ok(());
        }
        loop {
            match self
                .map
                .advise_range(Advice::PopulateWrite, offset as usize, len as usize)
            {
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }

    /// Writes `[offset, offset + len)` of the map to disk and waits for it (msync MS_SYNC).
    pub fn sync_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(offset as usize, len as usize)
    }
}

/// A mapped file shared between the writer, readers and the flusher.
pub type SharedFile = Arc<MappedFile>;

/// Reserves `len` bytes of disk for `file`, failing with ENOSPC now rather than with SIGBUS later.
fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(code))
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("fsyncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_is_preallocated_and_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        let file = MappedFile::create(&path, 1 << 20).unwrap();
        assert_eq!(file.len(), 1 << 20);
        assert!(file.bytes(0, 1 << 20).iter().all(|b| *b == 0));
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        assert!(blocks * 512 >= 1 << 20, "only {blocks} blocks reserved");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn written_bytes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = MappedFile::create(&path, 8192).unwrap();
        unsafe { file.bytes_mut(4090, 5) }.copy_from_slice(b"hello");
        file.sync_range(4090, 5).unwrap();
        drop(file);
        let file = MappedFile::open(&path).unwrap();
        assert_eq!(file.bytes(4090, 5), b"hello");
    }
}
