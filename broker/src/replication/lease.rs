//! The single-writer lease of a master that registers with a NameServer: every accepted
//! heartbeat renews it for the NameServer's `heartbeat_timeout_ms` (the time after which the
//! NameServer drops this broker from the routes and an operator may promote a slave without
//! `--force`), and so does every fetch of a slave (a slave still copying from this master has
//! not been promoted). While it has lapsed (NameServer and slaves both unreachable for a whole
//! lease period) the master acknowledges no write that needs a slave: another broker may have
//! been promoted meanwhile, and two masters of one group must not both acknowledge writes.
//! Standalone masters (no NameServer) have no lease.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the lease was last renewed and for how long; disabled until the first renewal.
#[derive(Debug, Default)]
pub struct WriteLease {
    inner: Mutex<Option<Renewal>>,
}

#[derive(Debug, Clone, Copy)]
struct Renewal {
    at: Instant,
    period: Duration,
}

impl WriteLease {
    /// An accepted heartbeat renews the lease for the NameServer's heartbeat timeout.
    pub fn renew(&self, period: Duration) {
        self.renew_with(Some(period), "a NameServer");
    }

    /// A slave's fetch renews the lease for the period last given (nothing before the first
    /// heartbeat was accepted).
    pub fn renew_by_slave(&self) {
        self.renew_with(None, "a slave");
    }

    fn renew_with(&self, period: Option<Duration>, by: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(period) = period.or(inner.map(|renewal| renewal.period)) else {
            return;
        };
        if inner.is_some_and(|renewal| renewal.at.elapsed() >= renewal.period) {
            tracing::info!(
                renewed_by = by,
                "the write lease is renewed: writes that need a slave are acknowledged again"
            );
        }
        *inner = Some(Renewal {
            at: Instant::now(),
            period,
        });
    }

    /// `None` while the lease holds (or this broker has none); else since when it has lapsed,
    /// and the period.
    pub fn lapsed(&self) -> Option<(Duration, Duration)> {
        let inner = *self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let renewal = inner?;
        let since = renewal.at.elapsed();
        (since >= renewal.period).then_some((since, renewal.period))
    }

    /// Why a write that needs a slave is refused now, if it is.
    pub fn refusal(&self) -> Option<String> {
        let (since, period) = self.lapsed()?;
        Some(format!(
            "it could not renew its write lease for {} ms (neither a NameServer nor a slave \
             answered within the lease period of {} ms): another broker may have been promoted, \
             so it acknowledges no write that needs a slave until one of them answers again",
            since.as_millis(),
            period.as_millis()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lapses_after_its_period_and_a_slave_renews_it_only_once_enabled() {
        let lease = WriteLease::default();
        lease.renew_by_slave();
        assert!(lease.lapsed().is_none(), "no lease before a heartbeat");
        lease.renew(Duration::from_millis(30));
        assert!(lease.refusal().is_none());
        std::thread::sleep(Duration::from_millis(40));
        let refusal = lease.refusal().expect("lapsed");
        assert!(refusal.contains("lease period of 30 ms"), "{refusal}");
        lease.renew_by_slave();
        assert!(lease.lapsed().is_none());
    }
}
