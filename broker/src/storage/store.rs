//! The store: one commit log and its queue indexes behind one writer, with the flusher, recovery
//! on open and retention. This is the storage engine's public face.
//!
//! # The write path
//!
//! `Store::append` validates the batch (length, magic, CRC, structure, message sizes) with no lock
//! held, keeping the CRC state of its payload. If the queue's index needs a new file, it is made
//! (and its first pages read into memory) with the writer lock released, one at a time, and the append
//! starts over. Under the single writer lock it checks the disk watermark, reserves space in the log
//! (rolling to the next segment, which the preparer thread made ahead, if the batch does not fit:
//! batches never span segments, and the rest of the old one starts with a roll marker), copies the
//! batch into the map with the broker's stamp (the new CRC combines the payload's CRC with the
//! new header's above 2 KiB of payload, and hashes a smaller batch again, which costs less),
//! appends the index entry and publishes the new end position. In sync mode the append then waits
//! for the flusher: it takes every waiting append, fsyncs (msync) the log up to the newest published
//! position and answers them all: one fsync for many appends (group commit).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use smq_protocol::record_batch::{self, now_ms, BatchView, BrokerStamp};
use tokio::sync::oneshot;

use super::checkpoint::Checkpoint;
use super::commit_log::{CommitLog, ROLL_MARKER};
use super::config::{FlushMode, StoreConfig};
use super::disk_space::DiskGuard;
use super::epochs::{EpochEntry, EpochHistory};
use super::error::{Result, StorageError};
use super::file_names::{
    check_topic_name, ABORT_FILE, CHECKPOINT_FILE, EPOCHS_FILE, INDEX_DIR, LOCK_FILE,
};
use super::flush::{self, FlushQueue, Waiter};
use super::indexes::Indexes;
use super::preparer::Preparer;
use super::queue_index::{IndexEntry, IndexFile, ReadAheadRequest};
use super::recovery::{recover, RecoveryReport};
use super::segment::{create_dir_durably, sync_dir};

/// A broker's message store. Cheap to share: every method takes `&self`.
pub struct Store {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    preparer_threads: Vec<JoinHandle<()>>,
    recovery: RecoveryReport,
}

/// State shared with the flusher and the watchdog threads.
pub(crate) struct Shared {
    pub(crate) config: StoreConfig,
    state: Mutex<State>,
    /// End of the last appended batch: readers and the flusher see the log up to here.
    pub(crate) written_position: AtomicU64,
    /// Every byte below this is on disk.
    pub(crate) flushed_position: AtomicU64,
    /// Under synchronous replication, every byte below this is held by a slave (`u64::MAX`
    /// when no slave's acknowledgement is needed): one more bound of the visible position.
    replicated_position: AtomicU64,
    flush_count: AtomicU64,
    fenced: AtomicBool,
    fence_reason: Mutex<Option<String>>,
    /// Fired once, when the log is fenced: see [`Store::fenced`].
    fence_signal: tokio::sync::Notify,
    pub(crate) flush_queue: Mutex<FlushQueue>,
    pub(crate) flush_wakeup: Condvar,
    /// Wakes the watchdog from its tick's sleep when the threads stop.
    pub(crate) watchdog_wakeup: Condvar,
    /// Makes segments and reads pages into memory ahead of the writer, on its own thread.
    preparer: Arc<Preparer>,
    /// Held while an index file is made outside the state lock, so that it is made once.
    index_creation: Mutex<()>,
    /// Held while the checkpoint is written; holds the last one written, so that an idle store
    /// does not rewrite (and fsync) the same checkpoint every flush interval.
    checkpoint_writing: Mutex<Option<Checkpoint>>,
    /// Held while the log is fsynced, so that a truncation never races a flush that would
    /// publish a flushed position past the new end.
    flushing: Mutex<()>,
    /// Which master epoch wrote which part of the log (the `epochs` file).
    epochs: Mutex<EpochHistory>,
    /// The epoch stamped into producers' batches: the master's current one (0 until
    /// [`Store::begin_epoch`]).
    master_epoch: AtomicU32,
    #[cfg(test)]
    pub(crate) faults: super::flush::Faults,
    // Held for the store's lifetime: the flock keeps a second broker out of the directory.
    _lock: File,
}

struct State {
    log: CommitLog,
    indexes: Indexes,
    disk: DiskGuard,
}

/// Where an append landed; [`AppendReceipt::durable`] waits for the flush it needs.
pub struct AppendReceipt {
    pub appended: Appended,
    flushed: Option<oneshot::Receiver<Result<()>>>,
}

/// The position and offsets an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub position: u64,
    pub base_queue_offset: u64,
    pub message_count: u32,
    pub size: u32,
}

impl AppendReceipt {
    /// Waits until the append is as durable as the flush mode promises: fsynced in sync mode,
    /// at once in async mode.
    pub async fn durable(self) -> Result<Appended> {
        if let Some(flushed) = self.flushed {
            flushed.await.map_err(|_| StorageError::Closed)??;
        }
        Ok(self.appended)
    }

    /// Whether [`AppendReceipt::durable`] waits for an fsync (sync flush, or one asked for).
    pub fn waits_for_flush(&self) -> bool {
        self.flushed.is_some()
    }

    /// [`AppendReceipt::durable`] for threads outside an async runtime.
    pub fn wait_durable(self) -> Result<Appended> {
        if let Some(flushed) = self.flushed {
            flushed
                .blocking_recv()
                .map_err(|_| StorageError::Closed)??;
        }
        Ok(self.appended)
    }
}

/// Waits for one fsync covering several appends ([`Store::durable_through`]).
pub struct FlushWait {
    flushed: Option<oneshot::Receiver<Result<()>>>,
}

impl FlushWait {
    /// Whether [`FlushWait::done`] waits for an fsync.
    pub fn waits(&self) -> bool {
        self.flushed.is_some()
    }

    /// Returns once the log is fsynced through the position asked for (at once when no fsync
    /// was asked for).
    pub async fn done(self) -> Result<()> {
        if let Some(flushed) = self.flushed {
            flushed.await.map_err(|_| StorageError::Closed)??;
        }
        Ok(())
    }
}

