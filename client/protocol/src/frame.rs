//! Frames on a TCP stream: the length prefix and header of every request and response, cut from a
//! buffer only once complete, with the length checked against the limit before anything grows.
//!
//! A request frame is `u32 length | u16 api_key | u16 api_version | u32 correlation_id | body`, a
//! response frame `u32 length | u32 correlation_id | body`; `length` counts the bytes after it
//! (proto-spec.md, "TCP framing"). Bodies are decoded by [`crate::request`] and
//! [`crate::response`]; this module never looks inside them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error_code::ErrorCode;

/// Bytes of a request frame before its body: length, api key, api version, correlation id.
pub const REQUEST_HEADER_BYTES: usize = 4 + 2 + 2 + 4;
/// Bytes of a response frame before its body: length, correlation id.
pub const RESPONSE_HEADER_BYTES: usize = 4 + 4;
/// Bytes of the length prefix.
const LENGTH_BYTES: usize = 4;

/// Why the bytes on a connection are not a frame this peer accepts. After a frame error the
/// stream cannot be resynchronised: answer if possible, then close the connection.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::{ErrorCode, FrameError};
///
/// // A length prefix of 4 GiB is refused from its 4 bytes alone.
/// let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
/// let error = decode_request(&mut buf, 1024).unwrap_err();
/// assert!(matches!(error, FrameError::TooLarge { declared_bytes: u32::MAX, max_frame_bytes: 1024 }));
/// assert_eq!(error.error_code(), ErrorCode::FrameTooLarge);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "frame declares {declared_bytes} bytes, above the limit of {max_frame_bytes} bytes: \
         is the peer speaking the smq protocol, and does it use the same max frame size?"
    )]
    TooLarge {
        declared_bytes: u32,
        max_frame_bytes: usize,
    },
    #[error(
        "frame declares {declared_bytes} bytes, fewer than the {minimum_bytes} bytes of its header"
    )]
    TooSmall {
        declared_bytes: u32,
        minimum_bytes: usize,
    },
}

impl FrameError {
    /// The code a broker answers with (correlation id 0) before it closes the connection.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::TooSmall { .. } => ErrorCode::MalformedRequest,
        }
    }
}

/// The fixed fields of a request frame. The api key and version stay raw numbers here so that a
/// broker can answer a request it cannot decode with the right correlation id.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::{encode_request, REQUEST_HEADER_BYTES};
/// use smq_protocol::RequestHeader;
///
/// let header = RequestHeader { api_key: 4, api_version: 1, correlation_id: 7 };
/// let mut buf = BytesMut::new();
/// encode_request(&mut buf, header, |out| out.extend_from_slice(b"x"));
/// assert_eq!(buf.len(), REQUEST_HEADER_BYTES + 1);
/// // Big-endian length (bytes after it), api key, api version, correlation id, body.
/// assert_eq!(&buf[..], &[0, 0, 0, 9, 0, 4, 0, 1, 0, 0, 0, 7, b'x']);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: u16,
    pub api_version: u16,
    /// Chosen by the client, echoed in the response; clients start at 1, since a broker answers
    /// errors it cannot tie to a request with 0.
    pub correlation_id: u32,
}

/// A complete request frame: its header and its undecoded body, shared with the read buffer.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::{decode_request, encode_request};
/// use smq_protocol::RequestHeader;
///
/// let header = RequestHeader { api_key: 2, api_version: 1, correlation_id: 1 };
/// let mut whole = BytesMut::new();
/// encode_request(&mut whole, header, |out| out.extend_from_slice(b"body"));
/// // Half a frame: nothing is cut and the buffer stays as it was; read more and call again.
/// let mut buf = BytesMut::from(&whole[..10]);
/// assert_eq!(decode_request(&mut buf, 1024), Ok(None));
/// buf.extend_from_slice(&whole[10..]);
/// let frame = decode_request(&mut buf, 1024).unwrap().unwrap();
/// assert_eq!((frame.header, &frame.body[..]), (header, &b"body"[..]));
/// assert!(buf.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    pub header: RequestHeader,
    pub body: Bytes,
}

