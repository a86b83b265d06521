//! Consumer-group offsets ((consumer group, topic, queue) -> next offset to read, with the
//! highest owner epoch a commit carried), kept in memory and written to
//! `<data-dir>/consumer_offsets.json` atomically, at most every `offsets_flush_interval_ms` and
//! at shutdown.
//!
//! The owner epoch fences members that lost a queue: the NameServer gives the queue's owner an
//! epoch that grows each time the queue changes owner, and a commit with an epoch below the one
//! stored is refused, so a slow former owner cannot move the offset back.
//!
//! A slave stores commits too while it has no connection to its master (consumers read from it
//! then): it keeps them as unconfirmed and gives them to its master when it reconnects, which
//! keeps the newer of each (a higher owner epoch, else a higher offset), so a master back from
//! an outage never brings a consumer group's offsets back (RocketMQ #1094). When it copies its
//! master's offsets it keeps those of its own that are newer still.
//!
//! What a crash can lose: commits made since the last write (at most one interval, 1 s by
//! default). A consumer group then resumes from an older offset and reads those messages again:
//! delivery is at least once, never a skipped message.

use std::collections::{BTreeMap, BTreeSet};
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
    #[serde(alias = "group")]
    consumer_group: String,
    topic: String,
    queue: u32,
    offset: u64,
    /// Absent in files written before owner epochs: 0.
    #[serde(default)]
    owner_epoch: u64,
    /// The id of the topic the offset belongs to (topics.json); absent in files written
    /// before offsets kept it: 0, not known.
    #[serde(default)]
    topic_id: u64,
}

/// What a consumer group committed for one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The next offset the group reads.
    pub offset: u64,
    /// The highest owner epoch a commit for this queue carried.
    pub owner_epoch: u64,
    /// The id of the topic it was committed in (0: not known), so that an offset of a topic
    /// deleted since never counts in one created again under its name.
    pub topic_id: u64,
}

impl Committed {
    /// Whether this commit is newer than `other`, of two replicas' copies of a queue's offset:
    /// made by a later owner, or by the same owner further on.
    fn is_newer_than(&self, other: &Committed) -> bool {
        (self.owner_epoch, self.offset) > (other.owner_epoch, other.offset)
    }
}

/// Why a commit was refused; nothing was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitRefused {
    /// A newer owner of the queue committed already.
    StaleEpoch { stored_epoch: u64 },
    /// The commit would add a consumer group beyond `max_consumer_groups`.
    TooManyGroups { max_consumer_groups: usize },
    /// The commit would add an offset beyond `max_committed_offsets`.
    TooManyOffsets { max_committed_offsets: usize },
}

/// How much one broker keeps, so that clients inventing group names cannot grow its memory and
/// its offsets file without end. Commits of groups and queues already stored always go through;
/// offsets a master sends its slave and those in the file at start are taken whatever their
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetLimits {
    /// Distinct consumer group names with a committed offset.
    pub max_consumer_groups: usize,
    /// (consumer group, topic, queue) entries.
    pub max_committed_offsets: usize,
}

impl Default for OffsetLimits {
    fn default() -> OffsetLimits {
        OffsetLimits {
            max_consumer_groups: 10_000,
            max_committed_offsets: 1_000_000,
        }
    }
}

/// One stored offset, as [`Offsets::all`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub consumer_group: String,
    pub topic: String,
    pub queue: u32,
    pub committed: Committed,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OffsetsFile {
    offsets: Vec<Entry>,
}

/// (consumer group, topic, queue).
type Key = (String, String, u32);

#[derive(Default)]
struct State {
    offsets: BTreeMap<Key, Committed>,
    /// How many entries of `offsets` each consumer group has.
    groups: BTreeMap<String, usize>,
    /// Keys this broker committed as a slave whose master has not confirmed them yet.
    unconfirmed: BTreeSet<Key>,
    /// Changed since the last write.
    dirty: bool,
    /// Bumped on every change since the broker started: a slave copies the offsets again when
    /// its master's version differs from the one it copied.
    version: u64,
}

/// The committed offsets of every consumer group on this broker.
pub struct Offsets {
    path: PathBuf,
    limits: OffsetLimits,
    state: Mutex<State>,
    /// Held while writing, so that two writers cannot put an older snapshot last.
    writing: Mutex<()>,
}

