//! The record batch: the unit a producer sends, the broker stores and a consumer reads, byte for byte.
//!
//! The layout is specified in proto-spec.md ("Record batch"). All integers are big-endian. The CRC
//! covers every byte after the CRC field, including the fields the broker stamps on append
//! (master epoch, base queue offset, store timestamp); [`BatchView::copy_stamped`] recomputes it
//! without a second pass over the payload by combining CRCs.

use bytes::BufMut;

use crate::limits::{MAX_MESSAGE_BYTES_DEFAULT, MAX_TOPIC_NAME_BYTES};
use crate::wire::{DecodeError, Reader};

/// The only batch format this version writes and reads.
pub const MAGIC_V1: u8 = 1;
/// Bytes of the fixed part of the header, before the topic name.
pub const FIXED_HEADER_BYTES: usize = layout::TOPIC;

/// Where each header field starts, in bytes from the start of the batch (proto-spec.md section
/// 1): the one definition the codec and the broker read and write the header by.
pub mod layout {
    /// `u32`: bytes after this field.
    pub const BATCH_LENGTH: usize = 0;
    /// `u32`: CRC-32 of the bytes from [`CRC_COVERS_FROM`] to the end of the batch.
    pub const CRC: usize = 4;
    /// The first byte the CRC covers: everything after the CRC field.
    pub const CRC_COVERS_FROM: usize = MAGIC;
    /// `u8`: the format version.
    pub const MAGIC: usize = 8;
    /// `u8`: reserved, zero.
    pub const RESERVED: usize = 9;
    /// `u16`.
    pub const ATTRIBUTES: usize = 10;
    /// `u32`, set by the broker.
    pub const MASTER_EPOCH: usize = 12;
    /// `u64`, set by the broker.
    pub const BASE_QUEUE_OFFSET: usize = 16;
    /// `u64`, set by the broker.
    pub const STORE_TIMESTAMP_MS: usize = 24;
    /// `u64`.
    pub const FIRST_TIMESTAMP_MS: usize = 32;
    /// `u64`.
    pub const MAX_TIMESTAMP_MS: usize = 40;
    /// `u64`.
    pub const PRODUCER_ID: usize = 48;
    /// `u16`.
    pub const PRODUCER_EPOCH: usize = 56;
    /// `u32`.
    pub const BASE_SEQUENCE: usize = 58;
    /// `u32`.
    pub const QUEUE_ID: usize = 62;
    /// `u32`: messages in the batch.
    pub const MESSAGE_COUNT: usize = 66;
    /// `u16`: bytes of the topic name.
    pub const TOPIC_LENGTH: usize = 70;
    /// The topic name, then the messages.
    pub const TOPIC: usize = 72;

    // Each field ends where the next begins.
    const _: () = assert!(CRC == BATCH_LENGTH + 4 && MAGIC == CRC + 4);
    const _: () = assert!(RESERVED == MAGIC + 1 && ATTRIBUTES == RESERVED + 1);
    const _: () = assert!(MASTER_EPOCH == ATTRIBUTES + 2 && BASE_QUEUE_OFFSET == MASTER_EPOCH + 4);
    const _: () = assert!(STORE_TIMESTAMP_MS == BASE_QUEUE_OFFSET + 8);
    const _: () = assert!(FIRST_TIMESTAMP_MS == STORE_TIMESTAMP_MS + 8);
    const _: () = assert!(MAX_TIMESTAMP_MS == FIRST_TIMESTAMP_MS + 8);
    const _: () = assert!(PRODUCER_ID == MAX_TIMESTAMP_MS + 8);
    const _: () = assert!(PRODUCER_EPOCH == PRODUCER_ID + 8 && BASE_SEQUENCE == PRODUCER_EPOCH + 2);
    const _: () = assert!(QUEUE_ID == BASE_SEQUENCE + 4 && MESSAGE_COUNT == QUEUE_ID + 4);
    const _: () = assert!(TOPIC_LENGTH == MESSAGE_COUNT + 4 && TOPIC == TOPIC_LENGTH + 2);
}
/// Bytes of the fixed part of a message, before its variable fields.
const MESSAGE_FIXED_BYTES: usize = 4 + 4 + 4 + 2 + 2 + 4;

