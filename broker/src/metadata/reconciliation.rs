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
//! So a master that starts, or that learns it may have been out of the routes (no heartbeat of
//! it was accepted for longer than the NameServer's heartbeat timeout: stopped, paused, cut off;
//! [`crate::registration`]), answers FetchOffset `OFFSETS_NOT_READY` (retryable: the client asks
//! again) until the first of:
//! - a slave admitted after that handed over its offsets (its first metadata request after it
//!   connected) and the master merged them and wrote them to disk (a slave admitted before may
//!   have dropped that connection and taken commits since);
//! - the NameServer said the group has no live slave (no one took offsets);
//! - [`RECONCILE_WAIT`] passed since then: a slave that cannot reconnect does not keep new
//!   members waiting longer (their offsets may then be older: messages read twice).
//!
//! Nothing else waits: commits and fetches are answered, so members that keep their queues
//! across the master's return never pause. A broker without a NameServer has no routes that
//! send consumers to its slave, and a broker that starts as a slave took the offsets itself
//! (if it is promoted): neither waits.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a master waits at most for its slave's offsets. A slave retries its master at least
/// every second (`replication::slave`); five seconds leave room for a slow connect.
pub const RECONCILE_WAIT: Duration = Duration::from_secs(5);

/// Whether a master's consumer offsets include what its slave took while it was away.
pub struct Reconciliation {
    wait: Duration,
    state: Mutex<State>,
}

#[derive(Clone, Copy)]
struct State {
    /// When the master started, or last learnt it had been away ([`Reconciliation::rearm`]).
    since: Instant,
    settled: bool,
}

/// FetchOffset may not answer yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady {
    /// How long ago the master started, or learnt it had been away.
    pub since_ms: u64,
    /// How long it waits at most from now.
    pub remaining_ms: u64,
}

impl Reconciliation {
    /// Waits for a slave's offsets, at most `wait` from now (and from each [`Self::rearm`]).
    pub fn pending(wait: Duration) -> Reconciliation {
        Reconciliation {
            wait,
            state: Mutex::new(State {
                since: Instant::now(),
                settled: false,
            }),
        }
    }

    /// Nothing to wait for (until a [`Self::rearm`], which waits at most [`RECONCILE_WAIT`]).
    pub fn settled() -> Reconciliation {
        let settled = Reconciliation::pending(RECONCILE_WAIT);
        settled.lock().settled = true;
        settled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master learnt it may have been out of the routes (the NameServer may have expired
    /// it): consumers may have committed on its slave since, so FetchOffset waits again, at
    /// most the wait from now, for a slave admitted from now on to hand over its offsets.
    pub fn rearm(&self, why: &str) {
        let mut state = self.lock();
        let was_settled = state.settled;
        *state = State {
            since: Instant::now(),
            settled: false,
        };
        drop(state);
        if was_settled {
            tracing::info!(
                "{why}: FetchOffset waits for the consumer offsets its slave took meanwhile"
            );
        }
    }

    /// FetchOffset answers from now on; logs `why` the first time.
    pub fn settle(&self, why: &str) {
        self.settle_if(|_| true, why);
    }

    /// A slave admitted (its replication hello answered) at `admitted_at` handed over its
    /// offsets: FetchOffset answers from now on, unless the master armed the wait after
    /// `admitted_at`. The slave sent them before that then, and may have taken more since.
    pub fn settle_for_slave_admitted_at(&self, admitted_at: Instant, why: &str) {
        self.settle_if(|since| admitted_at >= since, why);
    }

    fn settle_if(&self, counts: impl FnOnce(Instant) -> bool, why: &str) {
        let mut state = self.lock();
        if state.settled || !counts(state.since) {
            return;
        }
        state.settled = true;
        let after_ms = state.since.elapsed().as_millis() as u64;
        drop(state);
        tracing::info!(
            after_ms,
            "consumer offsets reconciled: {why}; FetchOffset answers"
        );
    }

    /// Whether FetchOffset may answer now.
    pub fn check(&self) -> Result<(), NotReady> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), NotReady> {
        let mut state = self.lock();
        if state.settled {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(state.since);
        if elapsed >= self.wait {
            state.settled = true;
            drop(state);
            tracing::warn!(
                wait_ms = self.wait.as_millis() as u64,
                "no slave handed over the consumer offsets it took while this master was away: FetchOffset answers this master's own, which may be older (messages read twice)"
            );
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
        let since = bounded.lock().since;
        let almost = since + Duration::from_millis(4_990);
        assert_eq!(bounded.check_at(almost).unwrap_err().remaining_ms, 11);
        let then = since + Duration::from_secs(5);
        assert_eq!(bounded.check_at(then), Ok(()), "the wait is bounded");
        assert_eq!(bounded.check(), Ok(()), "and stays over");

        assert_eq!(Reconciliation::settled().check(), Ok(()));
    }

    #[test]
    fn a_rearmed_reconciliation_waits_for_a_slave_admitted_after_it() {
        let reconciliation = Reconciliation::settled();
        let admitted_before = Instant::now();
        reconciliation.rearm("this master was away");
        assert!(reconciliation.check().is_err(), "it waits again");
        reconciliation.settle_for_slave_admitted_at(admitted_before, "a slave handed over");
        assert!(
            reconciliation.check().is_err(),
            "a slave admitted before the master learnt it had been away may have taken more since"
        );
        reconciliation.settle_for_slave_admitted_at(Instant::now(), "a slave handed over");
        assert_eq!(reconciliation.check(), Ok(()));
    }
}
