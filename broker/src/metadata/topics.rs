//! Topic configuration: which topics this broker serves, with their ids, how many queues and
//! which permissions, stored in `<data-dir>/topics.json` and replaced atomically on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{read_json, ReadError};

use crate::storage::{check_topic_name, write_atomically, StorageError};

const FILE_NAME: &str = "topics.json";
pub use smq_protocol::limits::MAX_QUEUES_PER_TOPIC;

/// A topic as this broker serves it, as stored in `topics.json`. The broker's own type: the
/// heartbeat's `TopicQueues` (registration.rs) has the same fields today, but the NameServer's
/// API may change without changing the file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    /// Tells this topic from an earlier topic of the same name (deleted since): the data
    /// version of the file that first held it, so ids only grow, on a master and on the slaves
    /// that copy its file. Absent (0) in files written before topic ids, and then not written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    /// The master's log position when the topic was created (flushed there first): batches
    /// of its name below it belong to an earlier topic of the name and are never indexed into
    /// this one, on the master, on a slave copying the log, or by recovery. Absent (0) in files
    /// written before, and then not written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_position: u64,
    /// Number of queues, numbered `0..queues`.
    pub queues: u32,
    /// Consumers may read.
    #[serde(default = "yes")]
    pub readable: bool,
    /// Producers may write; cleared to drain a group before maintenance.
    #[serde(default = "yes")]
    pub writable: bool,
}

fn yes() -> bool {
    true
}

/// What every topic this broker keeps must satisfy, however it arrives (a request, the file at
/// start, a master's copy): names become directory names, queue counts bound what is allocated.
fn check(topic: &TopicConfig) -> Result<(), TopicError> {
    check_topic_name(&topic.name)?;
    if !(1..=MAX_QUEUES_PER_TOPIC).contains(&topic.queues) {
        return Err(TopicError::BadQueueCount(topic.queues));
    }
    Ok(())
}

fn check_all(topics: &[TopicConfig]) -> Result<(), TopicError> {
    topics.iter().try_for_each(check)
}