/// Why a byte sequence is not a valid batch.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchError, BatchView, Message};
///
/// let mut batch = record_batch::encode("orders", 0, &[Message::from_body("paid")]);
/// let last = batch.len() - 1;
/// batch[last] ^= 0x01; // one bit of the body flipped on the way
/// assert!(matches!(BatchView::parse(&batch), Err(BatchError::CrcMismatch { .. })));
/// let error = BatchView::parse(&batch[..10]).unwrap_err();
/// assert_eq!(error, BatchError::Truncated { needed: 72, available: 10 });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length field {length} is below the minimum header size {minimum}")]
    LengthTooSmall { length: u32, minimum: usize },
    #[error("unknown batch magic {magic}: this build reads magic {MAGIC_V1}")]
    UnknownMagic { magic: u8 },
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed batch: {reason}")]
    Malformed { reason: &'static str },
    #[error("message {index} is {bytes} bytes, above the limit of {limit} bytes")]
    MessageTooLarge {
        index: u32,
        bytes: usize,
        limit: usize,
    },
    #[error("topic name of {bytes} bytes is invalid: 1 to {MAX_TOPIC_NAME_BYTES} bytes of UTF-8")]
    BadTopic { bytes: usize },
}

/// One message as a producer builds it.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchView, Message};
///
/// let mut message = Message::from_body("order 17 paid");
/// message.key = b"customer-42".to_vec();
/// message.tag = "paid".into();
/// message.headers.push(("trace-id".into(), b"abc".to_vec()));
/// let batch = record_batch::encode("orders", 0, &[message.clone()]);
/// let view = BatchView::parse(&batch).unwrap();
/// assert_eq!(view.messages().next().unwrap().to_message(), message);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Decides the queue when the producer picks one; empty means no key.
    pub key: Vec<u8>,
    /// A short label consumers may filter on later; empty means no tag.
    pub tag: String,
    /// Application headers in order; names are UTF-8.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Creation time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl Message {
    /// A message with only a body, stamped now.
    pub fn from_body(body: impl Into<Vec<u8>>) -> Message {
        Message {
            body: body.into(),
            timestamp_ms: now_ms(),
            ..Message::default()
        }
    }

    /// Bytes this message occupies inside a batch.
    pub fn encoded_len(&self) -> usize {
        MESSAGE_FIXED_BYTES
            + self.key.len()
            + self.tag.len()
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| 2 + name.len() + 4 + value.len())
                .sum::<usize>()
    }
}

/// The header fields of a batch; the broker sets `master_epoch`, `base_queue_offset` and
/// `store_timestamp_ms` when it appends, the producer sets the rest.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchView, Message};
///
/// let messages = [Message::from_body("a"), Message::from_body("b")];
/// let batch = record_batch::encode("orders", 5, &messages);
/// let header = BatchView::parse(&batch).unwrap().header();
/// assert_eq!((header.topic.as_str(), header.queue_id, header.message_count), ("orders", 5, 2));
/// // The broker-stamped fields stay zero until a broker appends the batch.
/// assert_eq!((header.master_epoch, header.base_queue_offset), (0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchHeader {
    /// Compression, control and transactional bits; all zero in this version (reserved).
    pub attributes: u16,
    pub master_epoch: u32,
    pub base_queue_offset: u64,
    pub store_timestamp_ms: u64,
    pub first_timestamp_ms: u64,
    pub max_timestamp_ms: u64,
    /// Idempotent-producer fields; zero when unused (reserved in this version).
    pub producer_id: u64,
    pub producer_epoch: u16,
    pub base_sequence: u32,
    pub queue_id: u32,
    pub message_count: u32,
    pub topic: String,
}

/// What the broker writes into a batch when it appends it.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchView, BrokerStamp, Message};
///
/// let batch = record_batch::encode("orders", 0, &[Message::from_body("a"), Message::from_body("b")]);
/// let view = BatchView::parse(&batch).unwrap();
/// let stamp = BrokerStamp { master_epoch: 3, base_queue_offset: 100, store_timestamp_ms: 1_700_000_000_000 };
/// let mut stamped = vec![0; view.len()];
/// view.copy_stamped(&mut stamped, stamp);
/// // The stamped copy carries a valid CRC of its own.
/// let stored = BatchView::parse(&stamped).unwrap();
/// assert_eq!(stored.base_queue_offset(), 100);
/// assert_eq!(stored.next_queue_offset(), 102);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStamp {
    pub master_epoch: u32,
    pub base_queue_offset: u64,
    pub store_timestamp_ms: u64,
}

