//! The responses a broker sends back, one type per api, each with its encoder and decoder side by
//! side; every body starts with an error code and message (proto-spec.md, "Requests and
//! responses").

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::frame;
use crate::role::Role;
use crate::wire::{put_bytes, put_count, put_string, DecodeError, Reader};

/// A broker's refusal: a code saying what kind of failure, a message saying what exactly and
/// what to do. On the wire it is the whole body of a response whose code is not 0, whatever the
/// api, so a broker can answer a request it could not decode.
///
/// ```
/// use smq_protocol::{ErrorCode, ErrorResponse};
///
/// let error = ErrorResponse::new(ErrorCode::NotMaster, "group g1's master is 10.0.0.2:10911");
/// assert_eq!(error.error_code(), Some(ErrorCode::NotMaster));
/// assert!(error.is_retryable());
/// // A code from a newer broker is kept as a number, and not retried.
/// let newer = ErrorResponse { code: 999, message: String::new() };
/// assert_eq!(newer.error_code(), None);
/// assert!(!newer.is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The raw number, kept even when this build does not know it (a newer broker's code).
    pub code: u16,
    pub message: String,
}

impl ErrorResponse {
    /// Panics on [`ErrorCode::None`], which means success and has no error response.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        assert!(
            code != ErrorCode::None,
            "an error response needs an error code"
        );
        ErrorResponse {
            code: code.as_u16(),
            message: message.into(),
        }
    }

    /// The code, if this build knows its number.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }

    /// Whether sending the request again may succeed; an unknown code is not retryable.
    pub fn is_retryable(&self) -> bool {
        self.error_code().is_some_and(ErrorCode::is_retryable)
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "broker error {code}")?,
            None => write!(
                f,
                "broker error code {} (unknown to this client)",
                self.code
            )?,
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorResponse {}

/// The broker's answer to a handshake: the protocol version both sides now use.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::response::{HandshakeResponse, Response};
/// use smq_protocol::ApiKey;
///
/// let response = Response::Handshake(HandshakeResponse {
///     version: 1,
///     broker_min_version: 1,
///     broker_max_version: 1,
///     max_frame_bytes: 17 << 20,
///     max_message_bytes: 4 << 20,
/// });
/// let mut buf = BytesMut::new();
/// response.encode(1, 1, &mut buf);
/// let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Response::decode(ApiKey::Handshake, 1, frame.body), Ok(response));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The highest protocol version both sides speak; every later request uses the api versions
    /// it fixes.
    pub version: u16,
    pub broker_min_version: u16,
    pub broker_max_version: u16,
    /// The largest frame length the broker accepts, so a producer can size its batches.
    pub max_frame_bytes: u32,
    /// The largest message the broker accepts.
    pub max_message_bytes: u32,
}

impl HandshakeResponse {
    fn encode_v1(&self, out: &mut BytesMut) {
        out.put_u16(self.version);
        out.put_u16(self.broker_min_version);
        out.put_u16(self.broker_max_version);
        out.put_u32(self.max_frame_bytes);
        out.put_u32(self.max_message_bytes);
    }

    fn decode_v1(reader: &mut Reader) -> Result<HandshakeResponse, DecodeError> {
        Ok(HandshakeResponse {
            version: reader.u16("version")?,
            broker_min_version: reader.u16("broker_min_version")?,
            broker_max_version: reader.u16("broker_max_version")?,
            max_frame_bytes: reader.u32("max_frame_bytes")?,
            max_message_bytes: reader.u32("max_message_bytes")?,
        })
    }
}

/// Where a produced batch landed, sent once the requested acknowledgement is reached.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::response::{ProduceResponse, Response};
/// use smq_protocol::ApiKey;
///
/// let response = Response::Produce(ProduceResponse { base_queue_offset: 40, message_count: 2 });
/// let mut buf = BytesMut::new();
/// response.encode(1, 7, &mut buf);
/// let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(frame.correlation_id, 7);
/// let Ok(Response::Produce(produced)) = Response::decode(ApiKey::Produce, 1, frame.body) else {
///     unreachable!()
/// };
/// // The batch's two messages got offsets 40 and 41.
/// assert_eq!(produced.base_queue_offset + u64::from(produced.message_count), 42);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Queue offset of the batch's first message; the others follow consecutively.
    pub base_queue_offset: u64,
    pub message_count: u32,
}

