//! Flushing: the group commit of sync mode, the periodic flush of async mode, the checkpoint, and
//! the watchdog that fails appends whose fsync takes longer than `flush_timeout_ms`.
//!
//! One flusher thread takes every waiting append, fsyncs the log up to the newest published
//! position (covering them all: that is the group commit), and answers them together. An fsync
//! that fails or is too slow answers every append it covers with an error and fences the log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::config::FlushMode;
use super::error::{Result, StorageError};
use super::store::Shared;

/// An append waiting for the log to be flushed past `end`.
pub(crate) struct Waiter {
    pub(crate) end: u64,
    pub(crate) done: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
pub(crate) struct FlushQueue {
    /// Appends waiting for the next flush.
    pub(crate) waiters: Vec<Waiter>,
    /// Appends covered by the flush running now, and when it started.
    in_flight: Vec<Waiter>,
    in_flight_since: Option<Instant>,
    /// The watchdog waits for a flush to start (none runs): the next one wakes it.
    watchdog_idle: bool,
    shutdown: bool,
    /// Tests: stop without the final flush and checkpoint, as a killed process would.
    #[cfg(test)]
    pub(crate) abandon: bool,
}

pub(crate) fn start_threads(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("smq-flusher".into())
            .spawn(move || run_flusher(&shared))
            .expect("spawning the flusher thread")
    };
    let watchdog = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("smq-flush-watchdog".into())
            .spawn(move || run_watchdog(&shared))
            .expect("spawning the flush watchdog thread")
    };
    vec![flusher, watchdog]
}

/// Asks both threads to stop after a final flush, and waits for them.
pub(crate) fn stop_threads(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    shared
        .flush_queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .shutdown = true;
    shared.flush_wakeup.notify_all();
    shared.watchdog_wakeup.notify_all();
    for thread in threads {
        let _ = thread.join();
    }
}

fn run_flusher(shared: &Shared) {
    let interval = Duration::from_millis(shared.config.flush_interval_ms);
    let timeout = Duration::from_millis(shared.config.flush_timeout_ms);
    let retention_interval = Duration::from_millis(shared.config.retention_check_interval_ms);
    let mut last_checkpoint = Instant::now();
    let mut last_retention = Instant::now();
    loop {
        let (waiters, shutdown) = {
            let mut queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let periodic_due = last_checkpoint.elapsed() >= interval;
                if queue.shutdown || !queue.waiters.is_empty() || periodic_due {
                    break;
                }
                let wait = interval.saturating_sub(last_checkpoint.elapsed());
                queue = shared
                    .flush_wakeup
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            #[cfg(test)]
            if queue.abandon {
                return;
            }
            (std::mem::take(&mut queue.waiters), queue.shutdown)
        };
        let periodic_due = last_checkpoint.elapsed() >= interval;
        if let Err(error) = shared.check_not_fenced() {
            answer_all(waiters, || {
                Err(StorageError::FlushFailed(error.to_string()))
            });
        } else {
            flush_for(shared, waiters, timeout, periodic_due || shutdown);
        }
        if (periodic_due || shutdown) && shared.check_not_fenced().is_ok() {
            // The log itself is synced: a checkpoint that could not be written (ENOSPC on its
            // temp file) only leaves the previous one, which recovery starts from. Retried at
            // the next interval; it does not fence the log.
            if let Err(error) = shared.write_checkpoint() {
                tracing::error!(%error, "writing the checkpoint failed; it is retried at the next flush interval");
            }
            last_checkpoint = Instant::now();
        }
        if last_retention.elapsed() >= retention_interval {
            match shared.enforce_retention(std::time::SystemTime::now()) {
                Ok(report) if report.segments_deleted > 0 => tracing::info!(
                    segments_deleted = report.segments_deleted,
                    log_start_position = report.log_start_position,
                    "retention deleted old segments"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "retention failed; it is retried at the next interval")
                }
            }
            last_retention = Instant::now();
        }
        if shutdown {
            let mut queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
            let late = std::mem::take(&mut queue.waiters);
            drop(queue);
            answer_all(late, || Err(StorageError::Closed));
            return;
        }
    }
}

