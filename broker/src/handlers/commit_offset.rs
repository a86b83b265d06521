//! CommitOffset: remember the next offset a consumer group reads from a topic-queue, unless a
//! newer owner of the queue (a higher owner epoch) committed already, or a new group or queue
//! would go beyond the broker's offset limits. A slave takes commits while it has no connection
//! to its master (its consumers read from it then) and gives them to the master when it is back.

use smq_protocol::request::CommitOffsetRequest;
use smq_protocol::Response;

use super::{
    check_group_name, check_master, check_topic_id, topic_queue, Answer, HandlerError, Outcome,
};
use crate::metadata::offsets::CommitRefused;
use crate::state::Broker;
use smq_protocol::Role;

pub fn handle(broker: &Broker, request: CommitOffsetRequest) -> Outcome {
    let for_absent_master = slave_without_master(broker);
    if !for_absent_master {
        check_master(broker)?;
    }
    check_group_name(&request.consumer_group)?;
    let topic = topic_queue(broker, &request.topic, request.queue_id)?;
    // An offset of a topic deleted since never counts in one created again under its name.
    check_topic_id(&topic, request.topic_id)?;
    // Never past what consumers can have read: a committed offset above the queue's end would
    // skip messages appended later. Not once the topic is deleted: the offset would count in a
    // topic created again under the name.
    topic
        .while_live(|| {
            let (_, end) = broker.store.queue_offsets(&request.topic, request.queue_id);
            let (offsets, group, topic_name) =
                (&broker.offsets, &request.consumer_group, &request.topic);
            let (queue, offset) = (request.queue_id, request.offset.min(end));
            let committed = offsets.commit(
                group,
                topic_name,
                topic.id,
                queue,
                offset,
                request.owner_epoch,
            );
            if committed.is_ok() && for_absent_master {
                offsets.keep_unconfirmed(group, topic_name, queue);
            }
            committed
        })?
        .map_err(|refused| match refused {
            CommitRefused::StaleEpoch { stored_epoch } => HandlerError::StaleOwnerEpoch {
                consumer_group: request.consumer_group.clone(),
                topic: request.topic.clone(),
                queue: request.queue_id,
                owner_epoch: request.owner_epoch,
                stored_epoch,
            },
            CommitRefused::TooManyGroups {
                max_consumer_groups,
            } => HandlerError::TooManyConsumerGroups {
                consumer_group: request.consumer_group.clone(),
                limit: max_consumer_groups,
            },
            CommitRefused::TooManyOffsets {
                max_committed_offsets,
            } => HandlerError::TooManyCommittedOffsets {
                consumer_group: request.consumer_group.clone(),
                topic: request.topic.clone(),
                queue: request.queue_id,
                limit: max_committed_offsets,
            },
        })?;
    Ok(Answer::Response(Response::CommitOffset))
}

/// Whether this broker is a slave with no connection to its master: consumers read the group's
/// queues from it then, and commit here.
fn slave_without_master(broker: &Broker) -> bool {
    broker.role.borrow().role == Role::Slave && !broker.slave_status.lag().connected
}
