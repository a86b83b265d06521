//! Fencing: a NameServer started with `--srv` looks the record up periodically and refuses route
//! requests (503) while the record no longer names it, so that no client keeps reading the stale
//! routes of an abandoned NameServer (RocketMQ #2090).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smq_client::discovery::{Discovery, DiscoveryError, SrvAnswer};
use tokio::sync::watch;

/// Whether this NameServer serves routes, and the record that decides it.
#[derive(Debug)]
pub struct Fence {
    /// The SRV record name; `None` without `--srv` (never fenced).
    srv: Option<String>,
    advertise: String,
    fenced: AtomicBool,
}

impl Fence {
    /// A fence that never closes (no `--srv`).
    pub fn disabled(advertise: String) -> Fence {
        Fence {
            srv: None,
            advertise,
            fenced: AtomicBool::new(false),
        }
    }

    /// A fence following `srv`; open until the first check says otherwise.
    pub fn following(srv: String, advertise: String) -> Fence {
        Fence {
            srv: Some(srv),
            advertise,
            fenced: AtomicBool::new(false),
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
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
            (true, false) => tracing::info!(
                srv = self.srv.as_deref(),
                advertise = %self.advertise,
                "the SRV record names this NameServer again: serving routes"
            ),
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
pub async fn run(
    discovery: Discovery,
    fence: Arc<Fence>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        fence.apply(&discovery.lookup_now().await);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use smq_client::discovery::{ResolvedTarget, SrvTarget};

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

    #[test]
    fn fenced_only_when_dns_says_the_record_names_another() {
        let ours = answer("ns1.smq.test", "127.0.0.1:9876");
        assert_eq!(verdict(&ours, "127.0.0.1:9876"), Some(false));
        assert_eq!(verdict(&ours, "ns1.smq.test:9876"), Some(false));
        assert_eq!(verdict(&ours, "127.0.0.1:9877"), Some(true));
        let gone = Err(DiscoveryError::NotAvailable { name: "x".into() });
        assert_eq!(verdict(&gone, "127.0.0.1:9876"), Some(true));
        let fence = Fence::following("_smq-ns._tcp.smq.test.".into(), "127.0.0.1:9877".into());
        fence.apply(&ours);
        assert!(fence.is_fenced());
        assert!(fence
            .message()
            .contains("re-resolve _smq-ns._tcp.smq.test."));
        fence.apply(&answer("ns2.smq.test", "127.0.0.1:9877"));
        assert!(!fence.is_fenced());
    }
}
