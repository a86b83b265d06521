//! Hostile peers against one broker, for tests/hostile_peers.rs and the benchmark
//! scripts/bench-hostile.sh (through the `hostile-peers` binary): connections that send one byte
//! a second and never a whole frame, a client pipelining long polls, a client that never reads
//! its responses, and frames announced at a large size and never finished. Also the broker's
//! memory as /proc shows it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use smq_client::protocol::request::FetchRequest;
use smq_client::protocol::Request;

use crate::raw::Raw;

/// How many of each hostile peer.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Connections that send a frame's length prefix, then one byte a second.
    pub slow_connections: usize,
    /// Long-poll fetches one client pipelines at the end of an empty queue.
    pub pipelined_long_polls: usize,
    /// Connections each sending all but the last byte of a frame of `large_frame_bytes`.
    pub unfinished_large_frames: usize,
    pub large_frame_bytes: usize,
}

/// The sizes issue 19 asks for: 5,000 slow connections, 100,000 pipelined long polls, and 40
/// unfinished 16 MiB frames (the largest a broker with the default batch limit accepts; 640 MiB
/// if the broker buffered them all).
pub const ISSUE_19: Sizes = Sizes {
    slow_connections: 5_000,
    pipelined_long_polls: 100_000,
    unfinished_large_frames: 40,
    large_frame_bytes: 16 << 20,
};

