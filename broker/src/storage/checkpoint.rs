//! The checkpoint file: how far the log and the indexes are known to be flushed.

use std::path::Path;

use super::atomic_file::write_atomically;
use super::error::{Result, StorageError};

const MAGIC: u32 = 0x534d_5143; // "SMQC"
const VERSION: u32 = 1;
const LEN: usize = 28;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every log byte below this was fsynced.
    pub flushed_position: u64,
    /// Every batch below this is in a flushed index.
    pub index_flushed_position: u64,
}

impl Checkpoint {
    /// Reads `path`; `None` for a missing file (recovery scans the whole log) or a damaged one
    /// (logged, then the same). A checkpoint at position 0 is not a missing one: it says that
    /// nothing was flushed, so whatever follows was never acknowledged.
    pub fn read(path: &Path) -> Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StorageError::io("reading", path)(error)),
        };
        let checkpoint = Checkpoint::decode(&bytes);
        if checkpoint.is_none() {
            tracing::warn!(file = %path.display(), "checkpoint is damaged; recovery will scan the whole log");
        }
        Ok(checkpoint)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.encode())
    }

    fn encode(&self) -> [u8; LEN] {
        let mut bytes = [0u8; LEN];
        bytes[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        bytes[4..12].copy_from_slice(&self.flushed_position.to_be_bytes());
        bytes[12..20].copy_from_slice(&self.index_flushed_position.to_be_bytes());
        bytes[20..24].copy_from_slice(&VERSION.to_be_bytes());
        let crc = crc32fast::hash(&bytes[0..24]);
        bytes[24..28].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let bytes: &[u8; LEN] = bytes.try_into().ok()?;
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let valid = u32_at(0) == MAGIC
            && u32_at(20) == VERSION
            && u32_at(24) == crc32fast::hash(&bytes[0..24]);
        valid.then(|| Checkpoint {
            flushed_position: u64_at(4),
            index_flushed_position: u64_at(12),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
        let checkpoint = Checkpoint {
            flushed_position: 123,
            index_flushed_position: 45,
        };
        checkpoint.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), Some(checkpoint));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
    }
}
