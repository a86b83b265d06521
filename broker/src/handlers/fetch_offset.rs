//! FetchOffset: the offset a consumer group committed for a topic-queue, if any.

use smq_protocol::request::FetchOffsetRequest;
use smq_protocol::response::FetchOffsetResponse;
use smq_protocol::Response;

use super::{check_group_name, topic_queue, Answer, Outcome};
use crate::state::Broker;

pub fn handle(broker: &Broker, request: FetchOffsetRequest) -> Outcome {
    check_group_name(&request.group)?;
    topic_queue(broker, &request.topic, request.queue_id)?;
    // Clamped to the queue's end as it is now: after a power loss recovery may have dropped an
    // unflushed tail that an offset committed under async flush pointed past.
    let (_, end) = broker.store.queue_offsets(&request.topic, request.queue_id);
    let offset = broker
        .offsets
        .get(&request.group, &request.topic, request.queue_id)
        .map(|offset| offset.min(end));
    Ok(Answer::Response(Response::FetchOffset(
        FetchOffsetResponse { offset },
    )))
}
