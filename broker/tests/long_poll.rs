//! A long-polling consumer gets a new message within 50 ms of its production and burns no CPU
//! while it waits. Alone in its test binary, so that the CPU time measured is the broker's.

mod common;

use std::time::{Duration, Instant};

use common::*;
use smq_protocol::request::ListOffsetsRequest;
use smq_protocol::Request;
use smq_protocol::Response;

/// CPU time (user + system) of this whole process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_within_50_ms_of_a_produce_and_burns_no_cpu_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(config(dir.path())).await;
    let mut producer = Client::connect(broker.tcp_addr()).await;
    producer.create_topic("orders", 1).await;
    let mut consumer = Client::connect(broker.tcp_addr()).await;
    for round in 0..5u64 {
        let poll = consumer
            .send(fetch_request("orders", 0, round, 10_000))
            .await;
        // Requests start in order: once this is answered, the fetch is waiting.
        let list = consumer
            .send(Request::ListOffsets(ListOffsetsRequest {
                topic: "orders".into(),
                queue_id: 0,
            }))
            .await;
        assert_eq!(consumer.recv().await.0, list);
        if round == 0 {
            let before = cpu_time();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let burnt = cpu_time() - before;
            assert!(
                burnt < Duration::from_millis(50),
                "{burnt:?} of CPU in 500 ms of waiting"
            );
        }
        let produced_at = Instant::now();
        producer
            .produce_ok("orders", 0, &[format!("round {round}").as_bytes()])
            .await;
        let (answered, response) = consumer.recv().await;
        let latency = produced_at.elapsed();
        assert_eq!(answered, poll);
        let Response::Fetch(fetch) = response else {
            panic!("{response:?}")
        };
        assert_eq!(batch_bodies(&fetch.batches)[0].0, round);
        assert!(
            latency < Duration::from_millis(50),
            "round {round}: answered {latency:?} after the produce"
        );
    }
    broker.shutdown().await.unwrap();
}