impl ProduceResponse {
    fn encode_v1(&self, out: &mut BytesMut) {
        out.put_u64(self.base_queue_offset);
        out.put_u32(self.message_count);
    }

    fn decode_v1(reader: &mut Reader) -> Result<ProduceResponse, DecodeError> {
        Ok(ProduceResponse {
            base_queue_offset: reader.u64("base_queue_offset")?,
            message_count: reader.u32("message_count")?,
        })
    }
}

/// The answer to a [`crate::request::ProduceManyRequest`] the broker took: one result per
/// entry, in the request's order, each where its batch landed or why it was refused. A refusal
/// of the request as a whole (not the master, a version mismatch) is an error response instead.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::response::{ProduceManyResponse, ProduceResponse, Response};
/// use smq_protocol::{ApiKey, ErrorCode, ErrorResponse};
///
/// let response = Response::ProduceMany(ProduceManyResponse {
///     results: vec![
///         Ok(ProduceResponse { base_queue_offset: 40, message_count: 2 }),
///         Err(ErrorResponse::new(ErrorCode::UnknownTopic, "no topic invoices")),
///     ],
/// });
/// let mut buf = BytesMut::new();
/// response.encode(2, 7, &mut buf);
/// let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Response::decode(ApiKey::Produce, 2, frame.body), Ok(response));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceManyResponse {
    pub results: Vec<Result<ProduceResponse, ErrorResponse>>,
}

/// Smallest encoded result: the error code, an empty message, the offset and the count.
const PRODUCE_RESULT_MIN_BYTES: usize = 2 + 2 + 8 + 4;

impl ProduceManyResponse {
    fn encode_v2(&self, out: &mut BytesMut) {
        put_count(out, self.results.len());
        for result in &self.results {
            let (error, stored) = match result {
                Ok(stored) => (None, stored.clone()),
                Err(error) => (
                    Some(error),
                    ProduceResponse {
                        base_queue_offset: 0,
                        message_count: 0,
                    },
                ),
            };
            encode_error_head(out, error);
            stored.encode_v1(out);
        }
    }

    fn decode_v2(reader: &mut Reader) -> Result<ProduceManyResponse, DecodeError> {
        let count = reader.count("results", PRODUCE_RESULT_MIN_BYTES)?;
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            // Each result has every field, error or not (unlike a whole body's error head).
            let code = reader.u16("error_code")?;
            let message = reader.string("error_message")?;
            let stored = ProduceResponse::decode_v1(reader)?;
            results.push(match code {
                0 => Ok(stored),
                code => Err(ErrorResponse { code, message }),
            });
        }
        Ok(ProduceManyResponse { results })
    }
}

/// Batches read from a topic-queue, and where the queue starts and ends now.
///
/// ```
/// use bytes::Bytes;
/// use smq_protocol::record_batch::{self, BatchView, Message};
/// use smq_protocol::response::FetchResponse;
///
/// let messages = [Message::from_body("a"), Message::from_body("b")];
/// let batch = record_batch::encode("orders", 0, &messages);
/// let fetched = FetchResponse { high_watermark: 2, log_start_offset: 0, batches: Bytes::from(batch) };
/// // Batches come back to back; each one's length field says where the next starts.
/// let len = record_batch::total_len(&fetched.batches).unwrap();
/// assert_eq!(len, fetched.batches.len());
/// let view = BatchView::parse(&fetched.batches[..len]).unwrap();
/// assert_eq!(view.messages().count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// Queue offset the next appended message will get.
    pub high_watermark: u64,
    /// Queue offset of the oldest message still stored.
    pub log_start_offset: u64,
    /// Whole record batches back to back, exactly as stored; empty when nothing arrived within
    /// `max_wait_ms`. The first batch may start before the requested offset: skip its earlier
    /// messages. The last field, so a broker can send it straight from its log.
    pub batches: Bytes,
}