/// Encodes `messages` for `topic`/`queue_id` into one batch with a valid CRC. The broker-stamped
/// fields are zero until the broker appends it.
///
/// Panics if the topic name or a message breaks the limits that [`BatchView::parse`] enforces;
/// producers check those first and report them as errors.
pub fn encode(topic: &str, queue_id: u32, messages: &[Message]) -> Vec<u8> {
    let first_timestamp_ms = messages.iter().map(|m| m.timestamp_ms).min().unwrap_or(0);
    let capacity = topic.len() + messages.iter().map(Message::encoded_len).sum::<usize>();
    let mut builder = BatchBuilder::with_capacity(topic, queue_id, capacity);
    builder.first_timestamp_ms = Some(first_timestamp_ms);
    for message in messages {
        builder.push(message);
    }
    builder.finish()
}

/// Builds one batch message by message in a single buffer, so that a producer copies each
/// message's bytes exactly once: from the caller's message into the batch that goes on the wire.
///
/// ```
/// use smq_protocol::record_batch::{BatchBuilder, BatchView, Message};
///
/// let mut builder = BatchBuilder::with_capacity("orders", 3, 1024);
/// builder.push(&Message::from_body("first"));
/// builder.push(&Message::from_body("second"));
/// assert_eq!(builder.message_count(), 2);
/// let batch = builder.finish();
/// let view = BatchView::parse(&batch).unwrap();
/// assert_eq!(view.queue_id(), 3);
/// assert_eq!(view.messages().nth(1).unwrap().body, b"second");
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    out: Vec<u8>,
    message_count: u32,
    /// Timestamp deltas are taken from this: the first message's timestamp unless set before.
    /// A later message with an earlier timestamp is stored with a zero delta.
    first_timestamp_ms: Option<u64>,
    max_timestamp_ms: u64,
}

impl BatchBuilder {
    /// Starts a batch with room for about `capacity_bytes` bytes of messages.
    ///
    /// Panics if the topic name is empty or longer than [`MAX_TOPIC_NAME_BYTES`].
    pub fn with_capacity(topic: &str, queue_id: u32, capacity_bytes: usize) -> BatchBuilder {
        assert!(
            !topic.is_empty() && topic.len() <= MAX_TOPIC_NAME_BYTES,
            "topic name length"
        );
        let mut out = Vec::with_capacity(FIXED_HEADER_BYTES + topic.len() + capacity_bytes);
        out.put_u32(0); // batch length, filled by `finish`
        out.put_u32(0); // CRC, filled by `finish`
        out.put_u8(MAGIC_V1);
        out.put_u8(0); // reserved
        out.put_u16(0); // attributes
        out.put_u32(0); // master epoch
        out.put_u64(0); // base queue offset
        out.put_u64(0); // store timestamp
        out.put_u64(0); // first timestamp, filled by `finish`
        out.put_u64(0); // max timestamp, filled by `finish`
        out.put_u64(0); // producer id
        out.put_u16(0); // producer epoch
        out.put_u32(0); // base sequence
        out.put_u32(queue_id);
        out.put_u32(0); // message count, filled by `finish`
        out.put_u16(topic.len() as u16);
        debug_assert_eq!(out.len(), layout::TOPIC);
        out.extend_from_slice(topic.as_bytes());
        BatchBuilder {
            out,
            message_count: 0,
            first_timestamp_ms: None,
            max_timestamp_ms: 0,
        }
    }