/// A complete response frame: the correlation id of the request it answers and its undecoded
/// body, shared with the read buffer.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::{decode_response, encode_response};
///
/// let mut buf = BytesMut::new();
/// encode_response(&mut buf, 9, |out| out.extend_from_slice(b"answer"));
/// let frame = decode_response(&mut buf, 1024).unwrap().unwrap();
/// assert_eq!(frame.correlation_id, 9);
/// assert_eq!(&frame.body[..], b"answer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    pub correlation_id: u32,
    pub body: Bytes,
}

/// Reads the length prefix, if present, and returns the size of the whole frame. Errors as soon
/// as the 4 length bytes are there, before the caller reads or reserves the rest.
fn frame_len(
    buf: &[u8],
    header_bytes: usize,
    max_frame_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let declared_bytes = u32::from_be_bytes(prefix.try_into().expect("4 bytes"));
    if declared_bytes as usize > max_frame_bytes {
        return Err(FrameError::TooLarge {
            declared_bytes,
            max_frame_bytes,
        });
    }
    if (declared_bytes as usize) < header_bytes - LENGTH_BYTES {
        return Err(FrameError::TooSmall {
            declared_bytes,
            minimum_bytes: header_bytes - LENGTH_BYTES,
        });
    }
    Ok(Some(LENGTH_BYTES + declared_bytes as usize))
}

/// Cuts one request frame from the front of `buf`. `Ok(None)` means the frame is not complete
/// yet: `buf` is left as it was, read more and call again.
pub fn decode_request(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<RequestFrame>, FrameError> {
    let Some(total) = frame_len(buf, REQUEST_HEADER_BYTES, max_frame_bytes)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(LENGTH_BYTES);
    let header = RequestHeader {
        api_key: frame.get_u16(),
        api_version: frame.get_u16(),
        correlation_id: frame.get_u32(),
    };
    Ok(Some(RequestFrame {
        header,
        body: frame.freeze(),
    }))
}

/// Cuts one response frame from the front of `buf`. `Ok(None)` means the frame is not complete
/// yet: `buf` is left as it was, read more and call again.
pub fn decode_response(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<ResponseFrame>, FrameError> {
    let Some(total) = frame_len(buf, RESPONSE_HEADER_BYTES, max_frame_bytes)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(LENGTH_BYTES);
    let correlation_id = frame.get_u32();
    Ok(Some(ResponseFrame {
        correlation_id,
        body: frame.freeze(),
    }))
}

/// Appends a request frame to `out`: the header, then whatever `body` writes, then the length is
/// filled in. Panics if the frame would exceed 4 GiB; senders check their limits first.
pub fn encode_request(out: &mut BytesMut, header: RequestHeader, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0); // length, filled below
    out.put_u16(header.api_key);
    out.put_u16(header.api_version);
    out.put_u32(header.correlation_id);
    body(out);
    fill_length(out, start);
}

/// Appends a response frame to `out`: the correlation id, then whatever `body` writes, then the
/// length is filled in. Panics if the frame would exceed 4 GiB; senders check their limits first.
pub fn encode_response(out: &mut BytesMut, correlation_id: u32, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0); // length, filled below
    out.put_u32(correlation_id);
    body(out);
    fill_length(out, start);
}

