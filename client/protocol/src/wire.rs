//! The protocol's primitive fields on the wire: big-endian integers, strings and byte arrays, each
//! length checked against the bytes left in the frame before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::error_code::ErrorCode;

/// Why a request or response body could not be decoded. The frame it came in was complete, so the
/// connection stays in step: a broker answers with an error code and goes on serving.
///
/// ```
/// use bytes::Bytes;
/// use smq_protocol::{ApiKey, DecodeError, ErrorCode, Request, RequestHeader};
///
/// let header = RequestHeader { api_key: ApiKey::Fetch as u16, api_version: 1, correlation_id: 1 };
/// // The topic's length says 5 bytes, but only 1 follows.
/// let error = Request::decode(&header, Bytes::from_static(&[0, 5, b'o'])).unwrap_err();
/// assert_eq!(error, DecodeError::Truncated { field: "topic", needed: 5, available: 1 });
/// assert_eq!(error.error_code(), ErrorCode::MalformedRequest);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported api key {api_key}: this build knows api keys 0 to {max_known}")]
    UnknownApiKey { api_key: u16, max_known: u16 },
    #[error(
        "unsupported version {version} of api {api}: this build speaks versions {min} to {max}"
    )]
    UnsupportedVersion {
        api: ApiKey,
        version: u16,
        min: u16,
        max: u16,
    },
    #[error("field `{field}` truncated: needs {needed} bytes, {available} left in the frame")]
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("field `{field}` has the value {value}, which this version does not define")]
    InvalidValue { field: &'static str, value: u64 },
    #[error("{count} bytes left after the last field of the body: wrong api version?")]
    TrailingBytes { count: usize },
}

impl DecodeError {
    /// The code a broker answers with when a request body does not decode.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownApiKey { .. } => ErrorCode::UnsupportedApiKey,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::Truncated { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::InvalidValue { .. }
            | DecodeError::TrailingBytes { .. } => ErrorCode::MalformedRequest,
        }
    }
}

/// The protocol crate's one bounds-checked reader: every read checks the bytes left first. Over
/// a frame body (`Bytes`, the default) byte arrays are zero-copy slices of the frame; over a
/// `&[u8]` (a record batch's messages) [`Reader::slice`] borrows them.
pub(crate) struct Reader<B = Bytes> {
    buf: B,
}

impl<B: Buf> Reader<B> {
    pub(crate) fn new(buf: B) -> Reader<B> {
        Reader { buf }
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, field: &'static str, needed: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < needed {
            return Err(DecodeError::Truncated {
                field,
                needed,
                available: self.buf.remaining(),
            });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(field, 1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(field, 2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(field, 4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(field, 8)?;
        Ok(self.buf.get_u64())
    }

    /// A u16 length, then that many bytes of UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.need(field, len)?;
        let mut bytes = vec![0; len];
        self.buf.copy_to_slice(&mut bytes);
        String::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A u32 length, then that many bytes, shared with the frame rather than copied (over
    /// `Bytes`, whose `copy_to_bytes` is a zero-copy split).
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        self.need(field, len)?;
        Ok(self.buf.copy_to_bytes(len))
    }

    /// A u32 item count, checked against the bytes left assuming each item takes at least
    /// `min_item_bytes`, so that a forged count cannot make the caller reserve a huge vector.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        debug_assert!(min_item_bytes > 0);
        let count = self.u32(field)? as usize;
        self.need(field, count.saturating_mul(min_item_bytes))?;
        Ok(count)
    }

    /// Whether every byte was read: an optional last field is absent.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.remaining() == 0
    }

    /// [`Reader::finish`] without giving the reader up.
    pub(crate) fn finish_here(&self) -> Result<(), DecodeError> {
        match self.buf.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    /// Ends the body: a known version has no bytes after its last field.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        self.finish_here()
    }
}

impl<'a> Reader<&'a [u8]> {
    /// The next `len` bytes, borrowed.
    pub(crate) fn slice(
        &mut self,
        field: &'static str,
        len: usize,
    ) -> Result<&'a [u8], DecodeError> {
        self.need(field, len)?;
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }
}

/// Writes a u16 length and the string. Panics above 65,535 bytes: callers check names first.
pub(crate) fn put_string(out: &mut BytesMut, value: &str) {
    let len = u16::try_from(value.len()).expect("string field longer than 65,535 bytes");
    out.put_u16(len);
    out.put_slice(value.as_bytes());
}

/// Writes a u32 length and the bytes. Panics above 4 GiB, which no frame can hold.
pub(crate) fn put_bytes(out: &mut BytesMut, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("byte array field longer than 4 GiB");
    out.put_u32(len);
    out.put_slice(value);
}

/// Writes a u32 item count.
pub(crate) fn put_count(out: &mut BytesMut, count: usize) {
    out.put_u32(u32::try_from(count).expect("more than 2^32 items"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn string_length_beyond_the_body_is_truncated_not_allocated() {
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, b'a']));
        let error = reader.string("topic").unwrap_err();
        assert_eq!(
            error,
            DecodeError::Truncated {
                field: "topic",
                needed: 65535,
                available: 1
            }
        );
    }

    #[test]
    fn byte_array_of_4_gib_is_truncated_not_allocated() {
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 2]));
        assert!(matches!(
            reader.bytes("batch"),
            Err(DecodeError::Truncated {
                needed: 0xffff_ffff,
                ..
            })
        ));
    }

    #[test]
    fn forged_item_count_is_rejected_before_reserving() {
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0, 0]));
        assert!(matches!(
            reader.count("topics", 2),
            Err(DecodeError::Truncated { available: 2, .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_named() {
        let mut reader = Reader::new(Bytes::from_static(&[0, 2, 0xc3, 0x28]));
        assert_eq!(
            reader.string("client_id"),
            Err(DecodeError::InvalidUtf8 { field: "client_id" })
        );
    }

    proptest! {
        #[test]
        fn strings_and_byte_arrays_round_trip(text in ".{0,40}", data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut out = BytesMut::new();
            put_string(&mut out, &text);
            put_bytes(&mut out, &data);
            let mut reader = Reader::new(out.freeze());
            prop_assert_eq!(reader.string("s").unwrap(), text);
            let bytes = reader.bytes("b").unwrap();
            prop_assert_eq!(bytes.as_ref(), data.as_slice());
            prop_assert!(reader.finish().is_ok());
        }
    }
}