    /// Appends one message.
    ///
    /// Panics if a field is longer than its length field allows (a key or value above 4 GiB, a
    /// tag or header name above 64 KiB); producers check message sizes first.
    pub fn push(&mut self, message: &Message) {
        let first_timestamp_ms = *self.first_timestamp_ms.get_or_insert(message.timestamp_ms);
        self.max_timestamp_ms = self.max_timestamp_ms.max(message.timestamp_ms);
        let out = &mut self.out;
        let length = message.encoded_len();
        assert!(length <= u32::MAX as usize, "message length");
        out.put_u32((length - 4) as u32);
        out.put_u32(
            (message.timestamp_ms.saturating_sub(first_timestamp_ms)).min(u32::MAX as u64) as u32,
        );
        out.put_u32(message.key.len() as u32);
        out.extend_from_slice(&message.key);
        out.put_u16(u16::try_from(message.tag.len()).expect("tag above 64 KiB"));
        out.extend_from_slice(message.tag.as_bytes());
        out.put_u16(u16::try_from(message.headers.len()).expect("65,536 headers or more"));
        for (name, value) in &message.headers {
            out.put_u16(u16::try_from(name.len()).expect("header name above 64 KiB"));
            out.extend_from_slice(name.as_bytes());
            out.put_u32(value.len() as u32);
            out.extend_from_slice(value);
        }
        out.put_u32(message.body.len() as u32);
        out.extend_from_slice(&message.body);
        self.message_count += 1;
    }

    /// Bytes of the batch so far, header included.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether no message was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.message_count == 0
    }

    /// Messages pushed so far.
    pub fn message_count(&self) -> u32 {
        self.message_count
    }

    /// Fills in the length, timestamps, message count and CRC, and returns the batch.
    pub fn finish(mut self) -> Vec<u8> {
        let out = &mut self.out;
        let length = u32::try_from(out.len() - 4).expect("batch above 4 GiB");
        (&mut out[layout::BATCH_LENGTH..]).put_u32(length);
        let first_timestamp_ms = self.first_timestamp_ms.unwrap_or(0);
        (&mut out[layout::FIRST_TIMESTAMP_MS..]).put_u64(first_timestamp_ms);
        (&mut out[layout::MAX_TIMESTAMP_MS..]).put_u64(self.max_timestamp_ms);
        (&mut out[layout::MESSAGE_COUNT..]).put_u32(self.message_count);
        let crc = crc32fast::hash(&out[layout::CRC_COVERS_FROM..]);
        (&mut out[layout::CRC..]).put_u32(crc);
        self.out
    }
}

/// Reads the total size of the batch starting at `bytes` (length field + 4), if the length field
/// is present. Says nothing about validity.
pub fn total_len(bytes: &[u8]) -> Option<usize> {
    let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    Some(4 + length as usize)
}

/// The `store_timestamp_ms` the broker stamped on the stored batch starting at `bytes`, if its
/// header is there. Says nothing about validity: for batches the broker checked when it stored
/// them.
pub fn stored_timestamp_ms(bytes: &[u8]) -> Option<u64> {
    let at = layout::STORE_TIMESTAMP_MS;
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Above this many payload bytes a batch's CRC state of its payload is kept, and the stamped
/// header's CRC combined with it; below, hashing the payload again costs less. Keeping it costs
/// two combines (checking the batch and stamping it), hashing it again one more pass over the
/// payload; callgrind: one `Hasher::combine` takes about 1,800 instructions, as many as hashing
/// 3 KiB, so the two ways cost the same at about 6 KiB. (At 2 KiB, batches of two 1 KiB
/// messages, common over 10,000 queues, took the dearer way: 1,100 instructions a message.)
const COMBINE_ABOVE_PAYLOAD_BYTES: usize = 6 * 1024;

/// The CRC of `header` followed by `payload`: `payload_crc` is the payload's own CRC state
/// when the caller kept one (a large payload), else the payload is hashed.
fn crc_of(header: &[u8], payload: &[u8], payload_crc: Option<&crc32fast::Hasher>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    match payload_crc {
        Some(payload_crc) => hasher.combine(payload_crc),
        None => hasher.update(payload),
    }
    hasher.finalize()
}

/// Length of the header including the topic, after checking that the length field, magic and
/// topic length fit in `batch` exactly.
fn header_len(batch: &[u8]) -> Result<usize, BatchError> {
    if batch.len() < FIXED_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: FIXED_HEADER_BYTES,
            available: batch.len(),
        });
    }
    let length = read_u32(batch, layout::BATCH_LENGTH);
    if (length as usize) < FIXED_HEADER_BYTES - 4 {
        return Err(BatchError::LengthTooSmall {
            length,
            minimum: FIXED_HEADER_BYTES,
        });
    }
    let total = 4 + length as usize;
    if batch.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: batch.len(),
        });
    }
    if batch.len() > total {
        return Err(BatchError::Malformed {
            reason: "bytes after the end given by the length field",
        });
    }
    if batch[layout::MAGIC] != MAGIC_V1 {
        return Err(BatchError::UnknownMagic {
            magic: batch[layout::MAGIC],
        });
    }
    let topic_len = read_u16(batch, layout::TOPIC_LENGTH) as usize;
    if topic_len == 0 || topic_len > MAX_TOPIC_NAME_BYTES {
        return Err(BatchError::BadTopic { bytes: topic_len });
    }
    let header_end = FIXED_HEADER_BYTES + topic_len;
    if header_end > total {
        return Err(BatchError::Malformed {
            reason: "topic name runs past the end of the batch",
        });
    }
    Ok(header_end)
}

