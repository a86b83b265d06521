//! Recovery on open: after an unclean shutdown, scan the log from the last checkpoint, verify every
//! batch's CRC, re-index what is valid and truncate a torn tail; refuse to truncate acknowledged
//! data in the middle of the log.
//!
//! # How recovery decides
//!
//! An `abort` file exists while a store is open. Without it, the store trusts the checkpoint's end.
//! With it (a crash), it truncates every index back to `min(flushed, index_flushed)` from the
//! checkpoint, scans the log from there verifying each batch, re-indexes what is valid, follows roll
//! markers to the next segment, and stops at the first zero length or invalid batch. Below the
//! checkpoint's flushed position either is corruption and the store refuses to open (`Corrupt`).
//! At or above it, it is the end of the log whatever follows: after a power loss the unflushed
//! pages reach the disk in any order, so valid-looking batches, or a next segment with data whose
//! roll marker's page was lost, may follow; none of it was flushed, so none was acknowledged under
//! sync flush. The rest of the segment is zeroed without reading it (fallocate ZERO_RANGE), later
//! segments are deleted, and a warning names what the first `max_batch_bytes` past the end showed.
//! Only when there is no checkpoint at all (nothing says what was flushed) does a valid batch after
//! an invalid one, or a next segment with data, mean corruption (or a lost roll marker: the scan
//! goes on there). Whatever recovery keeps past the checkpoint is synced before the new checkpoint
//! records it.
//!
//! Index files are counted at open by a linear continuity check: entries from the first slot while
//! each goes on from the one before (its queue offset where the previous one ended, its batch after
//! the previous one's), up to the first free or discontinuous slot, not a binary search for a free
//! slot: after a power loss a later page of entries can be on disk without an earlier one. Whatever
//! non-zero bytes lie past the entries (found with SEEK_DATA, reading only what the file system
//! holds as data) are punched out and synced, so that stale entries never line up with later ones.
//! A checkpoint at position 0 is a checkpoint (nothing was flushed), not a missing one.

use smq_protocol::record_batch::{total_len, BatchView, FIXED_HEADER_BYTES};

use super::checkpoint::Checkpoint;
use super::commit_log::{CommitLog, Segment, ROLL_MARKER};
use super::config::StoreConfig;
use super::error::{Result, StorageError};
use super::file_names::check_topic_name;
use super::indexes::Indexes;
use super::queue_index::IndexEntry;

/// What recovery found and did; logged by the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub clean: bool,
    pub scanned_from: u64,
    pub end_position: u64,
    pub batches_indexed: u64,
    pub truncated: Option<Truncation>,
}

/// Bytes dropped from the tail of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub from_position: u64,
    pub to_position: u64,
    pub bytes: u64,
    /// Length-prefixed records found in the dropped range (a torn batch counts as one).
    pub batches: u64,
    pub reason: String,
}

