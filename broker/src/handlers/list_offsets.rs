//! ListOffsets: the earliest and next offsets of a topic-queue.

use smq_protocol::request::ListOffsetsRequest;
use smq_protocol::response::ListOffsetsResponse;
use smq_protocol::Response;

use super::{topic_queue, Answer, Outcome};
use crate::state::Broker;

pub fn handle(broker: &Broker, request: ListOffsetsRequest) -> Outcome {
    topic_queue(broker, &request.topic, request.queue_id)?;
    let (log_start_offset, high_watermark) =
        broker.store.queue_offsets(&request.topic, request.queue_id);
    Ok(Answer::Response(Response::ListOffsets(
        ListOffsetsResponse {
            log_start_offset,
            high_watermark,
        },
    )))
}
