//! The preparer: background threads, one making the commit log's next segment before the
//! active one fills, two making the pages of the log and of the queue indexes ready ahead of the
//! writer (RocketMQ's mapped-file warm-up): a log range zeroed through the file in 16 KiB writes
//! (`MappedFile::zero_ahead`), an index file's range read through the file
//! (`MappedFile::read_ahead`), then mapped writable. So an append under the writer lock never
//! creates a file and takes no page fault on the pages it reaches: they are in memory and mapped
//! for writing (the one left is the log's tail page again after each msync write-protects it).
//!
//! Of the two read-ahead threads, one runs in the machine's idle time only (SCHED_IDLE) and
//! prepares whatever is asked, so that its work never delays the broker's other threads or its
//! peers on the same cores (the replication and end-to-end tails waited behind its bursts,
//! BENCHMARKS.md session 14). The other, at normal priority, prepares only the ranges the writer
//! is about to reach (an index file's, and the log's within `LOG_NEAR_BYTES` of the write
//! position): on a machine without idle time the first gets almost nothing, and the second keeps
//! the writer's path free of faults all the same.
//!
//! Why the log is zeroed, not read: a read of a fresh segment runs the kernel's read-ahead, which
//! made 8 MiB of page cache inside one system call every 8 MiB; on this kernel (`PREEMPT_NONE`)
//! a thread inside a system call keeps its core, even one in the idle class, and when the
//! machine's memory was slow to hand out that was 25 ms during which whatever was woken on that
//! core waited (BENCHMARKS.md, session 20). Writes of 16 KiB make the same 16 KiB page-cache
//! folios in calls that each give the core back within microseconds. Zeros written ahead are
//! overwritten by the appends before the kernel writes them back (30 s by default) unless the
//! log grows slower than its 64 MiB read-ahead in that time; then they reach the disk once.
//! Zeros may land only where the writer has not written: `MappedFile::zero_ahead` claims each
//! piece and `MappedFile::begin_write` waits for a claim below the end the writer is about to
//! write (the preparer zeroes only from `ZERO_MARGIN_BYTES` past the writer's end, so that wait
//! is rare). The log pages nearer than that are read exactly (`MappedFile::read_exactly`): a
//! read-ahead mark left there let the map's faults grow 2 MiB folios, each msync then writing a
//! whole one (10 GB in a 10 s sync-flush run).
//!
//! Why index files are read before their pages are populated: the kernel reads ahead of a fault
//! on a fresh mapped page (8 MiB here) inside the fault, holding the process's memory-map lock,
//! and MADV_POPULATE_* on pages not in memory hold that lock for as long as the file system makes
//! them wait; either stalled every thread of the broker for milliseconds (BENCHMARKS.md, "The
//! end-to-end tail"). On pages already in memory the populate is short.
//!
//! The writer asks (`read_ahead`, `take_next_segment`) and never waits for the preparer unless
//! the next segment is not ready when it is needed; the preparer never takes the store's lock.
//! Reading and mapping pages do not change their bytes, so they may run on a range the writer is
//! about to write; zeroing may not, hence the claims.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::commit_log::Segment;
use super::error::Result;
use super::file_names::segment_path;
use super::segment::{MappedFile, SharedFile, ZeroingSlot};

/// How far ahead of the write position the log's pages are read into memory.
pub const LOG_READ_AHEAD_BYTES: u64 = 64 * 1024 * 1024;
/// How often (in bytes written) the writer asks for the next log range, so that the ranges come
/// evenly and the writer's position, which says which range is near, is never far out of date.
pub const LOG_READ_AHEAD_STEP_BYTES: u64 = 1024 * 1024;
/// A log range starting less than this ahead of the write position is read at normal priority.
const LOG_NEAR_BYTES: u64 = LOG_READ_AHEAD_BYTES / 2;
/// Log pages closer than this to the writer's end are read, not zeroed: the writer would reach
/// them while the zeros are being written.
const ZERO_MARGIN_BYTES: u64 = 1024 * 1024;
/// The largest range read ahead by one call, so that an index's small range never waits long
/// behind a segment's large one.
const READ_AHEAD_CHUNK_BYTES: u64 = 256 * 1024;
/// How far ahead of the next entry an index file's pages are read into memory.
pub const INDEX_READ_AHEAD_BYTES: u64 = 64 * 1024;

