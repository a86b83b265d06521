//! A raw blocking connection to a broker: sends bytes as they are (garbage, partial frames,
//! pipelined requests) and reads response frames, for tests of what the broker does with them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
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

    /// Asks the kernel to stamp what this connection receives with the time it arrived.
    pub fn stamp_arrivals(&self) {
        let on: libc::c_int = 1;
        // SAFETY: sets an integer option on a socket this connection owns.
        let set = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(
            set,
            0,
            "SO_TIMESTAMPNS: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Reads one whole response frame, nothing being buffered before it or in flight behind
    /// it: when its first bytes arrived (the kernel's stamp, [`Raw::stamp_arrivals`], as a
    /// duration since the epoch) and its bytes, length prefix included.
    pub fn frame_with_arrival(&mut self) -> (Duration, Vec<u8>) {
        assert!(
            self.buf.is_empty(),
            "bytes of an earlier answer are buffered"
        );
        let (mut frame, mut arrived) = (Vec::new(), None);
        while frame.len() < 4
            || frame.len() < 4 + u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize
        {
            let mut data = [0u8; 65536];
            let mut control = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: reads into `data` and `control`, both as long as the header says.
            let read = unsafe { libc::recvmsg(self.stream.as_raw_fd(), &mut header, 0) };
            assert!(
                read > 0,
                "recvmsg: {read}, {}",
                std::io::Error::last_os_error()
            );
            frame.extend_from_slice(&data[..read as usize]);
            // SAFETY: walks the control messages the kernel wrote into `control`.
            let mut message = unsafe { libc::CMSG_FIRSTHDR(&header) };
            while !message.is_null() {
                // SAFETY: `message` points into `control`, as CMSG_FIRSTHDR/CMSG_NXTHDR checked.
                let (level, kind) = unsafe { ((*message).cmsg_level, (*message).cmsg_type) };
                if arrived.is_none() && level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
                    // SAFETY: an SCM_TIMESTAMPNS message carries one timespec.
                    let stamp: libc::timespec =
                        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(message).cast()) };
                    arrived = Some(Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32));
                }
                // SAFETY: as above.
                message = unsafe { libc::CMSG_NXTHDR(&header, message) };
            }
        }
        (arrived.expect("the kernel stamped the answer"), frame)
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
