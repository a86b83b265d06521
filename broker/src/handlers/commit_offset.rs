//! CommitOffset: remember the next offset a consumer group reads from a topic-queue.

use smq_protocol::request::CommitOffsetRequest;
use smq_protocol::Response;

use super::{check_group_name, check_master, topic_queue, Answer, Outcome};
use crate::state::Broker;

pub fn handle(broker: &Broker, request: CommitOffsetRequest) -> Outcome {
    check_master(broker)?;
    check_group_name(&request.group)?;
    topic_queue(broker, &request.topic, request.queue_id)?;
    // Never past what consumers can have read: a committed offset above the queue's end would
    // skip messages appended later.
    let (_, end) = broker.store.queue_offsets(&request.topic, request.queue_id);
    broker.offsets.commit(
        &request.group,
        &request.topic,
        request.queue_id,
        request.offset.min(end),
    );
    Ok(Answer::Response(Response::CommitOffset))
}
