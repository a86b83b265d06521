//! A broker whose commit log is fenced (a failed fsync, injected through the store's test-only
//! fault hook, so in-process) says so on `/healthz`, in its heartbeat and to producers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use smq_client::{Admin, ClientConfig, Producer};
use smq_protocol::record_batch::Message;
use smq_protocol::ErrorCode;

use crate::config::BrokerConfig;
use crate::storage::FlushMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_broker_says_so_on_healthz_in_its_heartbeat_and_to_producers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::for_tests(dir.path());
    config.store.flush = FlushMode::Sync;
    config.http = Some("127.0.0.1:0".into());
    let running = crate::start(config).await.unwrap();
    let (addr, http) = (running.tcp_addr(), running.http_addr().unwrap());
    let client = ClientConfig::new(addr.to_string());
    Admin::connect(client.clone())
        .await
        .unwrap()
        .create_topic("orders", 2)
        .await
        .unwrap();
    let producer = Producer::connect(client).await.unwrap();
    producer
        .send("orders", Message::from_body("before"))
        .await
        .unwrap();
    // Status and body of `GET /healthz`, over a real socket.
    let ask = |http| smq_tests::http::get(http, "/healthz");
    assert_eq!(ask(http).await, (200, "ok\n".to_owned()));
    let heartbeat = crate::registration::heartbeat(&running.broker, addr, Some(http));
    assert!(heartbeat.topics.iter().all(|topic| topic.writable));

    running
        .broker
        .store
        .faults()
        .failing_syncs
        .store(1, Ordering::Release);
    let error = producer
        .send("orders", Message::from_body("during"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StorageError), "{error}");
    assert!(error.is_retryable(), "{error}");

    let (status, body) = ask(http).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("fenced: ") && body.contains("fsync") && body.contains("restart"),
        "{body}"
    );
    let heartbeat = crate::registration::heartbeat(&running.broker, addr, Some(http));
    assert!(!heartbeat.topics.is_empty());
    assert!(
        heartbeat
            .topics
            .iter()
            .all(|topic| !topic.writable && topic.readable),
        "{:?}",
        heartbeat.topics
    );
    // Later appends are refused with the same retryable code, not acknowledged.
    let error = producer
        .send("orders", Message::from_body("after"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StorageError), "{error}");
    drop(producer);
    let _ = running.shutdown().await;
}

/// A NameServer in this process (no child process: a fork would hold other tests' store locks
/// for a moment) whose brokers heartbeat every 6 s.
async fn nameserver() -> smq_nameserver::Running {
    smq_nameserver::start(smq_nameserver::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat_timeout_ms: 30_000,
        ..smq_nameserver::Config::default()
    })
    .await
    .unwrap()
}

/// A client configuration asking `nameserver` for routes.
fn through(nameserver: &smq_nameserver::Running) -> ClientConfig {
    use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
    let mode = DiscoveryMode::Static(vec![format!("http://{}", nameserver.addr())]);
    let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
    ClientConfig::with_nameserver(smq_client::nameserver_client::NameServerClient::new(
        std::sync::Arc::new(discovery),
    ))
}

/// A master of `group` in its own directory, heartbeating to `nameserver`, flushing in sync.
async fn master_of(
    group: &str,
    nameserver: &smq_nameserver::Running,
    dir: &std::path::Path,
) -> crate::RunningBroker {
    let mut config = BrokerConfig::for_tests(dir.join(group));
    config.group = group.to_owned();
    config.store.flush = FlushMode::Sync;
    config.discovery = Some(smq_client::discovery::DiscoveryMode::Static(vec![format!(
        "http://{}",
        nameserver.addr()
    )]));
    crate::start(config).await.unwrap()
}

/// Whether each group's queues of `topic` are writable in the NameServer's route now.
async fn writable_groups(nameserver: &smq_nameserver::Running, topic: &str) -> Vec<(String, bool)> {
    let (status, body) =
        smq_tests::http::get(nameserver.addr(), &format!("/v1/routes/{topic}")).await;
    if status != 200 {
        return Vec::new();
    }
    let route: serde_json::Value = serde_json::from_str(&body).expect("a JSON route");
    route["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            (
                group["group"].as_str().expect("a group name").to_owned(),
                group["writable"].as_bool().expect("writable"),
            )
        })
        .collect()
}

/// Messages stored in every queue of `topic` on one broker.
fn stored(running: &crate::RunningBroker, topic: &str) -> u64 {
    (0..2)
        .map(|queue| running.broker.store.queue_offsets(topic, queue).1)
        .sum()
}

/// Issue 13 point 6: a fence is reported at once (not at the next heartbeat, 6 s apart here),
/// the NameServer's route then shows the group not writable, and a producer that starts after
/// it sends every unkeyed message to the other group, none failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_group_leaves_the_routes_writes_at_once_and_producers_send_elsewhere() {
    let nameserver = nameserver().await;
    let dir = tempfile::tempdir().unwrap();
    let a = master_of("a", &nameserver, dir.path()).await;
    let b = master_of("b", &nameserver, dir.path()).await;
    for running in [&a, &b] {
        Admin::connect(ClientConfig::new(running.tcp_addr().to_string()))
            .await
            .unwrap()
            .create_topic("orders", 2)
            .await
            .unwrap();
    }
    let both_writable = vec![("a".to_owned(), true), ("b".to_owned(), true)];
    let deadline = Instant::now() + Duration::from_secs(10);
    while writable_groups(&nameserver, "orders").await != both_writable {
        assert!(Instant::now() < deadline, "both groups never routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    a.broker
        .store
        .faults()
        .failing_syncs
        .store(1, Ordering::Release);
    let batch = smq_protocol::record_batch::encode("orders", 0, &[Message::from_body("lost")]);
    let receipt = a.broker.store.append(&batch).unwrap();
    assert!(receipt.durable().await.is_err(), "the fsync failed");
    let fenced_at = Instant::now();
    let fenced_route = vec![("a".to_owned(), false), ("b".to_owned(), true)];
    loop {
        let route = writable_groups(&nameserver, "orders").await;
        if route == fenced_route {
            break;
        }
        assert!(
            fenced_at.elapsed() < Duration::from_secs(2),
            "the fence is not in the routes 2 s later (heartbeats are 6 s apart): {route:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stored_on_a = stored(&a, "orders");
    let producer = Producer::connect(through(&nameserver)).await.unwrap();
    for n in 0..100 {
        producer
            .send("orders", Message::from_body(format!("unkeyed {n}")))
            .await
            .unwrap_or_else(|error| panic!("unkeyed message {n} failed: {error}"));
    }
    drop(producer);
    assert_eq!(
        stored(&a, "orders"),
        stored_on_a,
        "nothing went to the fenced group"
    );
    assert_eq!(stored(&b, "orders"), 100);
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = nameserver.shutdown().await;
}
