//! The broker server over real TCP: pipelining, the requests' semantics, bad input next to a
//! healthy client, graceful shutdown, limits, and the HTTP endpoint.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::*;
use smq_broker::storage::FlushMode;
use smq_protocol::api::ApiKey;
use smq_protocol::frame::{encode_request, RequestHeader};
use smq_protocol::record_batch::{encode, Message};
use smq_protocol::request::{
    Acks, CommitOffsetRequest, FetchOffsetRequest, ListOffsetsRequest, MetadataRequest,
    ProduceEntry, ProduceManyRequest, ProduceRequest,
};
use smq_protocol::response::{FetchOffsetResponse, ListOffsetsResponse};
use smq_protocol::{ErrorCode, Request, Response};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_does_not_block_requests_pipelined_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let mut admin = Client::connect(broker.tcp_addr()).await;
    admin.create_topic("orders", 2).await;
    let mut consumer = Client::connect(broker.tcp_addr()).await;
    let poll = consumer.send(fetch_request("orders", 0, 0, 10_000)).await;
    let list = consumer
        .send(Request::ListOffsets(ListOffsetsRequest {
            topic: "orders".into(),
            queue_id: 1,
        }))
        .await;
    let metadata = consumer
        .send(Request::Metadata(MetadataRequest::default()))
        .await;
    let (first, response) = consumer.recv().await;
    assert_eq!(
        first, list,
        "the request behind the long poll is answered first"
    );
    assert_eq!(
        response,
        Response::ListOffsets(ListOffsetsResponse {
            log_start_offset: 0,
            high_watermark: 0
        })
    );
    let (second, response) = consumer.recv().await;
    assert_eq!(second, metadata);
    let Response::Metadata(metadata) = response else {
        panic!("{response:?}")
    };
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].queues.len(), 2);
    admin.produce_ok("orders", 0, &[b"wake up"]).await;
    let (third, response) = consumer.recv().await;
    assert_eq!(third, poll);
    let Response::Fetch(fetch) = response else {
        panic!("{response:?}")
    };
    assert_eq!(batch_bodies(&fetch.batches), vec![(0, b"wake up".to_vec())]);
    assert_eq!(fetch.high_watermark, 1);
    broker.shutdown().await.unwrap();
}

/// Runs `bad` while a healthy client produces and fetches on its own connection, then checks
/// that the healthy client never failed and every message acknowledged before is readable.
async fn bad_input_leaves_others_working<F, Fut>(bad: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let addr = broker.tcp_addr();
    let mut admin = Client::connect(addr).await;
    admin.create_topic("orders", 1).await;
    admin.produce_ok("orders", 0, &[b"acked before"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut client = Client::connect(addr).await;
            let mut produced = 0u64;
            while produced < 3 || !stop.load(Ordering::Relaxed) {
                let body = format!("healthy {produced}");
                let offset = client.produce_ok("orders", 0, &[body.as_bytes()]).await;
                let fetched = client.fetch("orders", 0, offset, 0).await;
                assert_eq!(batch_bodies(&fetched.batches)[0].1, body.as_bytes());
                produced += 1;
            }
            produced
        }
    });
    bad(addr).await;
    stop.store(true, Ordering::Relaxed);
    let produced = healthy.await.expect("the healthy client kept working");
    let bodies = admin.read_all("orders", 0, 0).await;
    assert_eq!(bodies[0], b"acked before");
    assert_eq!(bodies.len() as u64, 1 + produced);
    broker.shutdown().await.unwrap();
}

