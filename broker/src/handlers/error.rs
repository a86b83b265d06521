//! Why a request failed, and the one place where failures become protocol error codes.

use smq_protocol::api::ApiKey;
use smq_protocol::limits::{MAX_GROUP_NAME_BYTES, MAX_TOPIC_NAME_BYTES};
use smq_protocol::record_batch::BatchError;
use smq_protocol::{DecodeError, ErrorCode, ErrorResponse};

use crate::metadata::topics::TopicError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("send a Handshake (api key 0) first on every connection; got {api}")]
    HandshakeRequired { api: ApiKey },
    #[error("{api} version {version} is not version {agreed} that protocol version {protocol_version} fixes; handshake again")]
    VersionMismatch {
        api: ApiKey,
        version: u16,
        agreed: u16,
        protocol_version: u16,
    },
    #[error("no protocol version in common: the client speaks {client_min} to {client_max}, this broker {broker_min} to {broker_max}; upgrade the older side")]
    NoCommonVersion {
        client_min: u16,
        client_max: u16,
        broker_min: u16,
        broker_max: u16,
    },
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    #[error("principal {principal} may not {what}")]
    NotAuthorized { principal: String, what: String },
    #[error("topic {0} does not exist: create it with `smq topic create {0}`")]
    UnknownTopic(String),
    #[error("topic {topic} was deleted and created again: the request names topic id {requested}, the topic has id {current} now; its offsets start again at 0 (describe the topic again)")]
    UnknownTopicId {
        topic: String,
        requested: u64,
        current: u64,
    },
    #[error("topic {topic} has queues 0 to {last}; there is no queue {queue}", last = queue_count - 1)]
    UnknownQueue {
        topic: String,
        queue: u32,
        queue_count: u32,
    },
    #[error("consumer group name of {bytes} bytes is invalid: use 1 to {MAX_GROUP_NAME_BYTES} bytes of UTF-8")]
    InvalidGroupName { bytes: usize },
    #[error("topic name of {bytes} bytes is invalid: use 1 to {MAX_TOPIC_NAME_BYTES} characters of [A-Za-z0-9._-]")]
    InvalidTopicName { bytes: usize },
    #[error("batch of {batch_bytes} bytes is above this broker's max batch size of {max_batch_bytes} bytes: send smaller batches")]
    BatchTooLarge {
        batch_bytes: usize,
        max_batch_bytes: u64,
    },
    #[error("broker group {group} has no slave in sync, so the write cannot be replicated; nothing was written: send it to another broker group")]
    NoSlave { group: String },
    #[error("the batch was written (queue offset {base_queue_offset}) but no slave of broker group {group} confirmed it within {timeout_ms} ms: it may be stored, and a retry may store it twice")]
    ReplicationTimeout {
        group: String,
        base_queue_offset: u64,
        timeout_ms: u64,
    },
    #[error("this broker is a slave of broker group {group}: writes go to the group's master (refresh routes)")]
    NotMaster { group: String },
    #[error("this master of broker group {group} takes no writes: {reason}")]
    WritesRefused { group: String, reason: String },
    #[error("{0}")]
    EpochConflict(String),
    #[error("the handover did not finish within {timeout_ms} ms: slave {slave} acknowledged {} of this master's {end} bytes; the master takes writes again", acked.map_or_else(|| "none (it is not connected)".to_owned(), |acked| acked.to_string()))]
    HandOverTimeout {
        slave: String,
        acked: Option<u64>,
        end: u64,
        timeout_ms: u32,
    },
    #[error("replication refused: {0}")]
    ReplicaRefused(String),
    #[error("the slave asks for log position {position}, past this master's end {end}: its log has diverged")]
    ReplicaAhead { position: u64, end: u64 },
    #[error("send ReplicaHello (api key 100) first on a replication connection")]
    ReplicaHelloRequired,
    #[error("the batch was written (queue offset {base_queue_offset}) but not flushed within timeout_ms {timeout_ms}: it may be stored, and a retry may store it twice")]
    FlushTimeout {
        base_queue_offset: u64,
        timeout_ms: u32,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("consumer group {consumer_group}: the commit for {topic}/{queue} carries owner epoch {owner_epoch}, but a member with epoch {stored_epoch} committed already: another member owns this queue now; stop reading it")]
    StaleOwnerEpoch {
        consumer_group: String,
        topic: String,
        queue: u32,
        owner_epoch: u64,
        stored_epoch: u64,
    },
    #[error("consumer group {consumer_group}: this broker already keeps offsets of {limit} consumer groups (max_consumer_groups): commits of a new group are refused; delete unused topics or raise the limit")]
    TooManyConsumerGroups {
        consumer_group: String,
        limit: usize,
    },
    #[error("consumer group {consumer_group}: this broker already keeps {limit} committed offsets (max_committed_offsets): the commit for {topic}/{queue} is refused; delete unused topics or raise the limit")]
    TooManyCommittedOffsets {
        consumer_group: String,
        topic: String,
        queue: u32,
        limit: usize,
    },
    #[error("this master came back from an outage {since_ms} ms ago and its slave has not handed over the consumer offsets it took meanwhile: the offset here may be older than the group's; retry (the answer comes within {remaining_ms} ms)")]
    OffsetsNotReady { since_ms: u64, remaining_ms: u64 },
    #[error("the broker is shutting down: retry on another broker group or after the restart")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Topic(#[from] TopicError),
}

