//! What `smq dev` asks its servers over HTTP: health, the NameServer's cluster view, and the
//! brokers' message counters for the status line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
use smq_client::nameserver_api::ClusterView;
use smq_client::nameserver_client::NameServerClient;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` on `addr` (through the library's HTTP client): the status and the body, or
/// `None` if nothing answered in time.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = smq_client::nameserver_client::get(addr, path);
    let (status, body) = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()?
        .ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether `GET /healthz` answers 200.
pub(crate) async fn healthy(http: SocketAddr) -> bool {
    matches!(get(http, "/healthz").await, Some((200, _)))
}

/// Whether the NameServer at `addr` serves routes: its /healthz says it is not fenced.
pub(crate) async fn unfenced(addr: SocketAddr) -> bool {
    let Some((200, body)) = get(addr, "/healthz").await else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .is_ok_and(|health| health["fenced"] == serde_json::Value::Bool(false))
}

/// Waits until `ready` says yes, at most `timeout`, asking every 50 ms; false if it did not
/// become ready in time or `alive` says the server died.
pub(crate) async fn wait_until<F, Fut>(
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
    mut ready: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if ready().await {
            return true;
        }
        if !alive() || Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cluster view of the NameServer at `addr`.
pub(crate) async fn cluster(addr: SocketAddr) -> anyhow::Result<ClusterView> {
    let mode = DiscoveryMode::Static(vec![format!("http://{addr}")]);
    let discovery = Discovery::new(mode, DiscoveryOptions::default())?;
    let client = NameServerClient::new(std::sync::Arc::new(discovery)).with_timeout(PROBE_TIMEOUT);
    client
        .cluster()
        .await
        .with_context(|| format!("asking the NameServer at {addr} for the cluster view"))
}

/// Messages in and out so far on the broker whose admin HTTP is `http` (the sums of
/// `smq_messages_in_total` and `smq_messages_out_total` over its topics).
pub(crate) async fn message_counts(http: SocketAddr) -> Option<(u64, u64)> {
    let (200, metrics) = get(http, "/metrics").await? else {
        return None;
    };
    Some((
        sum_of(&metrics, "smq_messages_in_total"),
        sum_of(&metrics, "smq_messages_out_total"),
    ))
}

/// The sum of every sample of `metric` in Prometheus text.
fn sum_of(metrics: &str, metric: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_topic_of_a_metric_and_no_other_metric() {
        let text = "# TYPE smq_messages_in_total counter\n\
                    smq_messages_in_total{topic=\"a\"} 10\n\
                    smq_messages_in_total{topic=\"b\"} 5\n\
                    smq_messages_in_total_other 100\n\
                    smq_messages_out_total{topic=\"a\"} 7\n";
        assert_eq!(sum_of(text, "smq_messages_in_total"), 15);
        assert_eq!(sum_of(text, "smq_messages_out_total"), 7);
    }
}
