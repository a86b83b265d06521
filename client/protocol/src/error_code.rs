//! The stable error codes a broker answers with, and whether a client may retry after each.
//!
//! A code's number is part of the wire format. Codes are only ever added; a retired code keeps its
//! number, unused, and that number is never given to another error. Readers treat a number they do
//! not know as a non-retryable error and show the message that came with it.

use std::fmt;

/// What went wrong with a request, as a broker reports it. proto-spec.md ("Error codes") says what
/// a client should do after each.
///
/// ```
/// use smq_protocol::ErrorCode;
///
/// assert!(ErrorCode::NotMaster.is_retryable());
/// assert!(!ErrorCode::MessageTooLarge.is_retryable());
/// assert_eq!(ErrorCode::from_u16(8), Some(ErrorCode::UnknownTopic));
/// assert_eq!(ErrorCode::from_u16(9999), None);
/// assert_eq!(ErrorCode::UnknownTopic.to_string(), "UNKNOWN_TOPIC (8)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// No error; never sent in an error response.
    None = 0,
    /// The broker failed in a way it has no code for (a bug); the message says what happened.
    UnknownServerError = 1,
    /// The request body did not decode: a field was truncated, not UTF-8 or out of range.
    MalformedRequest = 2,
    /// The broker does not know the request's api key.
    UnsupportedApiKey = 3,
    /// The broker does not speak this api version, or no protocol version is common to both.
    UnsupportedVersion = 4,
    /// A request other than Handshake came before the handshake on this connection.
    HandshakeRequired = 5,
    /// The handshake's auth token was refused.
    AuthenticationFailed = 6,
    /// The frame's length is above the broker's maximum frame size; the broker closes the
    /// connection after answering.
    FrameTooLarge = 7,
    /// The topic does not exist on this broker.
    UnknownTopic = 8,
    /// The topic exists but has no queue with this id.
    UnknownQueue = 9,
    /// CreateTopic named a topic that already exists.
    TopicAlreadyExists = 10,
    /// The topic name is empty, too long or has characters topics may not have.
    InvalidTopicName = 11,
    /// CreateTopic asked for zero queues or more than the broker allows.
    InvalidQueueCount = 12,
    /// The batch failed its checks (length, CRC, message layout): damaged on the way or
    /// encoded wrongly.
    CorruptBatch = 13,
    /// The batch has a magic (format version) the broker does not read.
    UnsupportedBatchMagic = 14,
    /// A message or the batch is larger than the broker accepts.
    MessageTooLarge = 15,
    /// The batch's own topic or queue id differs from the Produce request's.
    BatchTopicMismatch = 16,
    /// The fetch offset is below the queue's log start or above its high watermark.
    OffsetOutOfRange = 17,
    /// A write went to a broker that is not its group's master.
    NotMaster = 18,
    /// The batch was written but not flushed to disk within the request's timeout.
    FlushTimeout = 19,
    /// The batch was written but the slave did not confirm it within the request's timeout.
    ReplicationTimeout = 20,
    /// The write needs a slave (synchronous replication, or `acks` replicated) but none is in
    /// sync with this master; nothing was written.
    NoSlave = 21,
    /// The broker could not write (disk full, IO error); it keeps serving reads.
    StorageError = 22,
    /// The broker is shutting down and takes no new requests.
    BrokerShuttingDown = 23,
    /// The consumer group name is empty or too long.
    InvalidGroupName = 24,
    /// The request decoded but a value makes no sense (for example a Fetch with `max_bytes` 0);
    /// the message names it.
    InvalidRequest = 25,
    /// A CommitOffset carried an owner epoch below the one stored for the queue: another member
    /// of the consumer group owns the queue now, and this member must stop reading it.
    StaleOwnerEpoch = 26,
    /// The connection's principal lacks the permission the request needs (produce, consume or
    /// admin on the topic); the message names the principal, the action and the topic.
    NotAuthorized = 27,
    /// A Fetch or CommitOffset named the topic by an id (version 2) that is not the id of the
    /// topic the broker holds under the name now: the topic was deleted and created again since
    /// the client learned the id. The message names both ids.
    UnknownTopicId = 28,
    /// A CommitOffset would store a consumer group or a committed offset beyond the broker's
    /// bounds (`max_consumer_groups`, `max_committed_offsets`); nothing was stored. Commits of
    /// groups and queues already stored still go through; the message names the bound.
    OffsetsLimitReached = 29,
    /// A FetchOffset reached a master that came back from an outage before its slave handed
    /// over the consumer offsets it took meanwhile (or a bounded wait passed): the master's own
    /// offset may be older. The client asks again shortly; the message says how long at most.
    OffsetsNotReady = 30,
}

