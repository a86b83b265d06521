//! The broker's counters and latency histograms, and their Prometheus text rendering. Every
//! update is one relaxed atomic add: nothing here takes a lock on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use smq_protocol::nameserver_api::ConsumerOffset;

/// Upper bounds of the latency buckets, in microseconds (rendered in seconds).
const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// A latency histogram with the fixed buckets above.
#[derive(Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative here; summed when rendered).
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = LATENCY_BUCKETS_US.iter().position(|&bound| us <= bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let seconds = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{seconds}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Traffic of one topic, kept with the topic so that a produce or fetch finds it without a lookup.
#[derive(Default)]
pub struct TopicCounters {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Messages of the batches sent to consumers (a batch is sent whole, so this counts the
    /// messages of a first batch that the consumer skips, too).
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl TopicCounters {
    pub fn add_in(&self, messages: u32, bytes: usize) {
        self.messages_in
            .fetch_add(u64::from(messages), Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn add_out(&self, messages: u64, bytes: usize) {
        self.messages_out.fetch_add(messages, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Picks one counter of a topic.
type CounterField = fn(&TopicCounters) -> &AtomicU64;

/// Broker-wide metrics.
#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicI64,
    pub connections_accepted: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Requests answered with an error code, and frames that closed their connection.
    pub request_errors: AtomicU64,
    /// Fetches parked at the end of their queue, waiting for an append (long polls).
    pub fetches_waiting: AtomicI64,
    /// Time to copy a batch into the log (page cache), per Produce.
    pub append_latency: Histogram,
    /// Time from the append to the fsync covering it, per Produce that waited for one.
    pub flush_latency: Histogram,
    /// Time from the append to a slave's acknowledgement, per Produce that waited for one.
    pub replication_latency: Histogram,
}

impl Metrics {
    /// Prometheus text format (version 0.0.4) of these metrics and of each topic's counters.
    pub fn render<'a>(&self, topics: impl Iterator<Item = (&'a str, &'a TopicCounters)>) -> String {
        let mut out = String::new();
        let topics: Vec<_> = topics.collect();
        let per_topic: [(&str, &str, CounterField); 4] = [
            (
                "smq_messages_in_total",
                "Messages appended, per topic.",
                |c| &c.messages_in,
            ),
            (
                "smq_bytes_in_total",
                "Batch bytes appended, per topic.",
                |c| &c.bytes_in,
            ),
            (
                "smq_messages_out_total",
                "Messages in batches sent to consumers, per topic.",
                |c| &c.messages_out,
            ),
            (
                "smq_bytes_out_total",
                "Batch bytes sent to consumers, per topic.",
                |c| &c.bytes_out,
            ),
        ];
        for (name, help, field) in per_topic {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (topic, counters) in &topics {
                let value = field(counters).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {value}");
            }
        }
        let scalars: [(&str, &str, &str, i64); 5] = [
            (
                "smq_connections_open",
                "Client connections open now.",
                "gauge",
                self.connections_open.load(Ordering::Relaxed),
            ),
            (
                "smq_connections_accepted_total",
                "Client connections accepted.",
                "counter",
                self.connections_accepted.load(Ordering::Relaxed) as i64,
            ),
            (
                "smq_connections_rejected_total",
                "Connections closed at once because max_connections were open.",
                "counter",
                self.connections_rejected.load(Ordering::Relaxed) as i64,
            ),
            (
                "smq_request_errors_total",
                "Requests answered with an error code, and bad frames.",
                "counter",
                self.request_errors.load(Ordering::Relaxed) as i64,
            ),
            (
                "smq_fetches_waiting",
                "Fetches waiting at the end of their queue for an append (long polls) now.",
                "gauge",
                self.fetches_waiting.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        self.append_latency.render(
            &mut out,
            "smq_append_latency_seconds",
            "Time to write a produced batch into the commit log (page cache).",
        );
        self.flush_latency.render(
            &mut out,
            "smq_flush_latency_seconds",
            "Time from append to the fsync covering it, for produces that waited for one.",
        );
        self.replication_latency.render(
            &mut out,
            "smq_replication_latency_seconds",
            "Time from append to a slave's acknowledgement, for produces that waited for one.",
        );
        out
    }
}

/// Appends where the commit log ends (`smq_log_end_position`: written, in the page cache) and
/// below which it is fsynced (`smq_log_flushed_position`), as byte positions.
pub fn render_log_positions(end: u64, flushed: u64, out: &mut String) {
    let gauges = [
        (
            "smq_log_end_position",
            "Byte position where the commit log ends (written, at least to the page cache).",
            end,
        ),
        (
            "smq_log_flushed_position",
            "Byte position below which the commit log is fsynced.",
            flushed,
        ),
    ];
    write_gauges(out, &gauges);
}

/// Appends each gauge `(name, help, value)` with its HELP and TYPE lines.
pub fn write_gauges(out: &mut String, gauges: &[(&str, &str, impl std::fmt::Display)]) {
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}

/// A Prometheus label value with `\\`, `"` and newlines escaped (consumer group names may hold
/// them).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends each consumer group's lag on this broker's queues, from `offsets` (what the broker
/// reports to the NameServer: committed offset, queue end and the store time of the oldest
/// message not consumed) at wall-clock time `wall_ms`: `smq_consumer_group_lag_messages` and
/// `smq_consumer_group_lag_seconds` per (consumer group, topic, queue).
pub fn render_consumer_lag(offsets: &[ConsumerOffset], wall_ms: u64, out: &mut String) {
    let labels = |offset: &ConsumerOffset| {
        format!(
            "{{consumer_group=\"{}\",topic=\"{}\",queue=\"{}\"}}",
            label(&offset.consumer_group),
            label(&offset.topic),
            offset.queue_id
        )
    };
    let name = "smq_consumer_group_lag_messages";
    let _ = writeln!(
        out,
        "# HELP {name} Messages of a queue here its consumer group has not consumed (queue end minus committed offset).\n# TYPE {name} gauge"
    );
    for offset in offsets {
        let lag = offset.end_offset.saturating_sub(offset.offset);
        let _ = writeln!(out, "{name}{} {lag}", labels(offset));
    }
    let name = "smq_consumer_group_lag_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Age of the oldest message of a queue here its consumer group has not consumed; 0 when none waits.\n# TYPE {name} gauge"
    );
    for offset in offsets {
        let seconds = offset.oldest_unconsumed_ms.map_or(0.0, |stored_ms| {
            wall_ms.saturating_sub(stored_ms) as f64 / 1000.0
        });
        let _ = writeln!(out, "{name}{} {seconds:.3}", labels(offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_lag_is_rendered_per_group_topic_and_queue_with_labels_escaped() {
        let offset =
            |consumer_group: &str, queue_id, offset, oldest_unconsumed_ms| ConsumerOffset {
                consumer_group: consumer_group.to_owned(),
                topic: "clicks".to_owned(),
                queue_id,
                offset,
                owner_epoch: 1,
                end_offset: 1_000,
                oldest_unconsumed_ms,
            };
        let offsets = [
            offset("behind", 0, 400, Some(7_500)),
            offset("caught \"up\"", 3, 1_000, None),
        ];
        let mut out = String::new();
        render_consumer_lag(&offsets, 10_000, &mut out);
        let behind = "{consumer_group=\"behind\",topic=\"clicks\",queue=\"0\"}";
        assert!(
            out.contains(&format!("smq_consumer_group_lag_messages{behind} 600\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("smq_consumer_group_lag_seconds{behind} 2.500\n")),
            "{out}"
        );
        let caught_up = "{consumer_group=\"caught \\\"up\\\"\",topic=\"clicks\",queue=\"3\"}";
        assert!(
            out.contains(&format!("smq_consumer_group_lag_messages{caught_up} 0\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "smq_consumer_group_lag_seconds{caught_up} 0.000\n"
            )),
            "{out}"
        );
        assert_eq!(out.matches("# TYPE").count(), 2, "{out}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(40));
        histogram.observe(Duration::from_micros(700));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.render(&mut out, "h", "help");
        assert!(out.contains("h_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("h_count 3\n"), "{out}");
    }
}
