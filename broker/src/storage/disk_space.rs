//! The disk-usage watermark: appends are refused while the data directory's file system is
//! fuller than it, and resume by themselves once it is not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::StoreConfigError;
use super::error::{Result, StorageError};

/// How long a usage reading is trusted: a statvfs per append would be wasted work.
const RECHECK_INTERVAL: Duration = Duration::from_millis(100);

pub struct DiskGuard {
    path: PathBuf,
    watermark_percent: u8,
    last_reading: Option<(Instant, u8)>,
}

impl DiskGuard {
    pub fn new(path: &Path, watermark_percent: u8) -> DiskGuard {
        DiskGuard {
            path: path.to_owned(),
            watermark_percent,
            last_reading: None,
        }
    }

    /// Fails with `DiskFull` while usage is above the watermark.
    pub fn check(&mut self) -> Result<()> {
        let used_percent = match self.last_reading {
            Some((at, used)) if at.elapsed() < RECHECK_INTERVAL => used,
            _ => {
                let used = used_percent(&self.path)?;
                self.last_reading = Some((Instant::now(), used));
                used
            }
        };
        if used_percent > self.watermark_percent {
            return Err(StorageError::DiskFull {
                path: self.path.clone(),
                used_percent,
                watermark_percent: self.watermark_percent,
            });
        }
        Ok(())
    }
}

/// Percentage of the file system holding `path` that is used, rounded up, as `df` shows it.
pub fn used_percent(path: &Path) -> Result<u8> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        StorageError::InvalidConfig(StoreConfigError::PathContainsNul {
            path: path.to_owned(),
        })
    })?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a properly sized out-parameter.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(StorageError::io("reading disk usage of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    let used = stat.f_blocks.saturating_sub(stat.f_bfree) as u128;
    let usable = used + stat.f_bavail as u128;
    if usable == 0 {
        return Ok(0);
    }
    Ok((used * 100).div_ceil(usable).min(100) as u8)
}