/// How an append places its batch.
#[derive(Clone, Copy)]
enum Placement<'a> {
    /// A producer's batch: stamped with queue offset, epoch and store time at the write
    /// position; `expected` is the topic and queue the request named.
    Stamp { expected: Option<(&'a str, u32)> },
    /// A batch copied from the master: as it is, and only at this position.
    Verbatim { position: u64 },
}

/// Bytes of the log as stored, from `position`: whole batches, within one segment.
#[derive(Debug, Clone, Default)]
pub struct LogChunk {
    pub position: u64,
    pub bytes: Bytes,
}

/// Whole batches of one queue, as stored, without copying.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    /// Oldest queue offset still stored.
    pub earliest_offset: u64,
    /// Queue offset the next batch will get.
    pub next_offset: u64,
}

/// What retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub log_start_position: u64,
}

/// What [`Store::truncate_to`] dropped: the log bytes `[from_position, to_position)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    pub from_position: u64,
    pub to_position: u64,
    pub batches: u64,
    pub messages: u64,
    /// The master epochs of the dropped batches, each once, in log order.
    pub epochs: Vec<u32>,
}

impl Dropped {
    pub fn bytes(&self) -> u64 {
        self.to_position - self.from_position
    }
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, recovering after an unclean shutdown.
    /// Indexes every batch: for a broker's store see [`Store::open_with_topic_starts`].
    pub fn open(config: StoreConfig) -> Result<Store> {
        Store::open_with_topic_starts(config, HashMap::new())
    }

