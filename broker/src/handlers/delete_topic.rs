//! DeleteTopic: remove a topic from topics.json and forget its consumer offsets. Its batches and
//! queue indexes stay until retention removes their segments.

use std::sync::Arc;

use smq_client::protocol::request::DeleteTopicRequest;
use smq_client::protocol::Response;

use super::{blocking, Answer, Reply};
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, request: DeleteTopicRequest) -> Reply {
    blocking(broker, move |broker| {
        broker.delete_topic(&request.topic)?;
        tracing::info!(topic = %request.topic, "deleted topic");
        Ok(Answer::Response(Response::DeleteTopic))
    })
}