/// One flush round: fsync up to the newest published position, then answer `waiters`.
fn flush_for(shared: &Shared, waiters: Vec<Waiter>, timeout: Duration, periodic: bool) {
    let target = shared.written_position.load(Ordering::Acquire);
    let needed = !waiters.is_empty() || periodic || shared.config.flush == FlushMode::Sync;
    {
        let mut queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.in_flight = waiters;
        queue.in_flight_since = Some(Instant::now());
        if queue.watchdog_idle {
            shared.watchdog_wakeup.notify_all();
        }
    }
    let started = Instant::now();
    let result = if needed {
        shared.flush_log_to(target)
    } else {
        Ok(())
    };
    let elapsed = started.elapsed();
    let waiters = {
        let mut queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.in_flight_since = None;
        std::mem::take(&mut queue.in_flight)
    };
    match result {
        Err(error) => {
            let reason = format!("an fsync of the commit log failed: {error}");
            shared.fence(reason.clone());
            answer_all(waiters, || Err(StorageError::FlushFailed(reason.clone())));
        }
        Ok(()) if elapsed > timeout && !waiters.is_empty() => {
            shared.fence(format!(
                "an fsync of the commit log took {} ms, above flush_timeout_ms",
                elapsed.as_millis()
            ));
            answer_all(waiters, || {
                Err(StorageError::FlushTimeout {
                    timeout_ms: timeout.as_millis() as u64,
                })
            });
        }
        Ok(()) => {
            for waiter in waiters {
                debug_assert!(waiter.end <= target);
                let _ = waiter.done.send(Ok(()));
            }
        }
    }
}

/// Fails the appends of a flush that has run longer than `flush_timeout_ms`, so that producers
/// hear of it in time even while the fsync hangs, and fences the log; appends queued behind a
/// late periodic flush nobody waited for are failed too (else they would wait with no deadline),
/// without fencing.
///
/// It sleeps until the running flush's deadline, or, with no flush running, until one starts
/// (`flush_for` wakes it): an idle broker's watchdog does not wake at all, and a busy one's about
/// once a `flush_timeout_ms`. Only while a flush is overdue does it look every tick, for appends
/// that queue behind it.
fn run_watchdog(shared: &Shared) {
    let timeout = Duration::from_millis(shared.config.flush_timeout_ms);
    let tick = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(10));
    let mut queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if queue.shutdown {
            return;
        }
        let Some(since) = queue.in_flight_since else {
            queue.watchdog_idle = true;
            queue = shared
                .watchdog_wakeup
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
            queue.watchdog_idle = false;
            continue;
        };
        let deadline = since + timeout;
        let now = Instant::now();
        if now <= deadline {
            queue = shared
                .watchdog_wakeup
                .wait_timeout(queue, deadline - now + Duration::from_millis(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        if !queue.in_flight.is_empty() {
            // A flush that appends wait for is late: fail them and fence (as a failed fsync).
            let in_flight = std::mem::take(&mut queue.in_flight);
            let waiting = std::mem::take(&mut queue.waiters);
            drop(queue);
            shared.fence(format!(
                "an fsync of the commit log has run for more than flush_timeout_ms ({} ms)",
                timeout.as_millis()
            ));
            answer_all(in_flight.into_iter().chain(waiting).collect(), || {
                Err(StorageError::FlushTimeout {
                    timeout_ms: timeout.as_millis() as u64,
                })
            });
            queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
        } else if !queue.waiters.is_empty() {
            // A periodic flush nobody waited for is late, and appends now wait behind it: tell
            // them the disk is stalled rather than let them hang with it. Nothing acknowledged
            // depends on that flush, so the log is not fenced: a periodic flush of a large async
            // backlog on a slow disk can take longer than flush_timeout_ms without being hung.
            let waiting = std::mem::take(&mut queue.waiters);
            drop(queue);
            tracing::warn!(
                waiting = waiting.len(),
                "a periodic flush has run for more than flush_timeout_ms: failing the appends that wait behind it"
            );
            answer_all(waiting, || {
                Err(StorageError::FlushTimeout {
                    timeout_ms: timeout.as_millis() as u64,
                })
            });
            queue = shared.flush_queue.lock().unwrap_or_else(|p| p.into_inner());
        }
        // The overdue flush still runs: appends may queue behind it; look again in a tick.
        if !queue.shutdown {
            queue = shared
                .watchdog_wakeup
                .wait_timeout(queue, tick)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn answer_all(waiters: Vec<Waiter>, result: impl Fn() -> Result<()>) {
    for waiter in waiters {
        let _ = waiter.done.send(result());
    }
}

/// Faults the tests inject into the flush path: the real fsync is still called around them.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    /// The next this many flushes fail with EIO before syncing.
    pub(crate) failing_syncs: std::sync::atomic::AtomicU32,
    /// Every flush sleeps this long first, as a stalled disk would.
    pub(crate) sync_delay_ms: std::sync::atomic::AtomicU64,
    /// How many delayed flushes have begun their delay (a test waits for one, not a time).
    pub(crate) delayed_syncs_begun: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
impl Faults {
    pub(crate) fn before_sync(&self) -> std::io::Result<()> {
        let delay = self.sync_delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            self.delayed_syncs_begun.fetch_add(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(delay));
        }
        let failing = self
            .failing_syncs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}