pub struct Preparer {
    data_dir: PathBuf,
    segment_bytes: u64,
    work: Mutex<Work>,
    /// Wakes the segment thread and a writer waiting for a segment: only when a segment is
    /// needed or made. A thread woken for nothing preempts the writer on its core
    /// (BENCHMARKS.md, session 20).
    segment_wakeup: Condvar,
    /// Wakes the idle-time read-ahead thread.
    idle_wakeup: Condvar,
    /// Wakes the normal-priority read-ahead thread: only when a near range is there, so that it
    /// never wakes for nothing.
    near_wakeup: Condvar,
}

/// A range of a file to read into memory ahead of the writer.
#[derive(Clone)]
struct Range {
    file: SharedFile,
    offset: u64,
    len: u64,
    /// Where the range starts in the commit log; `None` for an index file's range, which is
    /// small and always near its writer.
    log_position: Option<u64>,
}

impl Range {
    /// Whether the writer at `writer_position` is about to reach this range.
    fn is_near(&self, writer_position: u64) -> bool {
        self.log_position
            .is_none_or(|position| position < writer_position + LOG_NEAR_BYTES)
    }

    /// Cuts off and returns the first `READ_AHEAD_CHUNK_BYTES`, leaving the rest in `self`.
    fn split_first_chunk(&mut self) -> Range {
        let chunk = Range {
            len: READ_AHEAD_CHUNK_BYTES,
            ..self.clone()
        };
        self.offset += READ_AHEAD_CHUNK_BYTES;
        self.len -= READ_AHEAD_CHUNK_BYTES;
        self.log_position = self.log_position.map(|p| p + READ_AHEAD_CHUNK_BYTES);
        chunk
    }
}

#[derive(Default)]
struct Work {
    /// Ranges the writer asked for, oldest first: served before anything else.
    read_ahead: VecDeque<Range>,
    /// Chunks of the first pages of the segment made ahead: served when `read_ahead` is empty.
    read_ahead_next_segment: VecDeque<Range>,
    /// The log position the writer last told (every `LOG_READ_AHEAD_STEP_BYTES` it writes).
    writer_position: u64,
    /// The chunk the idle-time thread is reading: the normal-priority thread takes it over
    /// (reads it too) when it becomes near, for the idle-time thread may be kept off the CPU.
    idle_reading: Option<Range>,
    /// The normal-priority thread is reading a range now.
    near_reading: bool,
    /// Base of the segment to create next; `None` while one is ready or no thread runs.
    next_base: Option<u64>,
    /// The next segment, created and its first pages read ahead.
    ready: Option<Segment>,
    /// A segment the preparer failed to make (a full disk): the writer makes it when needed,
    /// and the preparer tries again after a second.
    failed_base: Option<u64>,
    /// Whether a thread serves this preparer (without one, the writer creates files itself).
    running: bool,
    shutdown: bool,
}

impl Preparer {
    pub fn new(data_dir: &Path, segment_bytes: u64) -> Arc<Preparer> {
        Arc::new(Preparer {
            data_dir: data_dir.to_owned(),
            segment_bytes,
            work: Mutex::new(Work::default()),
            segment_wakeup: Condvar::new(),
            idle_wakeup: Condvar::new(),
            near_wakeup: Condvar::new(),
        })
    }

    /// Starts its threads, one making segments (the one after `log_end`, the active segment's
    /// end, first) and two reading pages ahead, so that none waits for another.
    pub fn start(self: &Arc<Preparer>, log_end: u64) -> Vec<JoinHandle<()>> {
        {
            let mut work = self.lock();
            work.running = true;
            work.next_base = Some(log_end);
            work.writer_position = log_end;
        }
        let segments = self.clone();
        let near_pages = self.clone();
        let pages = self.clone();
        vec![
            std::thread::Builder::new()
                .name("smq-segment-maker".into())
                .spawn(move || segments.make_segments())
                .expect("spawning the segment thread"),
            std::thread::Builder::new()
                .name("smq-read-ahead".into())
                .spawn(move || near_pages.read_near_pages_ahead())
                .expect("spawning the read-ahead thread"),
            std::thread::Builder::new()
                .name("smq-read-ahead-idle".into())
                .spawn(move || pages.read_pages_ahead_in_idle_time())
                .expect("spawning the idle-time read-ahead thread"),
        ]
    }

