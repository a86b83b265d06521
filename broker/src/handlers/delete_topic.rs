//! DeleteTopic: remove a topic from topics.json, forget its consumer offsets and delete its queue
//! indexes; its batches stay in the commit log, never served, until retention removes them.

use std::sync::Arc;

use smq_protocol::request::DeleteTopicRequest;
use smq_protocol::Response;

use super::{blocking, check_master, Answer, Reply};
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, request: DeleteTopicRequest) -> Reply {
    if let Err(error) = check_master(broker) {
        return Reply::Now(Err(error));
    }
    blocking(broker, move |broker| {
        broker.delete_topic(&request.topic)?;
        tracing::info!(topic = %request.topic, "deleted topic");
        Ok(Answer::Response(Response::DeleteTopic))
    })
}
