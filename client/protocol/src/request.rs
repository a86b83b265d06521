//! The requests a client sends a broker, one type per api, each with its encoder and decoder side
//! by side (layouts in proto-spec.md, "Requests and responses").

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::frame::{self, RequestHeader};
use crate::wire::{put_bytes, put_count, put_string, DecodeError, Reader};

/// How far a broker takes a batch before it acknowledges a Produce request.
///
/// ```
/// use smq_protocol::request::Acks;
///
/// // Wait until a slave holds the batch: survives the loss of the master's disk.
/// let acks = Acks::Replicated;
/// assert_eq!(acks as u8, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Acks {
    /// Appended to the log in the page cache: survives a broker process crash.
    Written = 0,
    /// Flushed (fsynced) to the master's disk: survives a power loss of the master.
    Flushed = 1,
    /// Copied to a slave (and whatever the master's flush mode gives): survives the loss of the
    /// master's disk.
    Replicated = 2,
}

impl Acks {
    fn from_u8(value: u8) -> Result<Acks, DecodeError> {
        match value {
            0 => Ok(Acks::Written),
            1 => Ok(Acks::Flushed),
            2 => Ok(Acks::Replicated),
            _ => Err(DecodeError::InvalidValue {
                field: "acks",
                value: u64::from(value),
            }),
        }
    }
}

/// First request on a connection: who the client is and which protocol versions it speaks.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{HandshakeRequest, Request};
///
/// let request = Request::Handshake(HandshakeRequest {
///     client_id: "example".into(),
///     min_version: 1,
///     max_version: 1,
///     auth_token: Bytes::new(),
/// });
/// let mut buf = BytesMut::new();
/// request.encode(1, 1, &mut buf);
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Request::decode(&frame.header, frame.body).unwrap(), request);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Free text naming the client in the broker's logs, e.g. `smq-cli/0.1 host-a`.
    pub client_id: String,
    pub min_version: u16,
    pub max_version: u16,
    /// The principal's credential, `NAME:SECRET` in UTF-8 ([`crate::credential::Credential`]);
    /// empty means anonymous, which only a broker without principals accepts.
    pub auth_token: Bytes,
}

impl HandshakeRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_string(out, &self.client_id);
        out.put_u16(self.min_version);
        out.put_u16(self.max_version);
        put_bytes(out, &self.auth_token);
    }

    fn decode_v1(reader: &mut Reader) -> Result<HandshakeRequest, DecodeError> {
        Ok(HandshakeRequest {
            client_id: reader.string("client_id")?,
            min_version: reader.u16("min_version")?,
            max_version: reader.u16("max_version")?,
            auth_token: reader.bytes("auth_token")?,
        })
    }
}

/// Appends one record batch to a topic-queue.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use smq_protocol::record_batch::{self, Message};
/// use smq_protocol::request::{Acks, ProduceRequest, Request};
///
/// let batch = record_batch::encode("orders", 0, &[Message::from_body("paid")]);
/// let produce = ProduceRequest {
///     topic: "orders".into(),
///     queue_id: 0,
///     acks: Acks::Written,
///     timeout_ms: 5_000,
///     batch: Bytes::from(batch),
/// };
/// // The head followed by the batch is exactly the frame `Request::encode` writes.
/// let mut head = BytesMut::new();
/// produce.encode_head(1, 7, &mut head);
/// head.extend_from_slice(&produce.batch);
/// let mut whole = BytesMut::new();
/// Request::Produce(produce).encode(1, 7, &mut whole);
/// assert_eq!(head, whole);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// Must equal the batch's own topic.
    pub topic: String,
    /// Must equal the batch's own queue id.
    pub queue_id: u32,
    pub acks: Acks,
    /// How long the broker may wait for the flush or the slave before it answers with a timeout
    /// error; ignored for [`Acks::Written`].
    pub timeout_ms: u32,
    /// One record batch (proto-spec.md, "Record batch"); the last field, so that it can be
    /// written after the header without being copied.
    pub batch: Bytes,
}

