//! What can go wrong in the store, with the facts a caller needs and what to do about it.

use std::path::PathBuf;

use smq_protocol::record_batch::BatchError;

use super::config::StoreConfigError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("the batch is for {batch_topic}/{batch_queue} but the request names {topic}/{queue}: a producer bug")]
    BatchTopicMismatch {
        batch_topic: String,
        batch_queue: u32,
        topic: String,
        queue: u32,
    },
    #[error("invalid store configuration: {0}")]
    InvalidConfig(#[from] StoreConfigError),
    #[error(
        "invalid topic name {name:?}: use 1 to 249 characters of [A-Za-z0-9._-], not '.' or '..'"
    )]
    InvalidTopicName { name: String },
    #[error("batch of {batch_bytes} bytes cannot fit in a segment of {segment_bytes} bytes: send smaller batches or raise segment_bytes")]
    BatchTooLarge {
        batch_bytes: usize,
        segment_bytes: u64,
    },
    #[error("disk full: {path} is {used_percent}% used, above the {watermark_percent}% watermark; appends resume by themselves below it: free space, lower retention or raise the watermark")]
    DiskFull {
        path: PathBuf,
        used_percent: u8,
        watermark_percent: u8,
    },
    #[error("the log refuses writes since {reason}; reads still work; restart the broker once the disk is healthy")]
    Fenced { reason: String },
    #[error("fsync failed, the append was not made durable: {0}")]
    FlushFailed(String),
    #[error(
        "fsync took longer than flush_timeout_ms ({timeout_ms} ms), the append is not acknowledged"
    )]
    FlushTimeout { timeout_ms: u64 },
    #[error("queue offset {requested} of {topic}/{queue} is out of range: earliest {earliest}, next {next}")]
    OffsetOutOfRange {
        topic: String,
        queue: u32,
        requested: u64,
        earliest: u64,
        next: u64,
    },
    #[error("corrupt commit log at position {position} in {path}: {reason}; data after it was acknowledged, so it is not truncated: restore the data directory from a replica")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "data directory {path} is in use by another process: stop it or choose another --data-dir"
    )]
    Locked { path: PathBuf },
    #[error("the replicated batch of {topic}/{queue} at log position {position} (queue offset {base_queue_offset}) would land at {lands_at} (next queue offset {next_queue_offset}): this replica's log has diverged from its master's")]
    ReplicaDiverged {
        topic: String,
        queue: u32,
        position: u64,
        lands_at: u64,
        base_queue_offset: u64,
        next_queue_offset: u64,
    },
    #[error(
        "the batch for log position {position} carries master epoch {batch_epoch}, but the \
         epoch history says epoch {epoch} writes there: the replicas have diverged"
    )]
    EpochMismatch {
        position: u64,
        batch_epoch: u32,
        epoch: u32,
    },
    #[error("cannot record the epoch history: {0}")]
    EpochHistory(String),
    #[error("cannot truncate the log at {position}: {reason}")]
    NotABatchBoundary { position: u64, reason: String },
    #[error("log position {from} is outside the log [{start}, {end}]")]
    PositionOutOfRange { from: u64, start: u64, end: u64 },
    #[error("the store is closed")]
    Closed,
}

impl StorageError {
    /// An `Io` error for `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
