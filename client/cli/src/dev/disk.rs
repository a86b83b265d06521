//! The disk `smq dev` puts its data on: its brokers' watermark, and a check at start that the
//! file system has room for them, so that a nearly full disk is a clear error at start rather
//! than "disk full" on the first produce.

use std::path::Path;

use anyhow::bail;

/// The disk-usage watermark of `smq dev`'s brokers: appends are refused only above 99% used. A
/// production broker's 90% keeps room for an operator to act; on a developer's machine it would
/// refuse appends with gigabytes free (a 250 GB disk at 91%).
pub(crate) const WATERMARK_PERCENT: u8 = 99;

/// The free space `smq dev` needs at start: each of its four brokers reserves two 64 MiB
/// segments on disk ahead of need, and the rest is room for messages and logs.
pub(crate) const FREE_BYTES_MIN: u64 = 1 << 30;

/// The file system holding a directory: free bytes (for an unprivileged user) and percent used,
/// rounded up as `df` and the broker's watermark count it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub free_bytes: u64,
    pub used_percent: u8,
}

impl Usage {
    pub fn of(dir: &Path) -> anyhow::Result<Usage> {
        let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a properly sized out-parameter.
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            bail!(
                "cannot read the free space of {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
        let block = stat.f_frsize as u128;
        let used = stat.f_blocks.saturating_sub(stat.f_bfree) as u128;
        let available = stat.f_bavail as u128;
        let used_percent = match used + available {
            0 => 0,
            usable => (used * 100).div_ceil(usable).min(100) as u8,
        };
        Ok(Usage {
            free_bytes: (available * block).min(u64::MAX as u128) as u64,
            used_percent,
        })
    }

    /// A clear error unless the brokers can take appends here: at least [`FREE_BYTES_MIN`] free
    /// and below [`WATERMARK_PERCENT`] used.
    pub fn check(&self, dir: &Path) -> anyhow::Result<()> {
        if self.free_bytes < FREE_BYTES_MIN || self.used_percent >= WATERMARK_PERCENT {
            bail!(
                "the disk holding {} has {} MiB free and is {}% used: smq dev needs {} MiB free, \
                 and its brokers refuse appends above {}% used; free some space, or put the data \
                 on another disk with --data-dir",
                dir.display(),
                self.free_bytes >> 20,
                self.used_percent,
                FREE_BYTES_MIN >> 20,
                WATERMARK_PERCENT
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nearly_full_disk_is_refused_naming_its_free_space_and_the_flag() {
        let dir = Path::new("/data");
        let full = Usage {
            free_bytes: 300 << 20,
            used_percent: 95,
        };
        let error = full.check(dir).unwrap_err().to_string();
        assert!(error.contains("300 MiB free and is 95% used"), "{error}");
        assert!(error.contains("--data-dir"), "{error}");
        let large_but_full = Usage {
            free_bytes: 5 << 30,
            used_percent: 99,
        };
        assert!(large_but_full.check(dir).is_err());
        // 91% of a large disk is no reason to refuse a try-out.
        let roomy = Usage {
            free_bytes: 20 << 30,
            used_percent: 91,
        };
        roomy.check(dir).unwrap();
    }

    #[test]
    fn the_usage_of_a_real_directory_is_read() {
        let usage = Usage::of(&std::env::temp_dir()).unwrap();
        assert!(usage.used_percent <= 100);
        assert!(Usage::of(Path::new("/no/such/directory")).is_err());
    }
}