impl ProduceRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_string(out, &self.topic);
        out.put_u32(self.queue_id);
        out.put_u8(self.acks as u8);
        out.put_u32(self.timeout_ms);
        put_bytes(out, &self.batch);
    }

    /// Appends this request's whole frame except the batch bytes, which the caller sends right
    /// after it: a producer hands its batch to the socket without copying it into the frame.
    /// The head followed by `self.batch` is exactly what [`Request::encode`] writes.
    ///
    /// Panics if this build does not speak `api_version` of Produce, or if the frame would
    /// exceed 4 GiB.
    pub fn encode_head(&self, api_version: u16, correlation_id: u32, out: &mut BytesMut) {
        assert!(
            ApiKey::Produce.versions().contains(&api_version),
            "Produce has no version {api_version} in this build"
        );
        let header = RequestHeader {
            api_key: ApiKey::Produce as u16,
            api_version,
            correlation_id,
        };
        let start = out.len();
        frame::encode_request(out, header, |out| {
            put_string(out, &self.topic);
            out.put_u32(self.queue_id);
            out.put_u8(self.acks as u8);
            out.put_u32(self.timeout_ms);
            out.put_u32(u32::try_from(self.batch.len()).expect("batch above 4 GiB"));
        });
        // The frame's length also counts the batch bytes that follow the head.
        frame::extend_length(out, start, self.batch.len());
    }

    fn decode_v1(reader: &mut Reader) -> Result<ProduceRequest, DecodeError> {
        Ok(ProduceRequest {
            topic: reader.string("topic")?,
            queue_id: reader.u32("queue_id")?,
            acks: Acks::from_u8(reader.u8("acks")?)?,
            timeout_ms: reader.u32("timeout_ms")?,
            batch: reader.bytes("batch")?,
        })
    }
}

/// One topic-queue's record batch in a [`ProduceManyRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceEntry {
    /// Must equal the batch's own topic.
    pub topic: String,
    /// Must equal the batch's own queue id.
    pub queue_id: u32,
    /// One record batch (proto-spec.md, "Record batch").
    pub batch: Bytes,
}

/// Smallest encoded entry: an empty topic name, the queue id and an empty batch's length.
const PRODUCE_ENTRY_MIN_BYTES: usize = 2 + 4 + 4;

/// Appends one record batch to each of several topic-queues (Produce version 2, from protocol
/// version 3): a producer sends every batch it has ready for one broker in one request, and the
/// broker answers each entry apart, in order ([`crate::response::ProduceManyResponse`]).
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::record_batch::{self, Message};
/// use smq_protocol::request::{Acks, ProduceEntry, ProduceManyRequest, Request};
///
/// let entry = |topic: &str, queue_id| ProduceEntry {
///     topic: topic.into(),
///     queue_id,
///     batch: Bytes::from(record_batch::encode(topic, queue_id, &[Message::from_body("paid")])),
/// };
/// let produce = ProduceManyRequest {
///     acks: Acks::Written,
///     timeout_ms: 5_000,
///     entries: vec![entry("orders", 0), entry("invoices", 3)],
/// };
/// // The parts written one after the other are exactly the frame `Request::encode` writes,
/// // each batch a part of its own (sent uncopied).
/// let mut parts = Vec::new();
/// produce.encode_parts(7, &mut parts);
/// assert!(parts.contains(&produce.entries[1].batch));
/// let mut whole = BytesMut::new();
/// Request::ProduceMany(produce.clone()).encode(2, 7, &mut whole);
/// assert_eq!(parts.concat(), whole.to_vec());
/// let frame = decode_request(&mut whole, 1 << 20).unwrap().unwrap();
/// assert_eq!(Request::decode(&frame.header, frame.body), Ok(Request::ProduceMany(produce)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceManyRequest {
    /// For every entry.
    pub acks: Acks,
    /// As [`ProduceRequest::timeout_ms`], for the request as a whole.
    pub timeout_ms: u32,
    pub entries: Vec<ProduceEntry>,
}

impl ProduceManyRequest {
    /// The version of Produce this request is.
    pub const VERSION: u16 = 2;

    fn encode_v2(&self, out: &mut BytesMut) {
        out.put_u8(self.acks as u8);
        out.put_u32(self.timeout_ms);
        put_count(out, self.entries.len());
        for entry in &self.entries {
            put_string(out, &entry.topic);
            out.put_u32(entry.queue_id);
            put_bytes(out, &entry.batch);
        }
    }

    /// Appends this request's whole frame to `parts` as buffers to write one after the other:
    /// the fields in small buffers, each batch as it is (a producer hands its batches to the
    /// socket without copying them). Their concatenation is exactly what [`Request::encode`]
    /// writes at version 2.
    ///
    /// Panics if the frame would exceed 4 GiB or a topic name 65,535 bytes.
    pub fn encode_parts(&self, correlation_id: u32, parts: &mut Vec<Bytes>) {
        let header = RequestHeader {
            api_key: ApiKey::Produce as u16,
            api_version: Self::VERSION,
            correlation_id,
        };
        let entries_bytes: usize = self
            .entries
            .iter()
            .map(|entry| PRODUCE_ENTRY_MIN_BYTES + entry.topic.len() + entry.batch.len())
            .sum();
        // Room for the request's fields and every entry's head, so that splitting the heads
        // off never allocates again (a request may carry thousands of small batches).
        let heads_bytes: usize = self
            .entries
            .iter()
            .map(|entry| PRODUCE_ENTRY_MIN_BYTES + entry.topic.len())
            .sum();
        let mut head = BytesMut::with_capacity(64 + heads_bytes);
        frame::encode_request(&mut head, header, |out| {
            out.put_u8(self.acks as u8);
            out.put_u32(self.timeout_ms);
            put_count(out, self.entries.len());
        });
        // The frame's length counts the entries written after this head.
        frame::extend_length(&mut head, 0, entries_bytes);
        for entry in &self.entries {
            put_string(&mut head, &entry.topic);
            head.put_u32(entry.queue_id);
            head.put_u32(u32::try_from(entry.batch.len()).expect("batch above 4 GiB"));
            if !entry.batch.is_empty() {
                parts.push(head.split().freeze());
                parts.push(entry.batch.clone());
            }
        }
        if !head.is_empty() {
            parts.push(head.freeze());
        }
    }

