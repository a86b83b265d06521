//! Hostile peers against one real `smq-broker` while a healthy producer runs: thousands of
//! connections that send a byte a second, a client pipelining 100,000 long polls, a client that
//! never reads its responses, and frames announced at the largest size and never finished. The
//! broker stays within a memory bound, closes the slow peers after `peer_timeout_ms`, keeps the
//! healthy client going, and loses nothing acknowledged.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use smq_client::protocol::request::FetchRequest;
use smq_client::protocol::Request;
use smq_client::{Admin, ClientConfig};
use smq_tests::healthy::{read_back, HealthyProducer};
use smq_tests::raw::Raw;
use smq_tests::{wait_for, Broker};

const PEER_TIMEOUT_MS: u64 = 5_000;
const SLOW_CONNECTIONS: usize = 5_000;
const PIPELINED_LONG_POLLS: usize = 100_000;
/// Connections each sending 16 MiB of a frame and never its last byte: 640 MiB if the broker
/// buffered them all.
const UNFINISHED_LARGE_FRAMES: usize = 40;
const LARGE_FRAME_BYTES: usize = 16 << 20;
/// The broker's anonymous memory (its heap: buffers, tasks; not the mapped log) must stay below
/// this throughout (its budget for large frames being read is 256 MiB).
const MEMORY_BOUND_BYTES: u64 = 512 << 20;

/// A field of /proc/PID/status in bytes (`RssAnon`, `VmHWM`).
fn memory_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib * 1024
}