impl Offsets {
    /// Loads `<data_dir>/consumer_offsets.json`; no file means no offsets. Commits that would
    /// go beyond `limits` are refused.
    pub fn open(data_dir: &Path, limits: OffsetLimits) -> Result<Offsets, OffsetsError> {
        let path = data_dir.join(FILE_NAME);
        let file: OffsetsFile = read_json(&path).map_err(|error| match error {
            ReadError::Invalid(reason) => OffsetsError::BadFile {
                path: path.clone(),
                reason,
            },
            ReadError::Storage(error) => error.into(),
        })?;
        let offsets = offsets_of(file);
        Ok(Offsets {
            path,
            limits,
            state: Mutex::new(State {
                groups: groups_of(&offsets),
                offsets,
                unconfirmed: BTreeSet::new(),
                dirty: false,
                version: 0,
            }),
            writing: Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `offset` as the next offset `consumer_group` reads from `topic`/`queue`, committed
    /// by the queue's owner of `owner_epoch`; on disk with the next [`Offsets::persist`]. Refused
    /// when a commit with a higher epoch was stored (another member owns the queue now), or
    /// when a new group or queue would go beyond the limits.
    pub fn commit(
        &self,
        consumer_group: &str,
        topic: &str,
        topic_id: u64,
        queue: u32,
        offset: u64,
        owner_epoch: u64,
    ) -> Result<(), CommitRefused> {
        let mut state = self.lock();
        let key = (consumer_group.to_owned(), topic.to_owned(), queue);
        match state.offsets.get(&key) {
            Some(stored) if owner_epoch < stored.owner_epoch => {
                return Err(CommitRefused::StaleEpoch {
                    stored_epoch: stored.owner_epoch,
                });
            }
            Some(_) => {}
            None => {
                let limits = self.limits;
                if !state.groups.contains_key(consumer_group)
                    && state.groups.len() >= limits.max_consumer_groups
                {
                    return Err(CommitRefused::TooManyGroups {
                        max_consumer_groups: limits.max_consumer_groups,
                    });
                }
                if state.offsets.len() >= limits.max_committed_offsets {
                    return Err(CommitRefused::TooManyOffsets {
                        max_committed_offsets: limits.max_committed_offsets,
                    });
                }
                *state.groups.entry(key.0.clone()).or_default() += 1;
            }
        }
        state.offsets.insert(
            key,
            Committed {
                offset,
                owner_epoch,
                topic_id,
            },
        );
        state.dirty = true;
        state.version += 1;
        Ok(())
    }

    /// After an [`Offsets::commit`] on a slave whose master cannot be reached: the offset is
    /// also kept as unconfirmed, for the master to take when the slave reconnects
    /// ([`Offsets::unconfirmed_json`]).
    pub fn keep_unconfirmed(&self, consumer_group: &str, topic: &str, queue: u32) {
        self.lock()
            .unconfirmed
            .insert((consumer_group.to_owned(), topic.to_owned(), queue));
    }

    /// The unconfirmed offsets (see [`Offsets::keep_unconfirmed`]) as consumer_offsets.json
    /// has them; empty when there are none.
    pub fn unconfirmed_json(&self) -> Vec<u8> {
        let state = self.lock();
        if state.unconfirmed.is_empty() {
            return Vec::new();
        }
        let unconfirmed: BTreeMap<Key, Committed> = state
            .unconfirmed
            .iter()
            .filter_map(|key| Some((key.clone(), *state.offsets.get(key)?)))
            .collect();
        serde_json::to_vec(&file_of(&unconfirmed)).expect("offsets serialize")
    }

    /// Takes each offset of `json` (a slave's [`Offsets::unconfirmed_json`]) that is newer than
    /// the one stored here, or new, for which `keep(topic, topic_id, queue)` holds (the topic,
    /// with that id unless it is 0, and the queue exist here); beyond the limits too, as a
    /// slave takes its master's. Returns how many it took.
    pub fn take_newer_from_json(
        &self,
        json: &[u8],
        keep: impl Fn(&str, u64, u32) -> bool,
    ) -> Result<usize, OffsetsError> {
        let file = self.parse(json, "the slave's offsets")?;
        let mut state = self.lock();
        let mut taken = 0;
        for (key, theirs) in offsets_of(file) {
            if !keep(&key.1, theirs.topic_id, key.2) {
                continue;
            }
            match state.offsets.get(&key) {
                Some(ours) if !theirs.is_newer_than(ours) => continue,
                Some(_) => {}
                None => *state.groups.entry(key.0.clone()).or_default() += 1,
            }
            state.offsets.insert(key, theirs);
            taken += 1;
        }
        if taken > 0 {
            state.dirty = true;
            state.version += 1;
        }
        Ok(taken)
    }

    fn parse(&self, json: &[u8], what: &str) -> Result<OffsetsFile, OffsetsError> {
        serde_json::from_slice(json).map_err(|error| OffsetsError::BadFile {
            path: self.path.clone(),
            reason: format!("{what} do not parse: {error}"),
        })
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
    /// at once, but for unconfirmed ones newer than the master's (committed here after this
    /// slave gave them to its master: they stay unconfirmed). Does not wait for the disk: like
    /// a commit, the change is written by the next [`Offsets::persist`] (the broker's periodic
    /// writer), so a slave copying offsets never holds an acknowledgement behind an fsync.
    pub fn replace_from_json(&self, json: &[u8]) -> Result<(), OffsetsError> {
        let file = self.parse(json, "the master's offsets")?;
        let mut state = self.lock();
        let mut offsets = offsets_of(file);
        let unconfirmed = std::mem::take(&mut state.unconfirmed);
        for key in unconfirmed {
            let Some(ours) = state.offsets.get(&key).copied() else {
                continue;
            };
            if offsets
                .get(&key)
                .is_none_or(|master| ours.is_newer_than(master))
            {
                offsets.insert(key.clone(), ours);
                state.unconfirmed.insert(key);
            }
        }
        state.offsets = offsets;
        state.groups = groups_of(&state.offsets);
        state.dirty = true;
        state.version += 1;
        Ok(())
    }

    pub fn get(&self, consumer_group: &str, topic: &str, queue: u32) -> Option<Committed> {
        self.lock()
            .offsets
            .get(&(consumer_group.to_owned(), topic.to_owned(), queue))
            .copied()
    }

    /// Every stored offset (for heartbeats and metrics).
    pub fn all(&self) -> Vec<StoredOffset> {
        self.lock()
            .offsets
            .iter()
            .map(|((consumer_group, topic, queue), committed)| StoredOffset {
                consumer_group: consumer_group.clone(),
                topic: topic.clone(),
                queue: *queue,
                committed: *committed,
            })
            .collect()
    }

    /// Forgets every group's offsets of `topic` (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        let mut state = self.lock();
        let before = state.offsets.len();
        state.offsets.retain(|(_, t, _), _| t != topic);
        state.unconfirmed.retain(|(_, t, _)| t != topic);
        if state.offsets.len() != before {
            state.groups = groups_of(&state.offsets);
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

fn offsets_of(file: OffsetsFile) -> BTreeMap<Key, Committed> {
    file.offsets
        .into_iter()
        .map(|entry| {
            let committed = Committed {
                offset: entry.offset,
                owner_epoch: entry.owner_epoch,
                topic_id: entry.topic_id,
            };
            ((entry.consumer_group, entry.topic, entry.queue), committed)
        })
        .collect()
}

/// How many entries each consumer group has in `offsets`.
fn groups_of(offsets: &BTreeMap<Key, Committed>) -> BTreeMap<String, usize> {
    let mut groups = BTreeMap::new();
    for (consumer_group, _, _) in offsets.keys() {
        *groups.entry(consumer_group.clone()).or_default() += 1;
    }
    groups
}

fn file_of(offsets: &BTreeMap<Key, Committed>) -> OffsetsFile {
    OffsetsFile {
        offsets: offsets
            .iter()
            .map(|((consumer_group, topic, queue), committed)| Entry {
                consumer_group: consumer_group.clone(),
                topic: topic.clone(),
                queue: *queue,
                offset: committed.offset,
                owner_epoch: committed.owner_epoch,
                topic_id: committed.topic_id,
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
        let offsets = Offsets::open(dir.path(), OffsetLimits::default()).unwrap();
        assert!(!offsets.persist().unwrap(), "nothing to write yet");
        offsets.commit("billing", "orders", 1, 3, 42, 1).unwrap();
        offsets.commit("billing", "audit", 1, 0, 7, 1).unwrap();
        offsets.commit("billing", "orders", 1, 3, 43, 2).unwrap();
        offsets.remove_topic("audit");
        assert!(offsets.persist().unwrap());
        offsets.commit("billing", "orders", 1, 4, 1, 1).unwrap(); // never persisted: a crash loses it
        let reopened = Offsets::open(dir.path(), OffsetLimits::default()).unwrap();
        let committed = Committed {
            offset: 43,
            owner_epoch: 2,
            topic_id: 1,
        };
        assert_eq!(reopened.get("billing", "orders", 3), Some(committed));
        assert_eq!(reopened.get("billing", "audit", 0), None);
        assert_eq!(reopened.get("billing", "orders", 4), None);
    }

    /// Issue 13 point 6: a metadata write that fails (its temporary file's name taken here;
    /// ENOSPC alike) fails alone and is done again at the next persist.
    #[test]
    fn offsets_whose_write_failed_are_written_at_the_next_persist() {
        let dir = tempfile::tempdir().unwrap();
        let offsets = Offsets::open(dir.path(), OffsetLimits::default()).unwrap();
        offsets.commit("billing", "orders", 1, 0, 42, 1).unwrap();
        let blocker = dir.path().join("consumer_offsets.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let error = offsets.persist().unwrap_err();
        assert!(
            error.to_string().contains("consumer_offsets.json.tmp"),
            "{error}"
        );
        std::fs::remove_dir(&blocker).unwrap();
        assert!(offsets.persist().unwrap(), "still to be written");
        let reopened = Offsets::open(dir.path(), OffsetLimits::default()).unwrap();
        assert_eq!(reopened.get("billing", "orders", 0).unwrap().offset, 42);
    }

    #[test]
    fn a_commit_with_a_lower_owner_epoch_is_refused_and_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let offsets = Offsets::open(dir.path(), OffsetLimits::default()).unwrap();
        offsets.commit("billing", "orders", 1, 0, 100, 5).unwrap();
        assert_eq!(
            offsets.commit("billing", "orders", 1, 0, 40, 4),
            Err(CommitRefused::StaleEpoch { stored_epoch: 5 })
        );
        offsets.commit("billing", "orders", 1, 0, 120, 5).unwrap();
        offsets.commit("billing", "orders", 1, 0, 130, 6).unwrap();
        assert_eq!(offsets.get("billing", "orders", 0).unwrap().offset, 130);
    }

    #[test]
    fn new_groups_and_queues_beyond_the_limits_are_refused_and_known_ones_still_commit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = OffsetLimits {
            max_consumer_groups: 2,
            max_committed_offsets: 3,
        };
        let offsets = Offsets::open(dir.path(), limits).unwrap();
        offsets.commit("billing", "orders", 1, 0, 1, 1).unwrap();
        offsets.commit("audit", "orders", 1, 0, 1, 1).unwrap();
        assert_eq!(
            offsets.commit("intruder", "orders", 1, 0, 1, 1),
            Err(CommitRefused::TooManyGroups {
                max_consumer_groups: 2
            })
        );
        offsets.commit("billing", "orders", 1, 1, 1, 1).unwrap();
        assert_eq!(
            offsets.commit("audit", "orders", 1, 1, 1, 1),
            Err(CommitRefused::TooManyOffsets {
                max_committed_offsets: 3
            })
        );
        // What is stored moves on; nothing refused was stored.
        offsets.commit("billing", "orders", 1, 1, 9, 1).unwrap();
        assert_eq!(offsets.all().len(), 3);
        assert_eq!(offsets.get("intruder", "orders", 0), None);
        // A deleted topic frees its entries and groups.
        offsets.remove_topic("orders");
        offsets.commit("intruder", "orders", 1, 0, 1, 1).unwrap();
    }

    /// A master's and a slave's offsets, each in a directory of its own (kept while they live).
    fn master_and_slave() -> ([tempfile::TempDir; 2], Offsets, Offsets) {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let master = Offsets::open(dirs[0].path(), OffsetLimits::default()).unwrap();
        let slave = Offsets::open(dirs[1].path(), OffsetLimits::default()).unwrap();
        (dirs, master, slave)
    }

    /// Issue 17 (RocketMQ #1094): what a slave took while its master was down reaches the
    /// master when it comes back, and neither replica's offset goes back.
    #[test]
    fn offsets_a_slave_took_while_its_master_was_down_are_kept_by_both_and_never_go_back() {
        let (_dirs, master, slave) = master_and_slave();
        master.commit("billing", "orders", 1, 0, 80, 5).unwrap();
        master.commit("billing", "orders", 1, 1, 10, 5).unwrap();
        slave.replace_from_json(&master.to_json().1).unwrap();
        assert!(slave.unconfirmed_json().is_empty(), "nothing taken yet");
        // The master is down: the slave takes the group's commits.
        let commit_unconfirmed = |topic: &str, queue, offset, owner_epoch| {
            slave
                .commit("billing", topic, 1, queue, offset, owner_epoch)
                .unwrap();
            slave.keep_unconfirmed("billing", topic, queue);
        };
        commit_unconfirmed("orders", 0, 100, 5);
        commit_unconfirmed("orders", 2, 7, 6);
        commit_unconfirmed("deleted", 0, 3, 6);
        // Back, the master committed queue 1 further itself before the slave reconnected.
        master.commit("billing", "orders", 1, 1, 20, 5).unwrap();
        let sent = slave.unconfirmed_json();
        let taken = master
            .take_newer_from_json(&sent, |topic, _, _| topic == "orders")
            .unwrap();
        assert_eq!(
            taken, 2,
            "queue 0 and the new queue 2, not the deleted topic"
        );
        // A commit the slave took after it sent its offsets, older than nothing the master has.
        commit_unconfirmed("orders", 3, 9, 6);
        // The slave drops the offsets of topics its master no longer has as it copies topics.
        slave.remove_topic("deleted");
        slave.replace_from_json(&master.to_json().1).unwrap();
        for offsets in [&master, &slave] {
            assert_eq!(offsets.get("billing", "orders", 0).unwrap().offset, 100);
            assert_eq!(offsets.get("billing", "orders", 1).unwrap().offset, 20);
            assert_eq!(offsets.get("billing", "orders", 2).unwrap().offset, 7);
        }
        assert_eq!(slave.get("billing", "orders", 3).unwrap().offset, 9, "kept");
        let left: OffsetsFile = serde_json::from_slice(&slave.unconfirmed_json()).unwrap();
        assert_eq!(left.offsets.len(), 1, "queue 3 is still to give: {left:?}");
        // An older copy never replaces a newer one: a lower epoch, or a lower offset.
        let older = br#"{"offsets":[{"consumer_group":"billing","topic":"orders","queue":0,"offset":90,"owner_epoch":5},{"consumer_group":"billing","topic":"orders","queue":1,"offset":99,"owner_epoch":4}]}"#;
        assert_eq!(
            master.take_newer_from_json(older, |_, _, _| true).unwrap(),
            0
        );
        assert_eq!(master.get("billing", "orders", 0).unwrap().offset, 100);
    }

    /// A slave's copy of its master's offsets waits for no disk (it sits between a chunk and
    /// its acknowledgement): it is served at once and written by the next periodic persist.
    #[test]
    fn a_slaves_copy_of_the_offsets_is_written_by_the_next_persist_not_at_once() {
        let (dirs, master, slave) = master_and_slave();
        master.commit("billing", "orders", 1, 0, 80, 5).unwrap();
        slave.replace_from_json(&master.to_json().1).unwrap();
        assert_eq!(slave.get("billing", "orders", 0).unwrap().offset, 80);
        let on_disk = || Offsets::open(dirs[1].path(), OffsetLimits::default()).unwrap();
        assert_eq!(
            on_disk().get("billing", "orders", 0),
            None,
            "not written yet"
        );
        assert!(slave.persist().unwrap(), "the copy is left to write");
        assert_eq!(on_disk().get("billing", "orders", 0).unwrap().offset, 80);
    }

    /// A slave away while a topic was deleted and created again under its name hands over the
    /// offsets it took in the old topic (it learns of the new one only from the answer): the
    /// master, which holds the new topic, takes none of them.
    #[test]
    fn a_slaves_offsets_of_a_topic_deleted_and_created_again_are_not_taken() {
        let (_dirs, master, slave) = master_and_slave();
        master.commit("billing", "orders", 2, 0, 10, 1).unwrap();
        // Taken in topic 1 (the deleted one), newer than the master's.
        for (queue, offset) in [(0, 500), (1, 50)] {
            slave
                .commit("billing", "orders", 1, queue, offset, 3)
                .unwrap();
            slave.keep_unconfirmed("billing", "orders", queue);
        }
        // What the master's handler keeps: its topic's id, or an offset that names none.
        let keep = |topic: &str, id: u64, queue: u32| {
            topic == "orders" && (id == 0 || id == 2) && queue < 4
        };
        let taken = master
            .take_newer_from_json(&slave.unconfirmed_json(), keep)
            .unwrap();
        assert_eq!(taken, 0, "both belong to the deleted topic");
        assert_eq!(master.get("billing", "orders", 0).unwrap().offset, 10);
        assert_eq!(master.get("billing", "orders", 1), None);
    }

    #[test]
    fn files_without_owner_epochs_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"offsets":[{"group":"billing","topic":"orders","queue":1,"offset":9}]}"#,
        )
        .unwrap();
        let offsets = Offsets::open(dir.path(), OffsetLimits::default()).unwrap();
        let committed = Committed {
            offset: 9,
            owner_epoch: 0,
            topic_id: 0,
        };
        assert_eq!(offsets.get("billing", "orders", 1), Some(committed));
    }
}
