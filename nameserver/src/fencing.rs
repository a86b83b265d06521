//! Fencing: a NameServer started with `--srv` looks the record up periodically, and at once
//! when a request reaches it while it is fenced, and refuses route requests (503) while the
//! record no longer names it, so that no client keeps reading the stale routes of an abandoned
//! NameServer (RocketMQ #2090). It also remembers since when it serves: a NameServer that just
//! started or just became the named one is warming up (see [`crate::AppState::warming_up_ms`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smq_client::discovery::{Discovery, DiscoveryError, SrvAnswer};
use tokio::sync::watch;

/// A fenced NameServer asked for routes looks the record up again, but not more often than
/// this: concurrent requests share one lookup.
pub const RECHECK_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// How long a request waits for that lookup before it is answered with the verdict in hand.
pub const RECHECK_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Whether this NameServer serves routes, and the record that decides it.
#[derive(Debug)]
pub struct Fence {
    /// The SRV record name; `None` without `--srv` (never fenced).
    srv: Option<String>,
    advertise: String,
    /// How the record is looked up; `None` without `--srv`.
    discovery: Option<Discovery>,
    fenced: AtomicBool,
    /// When the record was last looked up. Held during a lookup, so that requests arriving
    /// meanwhile wait for its verdict instead of asking DNS themselves.
    last_check: tokio::sync::Mutex<Option<Instant>>,
    /// When this NameServer started serving routes, or last became the one the record names.
    serving_since: Mutex<Instant>,
}

impl Fence {
    /// A fence that never closes (no `--srv`).
    pub fn disabled(advertise: String) -> Fence {
        Fence::new(None, advertise, None)
    }

    /// A fence following `srv` through `discovery`; open until the first check says otherwise.
    pub fn following(srv: String, advertise: String, discovery: Discovery) -> Fence {
        Fence::new(Some(srv), advertise, Some(discovery))
    }

