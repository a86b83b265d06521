//! What the broker-to-broker apis (replication, keys 100 to 102, and role changes, keys 110 and
//! 111; proto-spec.md section 10) share: one version whatever the Handshake agreed on, request
//! bodies read to their end, and responses that begin with the usual error head.

use bytes::{Bytes, BytesMut};

use crate::frame::{self, RequestHeader};
use crate::response::{decode_error_head, encode_error_head, ErrorResponse};
use crate::wire::{DecodeError, Reader};

/// The one version of each broker-to-broker api so far.
pub const BROKER_API_VERSION: u16 = 1;

/// Appends a request frame of `api_key` at [`BROKER_API_VERSION`], its body written by `body`.
pub(crate) fn encode_request(
    api_key: u16,
    correlation_id: u32,
    out: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut),
) {
    let header = RequestHeader {
        api_key,
        api_version: BROKER_API_VERSION,
        correlation_id,
    };
    frame::encode_request(out, header, body);
}

/// Decodes a request body with `decode` (given the api key), after checking the version; the
/// body must be read to its end.
pub(crate) fn decode_request<T>(
    header: &RequestHeader,
    body: Bytes,
    decode: impl FnOnce(u16, &mut Reader) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    if header.api_version != BROKER_API_VERSION {
        return Err(DecodeError::InvalidValue {
            field: "api_version",
            value: header.api_version.into(),
        });
    }
    let mut reader = Reader::new(body);
    let request = decode(header.api_key, &mut reader)?;
    reader.finish()?;
    Ok(request)
}

/// Appends a response frame: the error head, then, when there is no error, the body `body`
/// writes.
pub(crate) fn encode_response(
    correlation_id: u32,
    error: Option<&ErrorResponse>,
    out: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut),
) {
    frame::encode_response(out, correlation_id, |out| {
        encode_error_head(out, error);
        if error.is_none() {
            body(out);
        }
    });
}

/// Decodes a response body: an error head becomes `error(..)`, else the body is decoded with
/// `decode` (given the api key of the request) and must be read to its end.
pub(crate) fn decode_response<T>(
    api_key: u16,
    body: Bytes,
    error: impl FnOnce(ErrorResponse) -> T,
    decode: impl FnOnce(u16, &mut Reader) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut reader = Reader::new(body);
    if let Some(response) = decode_error_head(&mut reader)? {
        return Ok(error(response));
    }
    let response = decode(api_key, &mut reader)?;
    reader.finish()?;
    Ok(response)
}

/// The error for an api key that the decoder at hand does not serve.
pub(crate) fn unknown_api(api_key: u16) -> DecodeError {
    DecodeError::InvalidValue {
        field: "api_key",
        value: api_key.into(),
    }
}

/// A u8 that must be 0 (false) or 1 (true).
pub(crate) fn read_flag(reader: &mut Reader, field: &'static str) -> Result<bool, DecodeError> {
    match reader.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(DecodeError::InvalidValue {
            field,
            value: value.into(),
        }),
    }
}

/// Tests of the codecs: a request decodes as it was encoded, and so does a response.
#[cfg(test)]
pub(crate) mod round_trip {
    use super::*;
    use std::fmt::Debug;

    pub(crate) fn request<T: PartialEq + Debug>(
        request: &T,
        encode: impl FnOnce(&T, u32, &mut BytesMut),
        decode: impl FnOnce(&RequestHeader, Bytes) -> Result<T, DecodeError>,
    ) {
        let mut out = BytesMut::new();
        encode(request, 7, &mut out);
        let frame = frame::decode_request(&mut out, 1 << 20).unwrap().unwrap();
        assert!(out.is_empty());
        assert_eq!(frame.header.correlation_id, 7);
        assert_eq!(&decode(&frame.header, frame.body).unwrap(), request);
    }

    pub(crate) fn response<T: PartialEq + Debug>(
        api_key: u16,
        response: &T,
        encode: impl FnOnce(&T, u32, &mut BytesMut),
        decode: impl FnOnce(u16, Bytes) -> Result<T, DecodeError>,
    ) {
        let mut out = BytesMut::new();
        encode(response, 9, &mut out);
        let frame = frame::decode_response(&mut out, 1 << 20).unwrap().unwrap();
        assert!(out.is_empty());
        assert_eq!(frame.correlation_id, 9);
        assert_eq!(&decode(api_key, frame.body).unwrap(), response);
    }
}
