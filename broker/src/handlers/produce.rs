//! Produce: append one batch to a topic-queue (version 1), or one to each of many (version 2),
//! and answer once they are as durable as asked.
//!
//! `acks` written answers after the append (in the page cache), except under `--flush sync`,
//! where every append is fsynced before its answer. `acks` flushed always means fsynced: under
//! `--flush async` this produce asks the flusher for an fsync covering its batches and waits for
//! it. Under `--replication sync` (or `acks` replicated) it answers only once a slave
//! acknowledged a position past the batches (fsynced there too under `--flush sync`), within
//! `replication_timeout_ms` (or the request's `timeout_ms`, if shorter); with no slave in sync it
//! refuses at once with `NO_SLAVE`, before writing anything.
//!
//! A version 2 request's entries are appended one after the other, each checked and answered
//! apart (a refused entry writes nothing and does not hold up the others), and the request waits
//! once, for one fsync or slave acknowledgement past its last batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smq_protocol::request::{Acks, ProduceManyRequest, ProduceRequest};
use smq_protocol::response::{ProduceManyResponse, ProduceResponse};
use smq_protocol::{ErrorResponse, Response};

use super::{check_master, topic_queue, Answer, HandlerError, Outcome, Reply};
use crate::auth::{Access, Action};
use crate::config::Replication;
use crate::state::{Broker, TopicState};
use crate::storage::{Appended, FlushMode, FlushWait};
use crate::visibility::Wakes;

/// Appends and answers; the long polls the batch makes ready go into `wakes`, for the caller to
/// wake once the answer is handed on.
pub fn handle(broker: &Arc<Broker>, request: ProduceRequest, wakes: &mut Wakes) -> Reply {
    let appended = check_master(broker)
        .and_then(|()| topic_queue(broker, &request.topic, request.queue_id))
        .and_then(|topic| append_to_topic(broker, topic, request, wakes));
    match appended {
        Ok(reply) => reply,
        Err(error) => Reply::Now(Err(error)),
    }
}

/// Appends to `topic` as found when the request arrived: refused with `UNKNOWN_TOPIC` if it was
/// deleted since, even if a topic of the same name was created again.
pub(crate) fn append_to_topic(
    broker: &Arc<Broker>,
    topic: Arc<TopicState>,
    request: ProduceRequest,
    wakes: &mut Wakes,
) -> Result<Reply, HandlerError> {
    let replicate = check_replicable(broker, request.acks)?;
    let stored = vec![Ok(append_entry(
        broker,
        &topic,
        request.queue_id,
        &request.batch,
        wakes,
    )?)];
    let wait = Wait {
        fsync: request.acks == Acks::Flushed,
        replicate,
        timeout_ms: request.timeout_ms,
    };
    Ok(reply_when_durable(
        broker,
        stored,
        wait,
        |mut results| match results.pop().expect("one entry") {
            Ok(stored) => Ok(Answer::Response(Response::Produce(stored))),
            Err(error) => Err(error.into_handler_error()),
        },
    ))
}

/// Produce version 2: every entry appended and answered apart, one wait for all of them; the
/// long polls made ready go into `wakes`, as for [`handle`].
pub fn handle_many(
    broker: &Arc<Broker>,
    access: &Access,
    request: ProduceManyRequest,
    wakes: &mut Wakes,
) -> Reply {
    let replicate = match check_master(broker).and_then(|()| check_replicable(broker, request.acks))
    {
        Ok(replicate) => replicate,
        Err(error) => return Reply::Now(Err(error)),
    };
    let stored: Vec<_> = request
        .entries
        .iter()
        .map(|entry| {
            access.check_topic(Action::Produce, &entry.topic)?;
            let topic = topic_queue(broker, &entry.topic, entry.queue_id)?;
            append_entry(broker, &topic, entry.queue_id, &entry.batch, wakes)
        })
        .collect();
    let wait = Wait {
        fsync: request.acks == Acks::Flushed,
        replicate,
        timeout_ms: request.timeout_ms,
    };
    reply_when_durable(broker, stored, wait, |results| {
        let results = results
            .into_iter()
            .map(|result| result.map_err(EntryError::into_response))
            .collect();
        Ok(Answer::Response(Response::ProduceMany(
            ProduceManyResponse { results },
        )))
    })
}

