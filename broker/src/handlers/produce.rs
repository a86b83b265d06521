//! Produce: append one batch to a topic-queue and answer once it is as durable as asked.
//!
//! `acks` written answers after the append (in the page cache), except under `--flush sync`,
//! where every append is fsynced before its answer. `acks` flushed always means fsynced: under
//! `--flush async` this produce asks the flusher for an fsync covering its batch and waits for it.
//! Under `--replication sync` (or `acks` replicated) it answers only once a slave acknowledged
//! a position past the batch (fsynced there too under `--flush sync`), within
//! `replication_timeout_ms` (or the request's `timeout_ms`, if shorter); with no slave in sync it
//! refuses at once with `NO_SLAVE`, before writing anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smq_protocol::request::{Acks, ProduceRequest};
use smq_protocol::response::ProduceResponse;
use smq_protocol::Response;

use super::{check_master, topic_queue, Answer, HandlerError, Outcome, Reply};
use crate::config::Replication;
use crate::state::{Broker, TopicState};
use crate::storage::FlushMode;

pub fn handle(broker: &Arc<Broker>, request: ProduceRequest) -> Reply {
    match append(broker, request) {
        Ok(reply) => reply,
        Err(error) => Reply::Now(Err(error)),
    }
}

fn append(broker: &Arc<Broker>, request: ProduceRequest) -> Result<Reply, HandlerError> {
    check_master(broker)?;
    let topic = topic_queue(broker, &request.topic, request.queue_id)?;
    append_to_topic(broker, topic, request)
}

/// Appends to `topic` as found when the request arrived: refused with `UNKNOWN_TOPIC` if it was
/// deleted since, even if a topic of the same name was created again.
pub(crate) fn append_to_topic(
    broker: &Arc<Broker>,
    topic: Arc<TopicState>,
    request: ProduceRequest,
) -> Result<Reply, HandlerError> {
    let replicate =
        broker.config.replication == Replication::Sync || request.acks == Acks::Replicated;
    if let Some(reason) = replicate.then(|| broker.lease.refusal()).flatten() {
        return Err(HandlerError::WritesRefused {
            group: broker.config.group.clone(),
            reason,
        });
    }
    if replicate && !broker.replicas.any_in_sync() {
        return Err(HandlerError::NoSlave {
            group: broker.config.group.clone(),
        });
    }
    if request.batch.len() > broker.config.store.max_batch_bytes {
        return Err(HandlerError::BatchTooLarge {
            batch_bytes: request.batch.len(),
            max_batch_bytes: broker.config.store.max_batch_bytes as u64,
        });
    }
    let started = Instant::now();
    let receipt = topic.while_live(|| {
        broker.store.append_to(
            &request.topic,
            request.queue_id,
            &request.batch,
            request.acks == Acks::Flushed,
        )
    })??;
    let appended_at = Instant::now();
    broker.metrics.append_latency.observe(appended_at - started);
    broker.log_appended.notify_waiters();
    // Consumers see the batch once it is visible (`Store::visible_position`): at once under
    // async flush, after its fsync under sync flush, and after a slave has it under sync
    // replication.
    let visible_later = broker.store.config().flush == FlushMode::Sync
        || broker.config.replication == Replication::Sync;
    let queue_id = request.queue_id;
    if !visible_later {
        topic.appended(queue_id).notify_waiters();
    }
    let appended = receipt.appended;
    topic
        .counters
        .add_in(appended.message_count, appended.size as usize);
    let answer = move || {
        Ok(Answer::Response(Response::Produce(ProduceResponse {
            base_queue_offset: appended.base_queue_offset,
            message_count: appended.message_count,
        })))
    };
    if !receipt.waits_for_flush() && !replicate {
        return Ok(Reply::Now(answer()));
    }
    let broker = broker.clone();
    let timeout_ms = request.timeout_ms;
    Ok(Reply::Later(Box::pin(async move {
        if receipt.waits_for_flush() {
            let durable = receipt.durable();
            // timeout_ms 0: the store's own flush_timeout_ms bounds the wait.
            let result = if timeout_ms == 0 {
                durable.await
            } else {
                match tokio::time::timeout(Duration::from_millis(timeout_ms.into()), durable).await
                {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(HandlerError::FlushTimeout {
                            base_queue_offset: appended.base_queue_offset,
                            timeout_ms,
                        })
                    }
                }
            };
            result?;
            broker.metrics.flush_latency.observe(appended_at.elapsed());
        }
        if replicate {
            let mut wait_ms = broker.config.replication_timeout_ms;
            if timeout_ms != 0 {
                wait_ms = wait_ms.min(timeout_ms.into());
            }
            let end = appended.position + u64::from(appended.size);
            if !broker
                .replicas
                .wait_acknowledged(end, Duration::from_millis(wait_ms))
                .await
            {
                return Err(HandlerError::ReplicationTimeout {
                    group: broker.config.group.clone(),
                    base_queue_offset: appended.base_queue_offset,
                    timeout_ms: wait_ms,
                });
            }
            broker
                .metrics
                .replication_latency
                .observe(appended_at.elapsed());
        }
        if visible_later {
            topic.appended(queue_id).notify_waiters();
        }
        let outcome: Outcome = answer();
        outcome
    })))
}
