//! FetchOffset: the offset a consumer group committed for a topic-queue, if any. A master back
//! from an outage answers once it has its slave's newer offsets
//! ([`crate::metadata::reconciliation`]).

use smq_protocol::request::FetchOffsetRequest;
use smq_protocol::response::FetchOffsetResponse;
use smq_protocol::{Response, Role};

use super::{check_group_name, topic_queue, Answer, HandlerError, Outcome};
use crate::state::Broker;

pub fn handle(broker: &Broker, request: FetchOffsetRequest) -> Outcome {
    check_group_name(&request.consumer_group)?;
    let topic = topic_queue(broker, &request.topic, request.queue_id)?;
    if broker.role.borrow().role == Role::Master {
        broker.offsets_reconciliation.check().map_err(|not_ready| {
            HandlerError::OffsetsNotReady {
                since_ms: not_ready.since_ms,
                remaining_ms: not_ready.remaining_ms,
            }
        })?;
    }
    // Clamped to the queue's end as it is now: after a power loss recovery may have dropped an
    // unflushed tail that an offset committed under async flush pointed past.
    let (_, end) = broker.store.queue_offsets(&request.topic, request.queue_id);
    let offset = broker
        .offsets
        .get(&request.consumer_group, &request.topic, request.queue_id)
        // Never an offset of a topic deleted since and created again under its name.
        .filter(|committed| committed.topic_id == 0 || committed.topic_id == topic.id)
        .map(|committed| committed.offset.min(end));
    Ok(Answer::Response(Response::FetchOffset(
        FetchOffsetResponse { offset },
    )))
}