/// A validated batch, borrowed from the bytes it was parsed from.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchView, Message};
///
/// let batch = record_batch::encode("orders", 1, &[Message::from_body("a"), Message::from_body("b")]);
/// let view = BatchView::parse(&batch).unwrap();
/// assert_eq!((view.topic(), view.queue_id(), view.message_count()), ("orders", 1, 2));
/// assert_eq!(view.as_bytes(), &batch[..]);
/// let bodies: Vec<&[u8]> = view.messages().map(|message| message.body).collect();
/// assert_eq!(bodies, [b"a", b"b"]);
/// ```
#[derive(Debug, Clone)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    header_end: usize,
    /// CRC state of the messages (everything after the header) when they are more than
    /// `COMBINE_ABOVE_PAYLOAD_BYTES`, kept so that stamping the header needs no second pass
    /// over a large payload.
    payload_crc: Option<crc32fast::Hasher>,
}

impl<'a> BatchView<'a> {
    /// Checks that `bytes` is exactly one well-formed batch: length, magic, CRC, topic, and every
    /// message in bounds with the declared count, each at most `MAX_MESSAGE_BYTES_DEFAULT`.
    pub fn parse(bytes: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        BatchView::parse_with_limit(bytes, MAX_MESSAGE_BYTES_DEFAULT)
    }

