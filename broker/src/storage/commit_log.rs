//! The commit log: the ordered list of segment files every topic and queue append to, the write
//! position, rolling to a new segment, and deleting whole segments for retention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::error::{Result, StorageError};
use super::file_names::{
    offset_name, parse_offset_name, segment_path, COMMIT_LOG_DIR, TEMP_SUFFIX,
};
use super::preparer::{Preparer, LOG_READ_AHEAD_BYTES, LOG_READ_AHEAD_STEP_BYTES};
use super::segment::{create_dir_durably, sync_dir, MappedFile, SharedFile};

/// The length field written where a segment's last batch ends when the log rolls to the next
/// segment: the rest of this segment is empty, the log goes on in the next one (proto-spec §2).
/// No batch can have this length (a segment is below 4 GiB).
pub const ROLL_MARKER: u32 = u32::MAX;

/// One segment: a mapped file holding the log positions `[base, base + len)`.
#[derive(Clone)]
pub struct Segment {
    pub base: u64,
    pub file: SharedFile,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.base + self.file.len()
    }
}

pub struct CommitLog {
    segment_bytes: u64,
    /// Sorted by base; each starts where the previous one ends. Never empty.
    segments: Vec<Segment>,
    /// Position where the next batch goes.
    write_position: u64,
    /// Makes the next segment and reads pages into memory ahead of the write position.
    preparer: Arc<Preparer>,
    /// Position up to which the preparer was asked to read the active segment's pages ahead.
    read_ahead_requested_to: u64,
    /// The write position last told to the preparer (which prepares near ranges first); `None`
    /// tells it at the next append.
    position_told: Option<u64>,
}

/// Where a reserved batch is to be written.
pub struct Reservation {
    pub file: SharedFile,
    pub offset_in_file: u64,
    pub position: u64,
}