/// Samples a process's anonymous memory every 20 ms until stopped: the highest value seen.
fn sample_peak_anon_memory(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(memory_bytes(pid, "RssAnon"));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// Whether the broker has closed `stream` (a write fails or a read sees the end).
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A Fetch at the start of queue 0 of `topic` that may wait `max_wait_ms` for data.
fn fetch(topic: &str, max_wait_ms: u32) -> Request {
    Request::Fetch(FetchRequest {
        topic: topic.into(),
        queue_id: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms,
        topic_id: 0,
    })
}

#[test]
fn hostile_peers_neither_exhaust_the_broker_nor_stop_a_healthy_client() {
    // Each slow connection is a socket and its clone here, and a socket in the broker, which
    // inherits this process's limit: a login's default soft limit of 1,024 is far too few.
    if !smq_tests::skip::open_files_at_least(2 * SLOW_CONNECTIONS as u64 + 1_000) {
        return;
    }
    let peer_timeout = PEER_TIMEOUT_MS.to_string();
    let broker = Broker::start(&["--peer-timeout-ms", &peer_timeout]);
    let config = ClientConfig::new(broker.addr.to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = Admin::connect(config.clone()).await.unwrap();
        admin.create_topic("healthy", 2).await.unwrap();
        admin.create_topic("idle", 1).await.unwrap();
    });
    let healthy = HealthyProducer::start(
        config.clone(),
        "healthy",
        |n| format!("healthy-{n:06}-{}", "x".repeat(1000)),
        Duration::ZERO,
    );
    wait_for("the healthy producer runs", Duration::from_secs(10), || {
        (healthy.acknowledged() > 100).then_some(())
    });
    let undisturbed = healthy.rate(Duration::from_secs(2));

    let sampling_done = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak_anon_memory(broker.pid(), sampling_done.clone());
    let attack_started = Instant::now();
    let mut threads = Vec::new();
    // Slow peers: a frame prefix, then one byte a second, never a whole frame.
    let mut slow: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|_| {
            let mut stream = TcpStream::connect(broker.addr).unwrap();
            stream.write_all(&64u32.to_be_bytes()).unwrap();
            stream
        })
        .collect();
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow_clones: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
    threads.push({
        let done = slow_done.clone();
        std::thread::spawn(move || {
            let mut slow = slow_clones;
            while !done.load(Ordering::Relaxed) {
                for stream in &mut slow {
                    let _ = stream.write_all(&[0]);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    });

    // One client pipelining 100,000 long polls at the end of an empty queue.
    let mut long_polls = Raw::handshake(broker.addr);
    let long_polls_socket = long_polls.stream.try_clone().unwrap();
    threads.push(std::thread::spawn(move || {
        let fetch = fetch("idle", 30_000);
        for _ in 0..PIPELINED_LONG_POLLS {
            // Blocks once the broker stops reading; ends when the test shuts the socket.
            let mut out = BytesMut::new();
            fetch.encode(1, 7, &mut out);
            if long_polls.stream.write_all(&out).is_err() {
                break;
            }
        }
    }));

    println!(
        "{SLOW_CONNECTIONS} slow connections open after {} ms",
        attack_started.elapsed().as_millis()
    );
    // One client that asks for data and never reads its responses: its writes fail once the
    // broker has closed the connection.
    let mut deaf = Raw::handshake(broker.addr);
    let deaf_closed = Arc::new(AtomicBool::new(false));
    let deaf_done = deaf_closed.clone();
    threads.push(std::thread::spawn(move || {
        let fetch = fetch("healthy", 0);
        loop {
            let mut out = BytesMut::new();
            fetch.encode(1, 9, &mut out);
            if deaf.stream.write_all(&out).is_err() {
                deaf_done.store(true, Ordering::Relaxed);
                break;
            }
        }
    }));

    // Frames announced at 16 MiB, all but their last byte sent.
    let large: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    for _ in 0..UNFINISHED_LARGE_FRAMES {
        let mut stream = TcpStream::connect(broker.addr).unwrap();
        large.lock().unwrap().push(stream.try_clone().unwrap());
        threads.push(std::thread::spawn(move || {
            let announced = (LARGE_FRAME_BYTES - 4) as u32;
            let _ = stream.write_all(&announced.to_be_bytes());
            let _ = stream.write_all(&vec![0u8; LARGE_FRAME_BYTES - 5]);
        }));
    }
    println!(
        "attack set up in {} ms: {SLOW_CONNECTIONS} slow connections, {PIPELINED_LONG_POLLS} pipelined long polls, a client that never reads, {UNFINISHED_LARGE_FRAMES} unfinished 16 MiB frames",
        attack_started.elapsed().as_millis()
    );

    std::thread::sleep(Duration::from_millis(500));
    let attacked = healthy.rate(Duration::from_secs(2));
    println!(
        "healthy producer: {undisturbed:.0} msg/s undisturbed, {attacked:.0} msg/s under attack ({:.0}%)",
        100.0 * attacked / undisturbed
    );

    // The slow peers, the deaf client and the unfinished frames are closed after peer_timeout_ms.
    let closed_within = Duration::from_millis(PEER_TIMEOUT_MS) + Duration::from_secs(15);
    wait_for(
        "the broker closes every slow connection",
        closed_within,
        || {
            slow.retain_mut(|stream| !closed_by_peer(stream));
            slow.is_empty().then_some(())
        },
    );
    wait_for(
        "the broker closes the client that never reads",
        closed_within,
        || deaf_closed.load(Ordering::Relaxed).then_some(()),
    );
    wait_for(
        "the broker closes the unfinished large frames",
        closed_within,
        || {
            let mut large = large.lock().unwrap();
            large.retain_mut(|stream| !closed_by_peer(stream));
            large.is_empty().then_some(())
        },
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
        attacked >= undisturbed * 0.5,
        "the healthy producer kept at least half its rate under attack: {attacked:.0} vs {undisturbed:.0} msg/s"
    );

    slow_done.store(true, Ordering::Relaxed);
    let _ = long_polls_socket.shutdown(Shutdown::Both);
    for thread in threads {
        thread.join().unwrap();
    }

    // Everything acknowledged is readable.
    let mut sent = healthy.stop();
    let mut got = read_back(config, "healthy", sent.len());
    got.sort();
    sent.sort();
    assert_eq!(
        got.len(),
        sent.len(),
        "every acknowledged message is read back"
    );
    assert!(
        got == sent,
        "the acknowledged messages read back are the ones sent"
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