    /// [`Store::open`] knowing where each topic begins in the log (`starts`, by name: the
    /// topic's creation position): batches of a name below its topic's start belong to an
    /// earlier topic of that name, deleted since, and are never indexed, neither by recovery
    /// nor by a replica's append; indexes still holding such batches (a deletion a crash
    /// interrupted) are deleted before recovery.
    pub fn open_with_topic_starts(
        config: StoreConfig,
        starts: HashMap<String, u64>,
    ) -> Result<Store> {
        config.validate().map_err(StorageError::InvalidConfig)?;
        let dir = config.data_dir.clone();
        create_dir_durably(&dir)?;
        let lock = lock_data_dir(&dir)?;
        let abort_path = dir.join(ABORT_FILE);
        let clean = !abort_path.exists();
        let checkpoint = Checkpoint::read(&dir.join(CHECKPOINT_FILE))?;
        let preparer = Preparer::new(&dir, config.segment_bytes);
        let mut log = CommitLog::open(&dir, config.segment_bytes, preparer.clone())?;
        let mut indexes = Indexes::open(&dir, config.index_entries_per_file)?;
        for (topic, start) in &starts {
            indexes.set_start(topic, *start);
            if indexes.holds_an_earlier_topic(topic) {
                tracing::warn!(%topic, "deleting the indexes of an earlier topic of this name");
                indexes.remove_topic(topic);
                remove_index_dir(&dir, topic)?;
            }
        }
        let recovery = recover(&mut log, &mut indexes, checkpoint, clean, &config)?;
        let epochs = open_epochs(&dir, log.write_position())?;
        // What recovery kept past the checkpoint may sit only in the page cache (a killed
        // process): make it durable before the checkpoint says it is.
        for (file, offset, len) in log.ranges(recovery.scanned_from, log.write_position()) {
            file.sync_range(offset, len)
                .map_err(StorageError::io("syncing", file.path()))?;
        }
        tracing::info!(
            data_dir = %dir.display(),
            clean = recovery.clean,
            scanned_from = recovery.scanned_from,
            end_position = recovery.end_position,
            batches_indexed = recovery.batches_indexed,
            "opened the store"
        );
        File::create(&abort_path).map_err(StorageError::io("creating", &abort_path))?;
        sync_dir(&dir)?;
        let end = log.write_position();
        let log_end = log.segments().last().expect("never empty").end();
        let preparer_threads = preparer.start(log_end);
        log.read_ahead();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                log,
                indexes,
                disk: DiskGuard::new(&dir, config.disk_usage_watermark_percent),
            }),
            written_position: AtomicU64::new(end),
            flushed_position: AtomicU64::new(end),
            replicated_position: AtomicU64::new(u64::MAX),
            flush_count: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            fence_reason: Mutex::new(None),
            fence_signal: tokio::sync::Notify::new(),
            flush_queue: Mutex::new(FlushQueue::default()),
            flush_wakeup: Condvar::new(),
            watchdog_wakeup: Condvar::new(),
            preparer,
            index_creation: Mutex::new(()),
            checkpoint_writing: Mutex::new(None),
            flushing: Mutex::new(()),
            epochs: Mutex::new(epochs),
            master_epoch: AtomicU32::new(0),
            #[cfg(test)]
            faults: super::flush::Faults::default(),
            _lock: lock,
            config,
        });
        // Everything recovered is on disk now: record it before taking new writes.
        shared.write_checkpoint()?;
        let threads = flush::start_threads(&shared);
        Ok(Store {
            shared,
            threads,
            preparer_threads,
            recovery,
        })
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Appends one producer batch (topic and queue are in its header). The broker assigns the
    /// queue offsets, the epoch and the store time, and recomputes the CRC. Returns once the
    /// batch is in the page cache; `durable()` on the receipt waits for the flush.
    pub fn append(&self, batch: &[u8]) -> Result<AppendReceipt> {
        let fsync = self.shared.config.flush == FlushMode::Sync;
        self.append_checked(batch, Placement::Stamp { expected: None }, fsync)
    }

    /// [`Store::append`] for a producer's request: the batch must belong to `topic`/`queue`
    /// (checked after its CRC, before anything is written), and with `fsync` the receipt waits
    /// for an fsync covering the batch even when the store flushes asynchronously. Never blocks
    /// on the disk: waiting is `durable().await`.
    pub fn append_to(
        &self,
        topic: &str,
        queue: u32,
        batch: &[u8],
        fsync: bool,
    ) -> Result<AppendReceipt> {
        let fsync = fsync || self.shared.config.flush == FlushMode::Sync;
        self.append_checked(
            batch,
            Placement::Stamp {
                expected: Some((topic, queue)),
            },
            fsync,
        )
    }

    /// [`Store::append_to`] for one of the batches of a request that waits once for all of them
    /// ([`Store::durable_through`]): it asks for no fsync of its own, whatever the flush mode.
    pub fn append_to_unflushed(&self, topic: &str, queue: u32, batch: &[u8]) -> Result<Appended> {
        let placement = Placement::Stamp {
            expected: Some((topic, queue)),
        };
        Ok(self.append_checked(batch, placement, false)?.appended)
    }

    /// What a request's appends through log position `end` wait for: an fsync covering them
    /// under sync flush or with `fsync`, else nothing.
    pub fn durable_through(&self, end: u64, fsync: bool) -> FlushWait {
        let fsync = fsync || self.shared.config.flush == FlushMode::Sync;
        FlushWait {
            flushed: fsync.then(|| self.shared.wait_for_flush(end)),
        }
    }

    /// Appends a batch copied from the master's log (replication): verbatim, at `position`, the
    /// position it has in the master's log, through the same checks and index path as a
    /// producer's batch (CRC, structure). Refused, with nothing written, when the batch would
    /// land elsewhere or its queue offset does not follow this replica's index: the logs have
    /// diverged. With `fsync` the receipt waits for an fsync covering it.
    pub fn append_replicated(
        &self,
        position: u64,
        batch: &[u8],
        fsync: bool,
    ) -> Result<AppendReceipt> {
        let fsync = fsync || self.shared.config.flush == FlushMode::Sync;
        self.append_checked(batch, Placement::Verbatim { position }, fsync)
    }

    fn append_checked(
        &self,
        batch: &[u8],
        placement: Placement<'_>,
        fsync: bool,
    ) -> Result<AppendReceipt> {
        self.shared.check_not_fenced()?;
        let max_message_bytes = match placement {
            Placement::Stamp { .. } => self.shared.config.max_message_bytes,
            // The master accepted the batch under its own limit.
            Placement::Verbatim { .. } => usize::MAX,
        };
        let view = BatchView::parse_with_limit(batch, max_message_bytes)?;
        if let Placement::Stamp {
            expected: Some((topic, queue)),
        } = placement
        {
            if view.topic() != topic || view.queue_id() != queue {
                return Err(StorageError::BatchTopicMismatch {
                    batch_topic: view.topic().to_owned(),
                    batch_queue: view.queue_id(),
                    topic: topic.to_owned(),
                    queue,
                });
            }
        }
        check_topic_name(view.topic())?;
        if let Placement::Verbatim { position } = placement {
            // The history says which epoch writes here: the replica records a new epoch
            // (`record_epoch`) before its first batch.
            let epoch = self.shared.lock_epochs().last_epoch();
            if view.master_epoch() != epoch {
                return Err(StorageError::EpochMismatch {
                    position,
                    batch_epoch: view.master_epoch(),
                    epoch,
                });
            }
        }
        let (appended, read_ahead) = loop {
            let mut state = self.shared.lock_state();
            state.disk.check()?;
            let State { log, indexes, .. } = &mut *state;
            // A replica copies batches of a topic deleted since on its master (the name may
            // have a new topic now) as they are, to stay the master's byte for byte, but never
            // indexes them.
            let indexed = match placement {
                Placement::Verbatim { position } => {
                    indexes.indexes_batch_at(view.topic(), position)
                }
                Placement::Stamp { .. } => true,
            };
            let mut index = None;
            if indexed {
                let Some(ready) = indexes
                    .get_mapped(view.topic(), view.queue_id())?
                    .filter(|index| !index.needs_file() && index.needs_reserving().is_none())
                else {
                    // A replica whose log does not begin at 0 (it began at its master's log
                    // start) may lack the first batches of a queue: its new index begins at the
                    // master's batch. A log that begins at 0 holds every batch, so each queue
                    // begins at 0.
                    let first_queue_offset = match placement {
                        Placement::Verbatim { .. } if log.start_position() > 0 => {
                            Some(view.base_queue_offset())
                        }
                        _ => None,
                    };
                    drop(state);
                    self.shared.make_index_file(
                        view.topic(),
                        view.queue_id(),
                        first_queue_offset,
                    )?;
                    continue;
                };
                index = Some(ready);
            }
            let base_queue_offset = index
                .as_ref()
                .map_or(view.base_queue_offset(), |index| index.next_queue_offset());
            if let Placement::Verbatim { position } = placement {
                let lands_at = log.position_for(view.len());
                if lands_at != position || view.base_queue_offset() != base_queue_offset {
                    return Err(StorageError::ReplicaDiverged {
                        topic: view.topic().to_owned(),
                        queue: view.queue_id(),
                        position,
                        lands_at,
                        base_queue_offset: view.base_queue_offset(),
                        next_queue_offset: base_queue_offset,
                    });
                }
            }
            let reservation = log.reserve(view.len())?;
            reservation
                .file
                .begin_write(reservation.offset_in_file + view.len() as u64);
            // SAFETY: the reserved range is past the published write position, and we hold the
            // writer lock, so no one else reads or writes it.
            let destination = unsafe {
                reservation
                    .file
                    .bytes_mut(reservation.offset_in_file, view.len())
            };
            match placement {
                Placement::Stamp { .. } => view.copy_stamped(
                    destination,
                    BrokerStamp {
                        master_epoch: self.shared.master_epoch.load(Ordering::Acquire),
                        base_queue_offset,
                        store_timestamp_ms: now_ms(),
                    },
                ),
                Placement::Verbatim { .. } => destination.copy_from_slice(view.as_bytes()),
            }
            let appended = Appended {
                position: reservation.position,
                base_queue_offset,
                message_count: view.message_count(),
                size: view.len() as u32,
            };
            let read_ahead = index.and_then(|index| {
                index.append(IndexEntry {
                    base_queue_offset,
                    position: appended.position,
                    size: appended.size,
                    message_count: appended.message_count,
                })
            });
            self.shared
                .written_position
                .store(log.write_position(), Ordering::Release);
            break (appended, read_ahead);
        };
        if let Some(ReadAheadRequest { file, offset, len }) = read_ahead {
            self.shared.preparer.read_ahead(&file, offset, len);
        }
        let flushed = fsync.then(|| {
            self.shared
                .wait_for_flush(appended.position + u64::from(appended.size))
        });
        Ok(AppendReceipt { appended, flushed })
    }

    /// Reads whole batches of `topic`/`queue` starting with the one holding `queue_offset`, up
    /// to `max_bytes` (always at least one batch, so a large batch cannot stall a consumer).
    /// An offset equal to the next offset reads nothing; one outside the stored range is an error.
    pub fn read(
        &self,
        topic: &str,
        queue: u32,
        queue_offset: u64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let mut state = self.shared.lock_state();
        let State { log, indexes, .. } = &mut *state;
        let Some(index) = indexes.get_mapped(topic, queue)? else {
            if queue_offset == 0 {
                return Ok(ReadResult::default());
            }
            return Err(StorageError::OffsetOutOfRange {
                topic: topic.to_owned(),
                queue,
                requested: queue_offset,
                earliest: 0,
                next: 0,
            });
        };
        let earliest_offset = index.earliest_offset(log.start_position());
        let written_next_offset = index.next_queue_offset();
        if queue_offset < earliest_offset || queue_offset > written_next_offset {
            return Err(StorageError::OffsetOutOfRange {
                topic: topic.to_owned(),
                queue,
                requested: queue_offset,
                earliest: earliest_offset,
                next: written_next_offset,
            });
        }
        let visible = self.visible_position();
        let next_offset = index.next_offset_visible_at(visible);
        let mut batches = Vec::new();
        let mut total = 0usize;
        for entry in index.entries_from(queue_offset) {
            if entry.position + u64::from(entry.size) > visible {
                break;
            }
            if !batches.is_empty() && total + entry.size as usize > max_bytes {
                break;
            }
            let bytes = log
                .bytes_at(entry.position, entry.size as usize)
                .expect("indexed batches are inside the log");
            total += bytes.len();
            batches.push(bytes);
            if total >= max_bytes {
                break;
            }
        }
        Ok(ReadResult {
            batches,
            earliest_offset,
            next_offset,
        })
    }

    /// Earliest and next queue offsets of a queue as consumers see it (0, 0 for a queue never
    /// written): the next offset is the end of what is visible (see `visible_position`).
    pub fn queue_offsets(&self, topic: &str, queue: u32) -> (u64, u64) {
        let visible = self.visible_position();
        let mut state = self.shared.lock_state();
        let State { log, indexes, .. } = &mut *state;
        let offsets = indexes.get_mapped(topic, queue).map(|index| {
            index.map(|index| {
                (
                    index.earliest_offset(log.start_position()),
                    index.next_offset_visible_at(visible),
                )
            })
        });
        match offsets {
            Ok(offsets) => offsets.unwrap_or((0, 0)),
            Err(error) => {
                // Its files could not be mapped again (out of memory maps or descriptors): say
                // so, and answer what the index knows without them.
                tracing::error!(%error, topic, queue, "a queue's index could not be mapped: its offsets are answered from memory");
                indexes
                    .get(topic, queue)
                    .map_or((0, 0), |index| index.offsets_in_memory())
            }
        }
    }

    /// When the broker stored the message at `queue_offset` of `topic`/`queue` (its batch's
    /// store timestamp, ms since the Unix epoch), if that message is visible to consumers.
    pub fn stored_at_ms(&self, topic: &str, queue: u32, queue_offset: u64) -> Option<u64> {
        let read = self.read(topic, queue, queue_offset, 1).ok()?;
        record_batch::stored_timestamp_ms(read.batches.first()?)
    }

    /// The log position below which consumers may read: what the flush mode says survives.
    /// Under sync flush, only what is fsynced, so that no consumer sees, processes or commits a
    /// message a power loss can take back (Kafka's high watermark, applied to the fsync); under
    /// async flush, everything appended, which survives what async flush promises (a crash of
    /// the process). Under synchronous replication, also only what a slave has acknowledged
    /// ([`Store::require_replication`]), so that no consumer sees what the loss of the master's
    /// disk can take back.
    pub fn visible_position(&self) -> u64 {
        let durable_here = match self.shared.config.flush {
            FlushMode::Sync => self.flushed_position(),
            FlushMode::Async => self.end_position(),
        };
        durable_here.min(self.shared.replicated_position.load(Ordering::Acquire))
    }

    /// From now on, readers see only what a slave acknowledged: the log below `acknowledged`
    /// (what a master remembers its slaves held; at most the log's end) and what
    /// [`Store::replicated`] reports later.
    pub fn require_replication(&self, acknowledged: u64) {
        self.shared
            .replicated_position
            .store(acknowledged.min(self.end_position()), Ordering::Release);
    }

    /// A master that became a slave: its log's visible position no longer waits for a slave.
    pub fn stop_requiring_replication(&self) {
        self.shared
            .replicated_position
            .store(u64::MAX, Ordering::Release);
    }

    /// Under synchronous replication, the position below which a slave holds the whole log.
    pub fn replicated_position(&self) -> u64 {
        self.shared
            .replicated_position
            .load(Ordering::Acquire)
            .min(self.end_position())
    }

    /// A slave holds the log below `position` (as durably as the master's flush mode asks).
    /// Positions only grow; a position past the end of the log is ignored.
    pub fn replicated(&self, position: u64) {
        let position = position.min(self.end_position());
        self.shared
            .replicated_position
            .fetch_max(position, Ordering::AcqRel);
    }

    /// Whole batches of the log from `from`, as stored, for a slave: at most `max_bytes` (at
    /// least one batch), never across a segment's end. `from` at a roll marker (or in the last
    /// bytes of a segment) goes on at the next segment: the chunk's `position` says where its
    /// bytes start. Empty at the end of the log.
    pub fn read_log(&self, from: u64, max_bytes: usize) -> Result<LogChunk> {
        let state = self.shared.lock_state();
        let end = self.end_position();
        let start = state.log.start_position();
        if from < start || from > end {
            return Err(StorageError::PositionOutOfRange { from, start, end });
        }
        let mut position = from;
        loop {
            if position == end {
                return Ok(LogChunk {
                    position,
                    bytes: Bytes::new(),
                });
            }
            let segment = state
                .log
                .segment_at(position)
                .expect("positions below the end are in a segment");
            let segment_end = segment.end();
            let mut at = position;
            while at < end && at + 4 <= segment_end {
                let length = state
                    .log
                    .bytes_at(at, 4)
                    .map(|field| u32::from_be_bytes(field[..].try_into().expect("4 bytes")))
                    .expect("inside the segment");
                if length == ROLL_MARKER || length == 0 {
                    break;
                }
                let size = 4 + u64::from(length);
                if at > position && at + size - position > max_bytes as u64 {
                    break;
                }
                at += size;
            }
            if at == position {
                // A roll marker, or too few bytes left for one: the log goes on in the next segment.
                position = segment_end;
                continue;
            }
            let bytes = state
                .log
                .bytes_at(position, (at - position) as usize)
                .expect("inside the segment");
            return Ok(LogChunk { position, bytes });
        }
    }

    /// Which master epoch wrote which part of the log.
    pub fn epoch_history(&self) -> EpochHistory {
        self.shared.lock_epochs().clone()
    }

    /// The epoch stamped into producers' batches now (0 before [`Store::begin_epoch`]).
    pub fn master_epoch(&self) -> u32 {
        self.shared.master_epoch.load(Ordering::Acquire)
    }

    /// Makes `epoch` this master's: recorded durably in the history as starting at the log's
    /// end (an empty last epoch is replaced), then stamped into every batch appended. Call it
    /// while nothing is being appended. Blocks on the disk.
    pub fn begin_epoch(&self, epoch: u32, promoted: bool) -> Result<()> {
        let mut history = self.shared.lock_epochs();
        let mut changed = history.clone();
        changed
            .push(EpochEntry {
                epoch,
                start: self.end_position(),
                promoted,
            })
            .map_err(StorageError::EpochHistory)?;
        changed.written_as_slave = false;
        changed.write(&self.shared.config.data_dir.join(EPOCHS_FILE))?;
        *history = changed;
        self.shared.master_epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    /// A replica records an epoch of its master before appending that epoch's first batch
    /// (at `entry.start`, its end). Blocks on the disk.
    pub fn record_epoch(&self, entry: EpochEntry) -> Result<()> {
        self.update_epochs(|history| {
            history.push(entry).map_err(StorageError::EpochHistory)?;
            history.written_as_slave = true;
            Ok(())
        })
    }

    /// Records that this broker runs as a slave now, so that starting it as a master later
    /// is known to be a promotion. Blocks on the disk when it changes.
    pub fn mark_slave(&self) -> Result<()> {
        if self.shared.lock_epochs().written_as_slave {
            return Ok(());
        }
        self.update_epochs(|history| {
            history.written_as_slave = true;
            Ok(())
        })
    }

    fn update_epochs(&self, change: impl FnOnce(&mut EpochHistory) -> Result<()>) -> Result<()> {
        let mut history = self.shared.lock_epochs();
        let mut changed = history.clone();
        change(&mut changed)?;
        changed.write(&self.shared.config.data_dir.join(EPOCHS_FILE))?;
        *history = changed;
        Ok(())
    }

    /// Cuts the log back to `position`, a batch boundary (a replica dropping the tail its new
    /// master does not have): the batches from there on, their index entries and the epochs
    /// that begin there are gone, durably, and the next append lands at `position`. Call it
    /// while nothing is being appended. Blocks on the disk.
    ///
    /// Power-loss safe in this order: everything is flushed and checkpointed first; then the
    /// checkpoint says `position` (recovery scans from there, so a power loss before the cut
    /// finishes finds the old tail again, still described by the epoch history, and the next
    /// reconciliation cuts it again); then the index entries go, then the log bytes (zeroed in
    /// their segment, later segments deleted newest first, each deletion durable, so no gap
    /// can appear), and last the epochs beginning at or past `position`.
    pub fn truncate_to(&self, position: u64) -> Result<Dropped> {
        self.flush()?;
        self.shared.write_checkpoint()?;
        let _quiet = self.shared.hold_flushes();
        let mut state = self.shared.lock_state();
        let end = state.log.write_position();
        let start = state.log.start_position();
        if position < start || position > end {
            return Err(StorageError::PositionOutOfRange {
                from: position,
                start,
                end,
            });
        }
        let mut dropped = describe_tail(&state.log, position, end)?;
        if position == end {
            return Ok(dropped);
        }
        Checkpoint {
            flushed_position: position,
            index_flushed_position: position,
        }
        .write(&self.shared.config.data_dir.join(CHECKPOINT_FILE))?;
        for index in state.indexes.iter_mut() {
            index.truncate_from_position(position)?;
        }
        let made_ahead_stale = state.log.truncate_to(position)?;
        if made_ahead_stale {
            let active_end = state.log.segments().last().expect("never empty").end();
            self.shared.preparer.restart_at(active_end)?;
        }
        self.shared.set_written_and_flushed(position);
        // u64::MAX means no slave's acknowledgement bounds readers: it stays so.
        let _ = self.shared.replicated_position.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |replicated| (replicated != u64::MAX && replicated > position).then_some(position),
        );
        drop(state);
        let mut cut_history = self.shared.lock_epochs().clone();
        if cut_history.truncate_from(position) {
            cut_history.write(&self.shared.config.data_dir.join(EPOCHS_FILE))?;
            *self.shared.lock_epochs() = cut_history;
        }
        dropped.to_position = end;
        Ok(dropped)
    }

    /// Makes an empty log begin at `position`, past its start (a replica whose master's
    /// retention deleted the log before `position`): every queue index is deleted (each begins
    /// again at the queue offset of the first batch appended to it), the one segment moves to
    /// base `position`, then the checkpoint says so. Call it while nothing is being appended.
    /// Blocks on the disk.
    pub fn restart_empty_log_at(&self, position: u64) -> Result<()> {
        self.flush()?;
        let _quiet = self.shared.hold_flushes();
        let mut state = self.shared.lock_state();
        let (start, end) = (state.log.start_position(), state.log.write_position());
        if end != start || position <= start {
            return Err(StorageError::PositionOutOfRange {
                from: position,
                start,
                end,
            });
        }
        let index_dir = self.shared.config.data_dir.join(INDEX_DIR);
        for topic in state.indexes.topics() {
            state.indexes.remove_topic(&topic);
            let dir = index_dir.join(&topic);
            match std::fs::remove_dir_all(&dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io("deleting", &dir)(error))
                }
                _ => {}
            }
        }
        sync_dir(&index_dir)?;
        // The segment made ahead follows the old one: it goes first, durably. (A power loss
        // right after the next one is made, before the rename, leaves two empty segments
        // with a gap between them, which the store refuses to open, naming them: the log is
        // empty, so deleting the slave's data directory loses nothing.)
        let segment_bytes = state.log.segments()[0].file.len();
        self.shared.preparer.restart_at(position + segment_bytes)?;
        state.log.restart_empty_at(position)?;
        self.shared.set_written_and_flushed(position);
        Checkpoint {
            flushed_position: position,
            index_flushed_position: position,
        }
        .write(&self.shared.config.data_dir.join(CHECKPOINT_FILE))
    }

    /// Every (topic, queue) that holds or held data.
    pub fn queues(&self) -> Vec<(String, u32)> {
        self.shared.lock_state().indexes.queues()
    }

    /// Position of the oldest byte the log still keeps.
    pub fn log_start_position(&self) -> u64 {
        self.shared.lock_state().log.start_position()
    }

    /// Position after the last appended batch.
    pub fn end_position(&self) -> u64 {
        self.shared.written_position.load(Ordering::Acquire)
    }

    /// Position below which everything is on disk.
    pub fn flushed_position(&self) -> u64 {
        self.shared.flushed_position.load(Ordering::Acquire)
    }

    /// Flushes everything appended so far and waits for it, whatever the flush mode.
    pub fn flush(&self) -> Result<()> {
        self.flush_to_end().map(|_| ())
    }

    /// Deletes `topic`'s data as far as readers and a later topic of the same name can tell:
    /// indexes no more batches of the name (a replica copying the deleted topic's batches
    /// from its master) until [`Store::set_topic_start`], flushes the log and records in the
    /// checkpoint that everything up to now is indexed (so recovery never scans the topic's
    /// batches again), forgets its indexes and deletes their files. A topic created again
    /// under the name starts empty at offset 0. Its batches stay in the commit log until
    /// retention deletes their segments, never served. Nothing more to do (and no flush) for a
    /// topic without indexes. Blocks on the disk.
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        self.shared.lock_state().indexes.set_start(topic, u64::MAX);
        self.drop_indexes(topic)
    }

    /// Records where the topic now known as `topic` begins in the log (its creation position,
    /// as [`Store::flush_to_end`] gave it on the master): batches of the name below it belong to
    /// an earlier topic and are never indexed. Indexes holding such batches (a deletion that
    /// did not finish) are deleted. Blocks on the disk when there are.
    pub fn set_topic_start(&self, topic: &str, start: u64) -> Result<()> {
        let stale = {
            let mut state = self.shared.lock_state();
            state.indexes.set_start(topic, start);
            state.indexes.holds_an_earlier_topic(topic)
        };
        if stale {
            tracing::warn!(%topic, "deleting the indexes of an earlier topic of this name");
            self.drop_indexes(topic)?;
        }
        Ok(())
    }

    /// Makes the index (its directory and first file) of each of `topic`'s queues below
    /// `queues` that has none yet, all together: a topic's first batches then find their queues
    /// ready instead of each making its own on the thread that appends (four fsyncs each, one
    /// queue at a time, while that thread serves nobody else). A few journal commits for the
    /// whole topic (`Indexes::create_queues`). For a topic whose queues begin at offset 0 (a
    /// master's new topic). Blocks on the disk.
    pub fn prepare_queues(&self, topic: &str, queues: u32) -> Result<()> {
        check_topic_name(topic)?;
        let shared = &self.shared;
        let _one_at_a_time = shared
            .index_creation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let missing: Vec<u32> = {
            let state = shared.lock_state();
            (0..queues)
                .filter(|queue| state.indexes.get(topic, *queue).is_none())
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let made = Indexes::create_queues(
            &shared.config.data_dir,
            topic,
            &missing,
            shared.config.index_entries_per_file,
        )?;
        let mut state = shared.lock_state();
        for (queue, index) in made {
            state.indexes.insert(topic, queue, index);
        }
        Ok(())
    }

    /// Flushes the log up to its end and returns that end: a position the log keeps across a
    /// power loss, where a topic created now begins.
    pub fn flush_to_end(&self) -> Result<u64> {
        self.shared.check_not_fenced()?;
        let end = self.end_position();
        self.shared
            .wait_for_flush(end)
            .blocking_recv()
            .map_err(|_| StorageError::Closed)??;
        Ok(end)
    }

    fn drop_indexes(&self, topic: &str) -> Result<()> {
        if !self.shared.lock_state().indexes.has_topic(topic) {
            return Ok(());
        }
        self.flush()?;
        self.shared.write_checkpoint()?;
        if !self.shared.lock_state().indexes.remove_topic(topic) {
            return Ok(());
        }
        // A crash before this ends leaves files that `forget_topics_except`, or the topic's
        // start, removes at the next open.
        remove_index_dir(&self.shared.config.data_dir, topic)
    }

    /// Deletes the indexes of every topic not in `topics` (the broker's topic list): topics
    /// deleted while a crash interrupted `delete_topic`. Called once at start.
    pub fn forget_topics_except(&self, topics: &[&str]) -> Result<()> {
        let gone: Vec<String> = self
            .shared
            .lock_state()
            .indexes
            .topics()
            .into_iter()
            .filter(|topic| !topics.contains(&topic.as_str()))
            .collect();
        for topic in gone {
            tracing::warn!(%topic, "deleting the indexes of a deleted topic");
            self.delete_topic(&topic)?;
        }
        Ok(())
    }

    /// Deletes whole segments older than `retention_hours` (judged by the time of their last
    /// write) or beyond `retention_bytes`, oldest first, never the one being written; index
    /// files follow. The flusher thread calls this every `retention_check_interval_ms`.
    pub fn enforce_retention(&self, now: SystemTime) -> Result<RetentionReport> {
        self.shared.enforce_retention(now)
    }

    /// Flushes, records a clean shutdown and stops the background threads.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.threads.is_empty() {
            return Ok(());
        }
        flush::stop_threads(&self.shared, std::mem::take(&mut self.threads));
        self.stop_preparer();
        self.shared.check_not_fenced()?;
        let end = self.end_position();
        if self.flushed_position() < end {
            return Err(StorageError::FlushFailed(format!(
                "the final flush stopped at {} of {end}",
                self.flushed_position()
            )));
        }
        self.shared.write_checkpoint()?;
        let abort_path = self.shared.config.data_dir.join(ABORT_FILE);
        std::fs::remove_file(&abort_path).map_err(StorageError::io("deleting", &abort_path))?;
        sync_dir(&self.shared.config.data_dir)?;
        tracing::info!(end_position = end, "closed the store cleanly");
        Ok(())
    }

    /// Why the log refuses writes, once a failed or late fsync fenced it (until restart).
    pub fn fenced_reason(&self) -> Option<String> {
        if !self.shared.fenced.load(Ordering::Acquire) {
            return None;
        }
        let reason = self.shared.fence_reason.lock();
        Some(
            reason
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default(),
        )
    }

    /// Completes once the log is fenced (at once if it is already), so that the broker can say
    /// so at once (its heartbeat) rather than at its next periodic report.
    pub async fn fenced(&self) {
        let signal = self.shared.fence_signal.notified();
        tokio::pin!(signal);
        // Registered before the check, so that a fence between the two still wakes us.
        signal.as_mut().enable();
        if !self.shared.fenced.load(Ordering::Acquire) {
            signal.await;
        }
    }

    /// Flush rounds (fsyncs of the log) since open: under load, far fewer than appends.
    pub fn flush_count(&self) -> u64 {
        self.shared.flush_count.load(Ordering::Relaxed)
    }

    /// Whether the preparer has done all it was asked (tests wait for it).
    #[cfg(test)]
    pub(crate) fn preparer_is_idle(&self) -> bool {
        self.shared.preparer.is_idle()
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> &super::flush::Faults {
        &self.shared.faults
    }

    /// Stops the background threads without recording a clean shutdown, as a killed process
    /// would leave the directory (the page cache keeps what was written).
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        self.shared.flush_queue.lock().unwrap().abandon = true;
        flush::stop_threads(&self.shared, std::mem::take(&mut self.threads));
        self.stop_preparer();
    }

    /// Syncs the indexes and writes the checkpoint now, as the flusher does every interval.
    #[cfg(test)]
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        self.shared.write_checkpoint()
    }

    fn stop_preparer(&mut self) {
        let threads = std::mem::take(&mut self.preparer_threads);
        self.shared.preparer.stop(threads);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "the store did not close cleanly; recovery will run at the next open");
        }
    }
}