impl FetchResponse {
    /// Appends a successful Fetch response frame up to its batches, which the sender writes right
    /// after it (`batches_len` bytes, uncopied): a broker hands stored batches to the socket
    /// without copying them into the frame. The head followed by the batches is exactly what
    /// [`Response::encode`] writes for this response with those batches; `self.batches` is not
    /// written.
    ///
    /// Panics if this build does not speak `api_version` of Fetch, or if the frame would exceed
    /// 4 GiB.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use smq_protocol::response::{FetchResponse, Response};
    ///
    /// let stored = Bytes::from_static(b"stored batches");
    /// let response = FetchResponse { high_watermark: 9, log_start_offset: 0, batches: Bytes::new() };
    /// let mut frame = BytesMut::new();
    /// response.encode_head(stored.len(), 1, 7, &mut frame);
    /// frame.extend_from_slice(&stored);
    /// let mut whole = BytesMut::new();
    /// Response::Fetch(FetchResponse { batches: stored, ..response }).encode(1, 7, &mut whole);
    /// assert_eq!(frame, whole);
    /// ```
    pub fn encode_head(
        &self,
        batches_len: usize,
        api_version: u16,
        correlation_id: u32,
        out: &mut BytesMut,
    ) {
        assert!(
            ApiKey::Fetch.versions().contains(&api_version),
            "Fetch has no version {api_version} in this build"
        );
        let start = out.len();
        frame::encode_response(out, correlation_id, |out| {
            encode_error_head(out, None);
            out.put_u64(self.high_watermark);
            out.put_u64(self.log_start_offset);
            out.put_u32(u32::try_from(batches_len).expect("batches above 4 GiB"));
        });
        frame::extend_length(out, start, batches_len);
    }

    fn encode_v1(&self, out: &mut BytesMut) {
        out.put_u64(self.high_watermark);
        out.put_u64(self.log_start_offset);
        put_bytes(out, &self.batches);
    }

    fn decode_v1(reader: &mut Reader) -> Result<FetchResponse, DecodeError> {
        Ok(FetchResponse {
            high_watermark: reader.u64("high_watermark")?,
            log_start_offset: reader.u64("log_start_offset")?,
            batches: reader.bytes("batches")?,
        })
    }
}

/// The earliest and latest offsets of a topic-queue.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::response::{ListOffsetsResponse, Response};
/// use smq_protocol::ApiKey;
///
/// // Offsets 100 to 249 are stored; the next message appended gets 250.
/// let offsets = ListOffsetsResponse { log_start_offset: 100, high_watermark: 250 };
/// let mut buf = BytesMut::new();
/// Response::ListOffsets(offsets.clone()).encode(1, 1, &mut buf);
/// let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
/// let decoded = Response::decode(ApiKey::ListOffsets, 1, frame.body).unwrap();
/// assert_eq!(decoded, Response::ListOffsets(offsets));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// Queue offset of the oldest message still stored (`--from earliest`).
    pub log_start_offset: u64,
    /// Queue offset the next appended message will get (`--from latest`).
    pub high_watermark: u64,
}

impl ListOffsetsResponse {
    fn encode_v1(&self, out: &mut BytesMut) {
        out.put_u64(self.log_start_offset);
        out.put_u64(self.high_watermark);
    }

    fn decode_v1(reader: &mut Reader) -> Result<ListOffsetsResponse, DecodeError> {
        Ok(ListOffsetsResponse {
            log_start_offset: reader.u64("log_start_offset")?,
            high_watermark: reader.u64("high_watermark")?,
        })
    }
}

/// One queue of a topic on this broker.
///
/// ```
/// use smq_protocol::response::QueueMetadata;
///
/// let queue = QueueMetadata { queue_id: 0, log_start_offset: 10, high_watermark: 25 };
/// // Stored: from the log start up to, not including, the high watermark.
/// assert_eq!(queue.stored_messages(), 15);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMetadata {
    pub queue_id: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

impl QueueMetadata {
    /// The messages the queue stores: its latest offset minus its earliest.
    pub fn stored_messages(&self) -> u64 {
        self.high_watermark - self.log_start_offset
    }
}

/// Bytes of one encoded [`QueueMetadata`].
const QUEUE_METADATA_BYTES: usize = 4 + 8 + 8;

/// One topic on this broker and its queues.
///
/// ```
/// use smq_protocol::response::{QueueMetadata, TopicMetadata};
///
/// let queue = |queue_id| QueueMetadata { queue_id, log_start_offset: 0, high_watermark: 5 };
/// let topic = TopicMetadata { name: "orders".into(), id: 3, queues: (0..4).map(queue).collect() };
/// assert_eq!(topic.stored_messages(), 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Tells this topic from an earlier one of the same name, deleted since (version 2; 0 at
    /// version 1, and for a topic made before ids): a client that held another id for the name
    /// restarts its queues, never reads the new topic from the old topic's offsets.
    pub id: u64,
    pub queues: Vec<QueueMetadata>,
}

