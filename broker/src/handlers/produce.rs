//! Produce: append one batch to a topic-queue and answer once it is as durable as asked.
//!
//! `acks` written answers after the append (in the page cache), except under `--flush sync`,
//! where every append is fsynced before its answer. `acks` flushed always means fsynced: under
//! `--flush async` this produce asks the flusher for an fsync covering its batch and waits for it.
//! `acks` replicated is refused with `NO_SLAVE` until replication exists.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smq_protocol::request::{Acks, ProduceRequest};
use smq_protocol::response::ProduceResponse;
use smq_protocol::Response;

use super::{topic_queue, Answer, HandlerError, Outcome, Reply};
use crate::state::Broker;
use crate::storage::FlushMode;

pub fn handle(broker: &Arc<Broker>, request: ProduceRequest) -> Reply {
    match append(broker, request) {
        Ok(reply) => reply,
        Err(error) => Reply::Now(Err(error)),
    }
}

fn append(broker: &Arc<Broker>, request: ProduceRequest) -> Result<Reply, HandlerError> {
    let topic = topic_queue(broker, &request.topic, request.queue_id)?;
    if request.acks == Acks::Replicated {
        return Err(HandlerError::NoSlave);
    }
    if request.batch.len() as u64 > broker.config.max_batch_bytes {
        return Err(HandlerError::BatchTooLarge {
            batch_bytes: request.batch.len(),
            max_batch_bytes: broker.config.max_batch_bytes,
        });
    }
    let started = Instant::now();
    let receipt = broker.store.append_to(
        &request.topic,
        request.queue_id,
        &request.batch,
        request.acks == Acks::Flushed,
    )?;
    let appended_at = Instant::now();
    broker.metrics.append_latency.observe(appended_at - started);
    // Consumers see the batch once it is visible (`Store::visible_position`): at once under
    // async flush, after its fsync under sync flush.
    let visible_when_flushed = broker.store.config().flush == FlushMode::Sync;
    let queue_id = request.queue_id;
    if !visible_when_flushed {
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
    if !receipt.waits_for_flush() {
        return Ok(Reply::Now(answer()));
    }
    let broker = broker.clone();
    let timeout_ms = request.timeout_ms;
    Ok(Reply::Later(Box::pin(async move {
        let durable = receipt.durable();
        // timeout_ms 0: the store's own flush_timeout_ms bounds the wait.
        let result = if timeout_ms == 0 {
            durable.await
        } else {
            match tokio::time::timeout(Duration::from_millis(timeout_ms.into()), durable).await {
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
        if visible_when_flushed {
            topic.appended(queue_id).notify_waiters();
        }
        broker.metrics.flush_latency.observe(appended_at.elapsed());
        let outcome: Outcome = answer();
        outcome
    })))
}