    fn decode_v2(reader: &mut Reader) -> Result<ProduceManyRequest, DecodeError> {
        let acks = Acks::from_u8(reader.u8("acks")?)?;
        let timeout_ms = reader.u32("timeout_ms")?;
        let count = reader.count("entries", PRODUCE_ENTRY_MIN_BYTES)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(ProduceEntry {
                topic: reader.string("topic")?,
                queue_id: reader.u32("queue_id")?,
                batch: reader.bytes("batch")?,
            });
        }
        Ok(ProduceManyRequest {
            acks,
            timeout_ms,
            entries,
        })
    }
}

/// Reads batches of a topic-queue from an offset; the broker holds the request until there is
/// data or `max_wait_ms` passes (long polling).
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{FetchRequest, Request};
///
/// let fetch = FetchRequest {
///     topic: "orders".into(),
///     queue_id: 2,
///     offset: 100,
///     max_bytes: 1 << 20,
///     max_wait_ms: 500,
///     topic_id: 7,
/// };
/// let mut buf = BytesMut::new();
/// Request::Fetch(fetch.clone()).encode(2, 3, &mut buf);
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(frame.header.correlation_id, 3);
/// assert_eq!(Request::decode(&frame.header, frame.body), Ok(Request::Fetch(fetch)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub topic: String,
    pub queue_id: u32,
    /// Queue offset of the first message wanted.
    pub offset: u64,
    /// Most batch bytes wanted; the first batch is returned whole even if it is larger, so that
    /// a consumer always makes progress.
    pub max_bytes: u32,
    /// How long the broker may wait for a message at `offset` before answering with none.
    pub max_wait_ms: u32,
    /// The id of the topic the offset belongs to, as Metadata gave it (version 2): the broker
    /// answers `UNKNOWN_TOPIC_ID` when the topic under the name now has another id. 0: any
    /// topic of the name (and always at version 1, which does not carry it).
    pub topic_id: u64,
}

impl FetchRequest {
    fn encode(&self, api_version: u16, out: &mut BytesMut) {
        put_string(out, &self.topic);
        out.put_u32(self.queue_id);
        out.put_u64(self.offset);
        out.put_u32(self.max_bytes);
        out.put_u32(self.max_wait_ms);
        if api_version >= 2 {
            out.put_u64(self.topic_id);
        }
    }

    fn decode(reader: &mut Reader, api_version: u16) -> Result<FetchRequest, DecodeError> {
        Ok(FetchRequest {
            topic: reader.string("topic")?,
            queue_id: reader.u32("queue_id")?,
            offset: reader.u64("offset")?,
            max_bytes: reader.u32("max_bytes")?,
            max_wait_ms: reader.u32("max_wait_ms")?,
            topic_id: topic_id(reader, api_version)?,
        })
    }
}

/// The `topic_id` field that version 2 of an api adds last; 0 (any topic of the name) before.
fn topic_id(reader: &mut Reader, api_version: u16) -> Result<u64, DecodeError> {
    if api_version >= 2 {
        reader.u64("topic_id")
    } else {
        Ok(0)
    }
}

/// Asks for the earliest and the latest offset of a topic-queue.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{ListOffsetsRequest, Request};
/// use smq_protocol::{ApiKey, DecodeError};
///
/// let request = Request::ListOffsets(ListOffsetsRequest { topic: "orders".into(), queue_id: 0 });
/// assert_eq!(request.api_key(), ApiKey::ListOffsets);
/// let mut buf = BytesMut::new();
/// request.encode(1, 1, &mut buf);
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// let mut body = frame.body.to_vec();
/// body.push(0); // one byte more than version 1 has
/// let decoded = Request::decode(&frame.header, body.into());
/// assert_eq!(decoded, Err(DecodeError::TrailingBytes { count: 1 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topic: String,
    pub queue_id: u32,
}

impl ListOffsetsRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_string(out, &self.topic);
        out.put_u32(self.queue_id);
    }

    fn decode_v1(reader: &mut Reader) -> Result<ListOffsetsRequest, DecodeError> {
        Ok(ListOffsetsRequest {
            topic: reader.string("topic")?,
            queue_id: reader.u32("queue_id")?,
        })
    }
}