impl ErrorCode {
    /// Every code, in number order.
    pub const ALL: [ErrorCode; 31] = [
        ErrorCode::None,
        ErrorCode::UnknownServerError,
        ErrorCode::MalformedRequest,
        ErrorCode::UnsupportedApiKey,
        ErrorCode::UnsupportedVersion,
        ErrorCode::HandshakeRequired,
        ErrorCode::AuthenticationFailed,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownQueue,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidTopicName,
        ErrorCode::InvalidQueueCount,
        ErrorCode::CorruptBatch,
        ErrorCode::UnsupportedBatchMagic,
        ErrorCode::MessageTooLarge,
        ErrorCode::BatchTopicMismatch,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::NotMaster,
        ErrorCode::FlushTimeout,
        ErrorCode::ReplicationTimeout,
        ErrorCode::NoSlave,
        ErrorCode::StorageError,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::InvalidGroupName,
        ErrorCode::InvalidRequest,
        ErrorCode::StaleOwnerEpoch,
        ErrorCode::NotAuthorized,
        ErrorCode::UnknownTopicId,
        ErrorCode::OffsetsLimitReached,
        ErrorCode::OffsetsNotReady,
    ];

    /// The code with this number, if this build knows it.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get(usize::from(code)).copied()
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether the same request may succeed if sent again, possibly after refreshing routes or
    /// on another broker group. A retried Produce after a timeout may store the batch twice.
    pub fn is_retryable(self) -> bool {
        match self {
            ErrorCode::UnknownTopic
            | ErrorCode::UnknownQueue
            | ErrorCode::CorruptBatch
            | ErrorCode::NotMaster
            | ErrorCode::FlushTimeout
            | ErrorCode::ReplicationTimeout
            | ErrorCode::NoSlave
            | ErrorCode::StorageError
            | ErrorCode::BrokerShuttingDown
            | ErrorCode::OffsetsNotReady => true,
            ErrorCode::None
            | ErrorCode::UnknownServerError
            | ErrorCode::MalformedRequest
            | ErrorCode::UnsupportedApiKey
            | ErrorCode::UnsupportedVersion
            | ErrorCode::HandshakeRequired
            | ErrorCode::AuthenticationFailed
            | ErrorCode::FrameTooLarge
            | ErrorCode::TopicAlreadyExists
            | ErrorCode::InvalidTopicName
            | ErrorCode::InvalidQueueCount
            | ErrorCode::UnsupportedBatchMagic
            | ErrorCode::MessageTooLarge
            | ErrorCode::BatchTopicMismatch
            | ErrorCode::OffsetOutOfRange
            | ErrorCode::InvalidGroupName
            | ErrorCode::InvalidRequest
            | ErrorCode::StaleOwnerEpoch
            | ErrorCode::NotAuthorized
            | ErrorCode::UnknownTopicId
            | ErrorCode::OffsetsLimitReached => false,
        }
    }