impl Shared {
    /// A log cut or restarted at `position`: everything up to it is written and flushed.
    fn set_written_and_flushed(&self, position: u64) {
        self.written_position.store(position, Ordering::Release);
        self.flushed_position.store(position, Ordering::Release);
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-done state that readers could see
        // (positions are published last), so the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_epochs(&self) -> MutexGuard<'_, EpochHistory> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn check_not_fenced(&self) -> Result<()> {
        if self.fenced.load(Ordering::Acquire) {
            let reason = self
                .fence_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(StorageError::Fenced {
                reason: reason.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Refuses every later write: acknowledged data may not be on disk after this.
    pub(crate) fn fence(&self, reason: String) {
        let mut current = self.fence_reason.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none() {
            tracing::error!(%reason, "fencing the commit log: it refuses writes until the broker restarts");
            *current = Some(reason);
        }
        self.fenced.store(true, Ordering::Release);
        drop(current);
        self.fence_signal.notify_waiters();
    }

    /// Holds the flusher and checkpoint writer off while the log is cut or moved under them.
    fn hold_flushes(&self) -> (MutexGuard<'_, ()>, MutexGuard<'_, Option<Checkpoint>>) {
        (
            self.flushing.lock().unwrap_or_else(|p| p.into_inner()),
            self.checkpoint_writing
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Makes the index file the next append to `topic`/`queue` needs (and the queue's index, on
    /// its first append) outside the state lock, so that appends and fetches of other queues go
    /// on meanwhile; one at a time, so that each file is made once. `first_queue_offset`: where
    /// a queue index made new here begins (else at 0).
    fn make_index_file(
        &self,
        topic: &str,
        queue: u32,
        first_queue_offset: Option<u64>,
    ) -> Result<()> {
        let _one_at_a_time = self
            .index_creation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let plan = {
            let mut state = self.lock_state();
            match state.indexes.get_mapped(topic, queue)? {
                Some(index) if !index.needs_file() => {
                    let reserve = index.needs_reserving();
                    drop(state);
                    // The preparer had not reserved the next entries yet: do it now.
                    if let Some((file, end)) = reserve {
                        file.allocate_to(end)?;
                    }
                    return Ok(());
                }
                Some(index) => Some(index.next_file_plan()),
                None => None,
            }
        };
        let (opened, (dir, first, entries_per_file)) = match plan {
            Some(plan) => (None, plan),
            None => {
                let mut index = Indexes::open_queue(
                    &self.config.data_dir,
                    topic,
                    queue,
                    self.config.index_entries_per_file,
                )?;
                if let Some(first) = first_queue_offset.filter(|_| !index.has_files()) {
                    index.start_at(first);
                }
                let plan = index.next_file_plan();
                (Some(index), plan)
            }
        };
        let file = IndexFile::create(&dir, first, entries_per_file)?;
        let mut state = self.lock_state();
        if let Some(index) = opened {
            state.indexes.insert(topic, queue, index);
        }
        state
            .indexes
            .get_mut(topic, queue)
            .expect("inserted or present")
            .add_file(file);
        Ok(())
    }

    /// Registers a wait until `end` is flushed and wakes the flusher.
    fn wait_for_flush(&self, end: u64) -> oneshot::Receiver<Result<()>> {
        let (done, flushed) = oneshot::channel();
        let mut queue = self.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.waiters.push(Waiter { end, done });
        drop(queue);
        self.flush_wakeup.notify_one();
        flushed
    }

    /// Writes every log byte in `[flushed_position, to)` to disk.
    pub(crate) fn flush_log_to(&self, to: u64) -> std::io::Result<()> {
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        // A truncation may have moved the end back since `to` was read.
        let to = to.min(self.written_position.load(Ordering::Acquire));
        let from = self.flushed_position.load(Ordering::Acquire);
        if to <= from {
            return Ok(());
        }
        let ranges = self.lock_state().log.ranges(from, to);
        #[cfg(test)]
        self.faults.before_sync()?;
        for (file, offset, len) in ranges {
            file.sync_range(offset, len)?;
        }
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        self.flushed_position.fetch_max(to, Ordering::AcqRel);
        Ok(())
    }

    /// See [`Store::enforce_retention`].
    pub(crate) fn enforce_retention(&self, now: SystemTime) -> Result<RetentionReport> {
        let max_age = Duration::from_secs(self.config.retention_hours * 3600);
        let mut deleted = Vec::new();
        let mut state = self.lock_state();
        let mut report = RetentionReport {
            segments_deleted: 0,
            log_start_position: state.log.start_position(),
        };
        while let Some(oldest) = state.log.segments().first().cloned() {
            if state.log.segments().len() < 2 {
                break;
            }
            let modified = std::fs::metadata(oldest.file.path())
                .and_then(|m| m.modified())
                .map_err(StorageError::io("reading metadata of", oldest.file.path()))?;
            let too_old = now.duration_since(modified).is_ok_and(|age| age > max_age);
            let too_big = self.config.retention_bytes > 0
                && state.log.size_bytes() > self.config.retention_bytes;
            if !too_old && !too_big {
                break;
            }
            let Some((start, segment)) = state.log.delete_oldest() else {
                break;
            };
            deleted.push(segment);
            for index in state.indexes.iter_mut() {
                deleted.extend(index.delete_before_position(start));
            }
            report.segments_deleted += 1;
            report.log_start_position = start;
        }
        drop(state);
        if report.segments_deleted > 0 {
            // Recovery rebuilds indexes only from the log it still has: the index entries of the
            // deleted segments' batches must be on disk before the deletion can be, or a power
            // loss leaves a queue's index short of the batches that follow them (a gap recovery
            // refuses). On failure the files stay until retention runs after a restart.
            self.write_checkpoint()?;
        }
        // Unlinking a large file takes the file system a while: not under the lock. Oldest
        // first, each made durable before the next: a power loss must not keep an older segment
        // while a newer one is gone (a gap in the log, which recovery refuses).
        for path in deleted {
            std::fs::remove_file(&path).map_err(StorageError::io("deleting", &path))?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            tracing::info!(file = %path.display(), "deleted for retention");
        }
        Ok(report)
    }

    /// Syncs the indexes, then records the flushed positions in the checkpoint. One at a time:
    /// the flusher, retention and topic deletion all write it, through the same temporary file.
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        let mut last_written = self
            .checkpoint_writing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (index_end, unsynced) = {
            let state = self.lock_state();
            let index_end = state.log.write_position();
            // Only the indexes written since their last sync (of 10,000 queues, often few).
            let unsynced: Vec<_> = state
                .indexes
                .iter()
                .filter_map(|(topic, queue, index)| {
                    let (files, mark) = index.unsynced_files();
                    (!files.is_empty()).then(|| (topic.to_owned(), queue, files, mark))
                })
                .collect();
            (index_end, unsynced)
        };
        for (file, used) in unsynced.iter().flat_map(|(_, _, files, _)| files) {
            file.sync_range(0, *used)
                .map_err(StorageError::io("syncing", file.path()))?;
        }
        // Marked only once every sync succeeded: a failed one is done again at the next try.
        // Then the least recently used synced indexes beyond the bound are unmapped (the maps
        // dropped, which unmaps them, after the lock is let go).
        let unmapped = {
            let mut state = self.lock_state();
            for (topic, queue, _, mark) in &unsynced {
                if let Some(index) = state.indexes.get_mut(topic, *queue) {
                    index.mark_synced(*mark);
                }
            }
            state
                .indexes
                .unmap_least_used(self.config.max_mapped_index_files)
        };
        drop(unmapped);
        let checkpoint = Checkpoint {
            flushed_position: self.flushed_position.load(Ordering::Acquire),
            index_flushed_position: index_end,
        };
        if *last_written == Some(checkpoint) {
            return Ok(()); // the file says this already
        }
        checkpoint.write(&self.config.data_dir.join(CHECKPOINT_FILE))?;
        *last_written = Some(checkpoint);
        Ok(())
    }
}

/// The epoch history of the data directory, without the epochs beginning past the log's `end`
/// (recovery cut what they described).
fn open_epochs(dir: &Path, end: u64) -> Result<EpochHistory> {
    let mut history = EpochHistory::read(&dir.join(EPOCHS_FILE))?;
    if history.truncate_from(end + 1) {
        history.write(&dir.join(EPOCHS_FILE))?;
    }
    Ok(history)
}

/// Walks the batches of `[from, end)` (following roll markers), checking that `from` is a batch
/// boundary, and counts them.
fn describe_tail(log: &CommitLog, from: u64, end: u64) -> Result<Dropped> {
    let mut dropped = Dropped {
        from_position: from,
        to_position: from,
        ..Dropped::default()
    };
    let not_boundary = |reason: String| StorageError::NotABatchBoundary {
        position: from,
        reason,
    };
    let mut at = from;
    while at < end {
        let segment = log
            .segment_at(at)
            .ok_or_else(|| not_boundary(format!("no segment holds position {at}")))?;
        if at + 4 > segment.end() {
            at = segment.end();
            continue;
        }
        let length = log
            .bytes_at(at, 4)
            .map(|field| u32::from_be_bytes(field[..].try_into().expect("4 bytes")))
            .expect("inside the segment");
        if length == ROLL_MARKER {
            at = segment.end();
            continue;
        }
        let size = 4 + u64::from(length);
        let batch = (at + size <= segment.end())
            .then(|| log.bytes_at(at, size as usize))
            .flatten()
            .ok_or_else(|| not_boundary(format!("the length at {at} runs past its segment")))?;
        let view = BatchView::parse_with_limit(&batch, usize::MAX)
            .map_err(|error| not_boundary(format!("no valid batch at {at}: {error}")))?;
        dropped.batches += 1;
        dropped.messages += u64::from(view.message_count());
        if dropped.epochs.last() != Some(&view.master_epoch()) {
            dropped.epochs.push(view.master_epoch());
        }
        at += size;
    }
    if at != end {
        return Err(not_boundary(format!(
            "the batches from it end at {at}, not at the log's end {end}"
        )));
    }
    Ok(dropped)
}

/// Takes an exclusive flock on the directory's LOCK file.
/// Deletes the index files of every queue of `topic`, durably.
fn remove_index_dir(data_dir: &Path, topic: &str) -> Result<()> {
    let dir = data_dir.join(INDEX_DIR).join(topic);
    match std::fs::remove_dir_all(&dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io("deleting", &dir)(error))
        }
        _ => sync_dir(&data_dir.join(INDEX_DIR)),
    }
}

fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::create(&path).map_err(StorageError::io("creating", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(StorageError::io("locking", &path)(error)),
    }
}