/// Finds the end of the log and brings the indexes up to it; `checkpoint` is `None` when there
/// is none (nothing says what was flushed).
pub fn recover(
    log: &mut CommitLog,
    indexes: &mut Indexes,
    checkpoint: Option<Checkpoint>,
    clean: bool,
    config: &StoreConfig,
) -> Result<RecoveryReport> {
    let recorded = checkpoint.is_some();
    let checkpoint = checkpoint.unwrap_or_default();
    let max_message_bytes = config.max_message_bytes;
    let tail_scan_bytes = config.max_batch_bytes as u64;
    let log_start = log.start_position();
    let last = log.segments().last().expect("never empty");
    let claimed = checkpoint
        .flushed_position
        .max(checkpoint.index_flushed_position);
    if claimed > last.end() {
        // Found by the store_recovery fuzz target (a panic before): acknowledged bytes are gone.
        return Err(StorageError::Corrupt {
            path: last.file.path().to_owned(),
            position: last.end(),
            reason: format!(
                "the checkpoint says the log was flushed up to {claimed}, but its segments end \
                 at {}: a segment file was cut short or deleted",
                last.end()
            ),
        });
    }
    if clean && checkpoint.flushed_position >= log_start && checkpoint.flushed_position > 0 {
        log.set_write_position(checkpoint.flushed_position)?;
        return Ok(RecoveryReport {
            clean: true,
            scanned_from: checkpoint.flushed_position,
            end_position: checkpoint.flushed_position,
            ..RecoveryReport::default()
        });
    }
    let scanned_from = checkpoint
        .flushed_position
        .min(checkpoint.index_flushed_position)
        .max(log_start);
    for index in indexes.iter_mut() {
        index.truncate_from_position(scanned_from)?;
    }
    let mut report = RecoveryReport {
        clean,
        scanned_from,
        ..RecoveryReport::default()
    };
    let mut position = scanned_from;
    let segments: Vec<Segment> = log.segments().to_vec();
    let mut number = segments.partition_point(|s| s.end() <= position);
    while number < segments.len() {
        let segment = &segments[number];
        let has_next = number + 1 < segments.len();
        match scan_one(segment, position, max_message_bytes) {
            Scan::Batch(view_len) => {
                let bytes = segment.file.bytes(position - segment.base, view_len);
                let view = BatchView::parse_with_limit(bytes, max_message_bytes)
                    .expect("scan_one validated it");
                if index_batch(indexes, &view, position, log)? {
                    report.batches_indexed += 1;
                }
                position += view_len as u64;
            }
            Scan::Rolled if has_next => {
                number += 1;
                position = segments[number].base;
            }
            Scan::Rolled => {
                // The next segment was made and lost before anything was written to it.
                position = segment.end();
                break;
            }
            Scan::Zero if !recorded && has_next && starts_with_data(&segments[number + 1]) => {
                // No checkpoint says what was flushed, and the next segment holds data: its roll
                // marker's page was lost, the rest may be acknowledged. Go on there.
                number += 1;
                position = segments[number].base;
            }
            Scan::Zero => {
                // The end of the log. Past the flushed position anything may follow: pages reach
                // the disk in any order, so after a power loss a later page (even of the next
                // segment, whose roll marker was lost) can be there without an earlier one. None
                // of it was flushed, so none of it was acknowledged under sync flush: it goes.
                if position < checkpoint.flushed_position {
                    return Err(StorageError::Corrupt {
                        path: segment.file.path().to_owned(),
                        position,
                        reason: format!(
                            "zeros where a batch should be, but the checkpoint says the log was \
                             flushed up to {}",
                            checkpoint.flushed_position
                        ),
                    });
                }
                report.truncated = cut_tail(
                    segment,
                    position,
                    tail_scan_bytes,
                    "non-zero bytes after the last batch",
                )?;
                break;
            }
            Scan::Invalid(reason) => {
                refuse_middle_corruption(
                    &segments,
                    number,
                    position,
                    recorded.then_some(checkpoint),
                    &reason,
                    max_message_bytes,
                )?;
                report.truncated = cut_tail(segment, position, tail_scan_bytes, &reason)?;
                break;
            }
        }
    }
    report.end_position = position;
    log.set_write_position(position)?;
    Ok(report)
}

enum Scan {
    /// A valid batch of this many bytes starts here.
    Batch(usize),
    /// A roll marker, or no room for one: the log goes on in the next segment.
    Rolled,
    /// A zero length field: the end of the log, unless the roll marker was lost.
    Zero,
    Invalid(String),
}

fn scan_one(segment: &Segment, position: u64, max_message_bytes: usize) -> Scan {
    let offset = position - segment.base;
    let remaining = segment.file.len() - offset;
    if remaining < 4 {
        return Scan::Rolled;
    }
    let length_field = segment.file.bytes(offset, 4);
    if length_field == ROLL_MARKER.to_be_bytes() {
        return Scan::Rolled;
    }
    let len = total_len(length_field).expect("4 bytes");
    if len == 4 {
        return Scan::Zero;
    }
    if len < FIXED_HEADER_BYTES || len as u64 > remaining {
        return Scan::Invalid(format!(
            "length field says {len} bytes, impossible with {remaining} bytes left in the segment"
        ));
    }
    match BatchView::parse_with_limit(segment.file.bytes(offset, len), max_message_bytes) {
        Ok(_) => Scan::Batch(len),
        Err(error) => Scan::Invalid(error.to_string()),
    }
}

/// Whether a segment's first length field is not zero (a batch, or what is left of one).
fn starts_with_data(segment: &Segment) -> bool {
    segment.file.len() >= 4 && segment.file.bytes(0, 4) != [0; 4]
}