impl TopicMetadata {
    /// The messages the broker stores of the topic, over its queues.
    pub fn stored_messages(&self) -> u64 {
        self.queues.iter().map(QueueMetadata::stored_messages).sum()
    }
}

/// Smallest encoded [`TopicMetadata`]: an empty name and no queues (version 1).
const TOPIC_METADATA_MIN_BYTES: usize = 2 + 4;

/// Who this broker is and which topics it holds. Requested topics the broker does not hold are
/// absent from `topics`.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::response::{MetadataResponse, QueueMetadata, Response, TopicMetadata};
/// use smq_protocol::Role;
/// use smq_protocol::ApiKey;
///
/// let queues = vec![QueueMetadata { queue_id: 0, log_start_offset: 0, high_watermark: 3 }];
/// let topics = vec![TopicMetadata { name: "orders".into(), id: 3, queues }];
/// let metadata = MetadataResponse { cluster: "c1".into(), group: "g1".into(), role: Role::Master, topics };
/// let mut buf = BytesMut::new();
/// Response::Metadata(metadata.clone()).encode(2, 1, &mut buf);
/// let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(Response::decode(ApiKey::Metadata, 2, frame.body), Ok(Response::Metadata(metadata)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub cluster: String,
    pub group: String,
    pub role: Role,
    pub topics: Vec<TopicMetadata>,
}

impl MetadataResponse {
    fn encode(&self, api_version: u16, out: &mut BytesMut) {
        put_string(out, &self.cluster);
        put_string(out, &self.group);
        out.put_u8(self.role.to_u8());
        put_count(out, self.topics.len());
        for topic in &self.topics {
            put_string(out, &topic.name);
            if api_version >= 2 {
                out.put_u64(topic.id);
            }
            put_count(out, topic.queues.len());
            for queue in &topic.queues {
                out.put_u32(queue.queue_id);
                out.put_u64(queue.log_start_offset);
                out.put_u64(queue.high_watermark);
            }
        }
    }

    fn decode(reader: &mut Reader, api_version: u16) -> Result<MetadataResponse, DecodeError> {
        let cluster = reader.string("cluster")?;
        let group = reader.string("group")?;
        let role = Role::from_u8(reader.u8("role")?)?;
        let topic_count = reader.count("topics", TOPIC_METADATA_MIN_BYTES)?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = reader.string("topic")?;
            let id = if api_version >= 2 {
                reader.u64("topic_id")?
            } else {
                0
            };
            let queue_count = reader.count("queues", QUEUE_METADATA_BYTES)?;
            let mut queues = Vec::with_capacity(queue_count);
            for _ in 0..queue_count {
                queues.push(QueueMetadata {
                    queue_id: reader.u32("queue_id")?,
                    log_start_offset: reader.u64("log_start_offset")?,
                    high_watermark: reader.u64("high_watermark")?,
                });
            }
            topics.push(TopicMetadata { name, id, queues });
        }
        Ok(MetadataResponse {
            cluster,
            group,
            role,
            topics,
        })
    }
}

/// The offset a consumer group stored for a topic-queue.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::response::{FetchOffsetResponse, Response};
/// use smq_protocol::ApiKey;
///
/// // "Never committed" stays distinct from a committed offset 0.
/// for offset in [None, Some(0)] {
///     let response = Response::FetchOffset(FetchOffsetResponse { offset });
///     let mut buf = BytesMut::new();
///     response.encode(1, 1, &mut buf);
///     let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
///     assert_eq!(Response::decode(ApiKey::FetchOffset, 1, frame.body), Ok(response));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOffsetResponse {
    /// `None` when the group never committed an offset for this topic-queue: the consumer
    /// starts where `--from` says.
    pub offset: Option<u64>,
}

impl FetchOffsetResponse {
    fn encode_v1(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(self.offset.is_some()));
        out.put_u64(self.offset.unwrap_or(0));
    }

    fn decode_v1(reader: &mut Reader) -> Result<FetchOffsetResponse, DecodeError> {
        let present = reader.u8("has_offset")?;
        let offset = reader.u64("offset")?;
        match present {
            0 => Ok(FetchOffsetResponse { offset: None }),
            1 => Ok(FetchOffsetResponse {
                offset: Some(offset),
            }),
            value => Err(DecodeError::InvalidValue {
                field: "has_offset",
                value: u64::from(value),
            }),
        }
    }
}

