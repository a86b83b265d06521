//! Request handling: one file per request kind; [`dispatch`] routes a decoded request, and
//! [`error`] maps every failure to its protocol code in one place.
//!
//! A handler does its quick part at once, in the connection's reader, so that requests start in
//! the order they arrived (two pipelined Produces to one queue are appended in order). What has
//! to wait (an fsync, a long poll, a metadata file write) is returned as a future that the
//! connection runs on its own task, so it never holds up the requests behind it.

mod commit_offset;
mod create_topic;
mod delete_topic;
#[cfg(test)]
mod deleted_topic_tests;
pub mod error;
mod fetch;
mod fetch_offset;
pub mod handshake;
mod list_offsets;
mod metadata;
mod produce;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use smq_protocol::limits::MAX_GROUP_NAME_BYTES;
use smq_protocol::replication::{
    ReplicaFetchResponse, ReplicaHelloResponse, ReplicaMetadataResponse,
};
use smq_protocol::{Request, Response, Role};

use crate::auth::Access;
use crate::state::{Broker, TopicState};
use crate::storage::check_topic_name;
use crate::visibility::Wakes;
pub use error::HandlerError;

/// A successful answer, ready to encode.
pub enum Answer {
    Response(Response),
    /// A Fetch response: its fields, then the stored batches written after them uncopied.
    Fetch {
        high_watermark: u64,
        log_start_offset: u64,
        batches: Vec<Bytes>,
    },
    /// Replication (api keys 100 to 102): the log bytes of a fetch are written uncopied.
    ReplicaHello(ReplicaHelloResponse),
    ReplicaFetch(ReplicaFetchResponse),
    ReplicaMetadata(ReplicaMetadataResponse),
    /// HandOver and Promote (api keys 110 and 111).
    Role(smq_protocol::role_change::RoleResponse),
}

pub type Outcome = Result<Answer, HandlerError>;

pub enum Reply {
    /// Answered already.
    Now(Outcome),
    /// Answered when this completes; run it on its own task.
    Later(Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Reply {
        Reply::Now(outcome)
    }
}

/// Starts handling any request but a Handshake (which the connection handles itself), from a
/// connection with `access` (checked already for the request as a whole; a Produce v2 checks
/// each entry's topic). The long polls its appends make ready go into `wakes`, for the
/// connection to wake once it handed the reply to its writer.
pub fn dispatch(
    broker: &Arc<Broker>,
    access: &Access,
    request: Request,
    wakes: &mut Wakes,
) -> Reply {
    match request {
        Request::Produce(request) => produce::handle(broker, request, wakes),
        Request::ProduceMany(request) => produce::handle_many(broker, access, request, wakes),
        Request::Fetch(request) => fetch::handle(broker, request),
        Request::ListOffsets(request) => list_offsets::handle(broker, request).into(),
        Request::Metadata(request) => metadata::handle(broker, request).into(),
        Request::CreateTopic(request) => create_topic::handle(broker, request),
        Request::DeleteTopic(request) => delete_topic::handle(broker, request),
        Request::CommitOffset(request) => commit_offset::handle(broker, request).into(),
        Request::FetchOffset(request) => fetch_offset::handle(broker, request).into(),
        Request::Handshake(_) => Reply::Now(Err(HandlerError::Internal(
            "a handshake reached the request dispatcher".into(),
        ))),
    }
}

/// The topic, checked for a valid name and existence.
fn topic(broker: &Broker, name: &str) -> Result<Arc<TopicState>, HandlerError> {
    check_topic_name(name).map_err(|_| HandlerError::InvalidTopicName { bytes: name.len() })?;
    broker
        .topic(name)
        .ok_or_else(|| HandlerError::UnknownTopic(name.to_owned()))
}

/// The topic, checked as [`topic`] does, and that it has `queue`.
fn topic_queue(broker: &Broker, name: &str, queue: u32) -> Result<Arc<TopicState>, HandlerError> {
    let topic = topic(broker, name)?;
    if queue >= topic.queue_count {
        return Err(HandlerError::UnknownQueue {
            topic: name.to_owned(),
            queue,
            queue_count: topic.queue_count,
        });
    }
    Ok(topic)
}

/// A request naming the topic by id (version 2; 0 names any topic of the name) must name the
/// topic the broker holds under the name now, not an earlier one deleted since.
fn check_topic_id(topic: &TopicState, requested: u64) -> Result<(), HandlerError> {
    if requested != 0 && requested != topic.id {
        return Err(HandlerError::UnknownTopicId {
            topic: topic.name.clone(),
            requested,
            current: topic.id,
        });
    }
    Ok(())
}

/// Writes go to masters taking writes: others answer them with `NOT_MASTER`.
fn check_master(broker: &Broker) -> Result<(), HandlerError> {
    let now = broker.role.borrow();
    match (now.role, &now.refusing_writes) {
        (Role::Master, None) => Ok(()),
        (Role::Master, Some(reason)) => Err(HandlerError::WritesRefused {
            group: broker.config.group.clone(),
            reason: reason.clone(),
        }),
        (Role::Slave, _) => Err(HandlerError::NotMaster {
            group: broker.config.group.clone(),
        }),
    }
}

fn check_group_name(group: &str) -> Result<(), HandlerError> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME_BYTES {
        return Err(HandlerError::InvalidGroupName { bytes: group.len() });
    }
    Ok(())
}

/// Runs blocking metadata work (file writes with fsync) off the async threads.
pub(crate) fn blocking<F>(broker: &Arc<Broker>, work: F) -> Reply
where
    F: FnOnce(&Broker) -> Outcome + Send + 'static,
{
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&broker))
            .await
            .unwrap_or_else(|error| Err(HandlerError::Internal(error.to_string())))
    }))
}