/// The address the hostile peers connect from (a loopback address, not the 127.0.0.1 of the
/// healthy clients): the broker shares some limits per source address.
pub const HOSTILE_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Open files the hostile peers take in this process (each slow connection one, each other peer
/// two: the socket and a handle to shut it), with room for the rest of a test.
pub fn open_files_needed(sizes: &Sizes) -> u64 {
    (sizes.slow_connections + 2 * sizes.unfinished_large_frames + 1_000) as u64
}

/// The hostile peers, running on their own threads until [`HostilePeers::stop`].
pub struct HostilePeers {
    /// The slow connections the broker has not been seen to close.
    slow: Arc<Mutex<Vec<TcpStream>>>,
    /// The connections of the unfinished frames the broker has not been seen to close.
    large: Arc<Mutex<Vec<TcpStream>>>,
    /// Set once a write of the client that never reads failed (the broker closed it).
    deaf_closed: Arc<AtomicBool>,
    /// Handles to shut the long-poll and deaf clients' sockets, which unblocks their threads.
    to_shut: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl HostilePeers {
    /// Starts every hostile peer against the broker at `addr`, from [`HOSTILE_SOURCE`]: the long
    /// polls wait on queue 0 of `idle_topic` (which must exist and stay empty), the client that
    /// never reads fetches queue 0 of `data_topic` from its start; every other unfinished frame
    /// comes after a handshake (a broker refuses large frames before one). Returns once every
    /// connection is open and every peer has sent its first bytes.
    pub fn start(addr: SocketAddr, sizes: &Sizes, idle_topic: &str, data_topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut to_shut = Vec::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let connect = || connect_from(&runtime, HOSTILE_SOURCE, addr);

        // Slow peers: a frame's length prefix, then one byte a second, never a whole frame.
        let slow: Vec<TcpStream> = (0..sizes.slow_connections)
            .map(|_| {
                let mut stream = connect();
                stream.write_all(&64u32.to_be_bytes()).unwrap();
                stream
            })
            .collect();
        let slow = Arc::new(Mutex::new(slow));
        threads.push({
            let (slow, stop) = (slow.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for stream in slow.lock().unwrap().iter_mut() {
                        let _ = stream.write_all(&[0]);
                    }
                    sleep_unless_stopped(Duration::from_secs(1), &stop);
                }
            })
        });

        // One client pipelining long polls at the end of an empty queue: its writes block once
        // the broker stops reading it.
        let mut long_polls = handshaken(connect());
        to_shut.push(long_polls.stream.try_clone().unwrap());
        let (count, long_poll) = (sizes.pipelined_long_polls, fetch(idle_topic, 30_000));
        threads.push(std::thread::spawn(move || {
            let mut out = BytesMut::new();
            long_poll.encode(1, 7, &mut out);
            for _ in 0..count {
                if long_polls.stream.write_all(&out).is_err() {
                    break;
                }
            }
        }));

        // One client that asks for data and never reads its responses: its writes fail once the
        // broker has closed the connection.
        let mut deaf = handshaken(connect());
        to_shut.push(deaf.stream.try_clone().unwrap());
        let deaf_closed = Arc::new(AtomicBool::new(false));
        threads.push({
            let (deaf_closed, request) = (deaf_closed.clone(), fetch(data_topic, 0));
            std::thread::spawn(move || {
                let mut out = BytesMut::new();
                request.encode(1, 9, &mut out);
                while deaf.stream.write_all(&out).is_ok() {}
                deaf_closed.store(true, Ordering::Relaxed);
            })
        });

        // Frames announced at the large size, all but their last byte sent (as far as the broker
        // takes them).
        let large = Arc::new(Mutex::new(Vec::new()));
        for n in 0..sizes.unfinished_large_frames {
            let mut stream = match n % 2 {
                0 => handshaken(connect()).stream,
                _ => connect(),
            };
            let announced = (sizes.large_frame_bytes - 4) as u32;
            stream.write_all(&announced.to_be_bytes()).unwrap();
            large.lock().unwrap().push(stream.try_clone().unwrap());
            let rest = sizes.large_frame_bytes - 5;
            threads.push(std::thread::spawn(move || {
                let _ = stream.write_all(&vec![0u8; rest]);
            }));
        }
        HostilePeers {
            slow,
            large,
            deaf_closed,
            to_shut,
            stop,
            threads,
        }
    }

    /// Slow connections not yet closed by the broker.
    pub fn slow_open(&self) -> usize {
        let mut slow = self.slow.lock().unwrap();
        slow.retain_mut(|stream| !closed_by_peer(stream));
        slow.len()
    }

    /// Connections of unfinished frames not yet closed by the broker.
    pub fn large_open(&self) -> usize {
        let mut large = self.large.lock().unwrap();
        large.retain_mut(|stream| !closed_by_peer(stream));
        large.len()
    }

    /// Whether the broker closed the client that never reads.
    pub fn deaf_closed(&self) -> bool {
        self.deaf_closed.load(Ordering::Relaxed)
    }

    /// Stops every peer and closes its connections.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self.to_shut.iter().chain(self.large.lock().unwrap().iter()) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

/// A blocking connection to `addr` from `source` (port chosen by the system).
fn connect_from(runtime: &tokio::runtime::Runtime, source: IpAddr, addr: SocketAddr) -> TcpStream {
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(addr).await?.into_std()
        })
        .unwrap_or_else(|error| panic!("connecting from {source} to {addr}: {error}"));
    stream.set_nonblocking(false).unwrap();
    stream
}

/// `stream` after a handshake the broker answered.
fn handshaken(stream: TcpStream) -> Raw {
    let mut raw = Raw::from_stream(stream);
    assert!(
        raw.try_handshake(),
        "the broker closed a hostile peer's connection at its handshake"
    );
    raw
}

fn sleep_unless_stopped(pause: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < pause && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

/// Whether the broker has closed `stream`: reading what it sent (an error frame, say) comes to
/// the end of the stream or fails, not to a read that would block.
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(error) => break error.kind() != std::io::ErrorKind::WouldBlock,
        }
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

/// A field of /proc/PID/status in bytes (`RssAnon`: the heap, buffers and tasks, not the mapped
/// log; `VmHWM`: the peak resident size, mapped files included).
pub fn memory_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib * 1024
}

/// Samples a process's anonymous memory every 20 ms until `stop`: the highest value seen.
pub fn sample_peak_anon_memory(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(memory_bytes(pid, "RssAnon"));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}
