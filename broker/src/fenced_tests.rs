//! A broker whose commit log is fenced (a failed fsync, injected through the store's test-only
//! fault hook, so in-process) says so on `/healthz`, in its heartbeat and to producers.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;

use smq_client::{Admin, ClientConfig, Producer};
use smq_protocol::record_batch::Message;
use smq_protocol::ErrorCode;

use crate::config::BrokerConfig;
use crate::storage::FlushMode;

/// Status and body of `GET /healthz`, over a real socket.
fn healthz(http: std::net::SocketAddr) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(http).expect("connecting to --http");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
        .expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the answer");
    let status = response[9..12].parse().expect("a status code");
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_broker_says_so_on_healthz_in_its_heartbeat_and_to_producers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::for_tests(dir.path());
    config.flush = FlushMode::Sync;
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
    let ask = |http| tokio::task::spawn_blocking(move || healthz(http));
    assert_eq!(ask(http).await.unwrap(), (200, "ok\n".to_owned()));
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

    let (status, body) = ask(http).await.unwrap();
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
