//! Issue 13 point 9: deleting a topic deletes it. A request that found the topic before it was
//! deleted (and created again under its name) neither writes into nor reads from the new topic,
//! and a deletion that failed half way leaves nothing for a topic created again.

use std::sync::Arc;
use std::time::Duration;

use smq_protocol::record_batch::{encode, Message};
use smq_protocol::request::{Acks, FetchRequest, ProduceRequest};
use smq_protocol::{ErrorCode, Request, Response};

use super::{dispatch, produce, Answer, Outcome, Reply};
use crate::auth::Access;
use crate::config::BrokerConfig;
use crate::state::Broker;
use crate::visibility::Wakes;

async fn answer(reply: Reply) -> Outcome {
    match reply {
        Reply::Now(outcome) => outcome,
        Reply::Later(future) => future.await,
    }
}

fn produce_request(body: &str) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        queue_id: 0,
        acks: Acks::Written,
        timeout_ms: 0,
        batch: encode("t", 0, &[Message::from_body(body.to_owned())]).into(),
    }
}

/// Produces `body` to `t`/0 as a request arriving now would; returns its offset.
async fn produce_now(broker: &Arc<Broker>, body: &str) -> u64 {
    match answer(dispatch(
        broker,
        &Access::Open,
        Request::Produce(produce_request(body)),
        &mut Wakes::default(),
    ))
    .await
    {
        Ok(Answer::Response(Response::Produce(produced))) => produced.base_queue_offset,
        Ok(_) => panic!("not a Produce response"),
        Err(error) => panic!("producing {body:?}: {error}"),
    }
}

/// Runs metadata work that blocks on the disk, as the handlers do off the async threads.
fn on_disk<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// A broker in a temporary directory, with topic `t` of one queue.
struct WithTopic {
    dir: tempfile::TempDir,
    running: crate::RunningBroker,
    broker: Arc<Broker>,
}

impl WithTopic {
    async fn start() -> WithTopic {
        let dir = tempfile::tempdir().unwrap();
        let running = crate::start(BrokerConfig::for_tests(dir.path()))
            .await
            .unwrap();
        let broker = running.broker.clone();
        on_disk(|| broker.create_topic("t", 1)).unwrap();
        WithTopic {
            dir,
            running,
            broker,
        }
    }

    /// Deletes `t` and creates it again, as an admin would.
    fn delete_and_create_again(&self) {
        on_disk(|| self.broker.delete_topic("t")).unwrap();
        on_disk(|| self.broker.create_topic("t", 1)).unwrap();
    }

    /// The new `t` is empty, and its first message gets offset 0.
    async fn assert_new_topic_starts_empty(self) {
        assert_eq!(
            self.broker.store.queue_offsets("t", 0),
            (0, 0),
            "the new topic is empty"
        );
        assert_eq!(produce_now(&self.broker, "new").await, 0);
        drop(self.broker);
        let _ = self.running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_that_found_the_topic_before_it_was_deleted_and_created_again_is_refused() {
    let setup = WithTopic::start().await;
    produce_now(&setup.broker, "old").await;
    // The request has found the topic; then it is deleted and created again before the append.
    let found = setup.broker.topic("t").unwrap();
    setup.delete_and_create_again();
    let error = match produce::append_to_topic(
        &setup.broker,
        found,
        produce_request("stale"),
        &mut Wakes::default(),
    ) {
        Ok(reply) => answer(reply).await.err(),
        Err(error) => Some(error),
    }
    .expect("an append to a deleted topic is refused");
    assert_eq!(error.code(), ErrorCode::UnknownTopic, "{error}");
    setup.assert_new_topic_starts_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_a_topic_deleted_meanwhile_answers_unknown_topic_at_once() {
    let setup = WithTopic::start().await;
    let poll = tokio::spawn(answer(dispatch(
        &setup.broker,
        &Access::Open,
        Request::Fetch(FetchRequest {
            topic: "t".into(),
            queue_id: 0,
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 20_000,
            topic_id: 0,
        }),
        &mut Wakes::default(),
    )));
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.delete_and_create_again();
    let outcome = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("the long poll is answered when its topic is deleted, not at its deadline")
        .unwrap();
    match outcome {
        Err(error) => assert_eq!(error.code(), ErrorCode::UnknownTopic, "{error}"),
        Ok(_) => panic!("a fetch of the deleted topic was answered"),
    }
    setup.assert_new_topic_starts_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_deletion_failed_half_way_is_created_again_empty() {
    let setup = WithTopic::start().await;
    for body in ["a", "b", "c"] {
        produce_now(&setup.broker, body).await;
    }
    // The checkpoint cannot be written (its temporary file's name is taken): topics.json no
    // longer has the topic, but the store's part of the deletion fails.
    let blocker = setup.dir.path().join("checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let error = on_disk(|| setup.broker.delete_topic("t")).unwrap_err();
    assert!(error.to_string().contains("checkpoint.tmp"), "{error}");
    assert!(setup.broker.topic("t").is_none());
    std::fs::remove_dir(&blocker).unwrap();
    on_disk(|| setup.broker.create_topic("t", 1)).unwrap();
    setup.assert_new_topic_starts_empty().await;
}