    fn new(srv: Option<String>, advertise: String, discovery: Option<Discovery>) -> Fence {
        Fence {
            srv,
            advertise,
            discovery,
            fenced: AtomicBool::new(false),
            last_check: tokio::sync::Mutex::new(None),
            serving_since: Mutex::new(Instant::now()),
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// How long this NameServer has served routes: since it started, or since the record last
    /// came to name it.
    pub fn serving_for(&self) -> Duration {
        self.serving_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// The record this fence follows, for messages.
    pub fn srv(&self) -> Option<&str> {
        self.srv.as_deref()
    }

    /// What a refused route request is told.
    pub fn message(&self) -> String {
        let srv = self.srv.as_deref().unwrap_or("the SRV record");
        format!(
            "this NameServer ({}) is no longer the one {srv} names: re-resolve {srv} and ask the \
             NameServer it names now",
            self.advertise
        )
    }

    /// Looks the record up now and applies the verdict (the periodic check).
    pub async fn check(&self) {
        let Some(discovery) = &self.discovery else {
            return;
        };
        let mut last_check = self.last_check.lock().await;
        self.apply(&discovery.lookup_now().await);
        *last_check = Some(Instant::now());
    }

    /// Called by a request that found the fence closed: looks the record up again unless that
    /// was done less than [`RECHECK_INTERVAL_MIN`] ago (a lookup under way is waited for and its
    /// verdict shared), so that a NameServer the record has just come to name serves at once,
    /// not after its next periodic check. Waits at most [`RECHECK_TIMEOUT`].
    pub async fn recheck(&self) {
        let Some(discovery) = &self.discovery else {
            return;
        };
        let recheck = async {
            let mut last_check = self.last_check.lock().await;
            if last_check.is_some_and(|at| at.elapsed() < RECHECK_INTERVAL_MIN) {
                return;
            }
            self.apply(&discovery.lookup_now().await);
            *last_check = Some(Instant::now());
        };
        if tokio::time::timeout(RECHECK_TIMEOUT, recheck)
            .await
            .is_err()
        {
            tracing::warn!(
                srv = self.srv.as_deref(),
                "DNS did not answer within {RECHECK_TIMEOUT:?}: keeping the last verdict"
            );
        }
    }

    /// Applies one lookup's verdict; a DNS failure changes nothing (the last verdict stands).
    pub fn apply(&self, answer: &Result<SrvAnswer, DiscoveryError>) {
        let Some(fenced) = verdict(answer, &self.advertise) else {
            if let Err(error) = answer {
                tracing::warn!(%error, fenced = self.is_fenced(), "cannot check the SRV record; keeping the last verdict");
            }
            return;
        };
        let was = self.fenced.swap(fenced, Ordering::Relaxed);
        match (was, fenced) {
            (false, true) => tracing::warn!(
                srv = self.srv.as_deref(),
                advertise = %self.advertise,
                "the SRV record no longer names this NameServer: route requests now get 503"
            ),
            (true, false) => {
                *self.serving_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                tracing::info!(
                    srv = self.srv.as_deref(),
                    advertise = %self.advertise,
                    "the SRV record names this NameServer again: serving routes (warming up)"
                )
            }
            _ => {}
        }
    }
}

/// `Some(true)` if the answer shows the record does not name `advertise` (`host:port` or
/// `ip:port`), `Some(false)` if it does, `None` if DNS could not say. Any target counts: a warm
/// standby listed at a higher priority value serves clients that fail over to it.
pub fn verdict(answer: &Result<SrvAnswer, DiscoveryError>, advertise: &str) -> Option<bool> {
    match answer {
        Ok(answer) => Some(!answer.targets.iter().any(|t| t.is(advertise))),
        Err(
            DiscoveryError::NoRecord { .. }
            | DiscoveryError::NotAvailable { .. }
            | DiscoveryError::NoAddress { .. },
        ) => Some(true),
        Err(_) => None,
    }
}

/// Checks the record every `interval` until `shutdown` turns true.
pub async fn run(fence: Arc<Fence>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        fence.check().await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use smq_client::discovery::{DiscoveryMode, DiscoveryOptions, ResolvedTarget, SrvTarget};

    use super::*;

    fn answer(host: &str, addr: &str) -> Result<SrvAnswer, DiscoveryError> {
        let addr: SocketAddr = addr.parse().unwrap();
        Ok(SrvAnswer {
            targets: vec![ResolvedTarget {
                srv: SrvTarget {
                    priority: 0,
                    weight: 0,
                    port: addr.port(),
                    host: host.into(),
                },
                addrs: vec![addr],
            }],
            ttl: Duration::from_secs(5),
        })
    }

    #[tokio::test]
    async fn fenced_only_when_dns_says_the_record_names_another() {
        let ours = answer("ns1.smq.test", "127.0.0.1:9876");
        assert_eq!(verdict(&ours, "127.0.0.1:9876"), Some(false));
        assert_eq!(verdict(&ours, "ns1.smq.test:9876"), Some(false));
        assert_eq!(verdict(&ours, "127.0.0.1:9877"), Some(true));
        let gone = Err(DiscoveryError::NotAvailable { name: "x".into() });
        assert_eq!(verdict(&gone, "127.0.0.1:9876"), Some(true));
        let name = "_smq-ns._tcp.smq.test.";
        let mode = DiscoveryMode::Srv {
            name: name.into(),
            dns_server: Some("127.0.0.1:1".parse().unwrap()),
        };
        let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
        let fence = Fence::following(name.into(), "127.0.0.1:9877".into(), discovery);
        fence.apply(&ours);
        assert!(fence.is_fenced());
        std::thread::sleep(Duration::from_millis(20));
        let fenced_for = fence.serving_for();
        assert!(fence
            .message()
            .contains("re-resolve _smq-ns._tcp.smq.test."));
        fence.apply(&answer("ns2.smq.test", "127.0.0.1:9877"));
        assert!(!fence.is_fenced());
        assert!(
            fence.serving_for() < fenced_for,
            "becoming the named one starts the warm-up again"
        );
    }
}
