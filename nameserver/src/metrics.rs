//! The NameServer's counters and their Prometheus text exposition (format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters, updated by the handlers and the expiry task; gauges are read at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    heartbeats_received: AtomicU64,
    heartbeats_rejected: AtomicU64,
    brokers_expired: AtomicU64,
    /// Route requests by HTTP status.
    route_requests: Mutex<BTreeMap<u16, u64>>,
}

/// What the scrape reads from elsewhere.
pub struct Gauges {
    pub brokers_live: usize,
    pub fenced: bool,
}

impl Metrics {
    pub fn heartbeat_received(&self) {
        self.heartbeats_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeat_rejected(&self) {
        self.heartbeats_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn brokers_expired(&self, count: usize) {
        self.brokers_expired
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn route_request(&self, status: u16) {
        let mut by_status = self
            .route_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *by_status.entry(status).or_default() += 1;
    }

    /// The Prometheus text format, every metric with its HELP and TYPE lines.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |value: u64| vec![(String::new(), value)];
        metric(
            "smq_nameserver_brokers_live",
            "gauge",
            "Brokers whose last heartbeat is within the heartbeat timeout.",
            &plain(gauges.brokers_live as u64),
        );
        metric(
            "smq_nameserver_fenced",
            "gauge",
            "1 while the --srv record names another NameServer and routes are refused with 503.",
            &plain(u64::from(gauges.fenced)),
        );
        metric(
            "smq_nameserver_heartbeats_received_total",
            "counter",
            "Heartbeats accepted.",
            &plain(self.heartbeats_received.load(Ordering::Relaxed)),
        );
        metric(
            "smq_nameserver_heartbeats_rejected_total",
            "counter",
            "Heartbeats refused (malformed, invalid or conflicting).",
            &plain(self.heartbeats_rejected.load(Ordering::Relaxed)),
        );
        metric(
            "smq_nameserver_brokers_expired_total",
            "counter",
            "Brokers removed because they stopped heartbeating.",
            &plain(self.brokers_expired.load(Ordering::Relaxed)),
        );
        let by_status: Vec<(String, u64)> = self
            .route_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(status, count)| (format!("{{status=\"{status}\"}}"), *count))
            .collect();
        metric(
            "smq_nameserver_route_requests_total",
            "counter",
            "GET /v1/routes/{topic} requests by HTTP status.",
            &by_status,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_labels() {
        let m = Metrics::default();
        m.heartbeat_received();
        m.route_request(200);
        m.route_request(200);
        m.route_request(404);
        let text = m.render(&Gauges {
            brokers_live: 3,
            fenced: false,
        });
        assert!(text
            .contains("# TYPE smq_nameserver_brokers_live gauge\nsmq_nameserver_brokers_live 3\n"));
        assert!(text.contains("smq_nameserver_heartbeats_received_total 1\n"));
        assert!(text.contains("smq_nameserver_route_requests_total{status=\"200\"} 2\n"));
        assert!(text.contains("smq_nameserver_route_requests_total{status=\"404\"} 1\n"));
        assert!(text.contains("smq_nameserver_fenced 0\n"));
    }
}
