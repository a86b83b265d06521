//! The producer, consumer and admin of the client library against the real broker binary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use smq_client::{
    Admin, ClientConfig, ConsumedMessage, Consumer, Error, Message, Producer, StartFrom,
};
use smq_tests::Broker;

fn keyed(key: &str, body: String) -> Message {
    let mut message = Message::from_body(body);
    message.key = key.as_bytes().to_vec();
    message
}

/// A broker process with `topic` created, and a client configuration for it.
async fn setup(topic: &str, queues: u32) -> (Broker, ClientConfig) {
    let broker = Broker::start(&[]);
    let config = ClientConfig::new(broker.addr.to_string());
    let admin = Admin::connect(config.clone()).await.unwrap();
    admin.create_topic(topic, queues).await.unwrap();
    (broker, config)
}

/// Reads until `count` messages came, committing as it goes.
async fn consume(consumer: &mut Consumer, count: usize) -> Vec<ConsumedMessage> {
    let mut got = Vec::new();
    while got.len() < count {
        got.extend(consumer.poll(count - got.len()).await.unwrap());
        consumer.commit().await.unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_messages_come_back_exactly_and_in_order_per_queue() {
    let (_broker, mut config) = setup("orders", 4).await;
    config.batch_bytes = 4096; // many batches in flight
    let producer = Producer::connect(config.clone()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..10_000 {
        let key = format!("customer-{}", i % 10);
        pending.push((
            key.clone(),
            i,
            producer
                .start_send("orders", keyed(&key, format!("m{i}")))
                .await
                .unwrap(),
        ));
    }
    let mut sent = BTreeMap::new();
    let mut last_by_key: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    for (key, i, delivery) in pending {
        let delivery = delivery.wait().await.unwrap();
        if let Some((queue, offset)) =
            last_by_key.insert(key.clone(), (delivery.queue_id, delivery.offset))
        {
            assert_eq!(queue, delivery.queue_id, "one key, one queue");
            assert!(offset < delivery.offset, "one key keeps its order");
        }
        sent.insert((delivery.queue_id, delivery.offset), format!("m{i}"));
    }
    assert_eq!(sent.len(), 10_000, "every message has its own place");

    let mut consumer = Consumer::connect(config, "orders", Some("g"), StartFrom::Earliest)
        .await
        .unwrap();
    let got = consume(&mut consumer, 10_000).await;
    let mut next_by_queue: BTreeMap<u32, u64> = BTreeMap::new();
    for message in &got {
        let expected_offset = next_by_queue.entry(message.queue_id).or_insert(0);
        assert_eq!(
            message.offset, *expected_offset,
            "offsets of a queue come in order"
        );
        *expected_offset += 1;
        assert_eq!(
            sent[&(message.queue_id, message.offset)].as_bytes(),
            &message.body[..]
        );
    }
}

/// Messages without a key stay on one queue of their topic until `sticky_queue_bytes` (16 KiB by
/// default) went there, then move to the next: a burst of small messages makes one batch in one
/// queue, and a longer run still gives every queue its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_a_key_fill_one_queue_at_a_time_and_reach_every_queue() {
    let (_broker, config) = setup("events", 4).await;
    assert_eq!(config.sticky_queue_bytes, 16 * 1024);
    let producer = Producer::connect(config.clone()).await.unwrap();
    let small: Vec<Message> = (0..20)
        .map(|i| Message::from_body(format!("small-{i}")))
        .collect();
    let deliveries = producer.send_batch("events", small).await.unwrap();
    let first_queue = deliveries[0].queue_id;
    assert!(
        deliveries.iter().all(|d| d.queue_id == first_queue),
        "20 small messages, one queue: {:?}",
        deliveries.iter().map(|d| d.queue_id).collect::<Vec<_>>()
    );

    // 16 KiB a queue: 256 messages of 1 KiB go round every queue four times.
    let body = "x".repeat(1024);
    let long: Vec<Message> = (0..256).map(|_| Message::from_body(body.clone())).collect();
    let mut per_queue = BTreeMap::new();
    for delivery in producer.send_batch("events", long).await.unwrap() {
        *per_queue.entry(delivery.queue_id).or_insert(0) += 1;
    }
    assert_eq!(per_queue.len(), 4, "every queue: {per_queue:?}");
    assert!(
        per_queue.values().all(|count| (48..=80).contains(count)),
        "about a quarter each: {per_queue:?}"
    );

    // 0: one message each to the next queue in turn.
    let mut round_robin = config;
    round_robin.sticky_queue_bytes = 0;
    let producer = Producer::connect(round_robin).await.unwrap();
    let four: Vec<Message> = (0..4).map(|i| Message::from_body(format!("{i}"))).collect();
    let mut queues: Vec<u32> = producer
        .send_batch("events", four)
        .await
        .unwrap()
        .iter()
        .map(|d| d.queue_id)
        .collect();
    queues.sort_unstable();
    assert_eq!(queues, [0, 1, 2, 3], "with 0, round robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_after_its_committed_offset() {
    let (_broker, config) = setup("t", 1).await;
    let producer = Producer::connect(config.clone()).await.unwrap();
    let messages = (0..10)
        .map(|i| Message::from_body(format!("{i}")))
        .collect();
    let deliveries = producer.send_batch("t", messages).await.unwrap();
    assert_eq!(
        deliveries.iter().map(|d| d.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );

    let mut first = Consumer::connect(config.clone(), "t", Some("g"), StartFrom::Earliest)
        .await
        .unwrap();
    let got = consume(&mut first, 4).await;
    assert_eq!(got.last().unwrap().offset, 3);
    drop(first);
    let mut second = Consumer::connect(config.clone(), "t", Some("g"), StartFrom::Latest)
        .await
        .unwrap();
    let got = consume(&mut second, 6).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"4"[..], b"5", b"6", b"7", b"8", b"9"]);
    let other_group = Consumer::connect(config, "t", Some("h"), StartFrom::Latest)
        .await
        .unwrap();
    assert_eq!(
        other_group
            .positions()
            .iter()
            .find(|(queue, _)| queue.queue_id == 0)
            .map(|(_, offset)| *offset),
        Some(10),
        "a new group starts where --from says"
    );
}

/// Issue 13 point 7, past the end: a consumer asked to read a queue from beyond its last offset
/// (as after its master lost an unflushed tail) gets OFFSET_OUT_OF_RANGE, moves to the offset
/// `--from` names (here latest: the queue's end), reports the move, and reads what comes next
/// instead of asking for the same offset forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_past_the_end_of_a_queue_moves_to_its_end_says_so_and_goes_on() {
    let (_broker, config) = setup("t", 1).await;
    let producer = Producer::connect(config.clone()).await.unwrap();
    for i in 0..10 {
        producer
            .send("t", Message::from_body(format!("before-{i}")))
            .await
            .unwrap();
    }
    let mut consumer = Consumer::connect(config.clone(), "t", None, StartFrom::Latest)
        .await
        .unwrap();
    let queue = consumer.positions().keys().next().unwrap().clone();
    consumer.seek(&queue, 1_000);
    // Once the consumer has moved, the next message is the first it reads.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut resets = Vec::new();
    let mut bodies = Vec::new();
    while bodies.is_empty() {
        assert!(Instant::now() < deadline, "resets {resets:?}, nothing read");
        let messages = consumer.poll(10).await.unwrap();
        bodies.extend(
            messages
                .iter()
                .map(|message| String::from_utf8(message.body.to_vec()).unwrap()),
        );
        let moved = consumer.take_offset_resets();
        if !moved.is_empty() {
            producer
                .send("t", Message::from_body("after"))
                .await
                .unwrap();
        }
        resets.extend(moved);
    }
    assert_eq!(
        bodies,
        ["after"],
        "nothing before the end, the next message after it"
    );
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0].reason, smq_client::ResetReason::OutOfRange);
    assert_eq!((resets[0].old_offset, resets[0].new_offset), (1_000, 10));
    assert_eq!(resets[0].next_offset, 10);
}

