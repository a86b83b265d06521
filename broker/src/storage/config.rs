//! The storage engine's settings: every size and duration carries its unit, a default and a bound.

use std::path::PathBuf;

use smq_protocol::limits::{MAX_BATCH_BYTES_DEFAULT, MAX_MESSAGE_BYTES_DEFAULT};

/// When appended bytes are made durable (`--flush sync|async`, `flush = "async"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Group commit: an append is acknowledged only after an fsync that covers it.
    Sync,
    /// Flush every `flush_interval_ms` and on close; an append is acknowledged once in the page cache.
    Async,
}

/// Settings of one broker's store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Size of every commit-log segment file; 1 GiB by default, at least `SEGMENT_BYTES_MIN`.
    pub segment_bytes: u64,
    /// Entries (one per batch) in each queue-index file.
    pub index_entries_per_file: u32,
    pub flush: FlushMode,
    /// Async mode: how often dirty log bytes are flushed. Both modes: how often indexes and the
    /// checkpoint are.
    pub flush_interval_ms: u64,
    /// Sync mode: an fsync slower than this fails the appends it covers and fences the log.
    pub flush_timeout_ms: u64,
    /// Segments whose last write is older than this are deleted.
    pub retention_hours: u64,
    /// How often the flusher thread applies retention.
    pub retention_check_interval_ms: u64,
    /// When the log is larger than this, its oldest segments are deleted; 0 = no size limit.
    pub retention_bytes: u64,
    /// Appends fail while the data directory's file system is fuller than this percentage.
    pub disk_usage_watermark_percent: u8,
    /// Largest message accepted in a batch.
    pub max_message_bytes: usize,
    /// Largest batch the broker accepts; also how far past the end of the log recovery reads to
    /// report what a torn tail held (it zeroes the rest of the segment without reading it).
    pub max_batch_bytes: usize,
    /// Queue-index files kept mapped at most, beyond those written since their last sync: the
    /// least recently used are unmapped at each flush and mapped again when next used.
    pub max_mapped_index_files: usize,
}

/// Default of `max_mapped_index_files`: half the kernel's default `vm.max_map_count` (65,530
/// memory maps a process), leaving the rest for segments, libraries and threads.
pub const MAX_MAPPED_INDEX_FILES_DEFAULT: usize = 32_768;

/// Smallest segment size accepted: small enough for tests that roll often.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest segment size accepted: positions inside a segment stay far below `u32::MAX` in indexes.
pub const SEGMENT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024 - 1;

impl StoreConfig {
    /// Defaults as documented in README.md: 1 GiB segments, sync flush, 500 ms interval, 5 s
    /// flush timeout, 72 h retention, 90% disk watermark, 4 MiB messages.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            segment_bytes: 1024 * 1024 * 1024,
            index_entries_per_file: 131_072,
            flush: FlushMode::Sync,
            flush_interval_ms: 500,
            flush_timeout_ms: 5_000,
            retention_hours: 72,
            retention_bytes: 0,
            retention_check_interval_ms: 60_000,
            disk_usage_watermark_percent: 90,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            max_mapped_index_files: MAX_MAPPED_INDEX_FILES_DEFAULT,
        }
    }

    /// Checks every bound; the message names the setting and its allowed range.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(StoreConfigError::SegmentBytes {
                segment_bytes: self.segment_bytes,
            });
        }
        if self.index_entries_per_file < INDEX_ENTRIES_PER_FILE_MIN {
            return Err(StoreConfigError::IndexEntriesPerFile {
                index_entries_per_file: self.index_entries_per_file,
            });
        }
        if self.flush_interval_ms == 0 || self.flush_timeout_ms == 0 {
            return Err(StoreConfigError::FlushZero {
                flush_interval_ms: self.flush_interval_ms,
                flush_timeout_ms: self.flush_timeout_ms,
            });
        }
        if !(1..=100).contains(&self.disk_usage_watermark_percent) {
            return Err(StoreConfigError::DiskUsageWatermark {
                percent: self.disk_usage_watermark_percent,
            });
        }
        Ok(())
    }
}

/// Fewest entries a queue-index file may hold.
pub const INDEX_ENTRIES_PER_FILE_MIN: u32 = 16;

/// A store setting outside its bounds; the message names the setting and its allowed range.
///
/// ```
/// use smq_broker::storage::{StoreConfig, StoreConfigError};
///
/// let mut config = StoreConfig::new("/tmp/smq-data");
/// config.segment_bytes = 1;
/// assert_eq!(config.validate(), Err(StoreConfigError::SegmentBytes { segment_bytes: 1 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreConfigError {
    #[error("segment_bytes {segment_bytes} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}")]
    SegmentBytes { segment_bytes: u64 },
    #[error("index_entries_per_file must be at least {INDEX_ENTRIES_PER_FILE_MIN}")]
    IndexEntriesPerFile { index_entries_per_file: u32 },
    #[error("flush_interval_ms and flush_timeout_ms must be above 0")]
    FlushZero {
        flush_interval_ms: u64,
        flush_timeout_ms: u64,
    },
    #[error("disk_usage_watermark_percent must be within 1..=100")]
    DiskUsageWatermark { percent: u8 },
    #[error("path {} contains NUL", path.display())]
    PathContainsNul { path: PathBuf },
}