/// Any response, one variant per api, or the error that replaced it.
///
/// ```
/// use bytes::BytesMut;
/// use smq_protocol::frame::decode_response;
/// use smq_protocol::{ApiKey, ErrorCode, ErrorResponse, Response};
///
/// let refusal = Response::Error(ErrorResponse::new(ErrorCode::UnknownTopic, "no topic orders"));
/// assert_eq!(refusal.api_key(), None);
/// let mut buf = BytesMut::new();
/// refusal.encode(1, 4, &mut buf);
/// let frame = decode_response(&mut buf, 1 << 20).unwrap().unwrap();
/// // An error answers any api: its body holds only the code and the message.
/// let error = Response::decode(ApiKey::Fetch, 1, frame.body).unwrap().into_result().unwrap_err();
/// assert_eq!(error.error_code(), Some(ErrorCode::UnknownTopic));
/// assert!(error.is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Handshake(HandshakeResponse),
    /// Produce version 1.
    Produce(ProduceResponse),
    /// Produce version 2.
    ProduceMany(ProduceManyResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    Metadata(MetadataResponse),
    CreateTopic,
    DeleteTopic,
    CommitOffset,
    FetchOffset(FetchOffsetResponse),
    /// The request failed; the body holds only the error.
    Error(ErrorResponse),
}

impl Response {
    /// The api this response answers; `None` for [`Response::Error`], which answers any.
    pub fn api_key(&self) -> Option<ApiKey> {
        match self {
            Response::Handshake(_) => Some(ApiKey::Handshake),
            Response::Produce(_) | Response::ProduceMany(_) => Some(ApiKey::Produce),
            Response::Fetch(_) => Some(ApiKey::Fetch),
            Response::ListOffsets(_) => Some(ApiKey::ListOffsets),
            Response::Metadata(_) => Some(ApiKey::Metadata),
            Response::CreateTopic => Some(ApiKey::CreateTopic),
            Response::DeleteTopic => Some(ApiKey::DeleteTopic),
            Response::CommitOffset => Some(ApiKey::CommitOffset),
            Response::FetchOffset(_) => Some(ApiKey::FetchOffset),
            Response::Error(_) => None,
        }
    }

    /// The error, for callers that treat any error response as a failure.
    pub fn into_result(self) -> Result<Response, ErrorResponse> {
        match self {
            Response::Error(error) => Err(error),
            response => Ok(response),
        }
    }

    /// Appends this response as one whole frame to `out`, at the `api_version` of the request it
    /// answers (ignored for [`Response::Error`]).
    ///
    /// Panics if this build does not speak `api_version` of the api, on an error response with
    /// code 0, or on a string longer than 65,535 bytes.
    pub fn encode(&self, api_version: u16, correlation_id: u32, out: &mut BytesMut) {
        if let Some(api_key) = self.api_key() {
            assert!(
                api_key.versions().contains(&api_version),
                "{api_key} has no version {api_version} in this build"
            );
        }
        // The two Produce layouts are two types: each is sent at its own version.
        match self {
            Response::Produce(_) => assert_eq!(api_version, 1, "ProduceResponse is Produce v1"),
            Response::ProduceMany(_) => {
                assert_eq!(api_version, 2, "ProduceManyResponse is Produce v2")
            }
            _ => {}
        }
        frame::encode_response(out, correlation_id, |out| {
            if let Response::Error(error) = self {
                encode_error_head(out, Some(error));
                return;
            }
            encode_error_head(out, None);
            match self {
                Response::Handshake(response) => response.encode_v1(out),
                Response::Produce(response) => response.encode_v1(out),
                Response::ProduceMany(response) => response.encode_v2(out),
                Response::Fetch(response) => response.encode_v1(out),
                Response::ListOffsets(response) => response.encode_v1(out),
                Response::Metadata(response) => response.encode(api_version, out),
                Response::CreateTopic | Response::DeleteTopic | Response::CommitOffset => {}
                Response::FetchOffset(response) => response.encode_v1(out),
                Response::Error(_) => unreachable!("written above"),
            }
        });
    }