    /// Stops the threads; a segment made ahead stays on disk (recovery drops it as empty).
    pub fn stop(&self, threads: Vec<JoinHandle<()>>) {
        self.lock().shutdown = true;
        self.segment_wakeup.notify_all();
        self.idle_wakeup.notify_all();
        self.near_wakeup.notify_all();
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Asks for `[offset, offset + len)` of index file `file` to be read into memory soon; never
    /// blocks on the disk.
    pub fn read_ahead(&self, file: &SharedFile, offset: u64, len: u64) {
        let range = Range {
            file: file.clone(),
            offset,
            len,
            log_position: None,
        };
        self.ask(Some(range), None);
    }

    /// Asks for `[offset, offset + len)` of log segment `segment` (nothing if `len` is 0) to be
    /// read into memory, the writer being at log position `writer_position`; never blocks on
    /// the disk.
    pub fn read_log_ahead(&self, segment: &Segment, offset: u64, len: u64, writer_position: u64) {
        let range = (len > 0).then(|| Range {
            file: segment.file.clone(),
            offset,
            len,
            log_position: Some(segment.base + offset),
        });
        self.ask(range, Some(writer_position));
    }

    fn ask(&self, range: Option<Range>, writer_position: Option<u64>) {
        let mut work = self.lock();
        if !work.running {
            return;
        }
        if let Some(position) = writer_position {
            work.writer_position = position;
        }
        let asked = range.is_some();
        work.read_ahead.extend(range);
        let near = work.has_near_range();
        drop(work);
        if asked {
            self.idle_wakeup.notify_one();
        }
        if near {
            self.near_wakeup.notify_one();
        }
    }

    /// The segment starting at `base`, and how many of its first bytes were asked to be read
    /// ahead: the one made ahead if it is ready, else one made now (the preparer fell behind, or
    /// no thread runs). Then asks for the one after it.
    pub fn take_next_segment(&self, base: u64) -> Result<(Segment, u64)> {
        let mut work = self.lock();
        while work.running
            && work.ready.is_none()
            && work.next_base == Some(base)
            && work.failed_base != Some(base)
        {
            // The preparer is making it right now: wait rather than make the same file twice.
            work = self
                .segment_wakeup
                .wait_timeout(work, Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let (segment, read_ahead_bytes) = match work.ready.take() {
            Some(segment) if segment.base == base => (segment, LOG_READ_AHEAD_BYTES),
            _ => {
                let path = segment_path(&self.data_dir, base);
                let file = MappedFile::create(&path, self.segment_bytes)?;
                let segment = Segment {
                    base,
                    file: Arc::new(file),
                };
                (segment, 0)
            }
        };
        if work.running {
            work.next_base = Some(segment.end());
            drop(work);
            self.segment_wakeup.notify_all();
        }
        Ok((segment, read_ahead_bytes))
    }

    /// The log was cut back and its active segment now ends at `log_end`: the segment made
    /// ahead for the old end is deleted (a file past a gap would make the log unreadable at
    /// the next open) and the one at `log_end` is made next.
    pub fn restart_at(&self, log_end: u64) -> Result<()> {
        let mut work = self.lock();
        let stale = work.ready.take_if(|segment| segment.base != log_end);
        if stale.is_some() {
            work.read_ahead_next_segment.clear();
        }
        if work.running && work.ready.is_none() {
            work.next_base = Some(log_end);
        }
        drop(work);
        self.segment_wakeup.notify_all();
        if let Some(stale) = stale {
            delete_durably(stale.file.path())?;
        }
        Ok(())
    }

    /// Whether everything the writer is about to need is done: the next segment ready, no near
    /// range left to read ahead (ranges further ahead wait for idle time).
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        let work = self.lock();
        work.ready.is_some() && !work.has_near_range() && !work.near_reading
    }

    fn lock(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits on `wakeup` until `due` says there is work (true) or the preparer stops (false). A
    /// failed segment is tried again after a second.
    fn wait_for_work<'a>(
        &'a self,
        wakeup: &Condvar,
        mut work: MutexGuard<'a, Work>,
        due: impl Fn(&Work) -> bool,
    ) -> Option<MutexGuard<'a, Work>> {
        while !work.shutdown && !due(&work) {
            let timeout = if work.failed_base.is_some() {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(3600)
            };
            let (guard, waited) = wakeup
                .wait_timeout(work, timeout)
                .unwrap_or_else(|p| p.into_inner());
            work = guard;
            if waited.timed_out() {
                work.failed_base = None;
            }
        }
        (!work.shutdown).then_some(work)
    }

    /// The normal-priority read-ahead thread: reads the near ranges, nearest first.
    fn read_near_pages_ahead(&self) {
        while let Some(mut work) =
            self.wait_for_work(&self.near_wakeup, self.lock(), Work::has_near_range)
        {
            let Some(chunk) = work.take_near_chunk() else {
                continue;
            };
            work.near_reading = true;
            drop(work);
            prepare_chunk(&chunk, ZeroingSlot::Near);
            self.lock().near_reading = false;
        }
    }

    /// The idle-time read-ahead thread: reads the ranges the writer asked for, then the first
    /// pages of the segment made ahead, a chunk at a time, while the cores have nothing else to
    /// run.
    fn read_pages_ahead_in_idle_time(&self) {
        run_in_idle_time_only();
        let due =
            |work: &Work| !work.read_ahead.is_empty() || !work.read_ahead_next_segment.is_empty();
        while let Some(mut work) = self.wait_for_work(&self.idle_wakeup, self.lock(), due) {
            let Some(chunk) = work.take_chunk(|_| true) else {
                continue;
            };
            work.idle_reading = Some(chunk.clone());
            drop(work);
            prepare_chunk(&chunk, ZeroingSlot::Idle);
            self.lock().idle_reading = None;
        }
    }

    /// The segment thread: makes the next segment whenever the writer took the last one.
    fn make_segments(&self) {
        let due = |work: &Work| work.next_base.is_some() && work.next_base != work.failed_base;
        while let Some(work) = self.wait_for_work(&self.segment_wakeup, self.lock(), due) {
            let Some(base) = work.next_base else {
                continue;
            };
            // Made without the lock, so that the writer's requests never wait for it; the
            // writer, if it needs this very segment meanwhile, waits for it rather than making
            // the same file (`take_next_segment`).
            drop(work);
            let made = self.make_segment(base);
            let mut work = self.lock();
            match made {
                Ok(segment) if work.next_base != Some(base) => {
                    // The log was cut back while it was being made (`restart_at`).
                    drop(work);
                    if let Err(error) = delete_durably(segment.file.path()) {
                        tracing::warn!(%error, "cannot delete a segment made for a log end that was cut back");
                    }
                    continue;
                }
                Ok(segment) => {
                    work.read_ahead_next_segment.push_back(Range {
                        file: segment.file.clone(),
                        offset: 0,
                        len: LOG_READ_AHEAD_BYTES.min(segment.file.len()),
                        log_position: Some(segment.base),
                    });
                    work.ready = Some(segment);
                    work.next_base = None;
                    work.failed_base = None;
                    if work.has_near_range() {
                        self.near_wakeup.notify_one();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, base, "cannot make the next commit-log segment ahead; the writer will try when it needs it");
                    work.failed_base = Some(base);
                }
            }
            drop(work);
            // A writer waiting for this segment, and the idle-time thread for its first pages.
            self.segment_wakeup.notify_all();
            self.idle_wakeup.notify_one();
        }
    }

    fn make_segment(&self, base: u64) -> Result<Segment> {
        let file = MappedFile::create(&segment_path(&self.data_dir, base), self.segment_bytes)?;
        Ok(Segment {
            base,
            file: Arc::new(file),
        })
    }
}

impl Work {
    /// Whether a range the writer is about to reach waits to be read (or is being read only by
    /// the idle-time thread).
    fn has_near_range(&self) -> bool {
        let at = self.writer_position;
        let near = |range: &Range| range.is_near(at);
        self.idle_reading.as_ref().is_some_and(near)
            || self.read_ahead.iter().any(near)
            || self.read_ahead_next_segment.iter().any(near)
    }

