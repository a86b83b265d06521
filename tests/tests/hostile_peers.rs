//! Hostile peers (tests/src/hostile.rs) against one real `smq-broker` while a healthy producer
//! and a healthy consumer run: thousands of connections that send a byte a second, a client
//! pipelining 100,000 long polls, a client that never reads its responses, and frames announced
//! at the largest size and never finished. The broker stays within a memory bound, closes the
//! slow peers after `peer_timeout_ms`, keeps the healthy clients going, and loses nothing
//! acknowledged.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smq_client::{Admin, ClientConfig, Message, Producer};
use smq_tests::healthy::{rates, read_back, HealthyConsumer, HealthyProducer};
use smq_tests::hostile::{
    closed_by_peer, memory_bytes, open_files_needed, sample_peak_anon_memory, HostilePeers,
    ISSUE_19,
};
use smq_tests::raw::Raw;
use smq_tests::{wait_for, Broker};

const PEER_TIMEOUT_MS: u64 = 5_000;
/// The broker's anonymous memory (its heap: buffers, tasks; not the mapped log) must stay below
/// this throughout: its 256 MiB budget for large frames being read, plus what 5,000 connections
/// and 1,024 waiting long polls hold (BENCHMARKS.md, issue 19, measures it).
const MEMORY_BOUND_BYTES: u64 = 512 << 20;
/// The least share of their undisturbed rate the healthy clients keep under attack here. Issue
/// 19 asks for 80%: scripts/bench-hostile.sh measures that on a quiet machine (BENCHMARKS.md);
/// a test sharing the cores with the rest of a parallel test run can only hold a lenient bound.
const LEAST_SHARE_KEPT: f64 = 0.5;

