//! Metadata: who this broker is and which topics, queues and offsets it holds.

use smq_protocol::request::MetadataRequest;
use smq_protocol::response::{MetadataResponse, QueueMetadata, TopicMetadata};
use smq_protocol::Response;

use super::{Answer, Outcome};
use crate::state::Broker;

pub fn handle(broker: &Broker, request: MetadataRequest) -> Outcome {
    let topics = broker
        .topics()
        .into_iter()
        .filter(|topic| request.topics.is_empty() || request.topics.contains(&topic.name))
        .map(|topic| TopicMetadata {
            queues: (0..topic.queue_count)
                .map(|queue_id| {
                    let (log_start_offset, high_watermark) =
                        broker.store.queue_offsets(&topic.name, queue_id);
                    QueueMetadata {
                        queue_id,
                        log_start_offset,
                        high_watermark,
                    }
                })
                .collect(),
            name: topic.name.clone(),
            id: topic.id,
        })
        .collect();
    Ok(Answer::Response(Response::Metadata(MetadataResponse {
        cluster: broker.config.cluster.clone(),
        group: broker.config.group.clone(),
        role: broker.role_now().role,
        topics,
    })))
}
