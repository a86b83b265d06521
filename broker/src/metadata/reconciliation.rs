//! A master back from an outage, and the consumer offsets its slave took meanwhile.
//!
//! While a broker group has no live master, consumers read its queues from the slave and commit
//! there; the slave gives those offsets to the master when it reconnects, and the master keeps
//! the newer of each (proto-spec.md §5.7). Until then the master's own offsets can be older,
//! or missing for a queue only ever committed on the slave. A member newly given a queue in
//! that time would start from there, and its commits, with a higher owner epoch than the
//! slave's, would win over the slave's newer offset when it arrives: the offset would go back
//! (messages read twice), and a queue without an offset would start as `--from` says (with
//! `latest`, skipping messages).
//!
//! So a master that starts answers FetchOffset `OFFSETS_NOT_READY` (retryable: the client asks
//! again) until the first of:
//! - a slave handed over its offsets (its first metadata request after it connected) and the
//!   master merged them and wrote them to disk;
//! - the NameServer said the group has no live slave (no one took offsets);
//! - [`RECONCILE_WAIT`] passed since it started: a slave that cannot reconnect does not keep
//!   new members waiting longer (their offsets may then be older: messages read twice).
//!
//! Nothing else waits: commits and fetches are answered, so members that keep their queues
//! across the master's return never pause. A broker without a NameServer has no routes that
//! send consumers to its slave, and a broker that starts as a slave took the offsets itself
//! (if it is promoted): neither waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a started master waits at most for its slave's offsets. A slave retries its master
/// at least every second (`replication::slave`); five seconds leave room for a slow connect.
pub const RECONCILE_WAIT: Duration = Duration::from_secs(5);

/// Whether a master's consumer offsets include what its slave took while it was away.
pub struct Reconciliation {
    since: Instant,
    wait: Duration,
    settled: AtomicBool,
}

/// FetchOffset may not answer yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady {
    /// How long ago the master started.
    pub since_ms: u64,
    /// How long it waits at most from now.
    pub remaining_ms: u64,
}

impl Reconciliation {
    /// Waits for a slave's offsets, at most `wait` from now.
    pub fn pending(wait: Duration) -> Reconciliation {
        Reconciliation {
            since: Instant::now(),
            wait,
            settled: AtomicBool::new(false),
        }
    }

    /// Nothing to wait for.
    pub fn settled() -> Reconciliation {
        Reconciliation {
            settled: AtomicBool::new(true),
            ..Reconciliation::pending(Duration::ZERO)
        }
    }

    /// FetchOffset answers from now on; logs `why` the first time.
    pub fn settle(&self, why: &str) {
        if !self.settled.swap(true, Ordering::SeqCst) {
            let after_ms = self.since.elapsed().as_millis() as u64;
            tracing::info!(
                after_ms,
                "consumer offsets reconciled: {why}; FetchOffset answers"
            );
        }
    }

    /// Whether FetchOffset may answer now.
    pub fn check(&self) -> Result<(), NotReady> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), NotReady> {
        if self.settled.load(Ordering::SeqCst) {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= self.wait {
            if !self.settled.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    wait_ms = self.wait.as_millis() as u64,
                    "no slave handed over the consumer offsets it took while this master was away: FetchOffset answers this master's own, which may be older (messages read twice)"
                );
            }
            return Ok(());
        }
        Err(NotReady {
            since_ms: elapsed.as_millis() as u64,
            remaining_ms: (self.wait - elapsed).as_millis() as u64 + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_reconciliation_answers_once_settled_or_once_its_wait_passed() {
        let pending = Reconciliation::pending(Duration::from_secs(60));
        let not_ready = pending.check().unwrap_err();
        assert!(not_ready.remaining_ms > 59_000, "{not_ready:?}");
        pending.settle("a slave handed over its offsets");
        assert_eq!(pending.check(), Ok(()));

        let bounded = Reconciliation::pending(Duration::from_secs(5));
        let almost = bounded.since + Duration::from_millis(4_990);
        assert_eq!(bounded.check_at(almost).unwrap_err().remaining_ms, 11);
        let then = bounded.since + Duration::from_secs(5);
        assert_eq!(bounded.check_at(then), Ok(()), "the wait is bounded");
        assert_eq!(bounded.check(), Ok(()), "and stays over");

        assert_eq!(Reconciliation::settled().check(), Ok(()));
    }
}