#[test]
fn hostile_peers_neither_exhaust_the_broker_nor_stop_a_healthy_client() {
    // Each slow connection is a socket here and one in the broker, which inherits this
    // process's limit: a login's default soft limit of 1,024 is far too few.
    if !smq_tests::skip::open_files_at_least(2 * open_files_needed(&ISSUE_19)) {
        return;
    }
    let peer_timeout = PEER_TIMEOUT_MS.to_string();
    let broker = Broker::start(&["--peer-timeout-ms", &peer_timeout]);
    let config = ClientConfig::new(broker.addr.to_string());
    let runtime = smq_tests::runtime();
    runtime.block_on(async {
        let admin = Admin::connect(config.clone()).await.unwrap();
        admin.create_topic("healthy", 2).await.unwrap();
        admin.create_topic("idle", 1).await.unwrap();
        admin.create_topic("large", 1).await.unwrap();
    });
    let producer = HealthyProducer::start(
        config.clone(),
        "healthy",
        |n| format!("healthy-{n:06}-{}", "x".repeat(1000)),
        Duration::ZERO,
    );
    let consumer = HealthyConsumer::start(config.clone(), "healthy");
    wait_for("the healthy clients run", Duration::from_secs(10), || {
        (producer.acknowledged() > 100 && consumer.received() > 100).then_some(())
    });
    let (produced, consumed) = rates(&producer, &consumer, Duration::from_secs(2));

    let sampling_done = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak_anon_memory(broker.pid(), sampling_done.clone());
    let attack_started = Instant::now();
    let peers = HostilePeers::start(broker.addr, &ISSUE_19, "idle", "healthy");
    println!(
        "attack set up in {} ms: {ISSUE_19:?}",
        attack_started.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (produced_attacked, consumed_attacked) =
        rates(&producer, &consumer, Duration::from_secs(2));
    println!(
        "healthy producer: {produced:.0} msg/s undisturbed, {produced_attacked:.0} msg/s under attack ({:.0}%); \
         healthy consumer: {consumed:.0} msg/s undisturbed, {consumed_attacked:.0} msg/s under attack ({:.0}%)",
        100.0 * produced_attacked / produced,
        100.0 * consumed_attacked / consumed,
    );

    // A produce request larger than a read chunk needs the broker's budget for large frames,
    // which the unfinished frames must not hold: before a handshake none is given, and the
    // connections of one address (the hostile peers') hold at most a quarter of it. (Before
    // either, they held all of it until peer_timeout_ms closed them.)
    let large_produce = Instant::now();
    runtime.block_on(async {
        let producer = Producer::connect(config.clone()).await.unwrap();
        let message = Message::from_body(vec![b'l'; 1 << 20]);
        producer.send("large", message).await.unwrap();
    });
    let large_produce = large_produce.elapsed();
    println!(
        "a 1 MiB message acknowledged under attack in {} ms",
        large_produce.as_millis()
    );
    assert!(
        large_produce < Duration::from_secs(1),
        "a 1 MiB message took {large_produce:?} to be acknowledged under attack"
    );

    // The slow peers, the deaf client and the unfinished frames are closed after peer_timeout_ms
    // (those sent before a handshake at once).
    let closed_within = Duration::from_millis(PEER_TIMEOUT_MS) + Duration::from_secs(15);
    wait_for(
        "the broker closes every slow connection",
        closed_within,
        || (peers.slow_open() == 0).then_some(()),
    );
    wait_for(
        "the broker closes the client that never reads",
        closed_within,
        || peers.deaf_closed().then_some(()),
    );
    wait_for(
        "the broker closes the unfinished large frames",
        closed_within,
        || (peers.large_open() == 0).then_some(()),
    );
    println!(
        "every hostile connection closed {} ms after the attack began (peer_timeout_ms {PEER_TIMEOUT_MS})",
        attack_started.elapsed().as_millis()
    );
    sampling_done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    println!(
        "broker peak anonymous memory: {} MiB (bound {} MiB); peak resident with mapped files: {} MiB",
        peak >> 20,
        MEMORY_BOUND_BYTES >> 20,
        memory_bytes(broker.pid(), "VmHWM") >> 20
    );
    assert!(
        peak < MEMORY_BOUND_BYTES,
        "the broker's peak memory {} MiB is above the bound",
        peak >> 20
    );
    assert!(
        produced_attacked >= produced * LEAST_SHARE_KEPT,
        "the healthy producer kept {LEAST_SHARE_KEPT} of its rate under attack: {produced_attacked:.0} vs {produced:.0} msg/s"
    );
    assert!(
        consumed_attacked >= consumed * LEAST_SHARE_KEPT,
        "the healthy consumer kept {LEAST_SHARE_KEPT} of its rate under attack: {consumed_attacked:.0} vs {consumed:.0} msg/s"
    );
    peers.stop();

    // Everything acknowledged is readable, and the consumer that ran throughout got it too.
    let mut sent = producer.stop();
    wait_for(
        "the healthy consumer receives every acknowledged message",
        Duration::from_secs(30),
        || (consumer.received() >= sent.len()).then_some(()),
    );
    let mut received = consumer.stop();
    let mut got = read_back(config, "healthy", sent.len());
    for list in [&mut sent, &mut received, &mut got] {
        list.sort();
    }
    assert_eq!(
        got.len(),
        sent.len(),
        "every acknowledged message is read back"
    );
    assert!(
        got == sent,
        "the acknowledged messages read back are the ones sent"
    );
    assert!(
        received == sent,
        "the healthy consumer received each acknowledged message once"
    );
}

#[test]
fn one_address_gets_at_most_max_connections_per_ip_and_others_still_connect() {
    let broker = Broker::start(&["--max-connections-per-ip", "3"]);
    let mut held: Vec<Raw> = (0..3).map(|_| Raw::handshake(broker.addr)).collect();
    let mut fourth = TcpStream::connect(broker.addr).unwrap();
    wait_for(
        "the broker closes a fourth connection from 127.0.0.1",
        Duration::from_secs(5),
        || closed_by_peer(&mut fourth).then_some(()),
    );
    // Another address on the same host is not affected.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let other = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket
            .connect(broker.addr)
            .await
            .unwrap()
            .into_std()
            .unwrap()
    });
    other.set_nonblocking(false).unwrap();
    assert!(
        Raw::from_stream(other).try_handshake(),
        "a connection from 127.0.0.2 is served"
    );
    // A closed connection frees its address's slot.
    held.pop();
    wait_for(
        "a new connection from 127.0.0.1 once one closed",
        Duration::from_secs(5),
        || {
            let mut raw = Raw::connect(broker.addr);
            raw.try_handshake().then_some(())
        },
    );
    let warnings = broker
        .log_lines()
        .into_iter()
        .filter(|line| line.contains("connection limit of this address reached"))
        .count();
    assert_eq!(warnings, 1, "one warning for the address");
}
