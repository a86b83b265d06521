//! A raw blocking connection to a broker: sends bytes as they are (garbage, partial frames,
//! pipelined requests) and reads response frames, for tests of what the broker does with them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use smq_client::protocol::api::ApiKey;
use smq_client::protocol::frame::decode_response;
use smq_client::protocol::request::HandshakeRequest;
use smq_client::protocol::{Request, Response};

/// A blocking connection that sends raw bytes and reads response frames.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    next_correlation_id: u32,
}

pub enum Answer {
    Frame(u32, Bytes),
    Closed,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// A connection made elsewhere (e.g. from another source address); reads time out after 10 s.
    pub fn from_stream(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            next_correlation_id: 1,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, request: &Request) -> u32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut out = BytesMut::new();
        request.encode(1, correlation_id, &mut out);
        self.send_raw(&out);
        correlation_id
    }

    pub fn answer(&mut self) -> Answer {
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
    pub fn call(&mut self, api: ApiKey, request: &Request) -> Response {
        let correlation_id = self.send(request);
        match self.answer() {
            Answer::Frame(answered, body) => {
                assert_eq!(answered, correlation_id);
                Response::decode(api, 1, body).expect("response decodes")
            }
            Answer::Closed => panic!("the broker closed the connection instead of answering"),
        }
    }

    /// A new connection that has handshaken.
    pub fn handshake(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        assert!(raw.try_handshake(), "the broker closed the connection");
        raw
    }

    /// Handshakes: false if the broker closed the connection instead of answering.
    pub fn try_handshake(&mut self) -> bool {
        let handshake = Request::Handshake(HandshakeRequest {
            client_id: "raw-test-client".into(),
            min_version: 1,
            max_version: 1,
            auth_token: Bytes::new(),
        });
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut out = BytesMut::new();
        handshake.encode(1, correlation_id, &mut out);
        if self.stream.write_all(&out).is_err() {
            return false;
        }
        match self.answer() {
            Answer::Frame(answered, body) => {
                assert_eq!(answered, correlation_id);
                let response = Response::decode(ApiKey::Handshake, 1, body).unwrap();
                assert!(matches!(response, Response::Handshake(_)), "{response:?}");
                true
            }
            Answer::Closed => false,
        }
    }
}
