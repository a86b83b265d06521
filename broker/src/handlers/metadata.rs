//! Metadata: who this broker is and which topics, queues and offsets it holds.

use std::sync::Arc;

use smq_protocol::request::MetadataRequest;
use smq_protocol::response::{MetadataResponse, QueueMetadata, TopicMetadata};
use smq_protocol::Response;

use super::{Answer, Outcome};
use crate::state::{Broker, TopicState};

pub fn handle(broker: &Broker, request: MetadataRequest) -> Outcome {
    let topics = requested_topics(broker, request.topics)
        .into_iter()
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

/// The topics asked for that this broker holds, in name order, each once; every topic when
/// none is named. Each named topic is looked up on its own: a client asking for one topic of
/// many (a producer learning its routes) costs one lookup, not a copy of the whole list.
fn requested_topics(broker: &Broker, mut names: Vec<String>) -> Vec<Arc<TopicState>> {
    if names.is_empty() {
        return broker.topics();
    }
    names.sort_unstable();
    names.dedup();
    names.iter().filter_map(|name| broker.topic(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn names(outcome: Outcome) -> Vec<String> {
        match outcome {
            Ok(Answer::Response(Response::Metadata(metadata))) => metadata
                .topics
                .into_iter()
                .map(|topic| topic.name)
                .collect(),
            _ => panic!("not a Metadata response"),
        }
    }

    /// Named topics come back once each, in name order, without the topics not named; unknown
    /// names are left out; no name means every topic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_the_named_topics_it_holds_in_name_order_or_every_topic() {
        let dir = tempfile::tempdir().unwrap();
        let running = crate::start(BrokerConfig::for_tests(dir.path()))
            .await
            .unwrap();
        let broker = running.broker.clone();
        tokio::task::block_in_place(|| {
            for name in ["c", "a", "b"] {
                broker.create_topic(name, 2).unwrap();
            }
        });
        let ask = |topics: &[&str]| {
            let topics = topics.iter().map(|name| name.to_string()).collect();
            names(handle(&broker, MetadataRequest { topics }))
        };
        assert_eq!(ask(&["c", "missing", "a", "c"]), ["a", "c"]);
        assert_eq!(ask(&["missing"]), Vec::<String>::new());
        assert_eq!(ask(&[]), ["a", "b", "c"]);
        drop(broker);
        let _ = running.shutdown().await;
    }
}