/// Indexes one valid batch; `false` when it belongs to an earlier topic of its name (below the
/// start of the topic known under the name now), which is never indexed.
fn index_batch(
    indexes: &mut Indexes,
    view: &BatchView,
    position: u64,
    log: &CommitLog,
) -> Result<bool> {
    let topic = view.topic();
    check_topic_name(topic)?;
    if !indexes.indexes_batch_at(topic, position) {
        return Ok(false);
    }
    let index = indexes.get_or_open(topic, view.queue_id())?;
    index.map_files()?;
    let base = view.base_queue_offset();
    if !index.has_entries() && base != index.next_queue_offset() {
        index.restart_at(base)?;
    }
    if base != index.next_queue_offset() {
        return Err(StorageError::Corrupt {
            path: log
                .segment_at(position)
                .expect("scanned")
                .file
                .path()
                .to_owned(),
            position,
            reason: format!(
                "batch of {topic}/{} starts at queue offset {base}, expected {}",
                view.queue_id(),
                index.next_queue_offset()
            ),
        });
    }
    index.prepare_append()?;
    index.append(IndexEntry {
        base_queue_offset: base,
        position,
        size: view.len() as u32,
        message_count: view.message_count(),
    });
    Ok(true)
}

/// An invalid batch below the checkpoint's flushed position is corruption of acknowledged data.
/// Above it, it is the torn, unflushed tail, whatever follows: after a power loss, later pages
/// (valid-looking batches among them) may have reached the disk before it. Only without any
/// checkpoint (none was ever written, or it was lost), when nothing says what was flushed, does
/// a valid batch or a segment with data after it mean corruption.
fn refuse_middle_corruption(
    segments: &[Segment],
    number: usize,
    position: u64,
    checkpoint: Option<Checkpoint>,
    reason: &str,
    max_message_bytes: usize,
) -> Result<()> {
    let segment = &segments[number];
    let corrupt = |why: String| StorageError::Corrupt {
        path: segment.file.path().to_owned(),
        position,
        reason: format!("{reason}; {why}"),
    };
    if let Some(checkpoint) = checkpoint {
        if position < checkpoint.flushed_position {
            return Err(corrupt(format!(
                "the checkpoint says the log was flushed up to {}",
                checkpoint.flushed_position
            )));
        }
        return Ok(());
    }
    let offset = position - segment.base;
    if let Some(len) = total_len(segment.file.bytes(offset, 4)) {
        let next = position + len as u64;
        if len >= FIXED_HEADER_BYTES && next < segment.end() {
            if let Scan::Batch(_) = scan_one(segment, next, max_message_bytes) {
                return Err(corrupt(format!("a valid batch follows at {next}")));
            }
        }
    }
    if let Some(later) = segments[number + 1..].iter().find(|s| starts_with_data(s)) {
        return Err(corrupt(format!(
            "segment {} after it holds data",
            later.base
        )));
    }
    Ok(())
}

/// Cuts the log at `position`: zeroes the rest of its segment (every page that may hold remains
/// of unflushed writes, cheaply, without reading it) and says what was dropped, as far as the
/// first `tail_scan_bytes` show (reading the whole rest of a 1 GiB segment to count it would
/// take seconds). `None` when those showed nothing.
fn cut_tail(
    segment: &Segment,
    position: u64,
    tail_scan_bytes: u64,
    reason: &str,
) -> Result<Option<Truncation>> {
    let seen_end = last_nonzero_end(segment, position, tail_scan_bytes);
    let truncation = seen_end.map(|end| describe_truncation(segment, position, end, reason));
    segment.file.zero_to_end(position - segment.base)?;
    Ok(truncation)
}

/// Position one past the last non-zero byte in the `tail_scan_bytes` at `position`, if any.
fn last_nonzero_end(segment: &Segment, position: u64, tail_scan_bytes: u64) -> Option<u64> {
    let offset = position - segment.base;
    let len = (segment.file.len() - offset).min(tail_scan_bytes);
    let rest = segment.file.bytes(offset, len as usize);
    rest.iter()
        .rposition(|byte| *byte != 0)
        .map(|last| position + last as u64 + 1)
}

/// What dropping `[from, to)` of the segment drops, logged as a warning.
fn describe_truncation(segment: &Segment, from: u64, to: u64, reason: &str) -> Truncation {
    let offset = from - segment.base;
    let len = (to - from) as usize;
    let mut batches = 0;
    let mut at = offset;
    while at + 4 <= offset + len as u64 {
        match total_len(segment.file.bytes(at, 4)) {
            Some(record) if record > 4 => {
                batches += 1;
                at += record as u64;
            }
            _ => break,
        }
    }
    let truncation = Truncation {
        from_position: from,
        to_position: to,
        bytes: to - from,
        batches: batches.max(1),
        reason: reason.to_owned(),
    };
    tracing::warn!(
        segment = %segment.file.path().display(),
        from_position = from,
        to_position = to,
        bytes = truncation.bytes,
        batches = truncation.batches,
        reason,
        "truncated the torn tail of the commit log (and zeroed the rest of its segment)"
    );
    truncation
}
