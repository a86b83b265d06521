//! The storage engine: one segmented, memory-mapped commit log per broker shared by every topic
//! and queue, per-queue indexes, group-commit or periodic flush, crash recovery and retention.
//! It does no networking; the broker's handlers call [`Store`].

mod atomic_file;
mod checkpoint;
mod commit_log;
mod config;
mod disk_space;
mod durability;
mod epochs;
mod error;
mod file_names;
mod flush;
mod indexes;
#[cfg(test)]
mod power_loss;
mod preparer;
mod queue_index;
mod recovery;
mod segment;
mod store;

pub use atomic_file::write_atomically;
pub use config::{
    FlushMode, StoreConfig, StoreConfigError, INDEX_ENTRIES_PER_FILE_MIN,
    MAX_MAPPED_INDEX_FILES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use disk_space::used_percent;
pub use epochs::{epoch_at, EpochEntry, EpochHistory};
pub use error::StorageError;
pub use file_names::check_topic_name;
pub use recovery::{RecoveryReport, Truncation};
pub use store::{
    AppendReceipt, Appended, Dropped, FlushWait, LogChunk, ReadResult, RetentionReport, Store,
};

#[cfg(test)]
mod power_loss_tests;
#[cfg(test)]
mod tests;
