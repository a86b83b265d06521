//! What `GET /v1/groups`, `GET /v1/groups/{group}` and `/metrics` show of consumer groups: the
//! members and owners (from [`ConsumerGroups`]) joined with the committed offsets and queue ends
//! the brokers report, and the lag computed from them. Pure: both clocks are arguments.

use std::collections::{BTreeMap, BTreeSet};

use smq_protocol::nameserver_api::{
    ConsumerGroupList, ConsumerGroupSummary, ConsumerGroupTopic, ConsumerOffset, MemberView,
    QueueView,
};

use crate::consumer_groups::{ConsumerGroups, QueueId};
use crate::registry::Registry;

/// Every (consumer group, topic) with live members or offsets on a live broker, sorted.
/// `now_ms` is the registry's monotonic time, `wall_ms` the Unix time in ms (for the age of
/// messages, which brokers stamp with theirs).
pub fn all_topics(
    registry: &Registry,
    groups: &ConsumerGroups,
    now_ms: u64,
    wall_ms: u64,
) -> Vec<(String, ConsumerGroupTopic)> {
    let mut offsets: BTreeMap<(String, String), BTreeMap<QueueId, ConsumerOffset>> =
        BTreeMap::new();
    for (broker_group, offset) in registry.consumer_offsets(now_ms) {
        offsets
            .entry((offset.consumer_group.clone(), offset.topic.clone()))
            .or_default()
            .insert((broker_group, offset.queue_id), offset);
    }
    let keys: BTreeSet<(String, String)> = groups
        .keys()
        .into_iter()
        .chain(offsets.keys().cloned())
        .collect();
    let mut topics = Vec::new();
    for (consumer_group, topic) in keys {
        let members = groups.members(&consumer_group, &topic, now_ms);
        let reported = offsets
            .remove(&(consumer_group.clone(), topic.clone()))
            .unwrap_or_default();
        if members.is_empty() && reported.is_empty() {
            continue;
        }
        let mut owners: BTreeMap<QueueId, (String, u64)> = BTreeMap::new();
        for member in &members {
            for queue in &member.held {
                let id = (queue.broker_group.clone(), queue.queue_id);
                owners.insert(id, (member.member_id.clone(), queue.owner_epoch));
            }
        }
        let given = groups.epochs(&consumer_group, &topic);
        let queue_ids: BTreeSet<QueueId> = topic_queues(registry, &topic, now_ms)
            .into_iter()
            .chain(owners.keys().cloned())
            .chain(reported.keys().cloned())
            .collect();
        let queues = queue_ids
            .into_iter()
            .map(|id| {
                let offset = reported.get(&id);
                let owner = owners.get(&id);
                let owner_epoch = [
                    owner.map(|(_, epoch)| *epoch),
                    given.get(&id).copied(),
                    offset.map(|o| o.owner_epoch),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
                QueueView {
                    broker_group: id.0.clone(),
                    queue_id: id.1,
                    owner: owner.map(|(member, _)| member.clone()),
                    owner_epoch,
                    committed_offset: offset.map(|o| o.offset),
                    end_offset: offset.map(|o| o.end_offset),
                    lag_messages: offset.map(|o| o.end_offset.saturating_sub(o.offset)),
                    lag_seconds: offset.map(|o| lag_seconds(o, wall_ms)),
                }
            })
            .collect();
        let members = members
            .into_iter()
            .map(|member| MemberView {
                member_id: member.member_id,
                session_timeout_ms: member.session_timeout_ms,
                expires_in_ms: member.expires_in_ms,
                queues: member.held,
            })
            .collect();
        topics.push((
            consumer_group,
            ConsumerGroupTopic {
                topic,
                members,
                queues,
            },
        ));
    }
    topics
}

/// The age of the oldest message the group has not consumed, in seconds; 0 when none waits.
fn lag_seconds(offset: &ConsumerOffset, wall_ms: u64) -> f64 {
    offset.oldest_unconsumed_ms.map_or(0.0, |stored_ms| {
        wall_ms.saturating_sub(stored_ms) as f64 / 1000.0
    })
}

/// The queues of `topic` in every broker group that serves reads of it.
pub fn topic_queues(registry: &Registry, topic: &str, now_ms: u64) -> BTreeSet<QueueId> {
    registry
        .route(topic, now_ms)
        .map(|route| {
            route
                .groups
                .into_iter()
                .filter(|group| group.readable)
                .flat_map(|group| (0..group.queues).map(move |q| (group.group.clone(), q)))
                .collect()
        })
        .unwrap_or_default()
}

/// The owner epochs the brokers store for `consumer_group` reading `topic`.
pub fn stored_epochs(
    registry: &Registry,
    consumer_group: &str,
    topic: &str,
    now_ms: u64,
) -> BTreeMap<QueueId, u64> {
    registry
        .consumer_offsets(now_ms)
        .into_iter()
        .filter(|(_, o)| o.consumer_group == consumer_group && o.topic == topic)
        .map(|(broker_group, o)| ((broker_group, o.queue_id), o.owner_epoch))
        .collect()
}

/// `GET /v1/groups`: one summary per (consumer group, topic).
pub fn list(topics: &[(String, ConsumerGroupTopic)]) -> ConsumerGroupList {
    let groups = topics
        .iter()
        .map(|(consumer_group, topic)| ConsumerGroupSummary {
            consumer_group: consumer_group.clone(),
            topic: topic.topic.clone(),
            members: topic.members.len() as u32,
            queues: topic.queues.len() as u32,
            lag_messages: topic.queues.iter().filter_map(|q| q.lag_messages).sum(),
            lag_seconds: topic
                .queues
                .iter()
                .filter_map(|q| q.lag_seconds)
                .fold(0.0, f64::max),
        })
        .collect();
    ConsumerGroupList { groups }
}
