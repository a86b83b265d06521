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
    requests_unauthorized: AtomicU64,
    /// Route requests by HTTP status.
    route_requests: Mutex<BTreeMap<u16, u64>>,
}

/// What the scrape reads from elsewhere.
#[derive(Default)]
pub struct Gauges {
    pub brokers_live: usize,
    pub fenced: bool,
    /// Per (consumer group, topic): live members.
    pub consumer_group_members: Vec<(ConsumerGroupLabels, u64)>,
    /// Per queue a consumer group committed an offset of: the lag.
    pub consumer_group_lag: Vec<QueueLag>,
}

/// Which consumer group reads which topic.
pub struct ConsumerGroupLabels {
    pub consumer_group: String,
    pub topic: String,
}

/// The lag of one consumer group on one queue.
pub struct QueueLag {
    pub group: ConsumerGroupLabels,
    pub broker_group: String,
    pub queue_id: u32,
    pub messages: u64,
    pub seconds: f64,
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl ConsumerGroupLabels {
    fn render(&self) -> String {
        format!(
            "consumer_group=\"{}\",topic=\"{}\"",
            label(&self.consumer_group),
            label(&self.topic)
        )
    }
}

impl Metrics {
    pub fn heartbeat_received(&self) {
        self.heartbeats_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeat_rejected(&self) {
        self.heartbeats_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_unauthorized(&self) {
        self.requests_unauthorized.fetch_add(1, Ordering::Relaxed);
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
            "smq_nameserver_requests_unauthorized_total",
            "counter",
            "Requests refused with 401: no or a wrong cluster secret or read token.",
            &plain(self.requests_unauthorized.load(Ordering::Relaxed)),
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
        let members: Vec<(String, u64)> = gauges
            .consumer_group_members
            .iter()
            .map(|(labels, count)| (format!("{{{}}}", labels.render()), *count))
            .collect();
        metric(
            "smq_consumer_group_members",
            "gauge",
            "Live members of a consumer group reading a topic.",
            &members,
        );
        let lags = &gauges.consumer_group_lag;
        let queue_labels = |lag: &QueueLag| {
            format!(
                "{{{},broker_group=\"{}\",queue=\"{}\"}}",
                lag.group.render(),
                label(&lag.broker_group),
                lag.queue_id
            )
        };
        let messages: Vec<(String, u64)> = lags
            .iter()
            .map(|lag| (queue_labels(lag), lag.messages))
            .collect();
        metric(
            "smq_consumer_group_lag_messages",
            "gauge",
            "Messages of a queue its consumer group has not consumed (queue end minus committed offset), as its broker last reported.",
            &messages,
        );
        let name = "smq_consumer_group_lag_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Age of the oldest message of a queue its consumer group has not consumed; 0 when none waits.\n# TYPE {name} gauge"
        );
        for lag in lags {
            let _ = writeln!(out, "{name}{} {:.3}", queue_labels(lag), lag.seconds);
        }
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
            consumer_group_members: vec![(
                ConsumerGroupLabels {
                    consumer_group: "bill\"ing".into(),
                    topic: "orders".into(),
                },
                2,
            )],
            consumer_group_lag: vec![QueueLag {
                group: ConsumerGroupLabels {
                    consumer_group: "billing".into(),
                    topic: "orders".into(),
                },
                broker_group: "g1".into(),
                queue_id: 3,
                messages: 120,
                seconds: 2.5,
            }],
        });
        assert!(text.contains(
            "smq_consumer_group_members{consumer_group=\"bill\\\"ing\",topic=\"orders\"} 2\n"
        ));
        let queue = r#"{consumer_group="billing",topic="orders",broker_group="g1",queue="3"}"#;
        assert!(text.contains(&format!("smq_consumer_group_lag_messages{queue} 120\n")));
        assert!(text.contains(&format!("smq_consumer_group_lag_seconds{queue} 2.500\n")));
        assert!(text
            .contains("# TYPE smq_nameserver_brokers_live gauge\nsmq_nameserver_brokers_live 3\n"));
        assert!(text.contains("smq_nameserver_heartbeats_received_total 1\n"));
        assert!(text.contains("smq_nameserver_route_requests_total{status=\"200\"} 2\n"));
        assert!(text.contains("smq_nameserver_route_requests_total{status=\"404\"} 1\n"));
        assert!(text.contains("smq_nameserver_fenced 0\n"));
    }
}
