//! The epoch history file: which master epoch wrote which part of the log (epoch -> start
//! position, Kafka's leader-epoch checkpoint, RocketMQ's EpochFile), replaced atomically like the
//! checkpoint. Positions before the first entry are epoch 0 (written before epochs existed).

use std::path::Path;

pub use smq_protocol::replication::EpochEntry;

use super::atomic_file::write_atomically;
use super::error::{Result, StorageError};

const MAGIC: u32 = 0x534d_5145; // "SMQE"
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 16;
const ENTRY_BYTES: usize = 13;
/// Entry flag: the epoch began with a promotion (see [`EpochEntry::promoted`]).
const FLAG_PROMOTED: u8 = 1;
/// File flag: the broker last wrote the file as a slave.
const FLAG_WRITTEN_AS_SLAVE: u32 = 1;

/// The history as stored: entries with strictly increasing epochs and non-decreasing starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    pub entries: Vec<EpochEntry>,
    /// The broker last recorded the history as a slave: starting as a master next means that
    /// the operator promoted it.
    pub written_as_slave: bool,
}

impl EpochHistory {
    /// Reads `path`; an empty history when it is missing. A damaged file is an error: without
    /// its history a replica cannot tell which of its bytes its master shares.
    pub fn read(path: &Path) -> Result<EpochHistory> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(EpochHistory::default())
            }
            Err(error) => return Err(StorageError::io("reading", path)(error)),
        };
        EpochHistory::decode(&bytes).ok_or_else(|| StorageError::Corrupt {
            path: path.to_owned(),
            position: 0,
            reason: "the epoch history is damaged (bad magic, version, length or CRC); it was \
                     written atomically, so the disk damaged it: restore it, or move the data \
                     directory aside and let this broker copy its group's log again as a slave"
                .into(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.encode())
    }

    /// The last (current) epoch, 0 when there is none.
    pub fn last_epoch(&self) -> u32 {
        self.entries.last().map_or(0, |entry| entry.epoch)
    }

    /// Appends `entry`; an entry of an epoch no higher than the last, or starting before it, is
    /// refused. A last entry with nothing written in it yet (starting at `entry.start`) is
    /// replaced: no batch carries its epoch.
    pub fn push(&mut self, entry: EpochEntry) -> std::result::Result<(), String> {
        if let Some(last) = self.entries.last() {
            if entry.epoch <= last.epoch || entry.start < last.start {
                return Err(format!(
                    "epoch {} at {} cannot follow epoch {} at {}",
                    entry.epoch, entry.start, last.epoch, last.start
                ));
            }
            if last.start == entry.start {
                self.entries.pop();
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Forgets the epochs that begin at or past `position` (the log was cut there). Returns
    /// whether anything changed.
    pub fn truncate_from(&mut self, position: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start < position);
        self.entries.len() != before
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES + 4);
        bytes.extend_from_slice(&MAGIC.to_be_bytes());
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        let flags = if self.written_as_slave {
            FLAG_WRITTEN_AS_SLAVE
        } else {
            0
        };
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.epoch.to_be_bytes());
            bytes.extend_from_slice(&entry.start.to_be_bytes());
            bytes.push(if entry.promoted { FLAG_PROMOTED } else { 0 });
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<EpochHistory> {
        let u32_at = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        if u32_at(0)? != MAGIC || u32_at(4)? != VERSION {
            return None;
        }
        let count = u32_at(12)? as usize;
        let body = HEADER_BYTES.checked_add(count.checked_mul(ENTRY_BYTES)?)?;
        if bytes.len() != body + 4 || u32_at(body)? != crc32fast::hash(&bytes[..body]) {
            return None;
        }
        let mut history = EpochHistory {
            entries: Vec::with_capacity(count),
            written_as_slave: u32_at(8)? & FLAG_WRITTEN_AS_SLAVE != 0,
        };
        for at in (HEADER_BYTES..body).step_by(ENTRY_BYTES) {
            let entry = EpochEntry {
                epoch: u32_at(at)?,
                start: u64_at(at + 4)?,
                promoted: bytes[at + 12] & FLAG_PROMOTED != 0,
            };
            history.push(entry).ok()?;
        }
        Some(history)
    }
}

/// The epoch that wrote `position` according to `entries` (0 before the first one).
pub fn epoch_at(entries: &[EpochEntry], position: u64) -> u32 {
    entries
        .iter()
        .rev()
        .find(|entry| entry.start <= position)
        .map_or(0, |entry| entry.epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u32, start: u64) -> EpochEntry {
        EpochEntry {
            epoch,
            start,
            promoted: epoch.is_multiple_of(2),
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs");
        assert_eq!(EpochHistory::read(&path).unwrap(), EpochHistory::default());
        let history = EpochHistory {
            entries: vec![entry(1, 0), entry(2, 4096), entry(5, 9000)],
            written_as_slave: true,
        };
        history.write(&path).unwrap();
        assert_eq!(EpochHistory::read(&path).unwrap(), history);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = EpochHistory::read(&path).unwrap_err().to_string();
        assert!(error.contains("epoch history is damaged"), "{error}");
    }

    #[test]
    fn epochs_only_grow_and_an_empty_last_epoch_is_replaced() {
        let mut history = EpochHistory::default();
        history.push(entry(1, 0)).unwrap();
        history.push(entry(2, 100)).unwrap();
        assert!(history.push(entry(2, 200)).is_err(), "same epoch twice");
        assert!(history.push(entry(3, 50)).is_err(), "a start going back");
        history.push(entry(3, 100)).unwrap();
        assert_eq!(history.entries, vec![entry(1, 0), entry(3, 100)]);
        assert_eq!(history.last_epoch(), 3);
        assert_eq!(epoch_at(&history.entries, 99), 1);
        assert_eq!(epoch_at(&history.entries, 100), 3);
        assert_eq!(epoch_at(&[entry(4, 10)], 5), 0);
        assert!(history.truncate_from(100));
        assert_eq!(history.entries, vec![entry(1, 0)]);
        assert!(!history.truncate_from(100));
    }
}