/// Asks for the broker's identity and the topics it holds.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{MetadataRequest, Request};
///
/// // The default asks about every topic on the broker.
/// assert!(MetadataRequest::default().topics.is_empty());
/// let topics = vec!["orders".to_owned(), "audit".to_owned()];
/// let request = Request::Metadata(MetadataRequest { topics });
/// let mut buf = BytesMut::new();
/// request.encode(1, 1, &mut buf);
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Request::decode(&frame.header, frame.body).unwrap(), request);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataRequest {
    /// Topics to describe; empty means every topic on the broker.
    pub topics: Vec<String>,
}

impl MetadataRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_count(out, self.topics.len());
        for topic in &self.topics {
            put_string(out, topic);
        }
    }

    fn decode_v1(reader: &mut Reader) -> Result<MetadataRequest, DecodeError> {
        let count = reader.count("topics", 2)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            topics.push(reader.string("topic")?);
        }
        Ok(MetadataRequest { topics })
    }
}

/// Creates a topic with `queue_count` queues (ids 0 to `queue_count - 1`) on this broker.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{CreateTopicRequest, Request};
/// use smq_protocol::ApiKey;
///
/// let request = Request::CreateTopic(CreateTopicRequest { topic: "orders".into(), queue_count: 8 });
/// let mut buf = BytesMut::new();
/// request.encode(1, 5, &mut buf);
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(frame.header.api_key, ApiKey::CreateTopic as u16);
/// assert_eq!(Request::decode(&frame.header, frame.body).unwrap(), request);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub topic: String,
    pub queue_count: u32,
}

impl CreateTopicRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_string(out, &self.topic);
        out.put_u32(self.queue_count);
    }

    fn decode_v1(reader: &mut Reader) -> Result<CreateTopicRequest, DecodeError> {
        Ok(CreateTopicRequest {
            topic: reader.string("topic")?,
            queue_count: reader.u32("queue_count")?,
        })
    }
}

/// Deletes a topic, its queues and their data from this broker.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{DeleteTopicRequest, Request};
///
/// let request = Request::DeleteTopic(DeleteTopicRequest { topic: "orders".into() });
/// let mut buf = BytesMut::new();
/// request.encode(1, 1, &mut buf);
/// // One byte short: the frame is not complete, so nothing is decoded yet.
/// let mut partial = BytesMut::from(&buf[..buf.len() - 1]);
/// assert_eq!(decode_request(&mut partial, 1 << 20), Ok(None));
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Request::decode(&frame.header, frame.body).unwrap(), request);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    pub topic: String,
}

impl DeleteTopicRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_string(out, &self.topic);
    }

    fn decode_v1(reader: &mut Reader) -> Result<DeleteTopicRequest, DecodeError> {
        Ok(DeleteTopicRequest {
            topic: reader.string("topic")?,
        })
    }
}

/// Stores the offset a consumer group will resume a topic-queue from.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{CommitOffsetRequest, Request};
///
/// // Processed messages up to offset 41: resume from 42. The NameServer gave this member the
/// // queue with owner epoch 7.
/// let commit = CommitOffsetRequest {
///     consumer_group: "billing".into(),
///     topic: "orders".into(),
///     queue_id: 3,
///     offset: 42,
///     owner_epoch: 7,
///     topic_id: 0,
/// };
/// let mut buf = BytesMut::new();
/// Request::CommitOffset(commit.clone()).encode(1, 1, &mut buf);
/// let frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Request::decode(&frame.header, frame.body), Ok(Request::CommitOffset(commit)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffsetRequest {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: u32,
    /// Queue offset of the next message the group will read (one past the last one processed).
    pub offset: u64,
    /// The owner epoch the NameServer gave the committing member with the queue (0 for a
    /// consumer outside NameServer coordination). The broker refuses a commit with an epoch
    /// below the highest it stored for the queue (`STALE_OWNER_EPOCH`).
    pub owner_epoch: u64,
    /// The id of the topic the offset belongs to (version 2): the broker refuses the commit
    /// with `UNKNOWN_TOPIC_ID` when the topic under the name now has another id, so an offset
    /// of a deleted topic never counts in one created again under its name. 0: any.
    pub topic_id: u64,
}

impl CommitOffsetRequest {
    fn encode(&self, api_version: u16, out: &mut BytesMut) {
        put_string(out, &self.consumer_group);
        put_string(out, &self.topic);
        out.put_u32(self.queue_id);
        out.put_u64(self.offset);
        out.put_u64(self.owner_epoch);
        if api_version >= 2 {
            out.put_u64(self.topic_id);
        }
    }