/// The error in a response frame, whatever api it answers.
fn decode_error(body: bytes::Bytes) -> (ErrorCode, String) {
    match Response::decode(ApiKey::Handshake, 1, body).expect("an error body") {
        Response::Error(error) => (error.error_code().unwrap(), error.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_frame_is_answered_with_correlation_id_0_and_closed() {
    bad_input_leaves_others_working(|addr| async move {
        let mut client = Client::connect_raw(addr).await;
        client
            .stream
            .write_all(b"GET / HTTP/1.1\r\nHost: smq\r\n\r\n")
            .await
            .unwrap();
        let frame = client.recv_frame().await.expect("an error response");
        assert_eq!(frame.correlation_id, 0);
        let (code, message) = decode_error(frame.body);
        assert_eq!(code, ErrorCode::FrameTooLarge, "{message}");
        assert!(
            client.recv_frame().await.is_none(),
            "then the broker closes"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_claiming_4_gib_is_refused_before_anything_is_read() {
    bad_input_leaves_others_working(|addr| async move {
        let mut client = Client::connect(addr).await;
        let mut bytes = BytesMut::new();
        bytes.put_u32(u32::MAX);
        bytes.put_slice(&[0; 64]);
        client.stream.write_all(&bytes).await.unwrap();
        let frame = client.recv_frame().await.expect("an error response");
        assert_eq!(frame.correlation_id, 0);
        let (code, message) = decode_error(frame.body);
        assert_eq!(code, ErrorCode::FrameTooLarge);
        assert!(message.contains("4294967295"), "{message}");
        assert!(
            client.recv_frame().await.is_none(),
            "then the broker closes"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_before_the_handshake_is_refused_at_once() {
    bad_input_leaves_others_working(|addr| async move {
        // Only its length prefix: the broker refuses it without waiting for the rest, so that
        // no peer that has not handshaken holds any of the budget for large frames.
        let mut client = Client::connect_raw(addr).await;
        client
            .stream
            .write_all(&(1u32 << 20).to_be_bytes())
            .await
            .unwrap();
        let frame = client.recv_frame().await.expect("an error response");
        assert_eq!(frame.correlation_id, 0);
        let (code, message) = decode_error(frame.body);
        assert_eq!(code, ErrorCode::FrameTooLarge);
        assert!(message.contains("handshake first"), "{message}");
        assert!(
            client.recv_frame().await.is_none(),
            "then the broker closes"
        );
        // After a handshake, the same length is a frame like any other (answered, here, as an
        // unknown api key).
        let mut client = Client::connect(addr).await;
        let mut frame = BytesMut::new();
        let header = RequestHeader {
            api_key: 99,
            api_version: 1,
            correlation_id: 5,
        };
        encode_request(&mut frame, header, |out| out.put_slice(&[0; 1 << 20]));
        client.stream.write_all(&frame).await.unwrap();
        let frame = client.recv_frame().await.expect("an answer");
        assert_eq!(frame.correlation_id, 5);
        assert_eq!(decode_error(frame.body).0, ErrorCode::UnsupportedApiKey);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_ends_with_a_clean_close() {
    bad_input_leaves_others_working(|addr| async move {
        let mut client = Client::connect(addr).await;
        let mut frame = BytesMut::new();
        let messages = [Message::from_body("never complete")];
        produce_request("orders", 0, encode("orders", 0, &messages)).encode(1, 9, &mut frame);
        client
            .stream
            .write_all(&frame[..frame.len() / 2])
            .await
            .unwrap();
        client.stream.shutdown().await.unwrap();
        assert!(
            client.recv_frame().await.is_none(),
            "closed, nothing stored"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_api_key_is_answered_and_the_connection_stays_usable() {
    bad_input_leaves_others_working(|addr| async move {
        let mut client = Client::connect(addr).await;
        let mut frame = BytesMut::new();
        let header = RequestHeader {
            api_key: 99,
            api_version: 1,
            correlation_id: 77,
        };
        encode_request(&mut frame, header, |out| out.put_slice(b"whatever"));
        client.stream.write_all(&frame).await.unwrap();
        let frame = client.recv_frame().await.expect("an error response");
        assert_eq!(frame.correlation_id, 77);
        let (code, message) = decode_error(frame.body);
        assert_eq!(code, ErrorCode::UnsupportedApiKey);
        assert!(message.contains("99"), "{message}");
        let response = client
            .call(Request::Metadata(MetadataRequest::default()))
            .await;
        assert!(matches!(response, Response::Metadata(_)), "{response:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_nothing_is_stored() {
    bad_input_leaves_others_working(|addr| async move {
        let mut client = Client::connect(addr).await;
        let huge = vec![7u8; 5 * 1024 * 1024];
        let response = client.produce("orders", 0, &[&huge]).await;
        assert_eq!(
            error_code(&response),
            Some(ErrorCode::MessageTooLarge),
            "{response:?}"
        );
        // Above the 16 MiB batch limit, below the frame limit.
        let big = vec![7u8; 5_700_000];
        let response = client.produce("orders", 0, &[&big, &big, &big]).await;
        assert_eq!(
            error_code(&response),
            Some(ErrorCode::MessageTooLarge),
            "{response:?}"
        );
        let response = client
            .call(Request::Metadata(MetadataRequest::default()))
            .await;
        assert!(matches!(response, Response::Metadata(_)), "still usable");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_to_a_missing_topic_says_how_to_create_it() {
    bad_input_leaves_others_working(|addr| async move {
        let mut client = Client::connect(addr).await;
        let response = client.produce("nope", 0, &[b"lost?"]).await;
        let Response::Error(error) = response else {
            panic!("{response:?}")
        };
        assert_eq!(error.error_code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(
            error.message,
            "topic nope does not exist: create it with `smq topic create nope`"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_checked_against_the_handshake_topics_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let mut raw = Client::connect_raw(broker.tcp_addr()).await;
    let response = raw
        .call(Request::Metadata(MetadataRequest::default()))
        .await;
    assert_eq!(error_code(&response), Some(ErrorCode::HandshakeRequired));
    let mut client = Client::connect(broker.tcp_addr()).await;
    client.create_topic("orders", 2).await;
    let cases: Vec<(Request, ErrorCode)> = vec![
        (
            produce_request("orders", 2, encode("orders", 2, &[Message::from_body("x")])),
            ErrorCode::UnknownQueue,
        ),
        (
            produce_request("orders", 0, encode("orders", 1, &[Message::from_body("x")])),
            ErrorCode::BatchTopicMismatch,
        ),
        (
            produce_request("orders", 0, b"not a batch at all".to_vec()),
            ErrorCode::CorruptBatch,
        ),
        (
            Request::Produce(ProduceRequest {
                acks: Acks::Replicated,
                ..match produce_request("orders", 0, encode("orders", 0, &[])) {
                    Request::Produce(produce) => produce,
                    _ => unreachable!(),
                }
            }),
            ErrorCode::NoSlave,
        ),
        (
            fetch_request("orders", 0, 5, 0),
            ErrorCode::OffsetOutOfRange,
        ),
        (
            Request::CreateTopic(smq_protocol::request::CreateTopicRequest {
                topic: "orders".into(),
                queue_count: 1,
            }),
            ErrorCode::TopicAlreadyExists,
        ),
        (
            Request::CreateTopic(smq_protocol::request::CreateTopicRequest {
                topic: "many".into(),
                queue_count: 1025,
            }),
            ErrorCode::InvalidQueueCount,
        ),
        (
            Request::CreateTopic(smq_protocol::request::CreateTopicRequest {
                topic: "a/b".into(),
                queue_count: 1,
            }),
            ErrorCode::InvalidTopicName,
        ),
        (
            Request::CommitOffset(CommitOffsetRequest {
                consumer_group: String::new(),
                topic: "orders".into(),
                queue_id: 0,
                offset: 1,
                owner_epoch: 0,
                topic_id: 0,
            }),
            ErrorCode::InvalidGroupName,
        ),
    ];
    for (request, expected) in cases {
        let response = client.call(request.clone()).await;
        assert_eq!(
            error_code(&response),
            Some(expected),
            "{request:?} -> {response:?}"
        );
    }
    assert_eq!(client.read_all("orders", 0, 0).await, Vec::<Vec<u8>>::new());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_flushed_under_async_flush_waits_for_an_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.store.flush = FlushMode::Async;
    config.store.flush_interval_ms = 60_000; // only a requested flush can answer in time
    let broker = start(config).await;
    let mut client = Client::connect(broker.tcp_addr()).await;
    client.create_topic("orders", 1).await;
    let started = Instant::now();
    let response = client
        .call(Request::Produce(ProduceRequest {
            topic: "orders".into(),
            queue_id: 0,
            acks: Acks::Flushed,
            timeout_ms: 5_000,
            batch: encode("orders", 0, &[Message::from_body("durable")]).into(),
        }))
        .await;
    assert!(matches!(response, Response::Produce(_)), "{response:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_and_offsets_survive_a_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.store.flush = FlushMode::Async;
    let broker = start(config.clone()).await;
    let mut client = Client::connect(broker.tcp_addr()).await;
    client.create_topic("orders", 2).await;
    let mut expected = Vec::new();
    for i in 0..50 {
        let body = format!("message {i}");
        client.produce_ok("orders", 1, &[body.as_bytes()]).await;
        expected.push(body.into_bytes());
    }
    let response = client
        .call(Request::CommitOffset(CommitOffsetRequest {
            consumer_group: "billing".into(),
            topic: "orders".into(),
            queue_id: 1,
            offset: 42,
            owner_epoch: 0,
            topic_id: 0,
        }))
        .await;
    assert_eq!(response, Response::CommitOffset);
    // A long poll in flight is answered (empty) when the broker stops.
    let mut consumer = Client::connect(broker.tcp_addr()).await;
    let poll = consumer.send(fetch_request("orders", 0, 0, 30_000)).await;
    let list = consumer
        .send(Request::ListOffsets(ListOffsetsRequest {
            topic: "orders".into(),
            queue_id: 0,
        }))
        .await;
    assert_eq!(consumer.recv().await.0, list, "the long poll has started");
    let stopping = Instant::now();
    broker.shutdown().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "no waiting out the long poll"
    );
    let (answered, response) = consumer.recv().await;
    assert_eq!(answered, poll);
    assert!(
        matches!(response, Response::Fetch(ref f) if f.batches.is_empty()),
        "{response:?}"
    );

    let broker = start(config).await;
    let mut client = Client::connect(broker.tcp_addr()).await;
    assert_eq!(client.read_all("orders", 1, 0).await, expected);
    let response = client
        .call(Request::FetchOffset(FetchOffsetRequest {
            consumer_group: "billing".into(),
            topic: "orders".into(),
            queue_id: 1,
        }))
        .await;
    assert_eq!(
        response,
        Response::FetchOffset(FetchOffsetResponse { offset: Some(42) })
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_limit_and_idle_ones_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_connections = 1;
    config.idle_timeout_ms = 300;
    let broker = start(config).await;
    let mut first = Client::connect(broker.tcp_addr()).await;
    let mut second = Client::connect_raw(broker.tcp_addr()).await;
    assert!(
        second.recv_frame().await.is_none(),
        "over the limit: closed"
    );
    let idle_since = Instant::now();
    assert!(first.recv_frame().await.is_none(), "idle: closed");
    assert!(idle_since.elapsed() >= Duration::from_millis(250));
    let mut third = Client::connect(broker.tcp_addr()).await;
    let response = third
        .call(Request::Metadata(MetadataRequest::default()))
        .await;
    assert!(
        matches!(response, Response::Metadata(_)),
        "a freed slot is reused"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let http = broker.http_addr().expect("--http was given");
    let (status, body) = smq_tests::http::get(http, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "ok\n");
    let mut client = Client::connect(broker.tcp_addr()).await;
    client.create_topic("orders", 1).await;
    client.produce_ok("orders", 0, &[b"a", b"b", b"c"]).await;
    client.fetch("orders", 0, 0, 0).await;
    let (status, metrics) = smq_tests::http::get(http, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    for line in [
        "smq_messages_in_total{topic=\"orders\"} 3\n",
        "smq_messages_out_total{topic=\"orders\"} 3\n",
        "smq_append_latency_seconds_count 1\n",
        "smq_flush_latency_seconds_count 1\n",
        "smq_connections_open 1\n",
        "# TYPE smq_append_latency_seconds histogram\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("smq_bytes_in_total{topic=\"orders\"} "),
        "{metrics}"
    );
    broker.shutdown().await.unwrap();
}

/// Consumer group billing commits `offset` of orders/0 with `owner_epoch`.
fn commit_billing(offset: u64, owner_epoch: u64) -> Request {
    Request::CommitOffset(CommitOffsetRequest {
        consumer_group: "billing".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset,
        owner_epoch,
        topic_id: 0,
    })
}

/// Consumer group billing's committed offset of orders/0.
fn fetch_billing_offset() -> Request {
    Request::FetchOffset(FetchOffsetRequest {
        consumer_group: "billing".into(),
        topic: "orders".into(),
        queue_id: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_past_the_end_of_the_queue_is_stored_as_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let mut client = Client::connect(broker.tcp_addr()).await;
    client.create_topic("orders", 1).await;
    for i in 0..3 {
        client
            .produce_ok("orders", 0, &[format!("m{i}").as_bytes()])
            .await;
    }
    assert_eq!(
        client.call(commit_billing(1_000, 0)).await,
        Response::CommitOffset
    );
    assert_eq!(
        client.call(fetch_billing_offset()).await,
        Response::FetchOffset(FetchOffsetResponse { offset: Some(3) }),
        "a group can never skip messages appended after its commit"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_a_former_owner_of_the_queue_is_refused_and_moves_no_offset_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let mut client = Client::connect(broker.tcp_addr()).await;
    client.create_topic("orders", 1).await;
    for i in 0..10 {
        client
            .produce_ok("orders", 0, &[format!("m{i}").as_bytes()])
            .await;
    }
    let commit = commit_billing;
    // The queue's owner of epoch 3 committed 8; its owner of epoch 2 is slow and commits 5.
    assert_eq!(client.call(commit(8, 3)).await, Response::CommitOffset);
    let stale = client.call(commit(5, 2)).await;
    assert_eq!(
        error_code(&stale),
        Some(ErrorCode::StaleOwnerEpoch),
        "{stale:?}"
    );
    assert_eq!(
        client.call(fetch_billing_offset()).await,
        Response::FetchOffset(FetchOffsetResponse { offset: Some(8) })
    );
    // The same owner, or a newer one, commits on.
    assert_eq!(client.call(commit(9, 3)).await, Response::CommitOffset);
    assert_eq!(client.call(commit(10, 4)).await, Response::CommitOffset);
    broker.shutdown().await.unwrap();
}

/// Produce v2 (protocol version 3) carries the batches of several topic-queues: each entry is
/// appended in order and answered apart (a refused entry writes nothing and holds up no other),
/// under sync flush after one fsync past the last of them; a client speaking protocol version 1
/// on the same broker still produces with Produce v1 (compatibility).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_v2_answers_each_entry_apart_and_produce_v1_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.store.flush = FlushMode::Sync;
    let broker = start(config).await;
    let mut v1 = Client::connect(broker.tcp_addr()).await;
    v1.create_topic("orders", 2).await;
    v1.create_topic("invoices", 1).await;
    assert_eq!(v1.produce_ok("orders", 0, &[b"by v1"]).await, 0);

    let mut v3 = Client::connect_speaking(broker.tcp_addr(), 3).await;
    let entry = |topic: &str, queue_id, batch_topic: &str, body: &str| ProduceEntry {
        topic: topic.into(),
        queue_id,
        batch: encode(
            batch_topic,
            queue_id,
            &[Message::from_body(body.to_owned())],
        )
        .into(),
    };
    let response = v3
        .call(Request::ProduceMany(ProduceManyRequest {
            acks: Acks::Written,
            timeout_ms: 5_000,
            entries: vec![
                entry("orders", 0, "orders", "a"),
                entry("nope", 0, "nope", "lost"),
                entry("orders", 1, "invoices", "mismatched"),
                entry("invoices", 0, "invoices", "b"),
                entry("orders", 0, "orders", "c"),
            ],
        }))
        .await;
    let Response::ProduceMany(produced) = response else {
        panic!("{response:?}")
    };
    let codes: Vec<_> = produced
        .results
        .iter()
        .map(|result| match result {
            Ok(stored) => Ok((stored.base_queue_offset, stored.message_count)),
            Err(error) => Err(error.error_code()),
        })
        .collect();
    assert_eq!(
        codes,
        [
            Ok((1, 1)),
            Err(Some(ErrorCode::UnknownTopic)),
            Err(Some(ErrorCode::BatchTopicMismatch)),
            Ok((0, 1)),
            Ok((2, 1)),
        ]
    );
    assert_eq!(
        v1.read_all("orders", 0, 0).await,
        [b"by v1".to_vec(), b"a".to_vec(), b"c".to_vec()]
    );
    assert!(v1.read_all("orders", 1, 0).await.is_empty());
    assert_eq!(v1.read_all("invoices", 0, 0).await, [b"b".to_vec()]);
    assert_eq!(v1.produce_ok("orders", 0, &[b"v1 again"]).await, 3);
    broker.shutdown().await.unwrap();
}
