//! What the server tests share: a broker started in-process on 127.0.0.1:0, and a small
//! pipelining client built on the codec that speaks to it over real TCP.

#![allow(dead_code)] // each test file uses a part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use smq_broker::config::BrokerConfig;
use smq_broker::RunningBroker;
use smq_protocol::api::ApiKey;
use smq_protocol::frame::{decode_response, ResponseFrame};
use smq_protocol::record_batch::{encode, BatchView, Message};
use smq_protocol::request::{
    Acks, CreateTopicRequest, FetchRequest, HandshakeRequest, ProduceRequest,
};
use smq_protocol::response::{FetchResponse, ProduceResponse};
use smq_protocol::{ErrorCode, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every wait in these tests ends here at the latest: a failure, never a hang.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn config(dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::for_tests(dir);
    config.store.segment_bytes = 8 * 1024 * 1024;
    config.http = Some("127.0.0.1:0".into());
    config
}

pub async fn start(config: BrokerConfig) -> RunningBroker {
    smq_broker::start(config).await.expect("broker starts")
}

/// A connection that sends requests and receives responses in whatever order they come.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    next_correlation_id: u32,
    /// The api of each request still waiting for its response.
    pending: HashMap<u32, ApiKey>,
    /// The protocol version of the handshake: requests and responses use its api versions.
    protocol_version: u16,
}

impl Client {
    /// Connects without a handshake.
    pub async fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            next_correlation_id: 1,
            pending: HashMap::new(),
            protocol_version: 1,
        }
    }

    /// Connects and handshakes at protocol version 1.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_speaking(addr, 1).await
    }

    /// Connects and handshakes at `protocol_version` (the broker must speak it).
    pub async fn connect_speaking(addr: SocketAddr, protocol_version: u16) -> Client {
        let mut client = Client::connect_raw(addr).await;
        let response = client
            .call(Request::Handshake(HandshakeRequest {
                client_id: "broker-tests".into(),
                min_version: protocol_version,
                max_version: protocol_version,
                auth_token: Default::default(),
            }))
            .await;
        let Response::Handshake(handshake) = response else {
            panic!("{response:?}");
        };
        assert_eq!(handshake.version, protocol_version);
        client.protocol_version = protocol_version;
        client
    }

    /// The version of `api` this connection uses.
    fn version_of(&self, api: ApiKey) -> u16 {
        api.version_in(self.protocol_version)
            .expect("a version the broker speaks")
    }

    pub async fn send(&mut self, request: Request) -> u32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        self.pending.insert(correlation_id, request.api_key());
        let mut out = BytesMut::new();
        request.encode(self.version_of(request.api_key()), correlation_id, &mut out);
        self.stream.write_all(&out).await.expect("send");
        correlation_id
    }

    /// The next response frame, undecoded; `None` when the broker closed the connection.
    pub async fn recv_frame(&mut self) -> Option<ResponseFrame> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(frame) = decode_response(&mut self.buf, 64 << 20).expect("frame") {
                    return Some(frame);
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("a response or a close within the deadline")
    }

    /// The next response, decoded as the api of the request it answers.
    pub async fn recv(&mut self) -> (u32, Response) {
        let frame = self.recv_frame().await.expect("a response, not a close");
        let api = self
            .pending
            .remove(&frame.correlation_id)
            .unwrap_or_else(|| panic!("unexpected correlation id {}", frame.correlation_id));
        let response =
            Response::decode(api, self.version_of(api), frame.body).expect("response decodes");
        (frame.correlation_id, response)
    }

    pub async fn call(&mut self, request: Request) -> Response {
        let correlation_id = self.send(request).await;
        let (answered, response) = self.recv().await;
        assert_eq!(answered, correlation_id);
        response
    }

    pub async fn create_topic(&mut self, topic: &str, queue_count: u32) {
        let response = self
            .call(Request::CreateTopic(CreateTopicRequest {
                topic: topic.into(),
                queue_count,
            }))
            .await;
        assert_eq!(response, Response::CreateTopic);
    }

    pub async fn produce(&mut self, topic: &str, queue: u32, bodies: &[&[u8]]) -> Response {
        let messages: Vec<Message> = bodies.iter().map(|b| Message::from_body(*b)).collect();
        self.call(produce_request(
            topic,
            queue,
            encode(topic, queue, &messages),
        ))
        .await
    }

    /// Produces and expects success: the base offset.
    pub async fn produce_ok(&mut self, topic: &str, queue: u32, bodies: &[&[u8]]) -> u64 {
        match self.produce(topic, queue, bodies).await {
            Response::Produce(ProduceResponse {
                base_queue_offset, ..
            }) => base_queue_offset,
            other => panic!("produce failed: {other:?}"),
        }
    }

    pub async fn fetch(
        &mut self,
        topic: &str,
        queue: u32,
        offset: u64,
        max_wait_ms: u32,
    ) -> FetchResponse {
        match self
            .call(fetch_request(topic, queue, offset, max_wait_ms))
            .await
        {
            Response::Fetch(response) => response,
            other => panic!("fetch failed: {other:?}"),
        }
    }

    /// Every message body from `offset` on, as far as the broker has them now.
    pub async fn read_all(&mut self, topic: &str, queue: u32, mut offset: u64) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        loop {
            let response = self.fetch(topic, queue, offset, 0).await;
            if response.batches.is_empty() {
                return bodies;
            }
            for (message_offset, body) in batch_bodies(&response.batches) {
                if message_offset >= offset {
                    bodies.push(body);
                    offset = message_offset + 1;
                }
            }
        }
    }
}

pub fn produce_request(topic: &str, queue: u32, batch: Vec<u8>) -> Request {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        queue_id: queue,
        acks: Acks::Written,
        timeout_ms: 5_000,
        batch: batch.into(),
    })
}

pub fn fetch_request(topic: &str, queue: u32, offset: u64, max_wait_ms: u32) -> Request {
    Request::Fetch(FetchRequest {
        topic: topic.into(),
        queue_id: queue,
        offset,
        max_bytes: 1 << 20,
        max_wait_ms,
        topic_id: 0,
    })
}

/// (queue offset, body) of every message in back-to-back batches.
pub fn batch_bodies(mut batches: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !batches.is_empty() {
        let len = smq_protocol::record_batch::total_len(batches).unwrap();
        let view = BatchView::parse(&batches[..len]).expect("stored batches are valid");
        for (i, message) in view.messages().enumerate() {
            out.push((view.base_queue_offset() + i as u64, message.body.to_vec()));
        }
        batches = &batches[len..];
    }
    out
}

pub fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(error) => error.error_code(),
        _ => None,
    }
}