    fn decode(reader: &mut Reader, api_version: u16) -> Result<CommitOffsetRequest, DecodeError> {
        Ok(CommitOffsetRequest {
            consumer_group: reader.string("consumer_group")?,
            topic: reader.string("topic")?,
            queue_id: reader.u32("queue_id")?,
            offset: reader.u64("offset")?,
            owner_epoch: reader.u64("owner_epoch")?,
            topic_id: topic_id(reader, api_version)?,
        })
    }
}

/// Reads the offset a consumer group stored for a topic-queue.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{FetchOffsetRequest, Request};
/// use smq_protocol::{DecodeError, ErrorCode};
///
/// let request = FetchOffsetRequest { consumer_group: "billing".into(), topic: "orders".into(), queue_id: 3 };
/// let mut buf = BytesMut::new();
/// Request::FetchOffset(request).encode(1, 1, &mut buf);
/// let mut frame = decode_request(&mut buf, 1 << 20).unwrap().unwrap();
/// frame.header.api_version = 9; // a version this build does not speak
/// let error = Request::decode(&frame.header, frame.body).unwrap_err();
/// assert!(matches!(error, DecodeError::UnsupportedVersion { version: 9, .. }));
/// assert_eq!(error.error_code(), ErrorCode::UnsupportedVersion);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOffsetRequest {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: u32,
}

impl FetchOffsetRequest {
    fn encode_v1(&self, out: &mut BytesMut) {
        put_string(out, &self.consumer_group);
        put_string(out, &self.topic);
        out.put_u32(self.queue_id);
    }

    fn decode_v1(reader: &mut Reader) -> Result<FetchOffsetRequest, DecodeError> {
        Ok(FetchOffsetRequest {
            consumer_group: reader.string("consumer_group")?,
            topic: reader.string("topic")?,
            queue_id: reader.u32("queue_id")?,
        })
    }
}

/// Any request, one variant per api.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_request;
/// use smq_protocol::request::{DeleteTopicRequest, MetadataRequest, Request};
///
/// let mut buf = BytesMut::new();
/// Request::Metadata(MetadataRequest::default()).encode(1, 1, &mut buf);
/// Request::DeleteTopic(DeleteTopicRequest { topic: "old".into() }).encode(1, 2, &mut buf);
/// // A broker cuts frames off its read buffer one at a time and decodes each body.
/// let mut decoded = Vec::new();
/// while let Some(frame) = decode_request(&mut buf, 1 << 20).unwrap() {
///     decoded.push(Request::decode(&frame.header, frame.body).unwrap());
/// }
/// assert_eq!(decoded.len(), 2);
/// assert!(matches!(&decoded[1], Request::DeleteTopic(delete) if delete.topic == "old"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Handshake(HandshakeRequest),
    /// Produce version 1: one batch.
    Produce(ProduceRequest),
    /// Produce version 2: a batch for each of several topic-queues.
    ProduceMany(ProduceManyRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic(DeleteTopicRequest),
    CommitOffset(CommitOffsetRequest),
    FetchOffset(FetchOffsetRequest),
}

