//! The client library against a real broker process: 100,000 messages come back exactly, in
//! order within each queue, a long poll delivers a new message within 50 ms, and the broker
//! answers the long poll a produce makes ready before the producer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use smq_client::{Admin, ClientConfig, Consumer, Message, Producer, StartFrom};
use smq_tests::{keyed, runtime, wait_for, Broker};

#[test]
fn library_round_trips_100000_messages_in_order_per_key() {
    let broker = Broker::start(&[]);
    let config = ClientConfig::new(broker.addr.to_string());
    let keys = 16;
    let total = 100_000;
    runtime().block_on(async {
        let producer = smq_tests::topic_and_producer(&config, "orders", 4).await;
        let pending = keyed::send(&producer, "orders", keys, total).await;
        // Every send is acknowledged with its queue and offset; one key stays on one queue.
        let mut queue_of_key: HashMap<usize, u32> = HashMap::new();
        for (key, delivery) in pending {
            let delivery = delivery.wait().await.unwrap();
            assert_eq!(
                *queue_of_key.entry(key).or_insert(delivery.queue_id),
                delivery.queue_id
            );
        }

        let mut consumer = Consumer::connect(config, "orders", None, StartFrom::Earliest)
            .await
            .unwrap();
        keyed::read_in_order(&mut consumer, keys, total, "messages", |_| true).await;
    });
}

#[test]
fn a_long_poll_delivers_a_new_message_within_a_fifth_of_its_wait() {
    let broker = Broker::start(&[]);
    let config = ClientConfig::new(broker.addr.to_string());
    let runtime = runtime();
    runtime.block_on(async {
        Admin::connect(config.clone())
            .await
            .unwrap()
            .create_topic("live", 1)
            .await
            .unwrap();
    });
    let mut consumer = broker
        .smq()
        .args([
            "consume",
            "live",
            "--group",
            "g",
            "--from",
            "latest",
            "--count",
            "5",
            "--idle-timeout",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (arrivals, received) = std::sync::mpsc::channel();
    let stdout = consumer.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = arrivals.send((Instant::now(), line.unwrap()));
        }
    });
    // Wait until the consumer's fetch is parked at the end of the queue.
    wait_for("the consumer's long poll", Duration::from_secs(10), || {
        (broker
            .metric("smq_fetches_waiting")
            .is_some_and(|waiting| waiting >= 1.0))
        .then_some(())
    });
    let mut config = config;
    config.linger_ms = 0;
    let producer = runtime.block_on(Producer::connect(config)).unwrap();
    for round in 0..5 {
        let body = format!("ping-{round}");
        let sent_at = Instant::now();
        runtime
            .block_on(producer.send("live", Message::from_body(body.clone())))
            .unwrap();
        let (arrived_at, line) = received
            .recv_timeout(Duration::from_secs(5))
            .expect("delivered");
        assert_eq!(line, body);
        // A fetch that did not wake on the append would answer when its wait (the client's
        // default fetch_max_wait_ms, 500 ms) ends: at a uniform time within it, so five rounds
        // all under a fifth of it would happen by chance once in 3,000 runs.
        let latency = arrived_at - sent_at;
        assert!(
            latency <= Duration::from_millis(100),
            "round {round}: delivered {latency:?} after the send"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    consumer.wait().unwrap();
}

/// When a Produce makes a consumer's long poll ready, the broker answers the consumer first: its
/// answer is the hop on the end-to-end path, the producer's is not. Compared by the kernel's
/// receive timestamps of the two answers (SO_TIMESTAMPNS), which on loopback are the order the
/// broker wrote them in, on a broker of one worker thread.
#[test]
fn a_long_poll_woken_by_a_produce_is_answered_before_the_producer() {
    use smq_client::protocol::record_batch::{encode, Message as BatchMessage};
    use smq_client::protocol::request::{Acks, FetchRequest, MetadataRequest, ProduceRequest};
    use smq_client::protocol::Request;
    use smq_tests::raw::Raw;

    let broker = Broker::start(&["--worker-threads", "1"]);
    let config = ClientConfig::new(broker.addr.to_string());
    runtime().block_on(async {
        let admin = Admin::connect(config).await.unwrap();
        admin.create_topic("order", 1).await.unwrap();
    });
    let mut consumer = Raw::handshake(broker.addr);
    let mut producer = Raw::handshake(broker.addr);
    consumer.stamp_arrivals();
    producer.stamp_arrivals();
    for offset in 0..20 {
        consumer.send(&Request::Fetch(FetchRequest {
            topic: "order".into(),
            queue_id: 0,
            offset,
            max_bytes: 1 << 20,
            max_wait_ms: 10_000,
            topic_id: 0,
        }));
        // The broker starts a connection's requests in order: once this is answered, the
        // fetch above is waiting.
        consumer.send(&Request::Metadata(MetadataRequest {
            topics: vec!["order".into()],
        }));
        let (_, metadata) = consumer.frame_with_arrival();
        assert!(!metadata.is_empty());
        producer.send(&Request::Produce(ProduceRequest {
            topic: "order".into(),
            queue_id: 0,
            acks: Acks::Written,
            timeout_ms: 0,
            batch: encode("order", 0, &[BatchMessage::from_body(vec![7; 100])]).into(),
        }));
        let (produce_answered, _) = producer.frame_with_arrival();
        let (fetch_answered, fetched) = consumer.frame_with_arrival();
        assert!(
            fetched.len() > 100,
            "round {offset}: the fetch answer holds the batch"
        );
        assert!(
            fetch_answered <= produce_answered,
            "round {offset}: the consumer's answer arrived {:?} after the producer's",
            fetch_answered - produce_answered
        );
    }
}