/// Whether the request waits for a slave; refused at once, before anything is written, when it
/// must and cannot (the write lease, no slave in sync).
fn check_replicable(broker: &Broker, acks: Acks) -> Result<bool, HandlerError> {
    let replicate = broker.config.replication == Replication::Sync || acks == Acks::Replicated;
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
    Ok(replicate)
}

/// Appends one batch (no waiting: the request waits once for all of its batches) and counts it;
/// a batch visible at once has its queue's long polls added to `wakes`.
fn append_entry(
    broker: &Broker,
    topic: &Arc<TopicState>,
    queue_id: u32,
    batch: &Bytes,
    wakes: &mut Wakes,
) -> Result<Appended, HandlerError> {
    if batch.len() > broker.config.store.max_batch_bytes {
        return Err(HandlerError::BatchTooLarge {
            batch_bytes: batch.len(),
            max_batch_bytes: broker.config.store.max_batch_bytes as u64,
        });
    }
    let started = Instant::now();
    let appended = topic.while_live(|| {
        broker
            .store
            .append_to_unflushed(&topic.name, queue_id, batch)
    })??;
    broker.metrics.append_latency.observe(started.elapsed());
    broker.log_appended.notify_waiters();
    if visible_later(broker) {
        // The batch's fsync or a slave's acknowledgement wakes its consumers
        // (`PendingVisibility`); this wakes them if it is visible already.
        let end = appended.position + u64::from(appended.size);
        let pending = &broker.pending_visibility;
        pending.add(end, topic.clone(), queue_id);
        pending.wake_visible(broker.store.visible_position());
    } else {
        wakes.add(topic, queue_id);
    }
    topic
        .counters
        .add_in(appended.message_count, appended.size as usize);
    Ok(appended)
}

/// Consumers see a batch once it is visible (`Store::visible_position`): at once under async
/// flush, after its fsync under sync flush, and after a slave has it under sync replication.
fn visible_later(broker: &Broker) -> bool {
    broker.store.config().flush == FlushMode::Sync || broker.config.replication == Replication::Sync
}

/// What the request's batches wait for once appended.
struct Wait {
    /// `acks` flushed: an fsync even under async flush.
    fsync: bool,
    replicate: bool,
    timeout_ms: u32,
}

/// Why an entry was not stored, or not as durably as asked.
enum EntryError {
    Refused(HandlerError),
    /// The wait failed after the batch was appended (each entry's error names its offset).
    NotDurable(Arc<NotDurable>, u64),
}

impl From<HandlerError> for EntryError {
    fn from(error: HandlerError) -> EntryError {
        EntryError::Refused(error)
    }
}

impl EntryError {
    fn into_handler_error(self) -> HandlerError {
        match self {
            EntryError::Refused(error) => error,
            EntryError::NotDurable(not_durable, base_queue_offset) => {
                let not_durable = match Arc::try_unwrap(not_durable) {
                    // A failed fsync of one entry (version 1): the store's error is its alone.
                    Ok(NotDurable::Flush(error)) => return error,
                    Ok(timeout) => Arc::new(timeout),
                    Err(shared) => shared,
                };
                // A timeout names this entry's offset; a failed fsync shared by several
                // entries is told by its message.
                match not_durable.error_at(base_queue_offset) {
                    Ok(timeout) => timeout,
                    Err(_) => {
                        HandlerError::Internal(not_durable.response_for(base_queue_offset).message)
                    }
                }
            }
        }
    }

    fn into_response(self) -> ErrorResponse {
        match self {
            EntryError::Refused(error) => error.to_response(),
            EntryError::NotDurable(not_durable, base_queue_offset) => {
                not_durable.response_for(base_queue_offset)
            }
        }
    }
}

/// The wait after the appends failed.
enum NotDurable {
    FlushTimeout {
        timeout_ms: u32,
    },
    /// The fsync failed (the store's error).
    Flush(HandlerError),
    ReplicationTimeout {
        group: String,
        timeout_ms: u64,
    },
}