impl CommitLog {
    /// Opens the segments in `<data_dir>/commitlog` (creating the first if there is none) and
    /// deletes files a crash left half-created. The write position is the log's start until
    /// recovery sets it.
    pub fn open(data_dir: &Path, segment_bytes: u64, preparer: Arc<Preparer>) -> Result<CommitLog> {
        let dir = &data_dir.join(COMMIT_LOG_DIR);
        create_dir_durably(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))? {
            let entry = entry.map_err(StorageError::io("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_SUFFIX) {
                tracing::warn!(file = %entry.path().display(), "deleting a segment left half-created by a crash");
                std::fs::remove_file(entry.path())
                    .map_err(StorageError::io("deleting", entry.path()))?;
            } else if let Some(base) = parse_offset_name(&name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        for base in bases {
            let path = segment_path(data_dir, base);
            let file = Arc::new(MappedFile::open(&path)?);
            if let Some(previous) = segments.last() {
                let previous: &Segment = previous;
                if previous.end() != base {
                    return Err(StorageError::Corrupt {
                        path,
                        position: base,
                        reason: format!(
                            "segment starts at {base} but the previous one ends at {}",
                            previous.end()
                        ),
                    });
                }
            }
            segments.push(Segment { base, file });
        }
        if segments.is_empty() {
            let file = MappedFile::create(&segment_path(data_dir, 0), segment_bytes)?;
            segments.push(Segment {
                base: 0,
                file: Arc::new(file),
            });
        }
        let write_position = segments[0].base;
        Ok(CommitLog {
            segment_bytes,
            segments,
            write_position,
            preparer,
            read_ahead_requested_to: write_position,
            position_told: None,
        })
    }

    /// Position of the oldest byte still kept.
    pub fn start_position(&self) -> u64 {
        self.segments[0].base
    }

    pub fn write_position(&self) -> u64 {
        self.write_position
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file.len()).sum()
    }

    /// Sets the write position found by recovery and drops the segments after it: the one made
    /// ahead of need, or, after a power loss, one holding only unflushed writes.
    pub fn set_write_position(&mut self, position: u64) -> Result<()> {
        assert!(position >= self.start_position());
        while self.segments.len() > 1 && self.segments.last().expect("not empty").base > position {
            let empty = self.segments.pop().expect("not empty");
            tracing::info!(file = %empty.file.path().display(), "deleting a segment after the end of the log (made ahead, or holding only unflushed writes)");
            std::fs::remove_file(empty.file.path())
                .map_err(StorageError::io("deleting", empty.file.path()))?;
        }
        assert!(position <= self.segments.last().expect("not empty").end());
        self.write_position = position;
        self.restart_read_ahead(position);
        Ok(())
    }

    /// Cuts the log back to `position` (a batch boundary below the write position): zeroes the
    /// rest of its segment durably, then deletes the later segments newest first, each deletion
    /// durable before the next (a power loss never leaves a gap). Returns whether segments were
    /// deleted: the one made ahead then follows the wrong segment.
    pub fn truncate_to(&mut self, position: u64) -> Result<bool> {
        assert!(position >= self.start_position() && position <= self.write_position);
        let keep = self
            .segments
            .partition_point(|segment| segment.base <= position)
            .max(1);
        let segment = &self.segments[keep - 1];
        segment.file.zero_to_end(position - segment.base)?;
        let deleted = keep < self.segments.len();
        while self.segments.len() > keep {
            let later = self.segments.pop().expect("more than kept");
            std::fs::remove_file(later.file.path())
                .map_err(StorageError::io("deleting", later.file.path()))?;
            if let Some(dir) = later.file.path().parent() {
                sync_dir(dir)?;
            }
        }
        self.write_position = position;
        self.restart_read_ahead(position);
        Ok(deleted)
    }

    /// Moves an empty log to begin at `position` (a replica whose master no longer holds the
    /// log before it): the one segment, all zeros, is renamed to that base, durably. A power
    /// loss leaves it either where it was or at `position`, empty either way.
    pub fn restart_empty_at(&mut self, position: u64) -> Result<()> {
        assert!(
            self.segments.len() == 1
                && self.write_position == self.start_position()
                && position > self.start_position()
        );
        let old = self.segments.pop().expect("one segment");
        let from = old.file.path().to_owned();
        let to = from.with_file_name(offset_name(position));
        drop(old);
        std::fs::rename(&from, &to).map_err(StorageError::io("renaming", &from))?;
        if let Some(dir) = to.parent() {
            sync_dir(dir)?;
        }
        self.segments.push(Segment {
            base: position,
            file: Arc::new(MappedFile::open(&to)?),
        });
        self.write_position = position;
        self.restart_read_ahead(position);
        Ok(())
    }

    /// Asks the preparer to make the pages ahead of the write position ready, at start (the
    /// active segment told first where the writer is, so that no zeros are written within the
    /// preparer's margin of it).
    pub fn read_ahead(&mut self) {
        let active = self.segments.last().expect("never empty");
        active.file.begin_write(self.write_position - active.base);
        self.request_read_ahead(self.write_position);
    }

    /// Every `LOG_READ_AHEAD_STEP_BYTES`, tells the preparer the write position `end` and asks
    /// it to keep `LOG_READ_AHEAD_BYTES` ahead of it in the active segment (past the segment's
    /// end, the segment made ahead had its first pages asked for when it was made).
    fn request_read_ahead(&mut self, end: u64) {
        if self
            .position_told
            .is_some_and(|told| end < told + LOG_READ_AHEAD_STEP_BYTES)
        {
            return;
        }
        self.position_told = Some(end);
        let active = self.segments.last().expect("never empty");
        let from = self.read_ahead_requested_to.max(end).min(active.end());
        let to = (end + LOG_READ_AHEAD_BYTES).min(active.end()).max(from);
        self.preparer
            .read_log_ahead(active, from - active.base, to - from, end);
        self.read_ahead_requested_to = to;
    }

    /// Read-ahead starts again from `requested_to`, the write position told at the next append.
    fn restart_read_ahead(&mut self, requested_to: u64) {
        self.read_ahead_requested_to = requested_to;
        self.position_told = None;
    }

    /// The segment holding `position`, if any.
    pub fn segment_at(&self, position: u64) -> Option<&Segment> {
        let index = self.segments.partition_point(|s| s.end() <= position);
        self.segments.get(index).filter(|s| s.base <= position)
    }

    /// Where [`CommitLog::reserve`] would put a batch of `len` bytes: the write position, or
    /// the next segment's start when it does not fit in the rest of this one.
    pub fn position_for(&self, len: usize) -> u64 {
        let active = self.segments.last().expect("never empty");
        if self.write_position + len as u64 > active.end() {
            active.end()
        } else {
            self.write_position
        }
    }

    /// Reserves `len` bytes for one batch at the write position, rolling to a new segment when
    /// the batch does not fit in the rest of the current one. A batch never spans two segments.
    pub fn reserve(&mut self, len: usize) -> Result<Reservation> {
        let len = len as u64;
        let active = self.segments.last().expect("never empty").clone();
        if self.write_position + len > active.end() {
            if len > self.segment_bytes
                || len > active.file.len() && self.write_position == active.base
            {
                return Err(StorageError::BatchTooLarge {
                    batch_bytes: len as usize,
                    segment_bytes: self.segment_bytes,
                });
            }
            let base = active.end();
            let (segment, read_ahead_bytes) = self.preparer.take_next_segment(base)?;
            let offset = self.write_position - active.base;
            if active.file.len() - offset >= 4 {
                active.file.begin_write(offset + 4);
                // SAFETY: past the published end, under the writer lock (`&mut self`).
                unsafe { active.file.bytes_mut(offset, 4) }
                    .copy_from_slice(&ROLL_MARKER.to_be_bytes());
            }
            tracing::debug!(segment = %segment.file.path().display(), "rolled to a new segment");
            self.segments.push(segment);
            self.write_position = base;
            self.restart_read_ahead(base + read_ahead_bytes);
        }
        let active = self.segments.last().expect("never empty");
        let reservation = Reservation {
            file: active.file.clone(),
            offset_in_file: self.write_position - active.base,
            position: self.write_position,
        };
        self.write_position += len;
        self.request_read_ahead(self.write_position);
        Ok(reservation)
    }

    /// The published bytes `[position, position + len)`, without copying: the returned `Bytes`
    /// keeps the segment's mapping alive even if retention deletes the file meanwhile.
    pub fn bytes_at(&self, position: u64, len: usize) -> Option<Bytes> {
        let segment = self.segment_at(position)?;
        let offset = position - segment.base;
        if offset + len as u64 > segment.file.len() {
            return None;
        }
        Some(Bytes::from_owner(MappedSlice {
            file: segment.file.clone(),
            offset,
            len,
        }))
    }

    /// The parts of segments that hold positions `[from, to)`, for flushing.
    pub fn ranges(&self, from: u64, to: u64) -> Vec<(SharedFile, u64, u64)> {
        self.segments
            .iter()
            .filter(|s| s.end() > from && s.base < to)
            .map(|s| {
                let start = from.max(s.base) - s.base;
                let end = to.min(s.end()) - s.base;
                (s.file.clone(), start, end - start)
            })
            .collect()
    }

    /// Forgets the oldest segment if it is not the one being written; returns the new start and
    /// the file's path, for the caller to delete outside the store's lock.
    pub fn delete_oldest(&mut self) -> Option<(u64, PathBuf)> {
        if self.segments.len() < 2 {
            return None;
        }
        let oldest = self.segments.remove(0);
        Some((self.start_position(), oldest.file.path().to_owned()))
    }
}

/// A slice of a mapped file that owns a reference to it.
struct MappedSlice {
    file: SharedFile,
    offset: u64,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        self.file.bytes(self.offset, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_log(dir: &Path, segment_bytes: u64) -> CommitLog {
        CommitLog::open(dir, segment_bytes, Preparer::new(dir, segment_bytes)).unwrap()
    }

    #[test]
    fn segment_rolls_exactly_at_its_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open_log(dir.path(), 64 * 1024);
        let first = log.reserve(64 * 1024 - 100).unwrap();
        assert_eq!(first.position, 0);
        // Exactly fills the segment: no roll.
        let second = log.reserve(100).unwrap();
        assert_eq!(second.position, 64 * 1024 - 100);
        assert_eq!(log.segments().len(), 1);
        // One more byte does not fit: roll, named by its start position.
        let third = log.reserve(1).unwrap();
        assert_eq!(third.position, 64 * 1024);
        assert_eq!(third.offset_in_file, 0);
        assert_eq!(log.segments().len(), 2);
        assert!(dir.path().join("commitlog/00000000000000065536").exists());
    }

