//! The points where the storage engine makes something durable, reported to the power-loss
//! simulator (`power_loss.rs`) in tests. Outside tests these are empty and compile to nothing.

use std::path::Path;

/// `[offset, offset + len)` of the file at `path` (all of it for `None`) reached the disk:
/// an msync, fsync or fdatasync covering it returned Ok.
#[inline(always)]
pub fn file_synced(path: &Path, range: Option<(u64, u64)>) {
    #[cfg(test)]
    super::power_loss::file_synced(path, range);
    #[cfg(not(test))]
    let _ = (path, range);
}

/// The entries of directory `dir` (files created, renamed or removed in it) reached the disk.
#[inline(always)]
pub fn dir_synced(dir: &Path) {
    #[cfg(test)]
    super::power_loss::dir_synced(dir);
    #[cfg(not(test))]
    let _ = dir;
}