impl NotDurable {
    /// The error of the entry at `base_queue_offset`: a timeout names its offset; a failed
    /// fsync is the store's error, shared by every entry (`Err`).
    fn error_at(&self, base_queue_offset: u64) -> Result<HandlerError, &HandlerError> {
        match self {
            NotDurable::FlushTimeout { timeout_ms } => Ok(HandlerError::FlushTimeout {
                base_queue_offset,
                timeout_ms: *timeout_ms,
            }),
            NotDurable::Flush(error) => Err(error),
            NotDurable::ReplicationTimeout { group, timeout_ms } => {
                Ok(HandlerError::ReplicationTimeout {
                    group: group.clone(),
                    base_queue_offset,
                    timeout_ms: *timeout_ms,
                })
            }
        }
    }

    fn response_for(&self, base_queue_offset: u64) -> ErrorResponse {
        match self.error_at(base_queue_offset) {
            Ok(error) => error.to_response(),
            Err(shared) => shared.to_response(),
        }
    }
}

/// Answers with `respond` once the stored entries are as durable as `wait` asks: at once when
/// nothing is to wait for, else after one fsync and one slave acknowledgement past the last of
/// them.
fn reply_when_durable(
    broker: &Arc<Broker>,
    stored: Vec<Result<Appended, HandlerError>>,
    wait: Wait,
    respond: impl FnOnce(Vec<Result<ProduceResponse, EntryError>>) -> Outcome + Send + 'static,
) -> Reply {
    let end = stored
        .iter()
        .flatten()
        .map(|appended| appended.position + u64::from(appended.size))
        .max();
    let flush = end.map(|end| broker.store.durable_through(end, wait.fsync));
    let waits =
        flush.as_ref().is_some_and(|flush| flush.waits()) || (wait.replicate && end.is_some());
    if !waits {
        return Reply::Now(respond(answers(stored, None)));
    }
    let broker = broker.clone();
    let appended_at = Instant::now();
    Reply::Later(Box::pin(async move {
        let end = end.expect("something was appended");
        let failure = wait_durable(&broker, flush, end, &wait, appended_at)
            .await
            .err()
            .map(Arc::new);
        if failure.is_none()
            && visible_later(&broker)
            && broker
                .pending_visibility
                .wake_visible(broker.store.visible_position())
        {
            // The long polls just woken are the hop on the end-to-end path: the worker writes
            // their answers before this one (as `Wakes` orders it under async flush).
            tokio::task::yield_now().await;
        }
        respond(answers(stored, failure))
    }))
}

/// Each entry's answer: where it landed, or why not.
fn answers(
    stored: Vec<Result<Appended, HandlerError>>,
    failure: Option<Arc<NotDurable>>,
) -> Vec<Result<ProduceResponse, EntryError>> {
    stored
        .into_iter()
        .map(|entry| {
            let appended = entry?;
            if let Some(failure) = &failure {
                return Err(EntryError::NotDurable(
                    failure.clone(),
                    appended.base_queue_offset,
                ));
            }
            Ok(ProduceResponse {
                base_queue_offset: appended.base_queue_offset,
                message_count: appended.message_count,
            })
        })
        .collect()
}

/// Waits for the fsync and the slave acknowledgement past `end` that `wait` asks for.
async fn wait_durable(
    broker: &Broker,
    flush: Option<FlushWait>,
    end: u64,
    wait: &Wait,
    appended_at: Instant,
) -> Result<(), NotDurable> {
    let timeout_ms = wait.timeout_ms;
    if let Some(flush) = flush.filter(|flush| flush.waits()) {
        // timeout_ms 0: the store's own flush_timeout_ms bounds the wait.
        let result = if timeout_ms == 0 {
            flush.done().await
        } else {
            tokio::time::timeout(Duration::from_millis(timeout_ms.into()), flush.done())
                .await
                .map_err(|_| NotDurable::FlushTimeout { timeout_ms })?
        };
        result.map_err(|error| NotDurable::Flush(error.into()))?;
        broker.metrics.flush_latency.observe(appended_at.elapsed());
    }
    if wait.replicate {
        let mut wait_ms = broker.config.replication_timeout_ms;
        if timeout_ms != 0 {
            wait_ms = wait_ms.min(timeout_ms.into());
        }
        if !broker
            .replicas
            .wait_acknowledged(end, Duration::from_millis(wait_ms))
            .await
        {
            return Err(NotDurable::ReplicationTimeout {
                group: broker.config.group.clone(),
                timeout_ms: wait_ms,
            });
        }
        broker
            .metrics
            .replication_latency
            .observe(appended_at.elapsed());
    }
    Ok(())
}
