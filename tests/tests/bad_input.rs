//! Bad input sent to the real `smq-broker` binary while a healthy client produces and consumes:
//! each gets an error response or a clean close, the broker logs exactly one line naming the
//! peer, the healthy client never sees an error, and nothing acknowledged is lost.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use smq_client::protocol::api::ApiKey;
use smq_client::protocol::frame::{encode_request, RequestHeader};
use smq_client::protocol::record_batch::{encode, Message as BatchMessage};
use smq_client::protocol::request::{Acks, MetadataRequest, ProduceRequest};
use smq_client::protocol::{ErrorCode, Request, Response};
use smq_client::{Admin, ClientConfig};
use smq_tests::healthy::{read_back, HealthyProducer};
use smq_tests::raw::{Answer, Raw};
use smq_tests::{wait_for, Broker};

fn error_of(response: &Response) -> (ErrorCode, String) {
    match response {
        Response::Error(error) => (
            error.error_code().expect("a known code"),
            error.message.clone(),
        ),
        other => panic!("expected an error response, got {other:?}"),
    }
}

fn produce(topic: &str, body: Vec<u8>) -> Request {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        queue_id: 0,
        acks: Acks::Written,
        timeout_ms: 0,
        batch: encode(topic, 0, &[BatchMessage::from_body(body)]).into(),
    })
}

/// Waits until the broker has logged one more warning naming `peer`, then checks that no
/// second one follows.
fn expect_one_warning(broker: &Broker, peer: SocketAddr, what: &str) -> String {
    let naming_peer = |broker: &Broker| -> Vec<String> {
        broker
            .log_lines()
            .into_iter()
            .filter(|line| line.contains("WARN") && line.contains(&peer.to_string()))
            .collect()
    };
    let line = wait_for(
        &format!("a warning for {what}"),
        Duration::from_secs(5),
        || naming_peer(broker).first().cloned(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let lines = naming_peer(broker);
    assert_eq!(
        lines.len(),
        1,
        "{what}: exactly one log line, got {lines:#?}"
    );
    line
}

#[test]
fn each_bad_input_gets_an_answer_and_one_log_line_while_a_healthy_client_keeps_working() {
    let broker = Broker::start(&[]);
    let config = ClientConfig::new(broker.addr.to_string());
    let runtime = smq_tests::runtime();
    runtime.block_on(async {
        Admin::connect(config.clone())
            .await
            .unwrap()
            .create_topic("healthy", 2)
            .await
            .unwrap()
    });

    // The healthy client: produces one message at a time, counting acknowledgements.
    let healthy = HealthyProducer::start(
        config.clone(),
        "healthy",
        |n| format!("healthy-{n}"),
        Duration::from_millis(2),
    );
    wait_for(
        "the healthy client is producing",
        Duration::from_secs(10),
        || (healthy.acknowledged() > 0).then_some(()),
    );

    // A garbage frame: its "length" is far above the limit: answered with correlation id 0, closed.
    let mut raw = Raw::connect(broker.addr);
    raw.send_raw(b"this is not an smq frame, just text\n");
    match raw.answer() {
        Answer::Frame(0, _) => assert!(
            matches!(raw.answer(), Answer::Closed),
            "closed after the error"
        ),
        Answer::Frame(id, _) => panic!("answered with correlation id {id}"),
        Answer::Closed => {}
    }
    expect_one_warning(&broker, raw.local_addr(), "a garbage frame");

    // A frame claiming 4 GiB: refused from its length alone.
    let mut raw = Raw::connect(broker.addr);
    raw.send_raw(&[0xff, 0xff, 0xff, 0xff, 0, 1, 0, 1, 0, 0, 0, 7]);
    match raw.answer() {
        Answer::Frame(0, _) => assert!(matches!(raw.answer(), Answer::Closed)),
        Answer::Frame(id, _) => panic!("answered with correlation id {id}"),
        Answer::Closed => {}
    }
    let line = expect_one_warning(&broker, raw.local_addr(), "a 4 GiB frame");
    assert!(
        line.contains("4294967295") || line.to_lowercase().contains("too large"),
        "{line}"
    );

    // A truncated frame: the client goes away in the middle of it.
    let mut raw = Raw::handshake(broker.addr);
    let mut frame = BytesMut::new();
    produce("healthy", vec![1; 100]).encode(1, 9, &mut frame);
    raw.send_raw(&frame[..frame.len() / 2]);
    let peer = raw.local_addr();
    raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(matches!(raw.answer(), Answer::Closed), "a clean close");
    expect_one_warning(&broker, peer, "a truncated frame");

    // An unknown api key: an error response, and the connection stays usable.
    let mut raw = Raw::handshake(broker.addr);
    let mut frame = BytesMut::new();
    encode_request(
        &mut frame,
        RequestHeader {
            api_key: 999,
            api_version: 1,
            correlation_id: 41,
        },
        |_| {},
    );
    raw.send_raw(&frame);
    match raw.answer() {
        Answer::Frame(41, body) => {
            let (code, message) = error_of(&Response::decode(ApiKey::Metadata, 1, body).unwrap());
            assert!(message.contains("999"), "{code:?}: {message}");
        }
        _ => panic!("an error response for correlation id 41"),
    }
    let metadata = raw.call(
        ApiKey::Metadata,
        &Request::Metadata(MetadataRequest::default()),
    );
    assert!(
        matches!(metadata, Response::Metadata(_)),
        "the connection still works: {metadata:?}"
    );
    expect_one_warning(&broker, raw.local_addr(), "an unknown api key");

    // An oversized message: refused with the size and the limit, nothing stored.
    let mut raw = Raw::handshake(broker.addr);
    let response = raw.call(
        ApiKey::Produce,
        &produce("healthy", vec![7; 5 * 1024 * 1024]),
    );
    let (code, message) = error_of(&response);
    assert!(message.contains("4194304"), "{code:?}: {message}");
    expect_one_warning(&broker, raw.local_addr(), "an oversized message");

    // A produce to a topic that does not exist: says how to create it.
    let mut raw = Raw::handshake(broker.addr);
    let (code, message) = error_of(&raw.call(ApiKey::Produce, &produce("nowhere", b"x".to_vec())));
    assert!(
        message.contains("smq topic create nowhere"),
        "{code:?}: {message}"
    );
    expect_one_warning(&broker, raw.local_addr(), "a missing topic");

    let acknowledged = healthy.stop();
    assert!(
        acknowledged.len() > 10,
        "the healthy client made progress: {}",
        acknowledged.len()
    );

    // Everything acknowledged is there, once and in order.
    let got = read_back(config, "healthy", acknowledged.len());
    let mut sorted = got.clone();
    sorted.sort_by_key(|body| body[8..].parse::<usize>().unwrap());
    assert_eq!(
        sorted, acknowledged,
        "every acknowledged message is readable exactly once"
    );
}

/// A broker that cannot start says why in one line, each cause once: a data directory under a
/// regular file is named with the operating system's reason, which is not repeated after it.
#[test]
fn a_broker_that_cannot_start_names_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let output = std::process::Command::new(smq_tests::binary("smq-broker"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the broker started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|line| line.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.contains("cannot start the broker") && error.contains("a-file/data"),
        "{error}"
    );
    assert_eq!(
        error.matches("Not a directory").count(),
        1,
        "the reason said once: {error}"
    );
}
