//! Healthy clients beside a test's misbehaving ones: a producer that sends one message at a time
//! and counts acknowledgements, a consumer that reads a topic as it grows, and read-backs of
//! everything a topic holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smq_client::{ClientConfig, Consumer, Message, Producer, StartFrom};

/// A client running on its own thread with its own runtime until stopped, counting what it has
/// done (messages acknowledged, or received) and returning them when stopped.
struct ClientThread {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl ClientThread {
    fn spawn<F, Fut>(work: F) -> ClientThread
    where
        F: FnOnce(Arc<AtomicBool>, Arc<AtomicUsize>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Vec<String>>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(work(stop, count))
            })
        };
        ClientThread {
            stop,
            count,
            thread,
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn stop(self, what: &str) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the healthy {what} failed"))
    }
}

/// Produces `body(n)` for n = 0, 1, ... to `topic`, one acknowledged message at a time with
/// `pause` between them, on its own thread; any failed send panics that thread.
pub struct HealthyProducer(ClientThread);

impl HealthyProducer {
    pub fn start(
        config: ClientConfig,
        topic: &str,
        body: fn(usize) -> String,
        pause: Duration,
    ) -> HealthyProducer {
        let topic = topic.to_owned();
        HealthyProducer(ClientThread::spawn(move |stop, acknowledged| async move {
            let producer = Producer::connect(config).await.unwrap();
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let message = body(sent.len());
                producer
                    .send(&topic, Message::from_body(message.clone()))
                    .await
                    .expect("the healthy producer never fails");
                sent.push(message);
                acknowledged.fetch_add(1, Ordering::Relaxed);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            sent
        }))
    }

    /// Messages acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.0.count()
    }

    /// Stops it: every message acknowledged, in the order sent.
    pub fn stop(self) -> Vec<String> {
        self.0.stop("producer")
    }
}

/// Reads `topic` from its earliest offset on, on its own thread, counting the messages it
/// receives; any failed poll panics that thread.
pub struct HealthyConsumer(ClientThread);

impl HealthyConsumer {
    pub fn start(config: ClientConfig, topic: &str) -> HealthyConsumer {
        let topic = topic.to_owned();
        HealthyConsumer(ClientThread::spawn(move |stop, received| async move {
            let mut consumer = Consumer::connect(config, &topic, None, StartFrom::Earliest)
                .await
                .unwrap();
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let polled = consumer
                    .poll(10_000)
                    .await
                    .expect("the healthy consumer never fails");
                for message in polled {
                    got.push(String::from_utf8(message.body.to_vec()).unwrap());
                }
                received.store(got.len(), Ordering::Relaxed);
            }
            got
        }))
    }

    /// Messages received so far.
    pub fn received(&self) -> usize {
        self.0.count()
    }

    /// Stops it: every message received, in the order received.
    pub fn stop(self) -> Vec<String> {
        self.0.stop("consumer")
    }
}

/// Messages per second the producer had acknowledged and the consumer received over the next
/// `window`, measured over the same window.
pub fn rates(
    producer: &HealthyProducer,
    consumer: &HealthyConsumer,
    window: Duration,
) -> (f64, f64) {
    let (acknowledged, received) = (producer.acknowledged(), consumer.received());
    std::thread::sleep(window);
    let per_second = |before: usize, after: usize| (after - before) as f64 / window.as_secs_f64();
    (
        per_second(acknowledged, producer.acknowledged()),
        per_second(received, consumer.received()),
    )
}

/// Every message of `topic` from the earliest offset on, as text, once `expected` have come or
/// 30 s have passed.
pub fn read_back(config: ClientConfig, topic: &str, expected: usize) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut consumer = Consumer::connect(config, topic, None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < expected && Instant::now() < deadline {
            for message in consumer.poll(10_000).await.unwrap() {
                got.push(String::from_utf8(message.body.to_vec()).unwrap());
            }
        }
        got
    })
}

/// Every message of `topic` stored at `addr`, per queue in offset order (checked to start at
/// offset 0 and go on without gaps), once `expected` were read and a poll then found no more (so
/// that extra messages show too); panics after 30 s.
pub fn read_queues(addr: &str, topic: &str, expected: usize) -> BTreeMap<u32, Vec<Vec<u8>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = ClientConfig::new(addr.to_owned());
        let mut consumer = Consumer::connect(config, topic, None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut queues: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let polled = consumer.poll(500).await.unwrap();
            let read: usize = queues.values().map(Vec::len).sum();
            if polled.is_empty() && read >= expected {
                return queues;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} holds {read} of {expected} messages"
            );
            for message in polled {
                let queue = queues.entry(message.queue_id).or_default();
                assert_eq!(
                    message.offset,
                    queue.len() as u64,
                    "queue {} without gaps",
                    message.queue_id
                );
                queue.push(message.body.to_vec());
            }
        }
    })
}