/// Raises the length of the frame that starts at `start` in `out` by `payload` bytes that the
/// sender writes after it uncopied (a Produce batch, a Fetch response's batches): the encoded
/// head then says the whole frame's length. Panics if the frame would exceed 4 GiB.
pub(crate) fn extend_length(out: &mut BytesMut, start: usize, payload: usize) {
    let head_length = u32::from_be_bytes(
        out[start..start + LENGTH_BYTES]
            .try_into()
            .expect("4 bytes"),
    );
    let length = u32::try_from(payload)
        .ok()
        .and_then(|payload| head_length.checked_add(payload))
        .expect("frame above 4 GiB");
    out[start..start + LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
}

fn fill_length(out: &mut BytesMut, start: usize) {
    let length = u32::try_from(out.len() - start - LENGTH_BYTES).expect("frame above 4 GiB");
    out[start..start + LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_FRAME_BYTES_DEFAULT;
    use proptest::prelude::*;

    fn request_bytes(header: RequestHeader, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_request(&mut out, header, |out| out.put_slice(body));
        out
    }

    const HEADER: RequestHeader = RequestHeader {
        api_key: 1,
        api_version: 1,
        correlation_id: 7,
    };

    #[test]
    fn frame_declaring_4_gib_is_rejected_from_its_length_alone() {
        let mut buf = BytesMut::with_capacity(4);
        buf.put_u32(u32::MAX);
        let capacity = buf.capacity();
        let error = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap_err();
        assert_eq!(
            error,
            FrameError::TooLarge {
                declared_bytes: u32::MAX,
                max_frame_bytes: MAX_FRAME_BYTES_DEFAULT
            }
        );
        assert_eq!(buf.capacity(), capacity, "the decoder reserved nothing");
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn frame_one_byte_above_the_limit_is_rejected_and_at_the_limit_waits() {
        let mut buf = BytesMut::from(&101u32.to_be_bytes()[..]);
        assert!(decode_request(&mut buf, 100).is_err());
        let mut buf = BytesMut::from(&100u32.to_be_bytes()[..]);
        assert_eq!(decode_request(&mut buf, 100), Ok(None));
    }

    #[test]
    fn frame_shorter_than_its_header_is_rejected() {
        let mut buf = BytesMut::from(&7u32.to_be_bytes()[..]);
        assert_eq!(
            decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT),
            Err(FrameError::TooSmall {
                declared_bytes: 7,
                minimum_bytes: 8
            })
        );
        let mut buf = BytesMut::from(&3u32.to_be_bytes()[..]);
        assert!(matches!(
            decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT),
            Err(FrameError::TooSmall { .. })
        ));
    }

    #[test]
    fn every_truncated_frame_is_incomplete_and_left_in_the_buffer() {
        let whole = request_bytes(HEADER, b"body bytes");
        for len in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..len]);
            assert_eq!(decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT), Ok(None));
            assert_eq!(&buf[..], &whole[..len]);
        }
    }

    #[test]
    fn frames_in_one_buffer_are_cut_one_at_a_time() {
        let mut buf = request_bytes(HEADER, b"first");
        let second = RequestHeader {
            correlation_id: 8,
            ..HEADER
        };
        buf.extend_from_slice(&request_bytes(second, b"")[..]);
        buf.extend_from_slice(&[0, 0]); // the start of a third frame
        let one = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(one.header, HEADER);
        assert_eq!(&one.body[..], b"first");
        let two = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(two.header, second);
        assert!(two.body.is_empty());
        assert_eq!(decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT), Ok(None));
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn request_header_layout_is_big_endian() {
        let bytes = request_bytes(
            RequestHeader {
                api_key: 0x0102,
                api_version: 0x0304,
                correlation_id: 0x0506_0708,
            },
            b"x",
        );
        assert_eq!(&bytes[..], &[0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, b'x']);
    }

    proptest! {
        #[test]
        fn request_frames_round_trip(
            api_key in any::<u16>(), api_version in any::<u16>(), correlation_id in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let header = RequestHeader { api_key, api_version, correlation_id };
            let mut buf = request_bytes(header, &body);
            let frame = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            prop_assert_eq!(frame.header, header);
            prop_assert_eq!(&frame.body[..], body.as_slice());
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn response_frames_round_trip(
            correlation_id in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut buf = BytesMut::new();
            encode_response(&mut buf, correlation_id, |out| out.put_slice(&body));
            let frame = decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            prop_assert_eq!(frame.correlation_id, correlation_id);
            prop_assert_eq!(&frame.body[..], body.as_slice());
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn frame_decoders_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            max_frame_bytes in 0usize..1024,
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_request(&mut buf, max_frame_bytes) {}
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_response(&mut buf, max_frame_bytes) {}
        }
    }
}