    /// The name proto-spec.md uses, e.g. `UNKNOWN_TOPIC`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::UnknownServerError => "UNKNOWN_SERVER_ERROR",
            ErrorCode::MalformedRequest => "MALFORMED_REQUEST",
            ErrorCode::UnsupportedApiKey => "UNSUPPORTED_API_KEY",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::HandshakeRequired => "HANDSHAKE_REQUIRED",
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownTopic => "UNKNOWN_TOPIC",
            ErrorCode::UnknownQueue => "UNKNOWN_QUEUE",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidTopicName => "INVALID_TOPIC_NAME",
            ErrorCode::InvalidQueueCount => "INVALID_QUEUE_COUNT",
            ErrorCode::CorruptBatch => "CORRUPT_BATCH",
            ErrorCode::UnsupportedBatchMagic => "UNSUPPORTED_BATCH_MAGIC",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::BatchTopicMismatch => "BATCH_TOPIC_MISMATCH",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::NotMaster => "NOT_MASTER",
            ErrorCode::FlushTimeout => "FLUSH_TIMEOUT",
            ErrorCode::ReplicationTimeout => "REPLICATION_TIMEOUT",
            ErrorCode::NoSlave => "NO_SLAVE",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::BrokerShuttingDown => "BROKER_SHUTTING_DOWN",
            ErrorCode::InvalidGroupName => "INVALID_GROUP_NAME",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::StaleOwnerEpoch => "STALE_OWNER_EPOCH",
            ErrorCode::NotAuthorized => "NOT_AUTHORIZED",
            ErrorCode::UnknownTopicId => "UNKNOWN_TOPIC_ID",
            ErrorCode::OffsetsLimitReached => "OFFSETS_LIMIT_REACHED",
            ErrorCode::OffsetsNotReady => "OFFSETS_NOT_READY",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers are the wire format: this table changes only by appending.
    #[test]
    fn codes_keep_their_numbers() {
        let expected = [
            (0, "NONE"),
            (1, "UNKNOWN_SERVER_ERROR"),
            (2, "MALFORMED_REQUEST"),
            (3, "UNSUPPORTED_API_KEY"),
            (4, "UNSUPPORTED_VERSION"),
            (5, "HANDSHAKE_REQUIRED"),
            (6, "AUTHENTICATION_FAILED"),
            (7, "FRAME_TOO_LARGE"),
            (8, "UNKNOWN_TOPIC"),
            (9, "UNKNOWN_QUEUE"),
            (10, "TOPIC_ALREADY_EXISTS"),
            (11, "INVALID_TOPIC_NAME"),
            (12, "INVALID_QUEUE_COUNT"),
            (13, "CORRUPT_BATCH"),
            (14, "UNSUPPORTED_BATCH_MAGIC"),
            (15, "MESSAGE_TOO_LARGE"),
            (16, "BATCH_TOPIC_MISMATCH"),
            (17, "OFFSET_OUT_OF_RANGE"),
            (18, "NOT_MASTER"),
            (19, "FLUSH_TIMEOUT"),
            (20, "REPLICATION_TIMEOUT"),
            (21, "NO_SLAVE"),
            (22, "STORAGE_ERROR"),
            (23, "BROKER_SHUTTING_DOWN"),
            (24, "INVALID_GROUP_NAME"),
            (25, "INVALID_REQUEST"),
            (26, "STALE_OWNER_EPOCH"),
            (27, "NOT_AUTHORIZED"),
            (28, "UNKNOWN_TOPIC_ID"),
            (29, "OFFSETS_LIMIT_REACHED"),
            (30, "OFFSETS_NOT_READY"),
        ];
        let actual: Vec<(u16, &str)> = ErrorCode::ALL
            .iter()
            .map(|code| (code.as_u16(), code.name()))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn every_code_decodes_from_its_number() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(ErrorCode::ALL.len() as u16), None);
        assert_eq!(ErrorCode::from_u16(u16::MAX), None);
    }

    #[test]
    fn timeouts_and_routing_errors_are_retryable_but_bad_input_is_not() {
        assert!(ErrorCode::NotMaster.is_retryable());
        assert!(ErrorCode::ReplicationTimeout.is_retryable());
        assert!(!ErrorCode::None.is_retryable());
        assert!(!ErrorCode::MessageTooLarge.is_retryable());
        assert!(!ErrorCode::MalformedRequest.is_retryable());
    }
}