/// Issue 13 point 9, a consumer holding an offset across a delete and create of its topic: its
/// old position (10) lies below the new topic's end (20), so reading on from it would skip the
/// new topic's first ten messages. The topic id in Metadata, Fetch and CommitOffset (protocol
/// version 2) makes the consumer notice: its commit of the old offset is refused (nothing is
/// stored for the new topic), and it reads the new topic from its earliest offset, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_across_a_topic_deleted_and_created_again_reads_the_new_topic_from_its_start() {
    let (_broker, config) = setup("t", 1).await;
    let send = |tag: &'static str, count: usize| {
        let config = config.clone();
        async move {
            let producer = Producer::connect(config).await.unwrap();
            for i in 0..count {
                let message = Message::from_body(format!("{tag}-{i}"));
                producer.send("t", message).await.unwrap();
            }
        }
    };
    send("old", 10).await;
    let mut consumer = Consumer::connect(config.clone(), "t", Some("g"), StartFrom::Earliest)
        .await
        .unwrap();
    let mut old = Vec::new();
    while old.len() < 10 {
        old.extend(consumer.poll(10 - old.len()).await.unwrap());
    }
    let admin = Admin::connect(config.clone()).await.unwrap();
    admin.delete_topic("t").await.unwrap();
    admin.create_topic("t", 1).await.unwrap();
    send("new", 20).await;

    // The old topic's position is not stored for the new topic.
    consumer.commit().await.unwrap();
    let probe = Consumer::connect(config.clone(), "t", Some("g"), StartFrom::Earliest)
        .await
        .unwrap();
    assert_eq!(
        probe.positions().values().copied().collect::<Vec<_>>(),
        vec![0],
        "no offset of the deleted topic counts in the new one"
    );
    drop(probe);

    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < 20 {
        assert!(Instant::now() < deadline, "read {bodies:?}");
        match consumer.poll(20).await {
            Ok(messages) => bodies.extend(
                messages
                    .iter()
                    .map(|message| String::from_utf8(message.body.to_vec()).unwrap()),
            ),
            // The deletion ends the fetch waiting on the old topic (UNKNOWN_TOPIC).
            Err(error) if error.is_retryable() => {}
            Err(error) => panic!("{error}"),
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("new-{i}")).collect();
    assert_eq!(bodies, expected, "the new topic from its first message");
    let resets = consumer.take_offset_resets();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert!(
        matches!(
            resets[0].reason,
            smq_client::ResetReason::TopicCreatedAgain { .. }
        ),
        "{resets:?}"
    );
    assert_eq!((resets[0].old_offset, resets[0].new_offset), (10, 0));
    consumer.commit().await.unwrap();
    let probe = Consumer::connect(config, "t", Some("g"), StartFrom::Earliest)
        .await
        .unwrap();
    assert_eq!(
        probe.positions().values().copied().collect::<Vec<_>>(),
        vec![20]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_consumer_gets_a_new_message_at_once() {
    let (broker, mut config) = setup("t", 2).await;
    config.linger_ms = 0;
    config.fetch_max_wait_ms = 5_000;
    let mut consumer = Consumer::connect(config.clone(), "t", None, StartFrom::Latest)
        .await
        .unwrap();
    let producer = Producer::connect(config).await.unwrap();
    let waiting = tokio::spawn(async move {
        let got = consumer.poll(1).await.unwrap();
        (got, Instant::now())
    });
    let parked = || {
        broker
            .metric("smq_fetches_waiting")
            .is_some_and(|waiting| waiting >= 1.0)
    };
    while !tokio::task::block_in_place(parked) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent_at = Instant::now();
    producer.send("t", Message::from_body("now")).await.unwrap();
    let (got, received_at) = waiting.await.unwrap();
    assert_eq!(&got[0].body[..], b"now");
    // Without the wake-up on append it would come when the 5 s wait ends.
    let latency = received_at - sent_at;
    assert!(latency < Duration::from_millis(1_000), "{latency:?}");
}

#[tokio::test]
async fn producing_to_a_missing_topic_or_an_oversized_message_is_refused_clearly() {
    let (_broker, config) = setup("t", 1).await;
    let producer = Producer::connect(config).await.unwrap();
    let error = producer
        .send("nope", Message::from_body("x"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnknownTopic { .. }), "{error}");
    assert!(
        error.to_string().contains("smq topic create nope"),
        "{error}"
    );
    let error = producer
        .send("t", Message::from_body(vec![0; 4 << 20]))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::MessageTooLarge { .. }), "{error}");
    assert!(!error.is_retryable());
    producer
        .send("t", Message::from_body(vec![0; 4 << 19]))
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_creates_lists_describes_and_deletes_topics() {
    let (_broker, config) = setup("a", 3).await;
    let admin = Admin::connect(config).await.unwrap();
    admin.create_topic("b", 1).await.unwrap();
    let error = admin.create_topic("b", 1).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(smq_client::protocol::ErrorCode::TopicAlreadyExists)
    );
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(admin.describe_topic("a").await.unwrap().queues.len(), 3);
    assert_eq!(admin.list_offsets("a", 2).await.unwrap().high_watermark, 0);
    admin.delete_topic("b").await.unwrap();
    assert!(matches!(
        admin.describe_topic("b").await,
        Err(Error::UnknownTopic { .. })
    ));
}
