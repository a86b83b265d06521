//! The file in which a master under synchronous replication remembers, across its restarts, how
//! much of its log its slaves acknowledged and which slaves hold every acknowledged write
//! (proto-spec.md section 2.5), replaced atomically like the checkpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::storage::{write_atomically, StorageError};

pub const HOLDERS_FILE: &str = "holders";
const MAGIC: u32 = 0x534d_5148; // "SMQH"
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders {
    /// The slaves hold the log below this (a lower bound: written lazily).
    pub acknowledged: u64,
    /// Slaves (by the address they introduce themselves with) each holding every write this
    /// master acknowledged; written before a slave leaves the set.
    pub slaves: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldersFileError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "{path} is damaged: this master cannot tell which of its slaves hold every acknowledged \
         write. If you know that this broker's log holds every acknowledged write (it ran \
         --flush sync, or stopped cleanly), delete the file and start it again"
    )]
    Damaged { path: PathBuf },
}

impl Holders {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(HOLDERS_FILE)
    }

    /// Reads the file in `data_dir`; `None` when there is none.
    pub fn read(data_dir: &Path) -> Result<Option<Holders>, HoldersFileError> {
        let path = Holders::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StorageError::io("reading", &path)(error).into()),
        };
        match Holders::decode(&bytes) {
            Some(holders) => Ok(Some(holders)),
            None => Err(HoldersFileError::Damaged { path }),
        }
    }

    pub fn write(&self, data_dir: &Path) -> Result<(), StorageError> {
        write_atomically(&Holders::path(data_dir), &self.encode())
    }

    /// Removes the file of an earlier run (a slave, or a master not replicating synchronously,
    /// keeps none: what it said no longer holds once the log grew without it).
    pub fn remove(data_dir: &Path) -> Result<(), StorageError> {
        let path = Holders::path(data_dir);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::io("removing", &path)(error))
            }
            _ => Ok(()),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(24 + self.slaves.iter().map(|s| 2 + s.len()).sum::<usize>());
        bytes.extend_from_slice(&MAGIC.to_be_bytes());
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        bytes.extend_from_slice(&self.acknowledged.to_be_bytes());
        bytes.extend_from_slice(&(self.slaves.len() as u32).to_be_bytes());
        for slave in &self.slaves {
            let name = &slave.as_bytes()[..slave.len().min(u16::MAX as usize)];
            bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
            bytes.extend_from_slice(name);
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Holders> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| {
            let field = body.get(at..at + n);
            at += n;
            field
        };
        let u32_of = |field: &[u8]| u32::from_be_bytes(field.try_into().expect("4 bytes"));
        if u32_of(take(4)?) != MAGIC || u32_of(take(4)?) != VERSION {
            return None;
        }
        let acknowledged = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let count = u32_of(take(4)?);
        let mut slaves = BTreeSet::new();
        for _ in 0..count {
            let len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
            slaves.insert(String::from_utf8(take(len)?.to_vec()).ok()?);
        }
        (at == body.len()).then_some(Holders {
            acknowledged,
            slaves,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_read_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Holders::read(dir.path()).unwrap(), None);
        let holders = Holders {
            acknowledged: 123_456_789,
            slaves: ["127.0.0.1:10912".to_owned(), "slave-b:10911".to_owned()].into(),
        };
        holders.write(dir.path()).unwrap();
        assert_eq!(Holders::read(dir.path()).unwrap(), Some(holders));

        let path = Holders::path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Holders::read(dir.path()),
            Err(HoldersFileError::Damaged { .. })
        ));
        std::fs::write(&path, &bytes[..3]).unwrap();
        assert!(Holders::read(dir.path()).is_err());
        Holders::remove(dir.path()).unwrap();
        Holders::remove(dir.path()).unwrap();
        assert_eq!(Holders::read(dir.path()).unwrap(), None);
    }
}
