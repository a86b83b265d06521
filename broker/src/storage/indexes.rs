//! All queue indexes of a store, by topic and queue id, opened from the data directory at start
//! and created on a queue's first append; and where each topic begins in the log, so that no
//! batch of an earlier topic of the same name (deleted since) is ever indexed into it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::file_names::{check_topic_name, queue_index_dir, INDEX_DIR};
use super::queue_index::{IndexFile, QueueIndex};
use super::segment::{create_dir_durably, sync_dir, SharedFile};

pub struct Indexes {
    data_dir: PathBuf,
    entries_per_file: u32,
    by_topic: HashMap<String, HashMap<u32, QueueIndex>>,
    /// Log position where the topic now known under a name begins (its creation position):
    /// batches of the name below it belong to an earlier topic of that name. A name without
    /// an entry indexes every batch (a store opened without topic knowledge, its tests).
    starts: HashMap<String, u64>,
    /// Counts uses (`get_mapped`): each index keeps the count of its last use, so that the
    /// least recently used are unmapped first (`unmap_least_used`).
    clock: u64,
}

impl Indexes {
    /// Opens every index under `<data_dir>/index`.
    pub fn open(data_dir: &Path, entries_per_file: u32) -> Result<Indexes> {
        let mut indexes = Indexes {
            data_dir: data_dir.to_owned(),
            entries_per_file,
            by_topic: HashMap::new(),
            starts: HashMap::new(),
            clock: 0,
        };
        let root = data_dir.join(INDEX_DIR);
        create_dir_durably(&root)?;
        for topic in list_dir(&root)? {
            if check_topic_name(&topic).is_err() {
                tracing::warn!(directory = %root.join(&topic).display(), "ignoring a directory that is not a topic");
                continue;
            }
            for queue in list_dir(&root.join(&topic))? {
                if let Ok(queue) = queue.parse::<u32>() {
                    indexes.get_or_open(&topic, queue)?;
                }
            }
        }
        Ok(indexes)
    }

    pub fn get(&self, topic: &str, queue: u32) -> Option<&QueueIndex> {
        self.by_topic.get(topic)?.get(&queue)
    }

    pub fn get_mut(&mut self, topic: &str, queue: u32) -> Option<&mut QueueIndex> {
        self.by_topic.get_mut(topic)?.get_mut(&queue)
    }

    /// The index of `topic`/`queue`, its files mapped (again, if `unmap_least_used` unmapped
    /// them): what reads or writes its entries asks for.
    pub fn get_mapped(&mut self, topic: &str, queue: u32) -> Result<Option<&mut QueueIndex>> {
        self.clock += 1;
        let now = self.clock;
        let Some(index) = self.get_mut(topic, queue) else {
            return Ok(None);
        };
        index.map_files()?;
        index.last_used = now;
        Ok(Some(index))
    }

    /// Unmaps the files of the least recently used synced indexes until at most `max_mapped`
    /// index files are mapped (or no synced index is left mapped), so that a broker's memory
    /// mappings stay bounded however many queues it holds (the kernel allows a process
    /// `vm.max_map_count` of them, 65,530 by default). Returns the maps let go of, for the
    /// caller to drop (munmap) outside the store's lock.
    pub fn unmap_least_used(&mut self, max_mapped: usize) -> Vec<SharedFile> {
        let mapped: usize = self
            .by_topic
            .values()
            .flat_map(HashMap::values)
            .map(QueueIndex::mapped_files)
            .sum();
        let mut excess = mapped.saturating_sub(max_mapped);
        if excess == 0 {
            return Vec::new();
        }
        let mut idle: Vec<&mut QueueIndex> = self
            .by_topic
            .values_mut()
            .flat_map(HashMap::values_mut)
            .filter(|index| index.mapped_files() > 0 && index.is_synced())
            .collect();
        idle.sort_unstable_by_key(|index| index.last_used);
        let mut unmapped = Vec::new();
        for index in idle {
            if excess == 0 {
                break;
            }
            let maps = index.unmap_files();
            excess = excess.saturating_sub(maps.len());
            unmapped.extend(maps);
        }
        unmapped
    }

    /// Opens (creating its directory) the index of a queue not in `self` yet, without adding it:
    /// the store does this outside its lock, then `insert`s it.
    pub fn open_queue(
        data_dir: &Path,
        topic: &str,
        queue: u32,
        entries_per_file: u32,
    ) -> Result<QueueIndex> {
        QueueIndex::open(&queue_index_dir(data_dir, topic, queue), entries_per_file)
    }

