//! Consumer-group offsets (group, topic, queue -> next offset to read), kept in memory and written
//! to `<data-dir>/consumer_offsets.json` atomically, at most every `offsets_flush_interval_ms` and
//! at shutdown.
//!
//! What a crash can lose: commits made since the last write (at most one interval, 1 s by
//! default). A consumer group then resumes from an older offset and reads those messages again:
//! delivery is at least once, never a skipped message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{read_json, ReadError};

use crate::storage::{write_atomically, StorageError};

const FILE_NAME: &str = "consumer_offsets.json";

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("{path} is not valid consumer-offset data: {reason}; fix or remove the file (groups then start as --from says)")]
    BadFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    group: String,
    topic: String,
    queue: u32,
    offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OffsetsFile {
    offsets: Vec<Entry>,
}

type Key = (String, String, u32);

#[derive(Default)]
struct State {
    offsets: BTreeMap<Key, u64>,
    /// Changed since the last write.
    dirty: bool,
    /// Bumped on every change since the broker started: a slave copies the offsets again when
    /// its master's version differs from the one it copied.
    version: u64,
}

/// The committed offsets of every consumer group on this broker.
pub struct Offsets {
    path: PathBuf,
    state: Mutex<State>,
    /// Held while writing, so that two writers cannot put an older snapshot last.
    writing: Mutex<()>,
}

impl Offsets {
    /// Loads `<data_dir>/consumer_offsets.json`; no file means no offsets.
    pub fn open(data_dir: &Path) -> Result<Offsets, OffsetsError> {
        let path = data_dir.join(FILE_NAME);
        let file: OffsetsFile = read_json(&path).map_err(|error| match error {
            ReadError::Invalid(reason) => OffsetsError::BadFile {
                path: path.clone(),
                reason,
            },
            ReadError::Storage(error) => error.into(),
        })?;
        let offsets = file
            .offsets
            .into_iter()
            .map(|entry| ((entry.group, entry.topic, entry.queue), entry.offset))
            .collect();
        Ok(Offsets {
            path,
            state: Mutex::new(State {
                offsets,
                dirty: false,
                version: 0,
            }),
            writing: Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `offset` as the next offset `group` reads from `topic`/`queue`; on disk with the
    /// next [`Offsets::persist`].
    pub fn commit(&self, group: &str, topic: &str, queue: u32, offset: u64) {
        let mut state = self.lock();
        state
            .offsets
            .insert((group.to_owned(), topic.to_owned(), queue), offset);
        state.dirty = true;
        state.version += 1;
    }

    /// Changes since the broker started (see `State::version`).
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Every offset, as consumer_offsets.json has them, with the version they are at: what a
    /// master sends its slaves.
    pub fn to_json(&self) -> (u64, Vec<u8>) {
        let state = self.lock();
        let json = serde_json::to_vec(&file_of(&state.offsets)).expect("offsets serialize");
        (state.version, json)
    }

    /// Replaces every offset with those of `json` (what [`Offsets::to_json`] made on the master)
    /// at once, and writes them to disk. Blocks on the disk.
    pub fn replace_from_json(&self, json: &[u8]) -> Result<(), OffsetsError> {
        let file: OffsetsFile =
            serde_json::from_slice(json).map_err(|error| OffsetsError::BadFile {
                path: self.path.clone(),
                reason: format!("the master's offsets do not parse: {error}"),
            })?;
        {
            let mut state = self.lock();
            state.offsets = file
                .offsets
                .into_iter()
                .map(|entry| ((entry.group, entry.topic, entry.queue), entry.offset))
                .collect();
            state.dirty = true;
            state.version += 1;
        }
        self.persist()?;
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, queue: u32) -> Option<u64> {
        self.lock()
            .offsets
            .get(&(group.to_owned(), topic.to_owned(), queue))
            .copied()
    }

    /// Forgets every group's offsets of `topic` (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        let mut state = self.lock();
        let before = state.offsets.len();
        state.offsets.retain(|(_, t, _), _| t != topic);
        if state.offsets.len() != before {
            state.dirty = true;
            state.version += 1;
        }
    }

    /// Writes the offsets if they changed since the last write. Blocks on the disk: call it from
    /// a blocking thread. Returns whether it wrote.
    pub fn persist(&self) -> Result<bool, StorageError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = {
            let mut state = self.lock();
            if !state.dirty {
                return Ok(false);
            }
            state.dirty = false;
            state.offsets.clone()
        };
        let json = serde_json::to_vec_pretty(&file_of(&snapshot)).expect("offsets serialize");
        if let Err(error) = write_atomically(&self.path, &json) {
            self.lock().dirty = true;
            return Err(error);
        }
        Ok(true)
    }
}

fn file_of(offsets: &BTreeMap<Key, u64>) -> OffsetsFile {
    OffsetsFile {
        offsets: offsets
            .iter()
            .map(|((group, topic, queue), offset)| Entry {
                group: group.clone(),
                topic: topic.clone(),
                queue: *queue,
                offset: *offset,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_offsets_survive_reopening_and_deleted_topics_lose_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let offsets = Offsets::open(dir.path()).unwrap();
        assert!(!offsets.persist().unwrap(), "nothing to write yet");
        offsets.commit("billing", "orders", 3, 42);
        offsets.commit("billing", "audit", 0, 7);
        offsets.commit("billing", "orders", 3, 43);
        offsets.remove_topic("audit");
        assert!(offsets.persist().unwrap());
        offsets.commit("billing", "orders", 4, 1); // never persisted: a crash loses it
        let reopened = Offsets::open(dir.path()).unwrap();
        assert_eq!(reopened.get("billing", "orders", 3), Some(43));
        assert_eq!(reopened.get("billing", "audit", 0), None);
        assert_eq!(reopened.get("billing", "orders", 4), None);
    }
}
