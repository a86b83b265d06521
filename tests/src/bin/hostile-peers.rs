//! The hostile peers of issue 19 against a running broker, for scripts/bench-hostile.sh:
//!
//!     hostile-peers 127.0.0.1:9092
//!
//! Creates the topics `hostile-idle` (empty: the pipelined long polls wait on it) and
//! `hostile-data` (1 MiB: what the client that never reads asks for), starts the peers at the
//! sizes of [`smq_tests::hostile::ISSUE_19`], prints `ready` with how long that took, holds them
//! until its standard input ends, then prints how many the broker still held open and stops them.
//! Its open-files limit must allow the 5,000 slow connections (the script raises `ulimit -n`).

use std::io::Read;
use std::net::SocketAddr;
use std::time::Instant;

use smq_client::{Admin, ClientConfig, Message, Producer};
use smq_tests::hostile::{HostilePeers, ISSUE_19};

const IDLE_TOPIC: &str = "hostile-idle";
const DATA_TOPIC: &str = "hostile-data";

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .expect("usage: hostile-peers BROKER_ADDRESS (e.g. 127.0.0.1:9092)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = ClientConfig::new(addr.to_string());
        let admin = Admin::connect(config.clone()).await.unwrap();
        admin.create_topic(IDLE_TOPIC, 1).await.unwrap();
        admin.create_topic(DATA_TOPIC, 1).await.unwrap();
        let producer = Producer::connect(config).await.unwrap();
        let messages = (0..1024)
            .map(|_| Message::from_body(vec![b'h'; 1024]))
            .collect();
        producer.send_batch(DATA_TOPIC, messages).await.unwrap();
    });
    let started = Instant::now();
    let peers = HostilePeers::start(addr, &ISSUE_19, IDLE_TOPIC, DATA_TOPIC);
    println!(
        "ready: {} slow connections, {} pipelined long polls, a client that never reads, {} unfinished {} MiB frames, set up in {} ms",
        ISSUE_19.slow_connections,
        ISSUE_19.pipelined_long_polls,
        ISSUE_19.unfinished_large_frames,
        ISSUE_19.large_frame_bytes >> 20,
        started.elapsed().as_millis()
    );
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    println!(
        "held {} s: the broker still held {} of {} slow connections and {} of {} unfinished frames open; the client that never reads {}",
        started.elapsed().as_secs(),
        peers.slow_open(),
        ISSUE_19.slow_connections,
        peers.large_open(),
        ISSUE_19.unfinished_large_frames,
        if peers.deaf_closed() { "was closed" } else { "was still open" }
    );
    peers.stop();
}
