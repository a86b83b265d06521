//! CreateTopic: add a topic with queues 0 to `queue_count - 1` to topics.json.

use std::sync::Arc;

use smq_protocol::request::CreateTopicRequest;
use smq_protocol::Response;

use super::{blocking, check_master, Answer, Reply};
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, request: CreateTopicRequest) -> Reply {
    if let Err(error) = check_master(broker) {
        return Reply::Now(Err(error));
    }
    blocking(broker, move |broker| {
        broker.create_topic(&request.topic, request.queue_count)?;
        tracing::info!(topic = %request.topic, queues = request.queue_count, "created topic");
        Ok(Answer::Response(Response::CreateTopic))
    })
}