    #[test]
    fn a_batch_that_does_not_fit_skips_the_rest_of_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open_log(dir.path(), 64 * 1024);
        log.reserve(60 * 1024).unwrap();
        let next = log.reserve(8 * 1024).unwrap();
        assert_eq!(next.position, 64 * 1024);
        assert_eq!(log.write_position(), 72 * 1024);
    }

    #[test]
    fn a_batch_larger_than_a_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open_log(dir.path(), 64 * 1024);
        let error = log.reserve(64 * 1024 + 1).err().unwrap();
        assert!(
            matches!(error, StorageError::BatchTooLarge { .. }),
            "{error}"
        );
        assert_eq!(log.write_position(), 0);
    }

    #[test]
    fn segments_are_found_by_position_and_reopened_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open_log(dir.path(), 64 * 1024);
        for _ in 0..5 {
            log.reserve(40 * 1024).unwrap();
        }
        assert_eq!(log.segment_at(0).unwrap().base, 0);
        assert_eq!(log.segment_at(65535).unwrap().base, 0);
        assert_eq!(log.segment_at(65536).unwrap().base, 65536);
        assert!(log.segment_at(5 * 65536).is_none());
        drop(log);
        let log = open_log(dir.path(), 64 * 1024);
        let bases: Vec<u64> = log.segments().iter().map(|s| s.base).collect();
        assert_eq!(bases, vec![0, 65536, 131072, 196608, 262144]);
    }
}