    /// [`BatchView::parse`] with another per-message size limit.
    pub fn parse_with_limit(
        bytes: &'a [u8],
        max_message_bytes: usize,
    ) -> Result<BatchView<'a>, BatchError> {
        let header_end = header_len(bytes)?;
        let payload = &bytes[header_end..];
        let payload_crc = (payload.len() > COMBINE_ABOVE_PAYLOAD_BYTES).then(|| {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(payload);
            hasher
        });
        let stored = read_u32(bytes, layout::CRC);
        let computed = crc_of(
            &bytes[layout::CRC_COVERS_FROM..header_end],
            payload,
            payload_crc.as_ref(),
        );
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        if std::str::from_utf8(&bytes[FIXED_HEADER_BYTES..header_end]).is_err() {
            return Err(BatchError::Malformed {
                reason: "topic name is not UTF-8",
            });
        }
        let view = BatchView {
            bytes,
            header_end,
            payload_crc,
        };
        let mut count = 0u32;
        let mut at = header_end;
        while at < bytes.len() {
            let (_, next) = parse_message(bytes, at, view.first_timestamp_ms())?;
            if next - at > max_message_bytes {
                return Err(BatchError::MessageTooLarge {
                    index: count,
                    bytes: next - at,
                    limit: max_message_bytes,
                });
            }
            count = count.checked_add(1).ok_or(BatchError::Malformed {
                reason: "too many messages",
            })?;
            at = next;
        }
        if count != view.message_count() {
            return Err(BatchError::Malformed {
                reason: "message count field does not match the messages present",
            });
        }
        Ok(view)
    }

    /// Copies the batch into `dest` (exactly [`BatchView::len`] bytes) with the broker's fields
    /// set and the CRC recomputed; of a large batch only the header is hashed again.
    pub fn copy_stamped(&self, dest: &mut [u8], stamp: BrokerStamp) {
        dest.copy_from_slice(self.bytes);
        (&mut dest[layout::MASTER_EPOCH..]).put_u32(stamp.master_epoch);
        (&mut dest[layout::BASE_QUEUE_OFFSET..]).put_u64(stamp.base_queue_offset);
        (&mut dest[layout::STORE_TIMESTAMP_MS..]).put_u64(stamp.store_timestamp_ms);
        let crc = crc_of(
            &dest[layout::CRC_COVERS_FROM..self.header_end],
            &dest[self.header_end..],
            self.payload_crc.as_ref(),
        );
        (&mut dest[layout::CRC..]).put_u32(crc);
    }

    /// Total bytes of the batch.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a valid batch has at least its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The whole batch, exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn crc(&self) -> u32 {
        read_u32(self.bytes, layout::CRC)
    }
    pub fn attributes(&self) -> u16 {
        read_u16(self.bytes, layout::ATTRIBUTES)
    }
    pub fn master_epoch(&self) -> u32 {
        read_u32(self.bytes, layout::MASTER_EPOCH)
    }
    pub fn base_queue_offset(&self) -> u64 {
        read_u64(self.bytes, layout::BASE_QUEUE_OFFSET)
    }
    pub fn store_timestamp_ms(&self) -> u64 {
        read_u64(self.bytes, layout::STORE_TIMESTAMP_MS)
    }
    pub fn first_timestamp_ms(&self) -> u64 {
        read_u64(self.bytes, layout::FIRST_TIMESTAMP_MS)
    }
    pub fn max_timestamp_ms(&self) -> u64 {
        read_u64(self.bytes, layout::MAX_TIMESTAMP_MS)
    }
    pub fn producer_id(&self) -> u64 {
        read_u64(self.bytes, layout::PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> u16 {
        read_u16(self.bytes, layout::PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> u32 {
        read_u32(self.bytes, layout::BASE_SEQUENCE)
    }
    pub fn queue_id(&self) -> u32 {
        read_u32(self.bytes, layout::QUEUE_ID)
    }
    pub fn message_count(&self) -> u32 {
        read_u32(self.bytes, layout::MESSAGE_COUNT)
    }
    pub fn topic(&self) -> &'a str {
        // Checked to be UTF-8 in `parse`.
        std::str::from_utf8(&self.bytes[FIXED_HEADER_BYTES..self.header_end]).unwrap_or_default()
    }

    /// Queue offset one past the last message of this batch.
    pub fn next_queue_offset(&self) -> u64 {
        self.base_queue_offset() + u64::from(self.message_count())
    }

    pub fn header(&self) -> BatchHeader {
        BatchHeader {
            attributes: self.attributes(),
            master_epoch: self.master_epoch(),
            base_queue_offset: self.base_queue_offset(),
            store_timestamp_ms: self.store_timestamp_ms(),
            first_timestamp_ms: self.first_timestamp_ms(),
            max_timestamp_ms: self.max_timestamp_ms(),
            producer_id: self.producer_id(),
            producer_epoch: self.producer_epoch(),
            base_sequence: self.base_sequence(),
            queue_id: self.queue_id(),
            message_count: self.message_count(),
            topic: self.topic().to_owned(),
        }
    }

    /// The messages in order, borrowed from the batch.
    pub fn messages(&self) -> MessageIter<'a> {
        MessageIter {
            bytes: self.bytes,
            at: self.header_end,
            first_timestamp_ms: self.first_timestamp_ms(),
        }
    }
}

/// A message borrowed from a parsed batch.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchView, Message};
///
/// let mut message = Message::from_body("hello");
/// message.tag = "greeting".into();
/// let batch = record_batch::encode("orders", 0, &[message]);
/// let view = BatchView::parse(&batch).unwrap();
/// // The fields borrow from the batch; `to_message` copies them out.
/// let first = view.messages().next().unwrap();
/// assert_eq!((first.tag, first.body), ("greeting", &b"hello"[..]));
/// assert_eq!(first.to_message().body, b"hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub key: &'a [u8],
    pub tag: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
    pub timestamp_ms: u64,
}