    /// The first chunk of the nearest range: the idle-time thread's, if it is near (read twice
    /// then, which changes nothing), else the first near one asked for.
    fn take_near_chunk(&mut self) -> Option<Range> {
        let at = self.writer_position;
        self.idle_reading
            .take_if(|range| range.is_near(at))
            .or_else(|| self.take_chunk(|range| range.is_near(at)))
    }

    /// The first chunk of the first range `wanted`, ranges the writer asked for first.
    fn take_chunk(&mut self, wanted: impl Fn(&Range) -> bool) -> Option<Range> {
        let (queue, index) = match self.read_ahead.iter().position(&wanted) {
            Some(index) => (&mut self.read_ahead, index),
            None => {
                let index = self.read_ahead_next_segment.iter().position(wanted)?;
                (&mut self.read_ahead_next_segment, index)
            }
        };
        if queue[index].len > READ_AHEAD_CHUNK_BYTES {
            Some(queue[index].split_first_chunk())
        } else {
            queue.remove(index)
        }
    }
}

/// Makes one chunk's pages ready and maps them writable: a log chunk zeroed (read where the
/// writer is too close to zero), an index chunk read. An index file is reserved on disk as it
/// fills: reserved first. A full disk here is left for the writer to meet and report.
fn prepare_chunk(chunk: &Range, slot: ZeroingSlot) {
    let Range {
        file,
        offset,
        len,
        log_position,
    } = chunk;
    let end = offset + len;
    let result = file
        .allocate_to(end)
        .map_err(std::io::Error::other)
        .and_then(|()| match log_position {
            Some(_) => {
                let zeroed_to = file.zero_ahead(*offset, *len, ZERO_MARGIN_BYTES, slot)?;
                file.read_exactly(zeroed_to, end.saturating_sub(zeroed_to))
            }
            None => file.read_ahead(*offset, *len),
        });
    if let Err(error) = result {
        tracing::debug!(%error, file = %file.path().display(), "cannot make pages ready ahead");
    }
}

/// Puts the calling thread in the SCHED_IDLE class: it runs only when a core has nothing else
/// to run. Lowering one's own priority needs no privilege; a refusal leaves it at normal priority.
fn run_in_idle_time_only() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes the scheduling policy of the calling thread only.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "cannot put the read-ahead thread in the idle class");
    }
}