fn is_zero(id: &u64) -> bool {
    *id == 0
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    #[error("topic {0:?} does not exist: create it with `smq topic create {0}`")]
    NotFound(String),
    #[error("a topic needs 1 to {MAX_QUEUES_PER_TOPIC} queues, not {0}")]
    BadQueueCount(u32),
    #[error("{path} is not valid topic configuration: {reason}; fix or remove the file")]
    BadFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicsFile {
    /// Bumped on every change, so that replicas and the NameServer can tell which copy is newer.
    data_version: u64,
    topics: Vec<TopicConfig>,
}

/// What replacing the topics with a master's changed: topics gone, and topics new or changed.
#[derive(Debug, Default)]
pub struct TopicChanges {
    pub removed: Vec<TopicConfig>,
    pub added: Vec<TopicConfig>,
}

/// The topics of one broker; every change is on disk before the call returns.
pub struct Topics {
    path: PathBuf,
    data_version: u64,
    by_name: BTreeMap<String, TopicConfig>,
}

impl Topics {
    /// Loads `<data_dir>/topics.json`; no file means no topics.
    pub fn open(data_dir: &Path) -> Result<Topics, TopicError> {
        let path = data_dir.join(FILE_NAME);
        let file: TopicsFile = read_json(&path).map_err(|error| match error {
            ReadError::Invalid(reason) => TopicError::BadFile {
                path: path.clone(),
                reason,
            },
            ReadError::Storage(error) => error.into(),
        })?;
        check_all(&file.topics).map_err(|error| TopicError::BadFile {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        Ok(Topics {
            path,
            data_version: file.data_version,
            by_name: file
                .topics
                .into_iter()
                .map(|topic| (topic.name.clone(), topic))
                .collect(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&TopicConfig> {
        self.by_name.get(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &TopicConfig> {
        self.by_name.values()
    }

    pub fn data_version(&self) -> u64 {
        self.data_version
    }

    /// Adds a readable and writable topic with a new id, beginning at log position
    /// `start_position`; returns it as stored.
    pub fn create(
        &mut self,
        name: &str,
        queues: u32,
        start_position: u64,
    ) -> Result<TopicConfig, TopicError> {
        let topic = TopicConfig {
            name: name.to_owned(),
            id: self.data_version + 1,
            start_position,
            queues,
            readable: true,
            writable: true,
        };
        check(&topic)?;
        if self.by_name.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_owned()));
        }
        let mut next = self.by_name.clone();
        next.insert(topic.name.clone(), topic.clone());
        self.replace(next)?;
        Ok(topic)
    }

    pub fn delete(&mut self, name: &str) -> Result<TopicConfig, TopicError> {
        let mut next = self.by_name.clone();
        let removed = next
            .remove(name)
            .ok_or_else(|| TopicError::NotFound(name.to_owned()))?;
        self.replace(next)?;
        Ok(removed)
    }

    /// The topics as topics.json has them: what a master sends its slaves.
    pub fn to_json(&self) -> Vec<u8> {
        let file = TopicsFile {
            data_version: self.data_version,
            topics: self.by_name.values().cloned().collect(),
        };
        serde_json::to_vec(&file).expect("topic configuration serializes")
    }

    /// Replaces every topic and the data version with those of `json` (what
    /// [`Topics::to_json`] made on the master) in one atomic file write; returns the topics
    /// that are gone and those that are new or changed. A topic whose id changed (deleted and
    /// created again on the master meanwhile) is both: the old one is gone.
    pub fn replace_from_json(&mut self, json: &[u8]) -> Result<TopicChanges, TopicError> {
        let file: TopicsFile =
            serde_json::from_slice(json).map_err(|error| TopicError::BadFile {
                path: self.path.clone(),
                reason: format!("the master's topics do not parse: {error}"),
            })?;
        check_all(&file.topics).map_err(|error| TopicError::BadFile {
            path: self.path.clone(),
            reason: format!("the master's topics are refused: {error}"),
        })?;
        let next: BTreeMap<String, TopicConfig> = file
            .topics
            .into_iter()
            .map(|topic| (topic.name.clone(), topic))
            .collect();
        let changes = TopicChanges {
            removed: self
                .by_name
                .values()
                .filter(|old| next.get(&old.name).is_none_or(|new| new.id != old.id))
                .cloned()
                .collect(),
            added: next
                .values()
                .filter(|new| self.by_name.get(&new.name) != Some(new))
                .cloned()
                .collect(),
        };
        self.write(file.data_version, next)?;
        Ok(changes)
    }

    /// Writes the new set first; memory changes only once the file is durable.
    fn replace(&mut self, next: BTreeMap<String, TopicConfig>) -> Result<(), TopicError> {
        self.write(self.data_version + 1, next)
    }

    fn write(
        &mut self,
        data_version: u64,
        next: BTreeMap<String, TopicConfig>,
    ) -> Result<(), TopicError> {
        let file = TopicsFile {
            data_version,
            topics: next.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("topic configuration serializes");
        write_atomically(&self.path, &json)?;
        self.data_version = file.data_version;
        self.by_name = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u64, queues: u32) -> TopicConfig {
        TopicConfig {
            name: name.into(),
            id,
            start_position: 0,
            queues,
            readable: true,
            writable: true,
        }
    }

    #[test]
    fn topics_survive_reopening_and_bump_the_data_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut topics = Topics::open(dir.path()).unwrap();
        topics.create("orders", 8, 0).unwrap();
        topics.create("audit", 1, 0).unwrap();
        topics.delete("audit").unwrap();
        let reopened = Topics::open(dir.path()).unwrap();
        assert_eq!(reopened.get("orders"), Some(&topic("orders", 1, 8)));
        assert!(reopened.get("audit").is_none());
        assert_eq!(reopened.data_version(), 3);
    }

    /// Issue 13 point 9: a topic created again under a deleted topic's name is another topic,
    /// here and on a slave copying the master's file, even with the same queue count.
    #[test]
    fn a_topic_created_again_has_a_new_id_and_a_copy_sees_the_old_one_gone() {
        let master_dir = tempfile::tempdir().unwrap();
        let slave_dir = tempfile::tempdir().unwrap();
        let mut master = Topics::open(master_dir.path()).unwrap();
        let mut slave = Topics::open(slave_dir.path()).unwrap();
        let first = master.create("orders", 4, 0).unwrap();
        slave.replace_from_json(&master.to_json()).unwrap();
        master.delete("orders").unwrap();
        let second = master.create("orders", 4, 0).unwrap();
        assert!(second.id > first.id, "{second:?} after {first:?}");
        let changes = slave.replace_from_json(&master.to_json()).unwrap();
        assert_eq!(changes.removed, vec![first]);
        assert_eq!(changes.added, vec![second.clone()]);
        assert_eq!(
            Topics::open(slave_dir.path()).unwrap().get("orders"),
            Some(&second)
        );
    }

    #[test]
    fn bad_requests_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut topics = Topics::open(dir.path()).unwrap();
        topics.create("orders", 8, 0).unwrap();
        assert!(matches!(
            topics.create("orders", 2, 0),
            Err(TopicError::AlreadyExists(_))
        ));
        assert!(matches!(
            topics.create("x", 0, 0),
            Err(TopicError::BadQueueCount(0))
        ));
        assert!(matches!(
            topics.create("a/b", 1, 0),
            Err(TopicError::Storage(_))
        ));
        assert!(matches!(
            topics.delete("nope"),
            Err(TopicError::NotFound(_))
        ));
        assert_eq!(topics.data_version(), 1);
    }

    #[test]
    fn a_file_or_a_masters_copy_with_a_bad_topic_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut topics = Topics::open(dir.path()).unwrap();
        let orders = topics.create("orders", 8, 0).unwrap();
        for bad in [
            r#"{"data_version":9,"topics":[{"name":"../../etc","queues":1}]}"#,
            r#"{"data_version":9,"topics":[{"name":"big","queues":4000000000}]}"#,
            r#"{"data_version":9,"topics":[{"name":"none","queues":0}]}"#,
        ] {
            let error = topics.replace_from_json(bad.as_bytes()).unwrap_err();
            assert!(error.to_string().contains("refused"), "{error}");
            assert_eq!(topics.list().count(), 1);
            assert_eq!(topics.data_version(), 1);

            let other = tempfile::tempdir().unwrap();
            std::fs::write(other.path().join(FILE_NAME), bad).unwrap();
            let error = Topics::open(other.path())
                .err()
                .expect("a bad file is refused");
            assert!(matches!(error, TopicError::BadFile { .. }), "{error}");
        }
        assert_eq!(
            Topics::open(dir.path()).unwrap().get("orders"),
            Some(&orders)
        );
    }

    #[test]
    fn a_file_written_before_the_broker_had_its_own_type_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{
  "data_version": 4,
  "topics": [
    {
      "name": "audit",
      "queues": 1,
      "readable": true,
      "writable": false
    },
    {
      "name": "orders",
      "queues": 8,
      "readable": true,
      "writable": true
    }
  ]
}"#;
        std::fs::write(dir.path().join(FILE_NAME), json).unwrap();
        let topics = Topics::open(dir.path()).unwrap();
        assert_eq!(topics.data_version(), 4);
        assert_eq!(topics.get("orders"), Some(&topic("orders", 0, 8)));
        let audit = topics.get("audit").unwrap();
        assert!(audit.readable && !audit.writable);
        // What the broker writes has the same shape as what it read.
        let mut topics = topics;
        topics.create("billing", 2, 0).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!(written["data_version"], 5);
        assert_eq!(
            written["topics"][0],
            serde_json::json!({"name": "audit", "queues": 1, "readable": true, "writable": false})
        );
        assert_eq!(written["topics"][1]["id"], 5, "a new topic has an id");
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let error = Topics::open(dir.path()).err().unwrap();
        assert!(
            error.to_string().contains("topics.json is not valid"),
            "{error}"
        );
    }
}
