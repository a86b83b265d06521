//! The preparer: two background threads, one making the commit log's next segment before the
//! active one fills, one making the pages of the log and of the queue indexes ready ahead of the
//! writer (RocketMQ's mapped-file warm-up): read into the page cache through the file, then
//! mapped writable (`MappedFile::read_ahead`). So an append under the writer lock never creates
//! a file and takes no page fault on the pages it reaches: they are in memory and mapped for
//! writing (the one left is the log's tail page again after each msync write-protects it).
//!
//! Why read through the file before populating the map: the kernel reads ahead of a fault on a
//! fresh mapped page (8 MiB here) inside the fault, holding the process's memory-map lock, and
//! MADV_POPULATE_* on pages not in memory hold that lock for as long as the file system makes
//! them wait; either stalled every thread of the broker for milliseconds (BENCHMARKS.md, "The
//! end-to-end tail"). On pages already in memory the populate is short.
//!
//! The writer asks (`read_ahead`, `take_next_segment`) and never waits for the preparer unless
//! the next segment is not ready when it is needed; the preparer never takes the store's lock.
//! Making pages ready does not change their bytes, so it may run on a range the writer is about
//! to write.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::commit_log::Segment;
use super::error::Result;
use super::file_names::segment_path;
use super::segment::{MappedFile, SharedFile};

/// How far ahead of the write position the log's pages are read into memory.
pub const LOG_READ_AHEAD_BYTES: u64 = 64 * 1024 * 1024;
/// The largest range read ahead by one call, so that an index's small range never waits long
/// behind a segment's large one.
const READ_AHEAD_CHUNK_BYTES: u64 = 256 * 1024;
/// How far ahead of the next entry an index file's pages are read into memory.
pub const INDEX_READ_AHEAD_BYTES: u64 = 64 * 1024;

pub struct Preparer {
    data_dir: PathBuf,
    segment_bytes: u64,
    work: Mutex<Work>,
    wakeup: Condvar,
}

#[derive(Default)]
struct Work {
    /// Ranges the writer asked for, oldest first: served before anything else.
    read_ahead: VecDeque<(SharedFile, u64, u64)>,
    /// Chunks of the first pages of the segment made ahead: served when `read_ahead` is empty.
    read_ahead_next_segment: VecDeque<(SharedFile, u64, u64)>,
    /// A range is being read ahead now.
    reading_ahead: bool,
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
            wakeup: Condvar::new(),
        })
    }

    /// Starts its two threads, one making segments (the one after `log_end`, the active
    /// segment's end, first) and one reading pages ahead, so that neither waits for the other.
    pub fn start(self: &Arc<Preparer>, log_end: u64) -> Vec<JoinHandle<()>> {
        {
            let mut work = self.lock();
            work.running = true;
            work.next_base = Some(log_end);
        }
        let segments = self.clone();
        let pages = self.clone();
        vec![
            std::thread::Builder::new()
                .name("smq-segment-maker".into())
                .spawn(move || segments.make_segments())
                .expect("spawning the segment thread"),
            std::thread::Builder::new()
                .name("smq-read-ahead".into())
                .spawn(move || pages.read_pages_ahead())
                .expect("spawning the read-ahead thread"),
        ]
    }

    /// Stops the threads; a segment made ahead stays on disk (recovery drops it as empty).
    pub fn stop(&self, threads: Vec<JoinHandle<()>>) {
        self.lock().shutdown = true;
        self.wakeup.notify_all();
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Asks for `[offset, offset + len)` of `file` to be read into memory; never blocks on the
    /// disk.
    pub fn read_ahead(&self, file: &SharedFile, offset: u64, len: u64) {
        let mut work = self.lock();
        if !work.running {
            return;
        }
        work.read_ahead.push_back((file.clone(), offset, len));
        drop(work);
        self.wakeup.notify_all();
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
                .wakeup
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
            self.wakeup.notify_all();
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
        self.wakeup.notify_all();
        if let Some(stale) = stale {
            delete_durably(stale.file.path())?;
        }
        Ok(())
    }

    /// Whether everything asked for is done: the next segment ready, no range left to read ahead.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        let work = self.lock();
        work.ready.is_some()
            && work.read_ahead.is_empty()
            && work.read_ahead_next_segment.is_empty()
            && !work.reading_ahead
    }

    fn lock(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `due` says there is work (true) or the preparer stops (false). A failed
    /// segment is tried again after a second.
    fn wait_for_work<'a>(
        &'a self,
        mut work: MutexGuard<'a, Work>,
        due: impl Fn(&Work) -> bool,
    ) -> Option<MutexGuard<'a, Work>> {
        while !work.shutdown && !due(&work) {
            let timeout = if work.failed_base.is_some() {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(3600)
            };
            let (guard, waited) = self
                .wakeup
                .wait_timeout(work, timeout)
                .unwrap_or_else(|p| p.into_inner());
            work = guard;
            if waited.timed_out() {
                work.failed_base = None;
            }
        }
        (!work.shutdown).then_some(work)
    }

    /// The read-ahead thread: reads the ranges the writer asked for, then the first pages of the
    /// segment made ahead, a chunk at a time.
    fn read_pages_ahead(&self) {
        let due =
            |work: &Work| !work.read_ahead.is_empty() || !work.read_ahead_next_segment.is_empty();
        while let Some(mut work) = self.wait_for_work(self.lock(), due) {
            let range = work
                .read_ahead
                .pop_front()
                .or_else(|| work.read_ahead_next_segment.pop_front());
            let Some((file, offset, mut len)) = range else {
                continue;
            };
            if len > READ_AHEAD_CHUNK_BYTES {
                let rest = (
                    file.clone(),
                    offset + READ_AHEAD_CHUNK_BYTES,
                    len - READ_AHEAD_CHUNK_BYTES,
                );
                work.read_ahead.push_front(rest);
                len = READ_AHEAD_CHUNK_BYTES;
            }
            work.reading_ahead = true;
            drop(work);
            // An index file is reserved on disk as it fills: reserve before reading ahead. A full
            // disk here is left for the writer to meet and report.
            let reserved = file.allocate_to(offset + len);
            let result = reserved
                .map_err(std::io::Error::other)
                .and_then(|()| file.read_ahead(offset, len));
            if let Err(error) = result {
                tracing::debug!(%error, file = %file.path().display(), "cannot read pages ahead");
            }
            self.lock().reading_ahead = false;
        }
    }

    /// The segment thread: makes the next segment whenever the writer took the last one.
    fn make_segments(&self) {
        let due = |work: &Work| work.next_base.is_some() && work.next_base != work.failed_base;
        while let Some(work) = self.wait_for_work(self.lock(), due) {
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
                    let ahead = LOG_READ_AHEAD_BYTES.min(segment.file.len());
                    for offset in (0..ahead).step_by(READ_AHEAD_CHUNK_BYTES as usize) {
                        let len = READ_AHEAD_CHUNK_BYTES.min(ahead - offset);
                        let chunk = (segment.file.clone(), offset, len);
                        work.read_ahead_next_segment.push_back(chunk);
                    }
                    work.ready = Some(segment);
                    work.next_base = None;
                    work.failed_base = None;
                }
                Err(error) => {
                    tracing::warn!(%error, base, "cannot make the next commit-log segment ahead; the writer will try when it needs it");
                    work.failed_base = Some(base);
                }
            }
            drop(work);
            self.wakeup.notify_all();
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

/// Deletes `path` and makes the deletion durable.
fn delete_durably(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(super::error::StorageError::io("deleting", path))?;
    match path.parent() {
        Some(dir) => super::segment::sync_dir(dir),
        None => Ok(()),
    }
}