/// Deletes `path` and makes the deletion durable.
fn delete_durably(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(super::error::StorageError::io("deleting", path))?;
    match path.parent() {
        Some(dir) => super::segment::sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_range(file: &SharedFile, log_position: u64) -> Range {
        Range {
            file: file.clone(),
            offset: 0,
            len: 2 * READ_AHEAD_CHUNK_BYTES,
            log_position: Some(log_position),
        }
    }

    #[test]
    fn the_normal_priority_thread_takes_only_what_the_writer_is_about_to_reach() {
        let dir = tempfile::tempdir().unwrap();
        let file: SharedFile =
            Arc::new(MappedFile::create(&dir.path().join("f"), 1 << 20).unwrap());
        let mut work = Work {
            writer_position: 1000,
            ..Work::default()
        };
        work.read_ahead
            .push_back(log_range(&file, 1000 + LOG_NEAR_BYTES));
        assert!(
            !work.has_near_range(),
            "a range {LOG_NEAR_BYTES} ahead is far"
        );
        assert!(work.take_near_chunk().is_none());

        let mut index = log_range(&file, 0);
        index.log_position = None;
        work.read_ahead.push_back(index);
        assert!(
            work.has_near_range(),
            "an index file's range is always near"
        );
        let taken = work.take_near_chunk().unwrap();
        assert_eq!(
            taken.log_position, None,
            "the index range, past the far one"
        );
        assert_eq!(taken.len, READ_AHEAD_CHUNK_BYTES, "a chunk at a time");
        assert!(
            work.take_near_chunk().is_some(),
            "the index range's second chunk"
        );
        assert!(!work.has_near_range());

        // The writer moves on: the log range becomes near, and is taken a chunk at a time.
        work.writer_position += 1;
        let first = work.take_near_chunk().unwrap();
        assert_eq!(first.log_position, Some(1000 + LOG_NEAR_BYTES));
        let rest = &work.read_ahead[0];
        assert_eq!(rest.offset, READ_AHEAD_CHUNK_BYTES);
        assert_eq!(
            rest.log_position,
            Some(1000 + LOG_NEAR_BYTES + READ_AHEAD_CHUNK_BYTES)
        );

        // What the idle-time thread holds is taken over once near, since it may not be running.
        let held = work.take_chunk(|_| true).unwrap();
        work.idle_reading = Some(held);
        work.writer_position -= 1;
        assert!(
            !work.has_near_range(),
            "far again: left to the idle-time thread"
        );
        work.writer_position += READ_AHEAD_CHUNK_BYTES + 1;
        assert!(work.has_near_range());
        let taken = work.take_near_chunk().unwrap();
        assert_eq!(taken.offset, READ_AHEAD_CHUNK_BYTES);
        assert!(work.idle_reading.is_none() && work.read_ahead.is_empty());
    }
}