    /// Decodes the body of a response frame to a request of `api_key` at `api_version` (the
    /// caller remembers what it sent under each correlation id). Byte arrays (Fetch batches)
    /// share `body` rather than copy it.
    pub fn decode(api_key: ApiKey, api_version: u16, body: Bytes) -> Result<Response, DecodeError> {
        ApiKey::check(api_key as u16, api_version)?;
        let mut reader = Reader::new(body);
        if let Some(error) = decode_error_head(&mut reader)? {
            return Ok(Response::Error(error));
        }
        // Metadata has a version 2 (topic ids) and Produce one with a result per batch; the
        // other responses are the same at every version.
        let response = match api_key {
            ApiKey::Handshake => Response::Handshake(HandshakeResponse::decode_v1(&mut reader)?),
            ApiKey::Produce if api_version >= 2 => {
                Response::ProduceMany(ProduceManyResponse::decode_v2(&mut reader)?)
            }
            ApiKey::Produce => Response::Produce(ProduceResponse::decode_v1(&mut reader)?),
            ApiKey::Fetch => Response::Fetch(FetchResponse::decode_v1(&mut reader)?),
            ApiKey::ListOffsets => {
                Response::ListOffsets(ListOffsetsResponse::decode_v1(&mut reader)?)
            }
            ApiKey::Metadata => {
                Response::Metadata(MetadataResponse::decode(&mut reader, api_version)?)
            }
            ApiKey::CreateTopic => Response::CreateTopic,
            ApiKey::DeleteTopic => Response::DeleteTopic,
            ApiKey::CommitOffset => Response::CommitOffset,
            ApiKey::FetchOffset => {
                Response::FetchOffset(FetchOffsetResponse::decode_v1(&mut reader)?)
            }
        };
        reader.finish()?;
        Ok(response)
    }
}

/// Writes the `error_code` and `error_message` every response body starts with: `error`'s, or
/// code 0 and an empty message before a success's fields. Panics on an error with code 0.
pub(crate) fn encode_error_head(out: &mut BytesMut, error: Option<&ErrorResponse>) {
    match error {
        Some(error) => {
            assert!(error.code != 0, "an error response needs an error code");
            out.put_u16(error.code);
            put_string(out, &error.message);
        }
        None => {
            out.put_u16(ErrorCode::None.as_u16());
            put_string(out, "");
        }
    }
}