    /// Opens (creating their directories) the indexes of `queues` of `topic`, none of which is
    /// in `self` yet, each with its first file (queue offset 0), all together: a few journal
    /// commits for the whole topic (`IndexFile::create_all`). Outside the store's lock, as
    /// `open_queue`; the caller `insert`s them.
    pub fn create_queues(
        data_dir: &Path,
        topic: &str,
        queues: &[u32],
        entries_per_file: u32,
    ) -> Result<Vec<(u32, QueueIndex)>> {
        let dirs: Vec<PathBuf> = queues
            .iter()
            .map(|queue| queue_index_dir(data_dir, topic, *queue))
            .collect();
        let Some(topic_dir) = dirs.first().and_then(|dir| dir.parent()) else {
            return Ok(Vec::new());
        };
        create_dir_durably(topic_dir)?;
        for dir in &dirs {
            match std::fs::create_dir(dir) {
                Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::io("creating", dir)(error));
                }
                _ => {}
            }
        }
        sync_dir(topic_dir)?;
        let mut indexes = queues
            .iter()
            .zip(&dirs)
            .map(|(queue, dir)| Ok((*queue, QueueIndex::open(dir, entries_per_file)?)))
            .collect::<Result<Vec<_>>>()?;
        let empty: Vec<PathBuf> = indexes
            .iter()
            .zip(&dirs)
            .filter(|((_, index), _)| !index.has_files())
            .map(|(_, dir)| dir.clone())
            .collect();
        let mut files = IndexFile::create_all(&empty, 0, entries_per_file)?.into_iter();
        for (_, index) in indexes.iter_mut().filter(|(_, index)| !index.has_files()) {
            index.add_file(files.next().expect("one file for each empty index"));
        }
        Ok(indexes)
    }

    pub fn insert(&mut self, topic: &str, queue: u32, index: QueueIndex) {
        let previous = self
            .by_topic
            .entry(topic.to_owned())
            .or_default()
            .insert(queue, index);
        assert!(previous.is_none(), "{topic}/{queue} opened twice");
    }

    /// The index of `topic`/`queue`, opened (and its directory created) on first use.
    pub fn get_or_open(&mut self, topic: &str, queue: u32) -> Result<&mut QueueIndex> {
        if self.get(topic, queue).is_none() {
            let index = Indexes::open_queue(&self.data_dir, topic, queue, self.entries_per_file)?;
            self.insert(topic, queue, index);
        }
        Ok(self.get_mut(topic, queue).expect("inserted above"))
    }

    /// From now on batches of `topic` below log position `start` are not indexed.
    pub fn set_start(&mut self, topic: &str, start: u64) {
        self.starts.insert(topic.to_owned(), start);
    }

    /// Whether a batch of `topic` at log `position` belongs to the topic now known under the
    /// name (`false`: to an earlier topic of the name, deleted since).
    pub fn indexes_batch_at(&self, topic: &str, position: u64) -> bool {
        self.starts
            .get(topic)
            .is_none_or(|start| position >= *start)
    }

    /// Whether an index of `topic` holds a batch below the topic's start: an earlier topic's,
    /// left by a deletion that did not finish (a crash between topics.json and the indexes).
    pub fn holds_an_earlier_topic(&self, topic: &str) -> bool {
        let Some(start) = self.starts.get(topic) else {
            return false;
        };
        self.by_topic.get(topic).is_some_and(|queues| {
            queues
                .values()
                .any(|index| index.first_position().is_some_and(|first| first < *start))
        })
    }

    pub fn has_topic(&self, topic: &str) -> bool {
        self.by_topic.contains_key(topic)
    }

    /// Forgets every queue index of `topic`; returns whether it had any.
    pub fn remove_topic(&mut self, topic: &str) -> bool {
        self.by_topic.remove(topic).is_some()
    }

    /// Every topic that has an index.
    pub fn topics(&self) -> Vec<String> {
        self.by_topic.keys().cloned().collect()
    }

    /// Every index with its topic and queue, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32, &QueueIndex)> {
        self.by_topic.iter().flat_map(|(topic, queues)| {
            queues
                .iter()
                .map(move |(queue, index)| (topic.as_str(), *queue, index))
        })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut QueueIndex> {
        self.by_topic
            .values_mut()
            .flat_map(|queues| queues.values_mut())
    }

    /// Every (topic, queue) that has an index.
    pub fn queues(&self) -> Vec<(String, u32)> {
        let mut queues: Vec<(String, u32)> = self
            .by_topic
            .iter()
            .flat_map(|(topic, queues)| queues.keys().map(|queue| (topic.clone(), *queue)))
            .collect();
        queues.sort();
        queues
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))? {
        let entry = entry.map_err(StorageError::io("listing", dir))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}
