//! Bad input sent to the real `smq-broker` binary while a healthy client produces and consumes:
//! each gets an error response or a clean close, the broker logs exactly one line naming the
//! peer, the healthy client never sees an error, and nothing acknowledged is lost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smq_client::protocol::api::ApiKey;
use smq_client::protocol::frame::{decode_response, encode_request, RequestHeader};
use smq_client::protocol::record_batch::{encode, Message as BatchMessage};
use smq_client::protocol::request::{Acks, HandshakeRequest, MetadataRequest, ProduceRequest};
use smq_client::protocol::{ErrorCode, Request, Response};
use smq_client::{Admin, ClientConfig, Consumer, Message, Producer, StartFrom};
use smq_tests::{wait_for, Broker};

/// A blocking connection that sends raw bytes and reads response frames.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    next_correlation_id: u32,
}

enum Answer {
    Frame(u32, Bytes),
    Closed,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            next_correlation_id: 1,
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send(&mut self, request: &Request) -> u32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut out = BytesMut::new();
        request.encode(1, correlation_id, &mut out);
        self.send_raw(&out);
        correlation_id
    }

    fn answer(&mut self) -> Answer {
        loop {
            if let Some(frame) =
                decode_response(&mut self.buf, 64 << 20).expect("a well-formed response frame")
            {
                return Answer::Frame(frame.correlation_id, frame.body);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return Answer::Closed,
                Ok(read) => self.buf.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// Sends `request` and decodes its answer as a response of `api`.
    fn call(&mut self, api: ApiKey, request: &Request) -> Response {
        let correlation_id = self.send(request);
        match self.answer() {
            Answer::Frame(answered, body) => {
                assert_eq!(answered, correlation_id);
                Response::decode(api, 1, body).expect("response decodes")
            }
            Answer::Closed => panic!("the broker closed the connection instead of answering"),
        }
    }

    fn handshake(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        let response = raw.call(
            ApiKey::Handshake,
            &Request::Handshake(HandshakeRequest {
                client_id: "bad-input-test".into(),
                min_version: 1,
                max_version: 1,
                auth_token: Bytes::new(),
            }),
        );
        assert!(matches!(response, Response::Handshake(_)), "{response:?}");
        raw
    }
}

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        Admin::connect(config.clone())
            .await
            .unwrap()
            .create_topic("healthy", 2)
            .await
            .unwrap()
    });

    // The healthy client: produces one message at a time, counting acknowledgements.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let healthy = {
        let (stop, progress, config) = (stop.clone(), progress.clone(), config.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let producer = Producer::connect(config).await.unwrap();
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("healthy-{}", acknowledged.len());
                    producer
                        .send("healthy", Message::from_body(body.clone()))
                        .await
                        .expect("the healthy client never fails");
                    acknowledged.push(body);
                    progress.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                acknowledged
            })
        })
    };
    wait_for(
        "the healthy client is producing",
        Duration::from_secs(10),
        || (progress.load(Ordering::Relaxed) > 0).then_some(()),
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

    stop.store(true, Ordering::Relaxed);
    let acknowledged = healthy
        .join()
        .expect("the healthy client worked throughout");
    assert!(
        acknowledged.len() > 10,
        "the healthy client made progress: {}",
        acknowledged.len()
    );

    // Everything acknowledged is there, once and in order.
    let got = runtime.block_on(async {
        let mut consumer = Consumer::connect(config, "healthy", None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < acknowledged.len() && Instant::now() < deadline {
            got.extend(
                consumer
                    .poll(10_000)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| String::from_utf8(m.body.to_vec()).unwrap()),
            );
        }
        got
    });
    let mut sorted = got.clone();
    sorted.sort_by_key(|body| body[8..].parse::<usize>().unwrap());
    assert_eq!(
        sorted, acknowledged,
        "every acknowledged message is readable exactly once"
    );
}
