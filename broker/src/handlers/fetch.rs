//! Fetch: read whole stored batches from a queue offset; at the end of the queue, wait up to
//! `max_wait_ms` for an append to that queue (a [`tokio::sync::Notify`] per queue, no polling)
//! and answer as soon as one lands.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smq_protocol::limits::MAX_FETCH_BYTES_DEFAULT;
use smq_protocol::record_batch::layout;
use smq_protocol::request::FetchRequest;
use tokio::time::Instant;

use super::{check_topic_id, topic_queue, Answer, HandlerError, Outcome, Reply};
use crate::state::{Broker, TopicState};

pub fn handle(broker: &Arc<Broker>, request: FetchRequest) -> Reply {
    let topic = match topic_queue(broker, &request.topic, request.queue_id)
        .and_then(|topic| check_topic_id(&topic, request.topic_id).map(|()| topic))
    {
        Ok(topic) => topic,
        Err(error) => return Reply::Now(Err(error)),
    };
    if request.max_bytes == 0 {
        return Reply::Now(Err(HandlerError::InvalidRequest(
            "fetch max_bytes is 0: ask for at least one byte (one whole batch is always sent)"
                .into(),
        )));
    }
    let first = read(broker, &topic, &request);
    let wait_ms = u64::from(request.max_wait_ms).min(broker.config.max_fetch_wait_ms);
    match first {
        Ok(Some(answer)) => Reply::Now(Ok(answer)),
        Ok(None) if wait_ms == 0 || broker.is_shutting_down() => {
            Reply::Now(empty(broker, &request))
        }
        Ok(None) => {
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            Reply::Later(Box::pin(long_poll(
                broker.clone(),
                topic,
                request,
                deadline,
            )))
        }
        Err(error) => Reply::Now(Err(error)),
    }
}

/// Waits for an append to the queue until `deadline` or shutdown, then answers with what is there.
async fn long_poll(
    broker: Arc<Broker>,
    topic: Arc<TopicState>,
    request: FetchRequest,
    deadline: Instant,
) -> Outcome {
    let mut shutdown = broker.shutdown.clone();
    let _counted = WaitingFetch::count(&broker);
    loop {
        let appended = topic.appended(request.queue_id).notified();
        tokio::pin!(appended);
        // Registered before reading, so an append between the read and the wait still wakes us.
        appended.as_mut().enable();
        if let Some(answer) = read(&broker, &topic, &request)? {
            return Ok(answer);
        }
        if Instant::now() >= deadline || *shutdown.borrow() {
            return empty(&broker, &request);
        }
        tokio::select! {
            _ = &mut appended => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = crate::state::shutting_down(&mut shutdown) => {}
        }
    }
}

/// Counts a long poll in `smq_fetches_waiting` for as long as it lives.
struct WaitingFetch<'a>(&'a Broker);

impl WaitingFetch<'_> {
    fn count(broker: &Broker) -> WaitingFetch<'_> {
        broker
            .metrics
            .fetches_waiting
            .fetch_add(1, Ordering::Relaxed);
        WaitingFetch(broker)
    }
}

impl Drop for WaitingFetch<'_> {
    fn drop(&mut self) {
        self.0
            .metrics
            .fetches_waiting
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The batches at the request's offset, or `None` when there are none yet.
fn read(
    broker: &Broker,
    topic: &TopicState,
    request: &FetchRequest,
) -> Result<Option<Answer>, HandlerError> {
    let max_bytes = (request.max_bytes as usize).min(MAX_FETCH_BYTES_DEFAULT);
    // A topic deleted since the request found it answers UNKNOWN_TOPIC: its long polls wake
    // for that, and none reads a topic created again under the name.
    let result = topic.while_live(|| {
        broker
            .store
            .read(&request.topic, request.queue_id, request.offset, max_bytes)
    })??;
    if result.batches.is_empty() {
        return Ok(None);
    }
    let bytes = result.batches.iter().map(Bytes::len).sum();
    let messages = result.batches.iter().map(message_count).sum();
    topic.counters.add_out(messages, bytes);
    Ok(Some(Answer::Fetch {
        high_watermark: result.next_offset,
        log_start_offset: result.earliest_offset,
        batches: result.batches,
    }))
}

fn empty(broker: &Broker, request: &FetchRequest) -> Outcome {
    let (log_start_offset, high_watermark) =
        broker.store.queue_offsets(&request.topic, request.queue_id);
    Ok(Answer::Fetch {
        high_watermark,
        log_start_offset,
        batches: Vec::new(),
    })
}

/// Messages in a stored batch, from its header (stored batches were validated on append).
fn message_count(batch: &Bytes) -> u64 {
    batch
        .get(layout::MESSAGE_COUNT..layout::MESSAGE_COUNT + 4)
        .map_or(0, |field| {
            u64::from(u32::from_be_bytes(field.try_into().expect("4 bytes")))
        })
}
