//! How `smq consume` prints a message: its body alone (`--format text`), or one JSON object a
//! line with where it came from (`--format json`, PRODUCT.md's fields); bytes that are not UTF-8
//! are printed as base64 with a flag saying so.

use std::io::Write;

use clap::ValueEnum;
use serde_json::{json, Value};
use smq_client::ConsumedMessage;

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// The body, one message a line.
    #[default]
    Text,
    /// {"broker_group","queue","offset","timestamp_ms","key","key_base64","tag","headers",
    /// "body","body_base64"}, one message a line.
    Json,
}

impl OutputFormat {
    /// Writes `message` and its newline.
    pub fn write(self, out: &mut impl Write, message: &ConsumedMessage) -> std::io::Result<()> {
        match self {
            OutputFormat::Text => out.write_all(&message.body)?,
            OutputFormat::Json => serde_json::to_writer(&mut *out, &to_json(message))?,
        }
        out.write_all(b"\n")
    }
}

/// The JSON object of one message; `key` is null for a message without one.
fn to_json(message: &ConsumedMessage) -> Value {
    let (body, body_base64) = text_or_base64(&message.body);
    let (key, key_base64) = if message.key.is_empty() {
        (Value::Null, false)
    } else {
        let (key, base64) = text_or_base64(&message.key);
        (Value::String(key), base64)
    };
    let headers: Vec<Value> = message
        .headers
        .iter()
        .map(|(name, value)| {
            let (value, value_base64) = text_or_base64(value);
            json!({"name": name, "value": value, "value_base64": value_base64})
        })
        .collect();
    json!({
        "broker_group": &*message.broker_group,
        "queue": message.queue_id,
        "offset": message.offset,
        "timestamp_ms": message.timestamp_ms,
        "key": key,
        "key_base64": key_base64,
        "tag": message.tag,
        "headers": headers,
        "body": body,
        "body_base64": body_base64,
    })
}

/// The bytes as a string if they are UTF-8, else as base64 (and true).
fn text_or_base64(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64(bytes), true),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn json_names_where_a_message_came_from_and_flags_binary_bytes() {
        let message = ConsumedMessage {
            broker_group: Arc::from("broker-b"),
            queue_id: 3,
            offset: 41,
            timestamp_ms: 1_700_000_000_000,
            key: Bytes::from_static(b"customer-7"),
            tag: "paid".into(),
            headers: vec![("trace".into(), Bytes::from_static(&[0xff, 0x00]))],
            body: Bytes::from_static(&[0xfe, b'a']),
        };
        let mut out = Vec::new();
        OutputFormat::Json.write(&mut out, &message).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!({
                "broker_group": "broker-b", "queue": 3, "offset": 41,
                "timestamp_ms": 1_700_000_000_000u64, "key": "customer-7", "key_base64": false,
                "tag": "paid",
                "headers": [{"name": "trace", "value": "/wA=", "value_base64": true}],
                "body": "/mE=", "body_base64": true,
            })
        );
        let mut text = Vec::new();
        OutputFormat::Text.write(&mut text, &message).unwrap();
        assert_eq!(text, [0xfe, b'a', b'\n']);
    }
}