impl HandlerError {
    /// The protocol's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            HandlerError::Decode(error) => error.error_code(),
            HandlerError::HandshakeRequired { .. } => ErrorCode::HandshakeRequired,
            HandlerError::VersionMismatch { .. } | HandlerError::NoCommonVersion { .. } => {
                ErrorCode::UnsupportedVersion
            }
            HandlerError::AuthenticationFailed(_) => ErrorCode::AuthenticationFailed,
            HandlerError::NotAuthorized { .. } => ErrorCode::NotAuthorized,
            HandlerError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            HandlerError::UnknownTopicId { .. } => ErrorCode::UnknownTopicId,
            HandlerError::UnknownQueue { .. } => ErrorCode::UnknownQueue,
            HandlerError::InvalidGroupName { .. } => ErrorCode::InvalidGroupName,
            HandlerError::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
            HandlerError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            HandlerError::NoSlave { .. } => ErrorCode::NoSlave,
            HandlerError::ReplicationTimeout { .. } | HandlerError::HandOverTimeout { .. } => {
                ErrorCode::ReplicationTimeout
            }
            HandlerError::NotMaster { .. }
            | HandlerError::WritesRefused { .. }
            | HandlerError::EpochConflict(_) => ErrorCode::NotMaster,
            HandlerError::ReplicaRefused(_) => ErrorCode::AuthenticationFailed,
            HandlerError::ReplicaAhead { .. } => ErrorCode::OffsetOutOfRange,
            HandlerError::ReplicaHelloRequired => ErrorCode::HandshakeRequired,
            HandlerError::FlushTimeout { .. } => ErrorCode::FlushTimeout,
            HandlerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            HandlerError::StaleOwnerEpoch { .. } => ErrorCode::StaleOwnerEpoch,
            HandlerError::TooManyConsumerGroups { .. }
            | HandlerError::TooManyCommittedOffsets { .. } => ErrorCode::OffsetsLimitReached,
            HandlerError::OffsetsNotReady { .. } => ErrorCode::OffsetsNotReady,
            HandlerError::ShuttingDown => ErrorCode::BrokerShuttingDown,
            HandlerError::Internal(_) => ErrorCode::UnknownServerError,
            HandlerError::Storage(error) => storage_code(error),
            HandlerError::Topic(error) => match error {
                TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
                TopicError::NotFound(_) => ErrorCode::UnknownTopic,
                TopicError::BadQueueCount(_) => ErrorCode::InvalidQueueCount,
                TopicError::BadFile { .. } => ErrorCode::StorageError,
                TopicError::Storage(error) => storage_code(error),
            },
        }
    }

    /// Whether the client sent something wrong (logged as a warning) rather than the broker
    /// failing (logged as an error).
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self.code(),
            ErrorCode::UnknownServerError
                | ErrorCode::StorageError
                | ErrorCode::FlushTimeout
                | ErrorCode::ReplicationTimeout
                | ErrorCode::NoSlave
                | ErrorCode::BrokerShuttingDown
        )
    }

    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse::new(self.code(), self.to_string())
    }
}

fn storage_code(error: &StorageError) -> ErrorCode {
    match error {
        StorageError::InvalidBatch(batch) => match batch {
            BatchError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            BatchError::UnknownMagic { .. } => ErrorCode::UnsupportedBatchMagic,
            _ => ErrorCode::CorruptBatch,
        },
        StorageError::BatchTopicMismatch { .. } => ErrorCode::BatchTopicMismatch,
        StorageError::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } | StorageError::PositionOutOfRange { .. } => {
            ErrorCode::OffsetOutOfRange
        }
        StorageError::ReplicaDiverged { .. }
        | StorageError::EpochMismatch { .. }
        | StorageError::NotABatchBoundary { .. } => ErrorCode::InvalidRequest,
        StorageError::FlushTimeout { .. } => ErrorCode::FlushTimeout,
        StorageError::Closed => ErrorCode::BrokerShuttingDown,
        StorageError::Io { .. }
        | StorageError::DiskFull { .. }
        | StorageError::Fenced { .. }
        | StorageError::FlushFailed(_)
        | StorageError::Corrupt { .. }
        | StorageError::Locked { .. }
        | StorageError::EpochHistory(_) => ErrorCode::StorageError,
        StorageError::InvalidConfig(_) => ErrorCode::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_keep_their_message_and_get_their_code() {
        let full = HandlerError::from(StorageError::DiskFull {
            path: "/data".into(),
            used_percent: 97,
            watermark_percent: 90,
        });
        assert_eq!(full.code(), ErrorCode::StorageError);
        assert!(!full.is_bad_input());
        assert!(full.to_response().message.contains("disk full"));
        let big = HandlerError::from(StorageError::InvalidBatch(BatchError::MessageTooLarge {
            index: 0,
            bytes: 5 << 20,
            limit: 4 << 20,
        }));
        assert_eq!(big.code(), ErrorCode::MessageTooLarge);
        assert!(big.is_bad_input());
        let timeout = HandlerError::from(StorageError::FlushTimeout { timeout_ms: 5 });
        assert_eq!(timeout.code(), ErrorCode::FlushTimeout);
    }

    #[test]
    fn unknown_topic_says_how_to_create_it() {
        let error = HandlerError::UnknownTopic("orders".into());
        assert_eq!(
            error.to_response().message,
            "topic orders does not exist: create it with `smq topic create orders`"
        );
    }
}
