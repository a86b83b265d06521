//! Bytes from a peer's socket, as the broker and the client cut and decode them: request frames
//! (client and replication requests) and response frames (client and replication responses).
//! Whatever decodes must encode back to a frame that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use smq_protocol::api::ApiKey;
use smq_protocol::frame::{decode_request, decode_response};
use smq_protocol::replication::{ReplicaRequest, ReplicaResponse};
use smq_protocol::request::Request;
use smq_protocol::response::Response;

/// Small enough that the fuzzer reaches "too large" often; large enough for real requests.
const MAX_FRAME_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(rest);
    if mode % 2 == 0 {
        while let Ok(Some(frame)) = decode_request(&mut buf, MAX_FRAME_BYTES) {
            if let Ok(request) = Request::decode(&frame.header, frame.body.clone()) {
                let mut encoded = BytesMut::new();
                request.encode(
                    frame.header.api_version,
                    frame.header.correlation_id,
                    &mut encoded,
                );
                let again = decode_request(&mut encoded, usize::MAX).unwrap().unwrap();
                assert_eq!(again.header, frame.header);
                assert_eq!(Request::decode(&again.header, again.body).unwrap(), request);
            }
            let _ = ReplicaRequest::decode(&frame.header, frame.body);
        }
    } else {
        // A client remembers which request a correlation id answers: take it from the input.
        if buf.len() < 4 {
            return;
        }
        let head = buf.split_to(4);
        let api_key = u16::from_be_bytes([head[0], head[1]]);
        let api_version = u16::from_be_bytes([head[2], head[3]]);
        while let Ok(Some(frame)) = decode_response(&mut buf, MAX_FRAME_BYTES) {
            if let Some(key) = ApiKey::from_u16(api_key) {
                if let Ok(response) = Response::decode(key, api_version, frame.body.clone()) {
                    let mut encoded = BytesMut::new();
                    response.encode(api_version, frame.correlation_id, &mut encoded);
                    let again = decode_response(&mut encoded, usize::MAX).unwrap().unwrap();
                    assert_eq!(again.correlation_id, frame.correlation_id);
                    let decoded = Response::decode(key, api_version, again.body).unwrap();
                    assert_eq!(decoded, response);
                }
            }
            let _ = ReplicaResponse::decode(api_key, frame.body);
        }
    }
});