impl MessageView<'_> {
    pub fn to_message(&self) -> Message {
        Message {
            key: self.key.to_vec(),
            tag: self.tag.to_owned(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
                .collect(),
            body: self.body.to_vec(),
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// Iterates the messages of a [`BatchView`]; the batch was validated, so it yields every message.
///
/// ```
/// use smq_protocol::record_batch::{self, BatchView, Message};
///
/// let messages: Vec<Message> = (0..5).map(|i| Message::from_body(format!("m{i}"))).collect();
/// let batch = record_batch::encode("orders", 0, &messages);
/// let view = BatchView::parse(&batch).unwrap();
/// // A fetch from offset 3 may return a batch that starts earlier: skip to the wanted message.
/// let skip = (3 - view.base_queue_offset()) as usize;
/// let rest: Vec<Vec<u8>> = view.messages().skip(skip).map(|m| m.body.to_vec()).collect();
/// assert_eq!(rest, [b"m3".to_vec(), b"m4".to_vec()]);
/// ```
pub struct MessageIter<'a> {
    bytes: &'a [u8],
    at: usize,
    first_timestamp_ms: u64,
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = MessageView<'a>;

    fn next(&mut self) -> Option<MessageView<'a>> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let (message, next) = parse_message(self.bytes, self.at, self.first_timestamp_ms).ok()?;
        self.at = next;
        Some(message)
    }
}

/// Parses the message at `at`, returning it and the position after it.
fn parse_message(
    bytes: &[u8],
    at: usize,
    first_timestamp_ms: u64,
) -> Result<(MessageView<'_>, usize), BatchError> {
    // A field past its message's end; the reader's error names the field, the batch's reason
    // stays the one proto-spec's readers know.
    let past_end = |_: DecodeError| BatchError::Malformed {
        reason: "a message field runs past the end of its message",
    };
    let mut length = Reader::new(bytes.get(at..).unwrap_or_default());
    let length = length.u32("message length").map_err(past_end)? as usize;
    let start = at + 4;
    let end = start
        .checked_add(length)
        .filter(|end| *end <= bytes.len())
        .ok_or(BatchError::Malformed {
            reason: "message length runs past the end of the batch",
        })?;
    let mut reader = Reader::new(&bytes[start..end]);
    let timestamp_ms = first_timestamp_ms
        .checked_add(u64::from(reader.u32("timestamp delta").map_err(past_end)?))
        .ok_or(BatchError::Malformed {
            reason: "a message's timestamp is past the largest u64",
        })?;
    let key_len = reader.u32("key length").map_err(past_end)? as usize;
    let key = reader.slice("key", key_len).map_err(past_end)?;
    let tag_len = reader.u16("tag length").map_err(past_end)? as usize;
    let tag = reader.slice("tag", tag_len).map_err(past_end)?;
    let tag = std::str::from_utf8(tag).map_err(|_| BatchError::Malformed {
        reason: "tag is not UTF-8",
    })?;
    let header_count = reader.u16("header count").map_err(past_end)?;
    let mut headers = Vec::with_capacity(usize::from(header_count).min(64));
    for _ in 0..header_count {
        let name_len = reader.u16("header name length").map_err(past_end)? as usize;
        let name = reader.slice("header name", name_len).map_err(past_end)?;
        let name = std::str::from_utf8(name).map_err(|_| BatchError::Malformed {
            reason: "header name is not UTF-8",
        })?;
        let value_len = reader.u32("header value length").map_err(past_end)? as usize;
        headers.push((
            name,
            reader.slice("header value", value_len).map_err(past_end)?,
        ));
    }
    let body_len = reader.u32("body length").map_err(past_end)? as usize;
    let body = reader.slice("body", body_len).map_err(past_end)?;
    if reader.remaining() != 0 {
        return Err(BatchError::Malformed {
            reason: "message length does not match its fields",
        });
    }
    Ok((
        MessageView {
            key,
            tag,
            headers,
            body,
            timestamp_ms,
        },
        end,
    ))
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the record_batch fuzz target: the first timestamp plus a message's delta
    /// overflowed (a panic in debug builds, a wrapped timestamp in release).
    #[test]
    fn a_timestamp_past_the_largest_u64_is_malformed_not_a_panic() {
        let messages = [0, 10].map(|delta| Message {
            timestamp_ms: 1_000 + delta,
            ..Message::from_body("m")
        });
        let mut bytes = encode("t", 0, &messages);
        let at = layout::FIRST_TIMESTAMP_MS;
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        let crc = crc32fast::hash(&bytes[layout::CRC_COVERS_FROM..]);
        bytes[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            BatchView::parse(&bytes),
            Err(BatchError::Malformed { reason }) if reason.contains("timestamp")
        ));
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            proptest::collection::vec(any::<u8>(), 0..16),
            "[a-z]{0,8}",
            proptest::collection::vec(
                ("[a-z]{1,6}", proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
            proptest::collection::vec(any::<u8>(), 0..2048),
            1_600_000_000_000u64..1_600_000_100_000,
        )
            .prop_map(|(key, tag, headers, body, timestamp_ms)| Message {
                key,
                tag,
                headers,
                body,
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_batches_round_trip(
            topic in "[A-Za-z0-9_.-]{1,40}",
            queue_id in any::<u32>(),
            messages in proptest::collection::vec(arb_message(), 0..20),
        ) {
            let bytes = encode(&topic, queue_id, &messages);
            let view = BatchView::parse(&bytes).unwrap();
            prop_assert_eq!(view.topic(), topic.as_str());
            prop_assert_eq!(view.queue_id(), queue_id);
            prop_assert_eq!(view.message_count() as usize, messages.len());
            let decoded: Vec<Message> = view.messages().map(|m| m.to_message()).collect();
            prop_assert_eq!(decoded, messages);
        }

        #[test]
        fn builder_pushed_in_time_order_makes_the_same_bytes_as_encode(
            topic in "[A-Za-z0-9_.-]{1,40}",
            queue_id in any::<u32>(),
            mut messages in proptest::collection::vec(arb_message(), 1..20),
        ) {
            messages.sort_by_key(|m| m.timestamp_ms);
            let mut builder = BatchBuilder::with_capacity(&topic, queue_id, 0);
            for message in &messages {
                builder.push(message);
            }
            prop_assert_eq!(builder.message_count() as usize, messages.len());
            prop_assert_eq!(builder.finish(), encode(&topic, queue_id, &messages));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = BatchView::parse(&bytes);
        }

        #[test]
        fn any_flipped_byte_is_detected(
            messages in proptest::collection::vec(arb_message(), 1..5),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = encode("t", 0, &messages);
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            prop_assert!(BatchView::parse(&bytes).is_err());
        }

        #[test]
        fn stamp_keeps_the_batch_valid(
            messages in proptest::collection::vec(arb_message(), 0..5),
            epoch in any::<u32>(), offset in any::<u64>(), now in any::<u64>(),
        ) {
            let bytes = encode("topic", 3, &messages);
            let mut stamped = vec![0u8; bytes.len()];
            BatchView::parse(&bytes).unwrap().copy_stamped(&mut stamped, BrokerStamp { master_epoch: epoch, base_queue_offset: offset, store_timestamp_ms: now });
            let view = BatchView::parse(&stamped).unwrap();
            prop_assert_eq!(view.master_epoch(), epoch);
            prop_assert_eq!(view.base_queue_offset(), offset);
            prop_assert_eq!(view.store_timestamp_ms(), now);
            prop_assert_eq!(view.messages().count(), messages.len());
        }
    }

    /// Both ways of stamping a batch's CRC (hashing a small payload again, combining a large
    /// one's kept CRC state) give the CRC of the stamped bytes.
    #[test]
    fn a_stamped_batch_has_the_crc_of_its_bytes_below_and_above_the_combine_size() {
        for body_bytes in [
            10,
            COMBINE_ABOVE_PAYLOAD_BYTES / 2,
            COMBINE_ABOVE_PAYLOAD_BYTES * 4,
        ] {
            let messages = [0u8, 1].map(|fill| Message::from_body(vec![fill; body_bytes]));
            let bytes = encode("t", 0, &messages);
            let mut stamped = vec![0u8; bytes.len()];
            let stamp = BrokerStamp {
                master_epoch: 7,
                base_queue_offset: 1 << 40,
                store_timestamp_ms: 1_700_000_000_000,
            };
            BatchView::parse(&bytes)
                .unwrap()
                .copy_stamped(&mut stamped, stamp);
            let crc = crc32fast::hash(&stamped[layout::CRC_COVERS_FROM..]);
            assert_eq!(
                read_u32(&stamped, layout::CRC),
                crc,
                "bodies of {body_bytes} bytes"
            );
            assert_eq!(
                BatchView::parse(&stamped).unwrap().base_queue_offset(),
                1 << 40
            );
        }
    }

    #[test]
    fn oversized_message_is_named() {
        let bytes = encode("t", 0, &[Message::from_body(vec![0u8; 200])]);
        let error = BatchView::parse_with_limit(&bytes, 100).unwrap_err();
        assert!(
            matches!(error, BatchError::MessageTooLarge { index: 0, .. }),
            "{error}"
        );
    }
}