/// Reads the `error_code` and `error_message` every response body starts with: the error, when
/// the code is not 0 (and then nothing may follow), or `None` for a success whose fields follow.
pub(crate) fn decode_error_head(reader: &mut Reader) -> Result<Option<ErrorResponse>, DecodeError> {
    let code = reader.u16("error_code")?;
    let message = reader.string("error_message")?;
    if code == ErrorCode::None.as_u16() {
        return Ok(None);
    }
    reader.finish_here()?;
    Ok(Some(ErrorResponse { code, message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_response;
    use crate::limits::MAX_FRAME_BYTES_DEFAULT;
    use crate::request::tests::{arb_bytes, arb_name};
    use proptest::prelude::*;

    fn arb_error() -> impl Strategy<Value = ErrorResponse> {
        (1u16.., arb_name()).prop_map(|(code, message)| ErrorResponse { code, message })
    }

    fn arb_metadata() -> impl Strategy<Value = MetadataResponse> {
        let queue = (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(queue_id, log_start_offset, high_watermark)| QueueMetadata {
                queue_id,
                log_start_offset,
                high_watermark,
            },
        );
        let topic = (
            arb_name(),
            any::<u64>(),
            proptest::collection::vec(queue, 0..5),
        )
            .prop_map(|(name, id, queues)| TopicMetadata { name, id, queues });
        (
            arb_name(),
            arb_name(),
            prop_oneof![Just(Role::Master), Just(Role::Slave)],
            proptest::collection::vec(topic, 0..5),
        )
            .prop_map(|(cluster, group, role, topics)| MetadataResponse {
                cluster,
                group,
                role,
                topics,
            })
    }

    /// A response of each api, paired with the api it answers.
    fn arb_response() -> impl Strategy<Value = (ApiKey, Response)> {
        prop_oneof![
            (
                any::<u16>(),
                any::<u16>(),
                any::<u16>(),
                any::<u32>(),
                any::<u32>()
            )
                .prop_map(
                    |(
                        version,
                        broker_min_version,
                        broker_max_version,
                        max_frame_bytes,
                        max_message_bytes,
                    )| {
                        (
                            ApiKey::Handshake,
                            Response::Handshake(HandshakeResponse {
                                version,
                                broker_min_version,
                                broker_max_version,
                                max_frame_bytes,
                                max_message_bytes,
                            }),
                        )
                    }
                ),
            (any::<u64>(), any::<u32>()).prop_map(|(base_queue_offset, message_count)| {
                (
                    ApiKey::Produce,
                    Response::Produce(ProduceResponse {
                        base_queue_offset,
                        message_count,
                    }),
                )
            }),
            proptest::collection::vec(
                prop_oneof![
                    (any::<u64>(), any::<u32>()).prop_map(|(base_queue_offset, message_count)| {
                        Ok(ProduceResponse {
                            base_queue_offset,
                            message_count,
                        })
                    }),
                    arb_error().prop_map(Err),
                ],
                0..5
            )
            .prop_map(|results| {
                (
                    ApiKey::Produce,
                    Response::ProduceMany(ProduceManyResponse { results }),
                )
            }),
            (any::<u64>(), any::<u64>(), arb_bytes(512)).prop_map(
                |(high_watermark, log_start_offset, batches)| {
                    (
                        ApiKey::Fetch,
                        Response::Fetch(FetchResponse {
                            high_watermark,
                            log_start_offset,
                            batches,
                        }),
                    )
                }
            ),
            (any::<u64>(), any::<u64>()).prop_map(|(log_start_offset, high_watermark)| {
                (
                    ApiKey::ListOffsets,
                    Response::ListOffsets(ListOffsetsResponse {
                        log_start_offset,
                        high_watermark,
                    }),
                )
            }),
            arb_metadata().prop_map(|metadata| (ApiKey::Metadata, Response::Metadata(metadata))),
            Just((ApiKey::CreateTopic, Response::CreateTopic)),
            Just((ApiKey::DeleteTopic, Response::DeleteTopic)),
            Just((ApiKey::CommitOffset, Response::CommitOffset)),
            proptest::option::of(any::<u64>()).prop_map(|offset| {
                (
                    ApiKey::FetchOffset,
                    Response::FetchOffset(FetchOffsetResponse { offset }),
                )
            }),
            (0..ApiKey::ALL.len(), arb_error())
                .prop_map(|(api, error)| (ApiKey::ALL[api], Response::Error(error))),
        ]
    }

    fn encode(response: &Response, correlation_id: u32) -> BytesMut {
        encode_at(response, 1, correlation_id)
    }

    fn encode_at(response: &Response, api_version: u16, correlation_id: u32) -> BytesMut {
        let mut out = BytesMut::new();
        response.encode(api_version, correlation_id, &mut out);
        out
    }

    /// The version of `api_key` peers use at `protocol_version`, and what `response` means
    /// once sent at it: Metadata version 1 carries no topic ids.
    fn as_sent_in(api_key: ApiKey, response: &Response, protocol_version: u16) -> (u16, Response) {
        let mut version = api_key.version_in(protocol_version).unwrap();
        // Each Produce layout is a type of its own, sent at its version.
        match response {
            Response::Produce(_) => version = 1,
            Response::ProduceMany(_) => version = 2,
            _ => {}
        }
        let mut response = response.clone();
        if let (Response::Metadata(metadata), 1) = (&mut response, version) {
            metadata.topics.iter_mut().for_each(|topic| topic.id = 0);
        }
        (version, response)
    }

    proptest! {
        #[test]
        fn fetch_head_then_batches_is_the_whole_fetch_frame(
            high_watermark in any::<u64>(),
            log_start_offset in any::<u64>(),
            batches in arb_bytes(512),
            correlation_id in any::<u32>(),
        ) {
            let response = FetchResponse { high_watermark, log_start_offset, batches };
            let mut head = BytesMut::new();
            response.encode_head(response.batches.len(), 1, correlation_id, &mut head);
            head.extend_from_slice(&response.batches);
            prop_assert_eq!(head, encode(&Response::Fetch(response), correlation_id));
        }

        #[test]
        fn every_response_round_trips_through_a_frame(
            (api_key, response) in arb_response(), protocol_version in 1u16..=3,
            correlation_id in any::<u32>(),
        ) {
            let (version, sent) = as_sent_in(api_key, &response, protocol_version);
            let mut buf = encode_at(&response, version, correlation_id);
            let frame = decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(frame.correlation_id, correlation_id);
            prop_assert_eq!(Response::decode(api_key, version, frame.body).unwrap(), sent);
        }

        #[test]
        fn every_truncated_response_body_is_an_error(
            (api_key, response) in arb_response(), protocol_version in 1u16..=3,
            cut in any::<prop::sample::Index>(),
        ) {
            let (version, _) = as_sent_in(api_key, &response, protocol_version);
            let mut buf = encode_at(&response, version, 1);
            let frame = decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            let len = cut.index(frame.body.len());
            prop_assert!(Response::decode(api_key, version, frame.body.slice(..len)).is_err());
        }

        #[test]
        fn response_decoder_never_panics_on_arbitrary_bodies(
            api in 0..ApiKey::ALL.len(), api_version in 0u16..3,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = Response::decode(ApiKey::ALL[api], api_version, Bytes::from(body));
        }

        #[test]
        fn response_decoders_never_panic_on_arbitrary_streams(
            api in 0..ApiKey::ALL.len(),
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT) {
                let _ = Response::decode(ApiKey::ALL[api], 1, frame.body);
            }
        }
    }

    #[test]
    fn an_error_answers_a_request_of_any_api() {
        let error = Response::Error(ErrorResponse::new(
            ErrorCode::UnknownTopic,
            "topic `orders` does not exist on this broker: create it with `smq topic create orders`",
        ));
        let body = encode(&error, 3).split_off(8).freeze();
        for api_key in ApiKey::ALL {
            assert_eq!(Response::decode(api_key, 1, body.clone()).unwrap(), error);
        }
    }

    #[test]
    fn a_code_this_client_does_not_know_is_kept_and_not_retried() {
        let mut body = BytesMut::new();
        body.put_u16(9999);
        put_string(&mut body, "from a newer broker");
        let Response::Error(error) = Response::decode(ApiKey::Fetch, 1, body.freeze()).unwrap()
        else {
            panic!("not an error response");
        };
        assert_eq!(error.code, 9999);
        assert_eq!(error.error_code(), None);
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "broker error code 9999 (unknown to this client): from a newer broker"
        );
    }

    #[test]
    fn retryable_error_responses_say_so() {
        let error = ErrorResponse::new(ErrorCode::NotMaster, "this broker is a slave");
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            "broker error NOT_MASTER (18): this broker is a slave"
        );
    }

    #[test]
    fn fetch_batches_are_shared_with_the_read_buffer_not_copied() {
        let response = Response::Fetch(FetchResponse {
            high_watermark: 10,
            log_start_offset: 0,
            batches: Bytes::from(vec![7u8; 1000]),
        });
        let mut buf = encode(&response, 1);
        let range = buf.as_ptr_range();
        let frame = decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        let Response::Fetch(fetch) = Response::decode(ApiKey::Fetch, 1, frame.body).unwrap() else {
            panic!("not a fetch response");
        };
        assert!(range.contains(&fetch.batches.as_ptr()));
        assert_eq!(fetch.batches.len(), 1000);
    }

    #[test]
    fn invalid_has_offset_flag_is_rejected() {
        let mut body = BytesMut::new();
        body.put_u16(0);
        put_string(&mut body, "");
        body.put_u8(2);
        body.put_u64(5);
        assert_eq!(
            Response::decode(ApiKey::FetchOffset, 1, body.freeze()),
            Err(DecodeError::InvalidValue {
                field: "has_offset",
                value: 2
            })
        );
    }

    #[test]
    fn forged_queue_count_is_rejected_before_reserving() {
        let mut body = BytesMut::new();
        body.put_u16(0);
        put_string(&mut body, "");
        put_string(&mut body, "cluster");
        put_string(&mut body, "group-a");
        body.put_u8(Role::Master.to_u8());
        body.put_u32(1);
        put_string(&mut body, "orders");
        body.put_u32(u32::MAX);
        assert!(matches!(
            Response::decode(ApiKey::Metadata, 1, body.freeze()),
            Err(DecodeError::Truncated {
                field: "queues",
                ..
            })
        ));
    }

    #[test]
    fn success_layout_matches_the_spec() {
        let response = Response::Produce(ProduceResponse {
            base_queue_offset: 0x0102,
            message_count: 3,
        });
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 20,               // length
            0, 0, 0, 9,                // correlation id
            0, 0,                      // error code: none
            0, 0,                      // error message: empty
            0, 0, 0, 0, 0, 0, 1, 2,    // base queue offset
            0, 0, 0, 3,                // message count
        ];
        assert_eq!(&encode(&response, 9)[..], expected);
    }
}