impl Request {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::Handshake(_) => ApiKey::Handshake,
            Request::Produce(_) | Request::ProduceMany(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopic(_) => ApiKey::CreateTopic,
            Request::DeleteTopic(_) => ApiKey::DeleteTopic,
            Request::CommitOffset(_) => ApiKey::CommitOffset,
            Request::FetchOffset(_) => ApiKey::FetchOffset,
        }
    }

    /// Appends this request as one whole frame to `out`, at `api_version` (which the handshake
    /// decided, see [`ApiKey::version_in`]).
    ///
    /// Panics if this build does not speak `api_version` of the api, or a string is longer than
    /// 65,535 bytes; callers check names and sizes first.
    pub fn encode(&self, api_version: u16, correlation_id: u32, out: &mut BytesMut) {
        let api_key = self.api_key();
        assert!(
            api_key.versions().contains(&api_version),
            "{api_key} has no version {api_version} in this build"
        );
        // The two Produce layouts are two types: each is sent at its own version.
        match self {
            Request::Produce(_) => assert_eq!(api_version, 1, "ProduceRequest is Produce v1"),
            Request::ProduceMany(_) => assert_eq!(
                api_version,
                ProduceManyRequest::VERSION,
                "ProduceManyRequest is Produce v2"
            ),
            _ => {}
        }
        let header = RequestHeader {
            api_key: api_key as u16,
            api_version,
            correlation_id,
        };
        frame::encode_request(out, header, |out| match self {
            Request::Handshake(request) => request.encode_v1(out),
            Request::Produce(request) => request.encode_v1(out),
            Request::ProduceMany(request) => request.encode_v2(out),
            Request::Fetch(request) => request.encode(api_version, out),
            Request::ListOffsets(request) => request.encode_v1(out),
            Request::Metadata(request) => request.encode_v1(out),
            Request::CreateTopic(request) => request.encode_v1(out),
            Request::DeleteTopic(request) => request.encode_v1(out),
            Request::CommitOffset(request) => request.encode(api_version, out),
            Request::FetchOffset(request) => request.encode_v1(out),
        });
    }

    /// Decodes the body of a request frame. An unknown api key and an unsupported version are
    /// distinct errors; byte arrays (a Produce batch) share `body` rather than copy it.
    pub fn decode(header: &RequestHeader, body: Bytes) -> Result<Request, DecodeError> {
        let api_key = ApiKey::check(header.api_key, header.api_version)?;
        let mut reader = Reader::new(body);
        // Fetch and CommitOffset have a version 2 (topic ids), Produce one with many batches;
        // the rest are at version 1.
        let version = header.api_version;
        let request = match api_key {
            ApiKey::Handshake => Request::Handshake(HandshakeRequest::decode_v1(&mut reader)?),
            ApiKey::Produce if version >= ProduceManyRequest::VERSION => {
                Request::ProduceMany(ProduceManyRequest::decode_v2(&mut reader)?)
            }
            ApiKey::Produce => Request::Produce(ProduceRequest::decode_v1(&mut reader)?),
            ApiKey::Fetch => Request::Fetch(FetchRequest::decode(&mut reader, version)?),
            ApiKey::ListOffsets => {
                Request::ListOffsets(ListOffsetsRequest::decode_v1(&mut reader)?)
            }
            ApiKey::Metadata => Request::Metadata(MetadataRequest::decode_v1(&mut reader)?),
            ApiKey::CreateTopic => {
                Request::CreateTopic(CreateTopicRequest::decode_v1(&mut reader)?)
            }
            ApiKey::DeleteTopic => {
                Request::DeleteTopic(DeleteTopicRequest::decode_v1(&mut reader)?)
            }
            ApiKey::CommitOffset => {
                Request::CommitOffset(CommitOffsetRequest::decode(&mut reader, version)?)
            }
            ApiKey::FetchOffset => {
                Request::FetchOffset(FetchOffsetRequest::decode_v1(&mut reader)?)
            }
        };
        reader.finish()?;
        Ok(request)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::decode_request;
    use crate::limits::MAX_FRAME_BYTES_DEFAULT;
    use crate::record_batch::{self, Message};
    use proptest::prelude::*;

    pub(crate) fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    pub(crate) fn arb_name() -> impl Strategy<Value = String> {
        ".{0,24}"
    }

    fn arb_acks() -> impl Strategy<Value = Acks> {
        prop_oneof![
            Just(Acks::Written),
            Just(Acks::Flushed),
            Just(Acks::Replicated)
        ]
    }

    proptest! {
        #[test]
        fn produce_head_then_batch_is_the_whole_produce_frame(
            topic in arb_name(),
            queue_id in any::<u32>(),
            acks in arb_acks(),
            timeout_ms in any::<u32>(),
            batch in arb_bytes(512),
            correlation_id in any::<u32>(),
        ) {
            let request = ProduceRequest { topic, queue_id, acks, timeout_ms, batch };
            let mut head = BytesMut::new();
            request.encode_head(1, correlation_id, &mut head);
            head.extend_from_slice(&request.batch);
            let mut whole = BytesMut::new();
            Request::Produce(request).encode(1, correlation_id, &mut whole);
            prop_assert_eq!(head, whole);
        }
    }

    pub(crate) fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (arb_name(), any::<u16>(), any::<u16>(), arb_bytes(64)).prop_map(
                |(client_id, min_version, max_version, auth_token)| {
                    Request::Handshake(HandshakeRequest {
                        client_id,
                        min_version,
                        max_version,
                        auth_token,
                    })
                }
            ),
            (
                arb_name(),
                any::<u32>(),
                arb_acks(),
                any::<u32>(),
                arb_bytes(512)
            )
                .prop_map(|(topic, queue_id, acks, timeout_ms, batch)| {
                    Request::Produce(ProduceRequest {
                        topic,
                        queue_id,
                        acks,
                        timeout_ms,
                        batch,
                    })
                }),
            (
                arb_acks(),
                any::<u32>(),
                proptest::collection::vec((arb_name(), any::<u32>(), arb_bytes(64)), 0..5)
            )
                .prop_map(|(acks, timeout_ms, entries)| {
                    Request::ProduceMany(ProduceManyRequest {
                        acks,
                        timeout_ms,
                        entries: entries
                            .into_iter()
                            .map(|(topic, queue_id, batch)| ProduceEntry {
                                topic,
                                queue_id,
                                batch,
                            })
                            .collect(),
                    })
                }),
            (
                arb_name(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(
                    |(topic, queue_id, offset, max_bytes, max_wait_ms, topic_id)| {
                        Request::Fetch(FetchRequest {
                            topic,
                            queue_id,
                            offset,
                            max_bytes,
                            max_wait_ms,
                            topic_id,
                        })
                    }
                ),
            (arb_name(), any::<u32>()).prop_map(|(topic, queue_id)| {
                Request::ListOffsets(ListOffsetsRequest { topic, queue_id })
            }),
            proptest::collection::vec(arb_name(), 0..6)
                .prop_map(|topics| Request::Metadata(MetadataRequest { topics })),
            (arb_name(), any::<u32>()).prop_map(|(topic, queue_count)| {
                Request::CreateTopic(CreateTopicRequest { topic, queue_count })
            }),
            arb_name().prop_map(|topic| Request::DeleteTopic(DeleteTopicRequest { topic })),
            (
                arb_name(),
                arb_name(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(
                    |(consumer_group, topic, queue_id, offset, owner_epoch, topic_id)| {
                        Request::CommitOffset(CommitOffsetRequest {
                            consumer_group,
                            topic,
                            queue_id,
                            offset,
                            owner_epoch,
                            topic_id,
                        })
                    },
                ),
            (arb_name(), arb_name(), any::<u32>()).prop_map(|(consumer_group, topic, queue_id)| {
                Request::FetchOffset(FetchOffsetRequest {
                    consumer_group,
                    topic,
                    queue_id,
                })
            }),
        ]
    }

    fn encode(request: &Request, correlation_id: u32) -> BytesMut {
        encode_in(request, 1, correlation_id)
    }

    /// `request` as peers that agreed on `protocol_version` send it.
    fn encode_in(request: &Request, protocol_version: u16, correlation_id: u32) -> BytesMut {
        let mut out = BytesMut::new();
        let version = request.api_key().version_in(protocol_version).unwrap();
        request.encode(version, correlation_id, &mut out);
        out
    }

    /// What a request means once sent at `protocol_version`: version 1 carries no topic id.
    fn as_sent_in(request: &Request, protocol_version: u16) -> Request {
        let mut request = request.clone();
        if protocol_version < 2 {
            match &mut request {
                Request::Fetch(fetch) => fetch.topic_id = 0,
                Request::CommitOffset(commit) => commit.topic_id = 0,
                _ => {}
            }
        }
        request
    }

    /// Whether peers that agreed on `protocol_version` send `request`: Produce v1 below protocol
    /// version 3, Produce v2 from it.
    fn is_sent_in(request: &Request, protocol_version: u16) -> bool {
        match request {
            Request::Produce(_) => protocol_version < 3,
            Request::ProduceMany(_) => protocol_version >= 3,
            _ => true,
        }
    }

    fn header(api_key: ApiKey) -> RequestHeader {
        RequestHeader {
            api_key: api_key as u16,
            api_version: 1,
            correlation_id: 1,
        }
    }

    proptest! {
        #[test]
        fn every_request_round_trips_through_a_frame(
            request in arb_request(), protocol_version in 1u16..=3, correlation_id in any::<u32>(),
        ) {
            prop_assume!(is_sent_in(&request, protocol_version));
            let mut buf = encode_in(&request, protocol_version, correlation_id);
            let frame = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(frame.header.api_key, request.api_key() as u16);
            prop_assert_eq!(
                Some(frame.header.api_version),
                request.api_key().version_in(protocol_version)
            );
            prop_assert_eq!(frame.header.correlation_id, correlation_id);
            prop_assert_eq!(
                Request::decode(&frame.header, frame.body).unwrap(),
                as_sent_in(&request, protocol_version)
            );
        }

        #[test]
        fn every_truncated_request_body_is_an_error(
            request in arb_request(), protocol_version in 1u16..=3, cut in any::<prop::sample::Index>(),
        ) {
            prop_assume!(is_sent_in(&request, protocol_version));
            let mut buf = encode_in(&request, protocol_version, 1);
            let frame = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            prop_assume!(!frame.body.is_empty());
            let len = cut.index(frame.body.len());
            prop_assert!(Request::decode(&frame.header, frame.body.slice(..len)).is_err());
        }

        #[test]
        fn request_decoder_never_panics_on_arbitrary_bodies(
            api_key in 0u16..12, api_version in 0u16..3,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let header = RequestHeader { api_key, api_version, correlation_id: 1 };
            let _ = Request::decode(&header, Bytes::from(body));
        }

        #[test]
        fn request_decoders_never_panic_on_arbitrary_streams(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT) {
                let _ = Request::decode(&frame.header, frame.body);
            }
        }
    }

    #[test]
    fn unknown_api_key_is_a_distinct_error_after_the_frame_is_consumed() {
        let mut buf = BytesMut::new();
        let unknown = RequestHeader {
            api_key: 4242,
            api_version: 1,
            correlation_id: 9,
        };
        frame::encode_request(&mut buf, unknown, |out| out.put_slice(b"whatever"));
        let frame = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "the stream stays in step");
        assert_eq!(frame.header.correlation_id, 9, "the broker can answer it");
        assert_eq!(
            Request::decode(&frame.header, frame.body),
            Err(DecodeError::UnknownApiKey {
                api_key: 4242,
                max_known: 8
            })
        );
    }

    /// Produce v2's entry count is checked against the bytes left before anything is reserved,
    /// and an entry's batch may not run past the frame.
    #[test]
    fn a_produce_v2_with_a_forged_entry_count_or_batch_length_is_refused() {
        let header = RequestHeader {
            api_version: 2,
            ..header(ApiKey::Produce)
        };
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(5_000);
        body.put_u32(u32::MAX);
        assert!(matches!(
            Request::decode(&header, body.freeze()),
            Err(DecodeError::Truncated {
                field: "entries",
                ..
            })
        ));
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(5_000);
        body.put_u32(1);
        put_string(&mut body, "orders");
        body.put_u32(0);
        body.put_u32(1 << 20);
        body.put_slice(b"short");
        assert!(matches!(
            Request::decode(&header, body.freeze()),
            Err(DecodeError::Truncated { field: "batch", .. })
        ));
    }

    #[test]
    fn unsupported_version_is_a_distinct_error() {
        let request = RequestHeader {
            api_version: 3,
            ..header(ApiKey::Fetch)
        };
        assert!(matches!(
            Request::decode(&request, Bytes::new()),
            Err(DecodeError::UnsupportedVersion {
                api: ApiKey::Fetch,
                version: 3,
                ..
            })
        ));
        let produce_v3 = RequestHeader {
            api_version: 3,
            ..header(ApiKey::Produce)
        };
        assert!(matches!(
            Request::decode(&produce_v3, Bytes::new()),
            Err(DecodeError::UnsupportedVersion {
                api: ApiKey::Produce,
                version: 3,
                ..
            })
        ));
    }

    #[test]
    fn bytes_after_the_last_field_are_rejected() {
        let mut buf = encode(
            &Request::DeleteTopic(DeleteTopicRequest { topic: "t".into() }),
            1,
        );
        buf.put_u8(0);
        let length = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&length.to_be_bytes());
        let frame = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(
            Request::decode(&frame.header, frame.body),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn unknown_acks_value_is_rejected() {
        let mut body = BytesMut::new();
        put_string(&mut body, "t");
        body.put_u32(0);
        body.put_u8(3);
        body.put_u32(1000);
        put_bytes(&mut body, b"");
        assert_eq!(
            Request::decode(&header(ApiKey::Produce), body.freeze()),
            Err(DecodeError::InvalidValue {
                field: "acks",
                value: 3
            })
        );
    }

    #[test]
    fn metadata_topic_count_beyond_the_frame_is_rejected_before_reserving() {
        let mut body = BytesMut::new();
        body.put_u32(u32::MAX);
        assert!(matches!(
            Request::decode(&header(ApiKey::Metadata), body.freeze()),
            Err(DecodeError::Truncated {
                field: "topics",
                ..
            })
        ));
    }

    #[test]
    fn produce_batch_is_shared_with_the_read_buffer_not_copied() {
        let batch = record_batch::encode("orders", 3, &[Message::from_body("hello")]);
        let request = Request::Produce(ProduceRequest {
            topic: "orders".into(),
            queue_id: 3,
            acks: Acks::Flushed,
            timeout_ms: 5000,
            batch: Bytes::from(batch.clone()),
        });
        let mut buf = encode(&request, 1);
        let frame_start = buf.as_ptr() as usize;
        let frame_end = frame_start + buf.len();
        let frame = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        let Request::Produce(decoded) = Request::decode(&frame.header, frame.body).unwrap() else {
            panic!("not a produce request");
        };
        let at = decoded.batch.as_ptr() as usize;
        assert!(frame_start <= at && at + decoded.batch.len() <= frame_end);
        assert_eq!(&decoded.batch[..], &batch[..]);
        let view = record_batch::BatchView::parse(&decoded.batch).unwrap();
        assert_eq!(view.topic(), "orders");
    }

    #[test]
    fn produce_layout_matches_the_spec() {
        let request = Request::Produce(ProduceRequest {
            topic: "ab".into(),
            queue_id: 2,
            acks: Acks::Replicated,
            timeout_ms: 0x0102_0304,
            batch: Bytes::from_static(b"B"),
        });
        let bytes = encode(&request, 5);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 26,          // length
            0, 1, 0, 1,           // api key 1 (Produce), version 1
            0, 0, 0, 5,           // correlation id
            0, 2, b'a', b'b',     // topic
            0, 0, 0, 2,           // queue id
            2,                    // acks: replicated
            1, 2, 3, 4,           // timeout ms
            0, 0, 0, 1, b'B',     // batch
        ];
        assert_eq!(&bytes[..], expected);
    }
}
