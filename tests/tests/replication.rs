//! Master–slave replication through the real binaries: a slave's log is the master's byte for
//! byte; under synchronous replication every acknowledged message survives the loss of the
//! master's whole data directory; a peer that is not a configured slave cannot make the master
//! acknowledge anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smq_client::protocol::frame::decode_response;
use smq_client::protocol::replication::{
    ReplicaFetch, ReplicaHello, ReplicaRequest, ReplicaResponse,
};
use smq_client::protocol::request::HandshakeRequest;
use smq_client::protocol::{ApiKey, ErrorCode, Request, Response};
use smq_client::{ClientConfig, Consumer, Message, Producer, StartFrom};
use smq_tests::keyed::{self, body};
use smq_tests::{runtime, slave_of, wait_for, Broker, NameServer};

/// Writes a replication secret file in `dir`.
fn secret_file(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join(format!("secret-{secret}"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// A new temporary folder, a replication secret file (`secret` in it) there, and a master
/// started in its folder `master` with `extra`.
fn master_in_temp_dir(secret: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), secret);
    let master = start_master(&secret, &dir.path().join("master"), extra);
    (dir, secret, master)
}

fn start_master(secret: &Path, data_dir: &Path, extra: &[&str]) -> Broker {
    let mut args = vec!["--replication-secret-file", secret.to_str().unwrap()];
    args.extend_from_slice(extra);
    Broker::start_in(data_dir, &with_small_segments(args))
}

/// 16 MiB segments unless the test sets its own: every segment is reserved on disk whole (and
/// one is made ahead), and these tests start many brokers at once.
fn with_small_segments(mut args: Vec<&str>) -> Vec<&str> {
    if !args.contains(&"--segment-bytes") {
        args.extend(["--segment-bytes", "16777216"]);
    }
    args
}

fn start_slave(master: &Broker, secret: &Path, data_dir: &Path, extra: &[&str]) -> Broker {
    let master_addr = master.addr.to_string();
    let mut args = slave_of(&master_addr);
    args.extend(["--replication-secret-file", secret.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Broker::start_in(data_dir, &with_small_segments(args))
}

/// One line of the broker's /metrics, as a number.
fn metric(broker: &Broker, name: &str) -> Option<f64> {
    broker.metric(name)
}

/// The segment files of a data directory, by name.
fn segments(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(data_dir.join("commitlog"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn after_catching_up_a_slaves_segments_are_byte_identical_to_its_masters() {
    // Small segments, so that the log rolls many times (roll markers included); catch-up paced
    // at 2 MB/s, so that the lag can be watched.
    let (dir, secret, master) = master_in_temp_dir(
        "copy",
        &[
            "--flush",
            "async",
            "--segment-bytes",
            "1048576",
            "--replication-max-bytes-per-sec",
            "2000000",
        ],
    );
    let config = ClientConfig::new(master.addr.to_string());
    let total = 30_000;
    let messages = (0..total).map(|sequence| Message::from_body(body(sequence % 7, sequence)));
    create_and_produce(&config, "copied", 3, messages);
    let slave = start_slave(
        &master,
        &secret,
        &dir.path().join("slave"),
        &["--segment-bytes", "1048576", "--flush", "async"],
    );
    let lag_seen = wait_for(
        "the slave reports its lag while it catches up",
        Duration::from_secs(30),
        || metric(&slave, "smq_replication_lag_bytes").filter(|lag| *lag > 0.0),
    );
    wait_for("the slave catches up", Duration::from_secs(60), || {
        metric(&slave, "smq_replication_lag_bytes").filter(|lag| *lag == 0.0)
    });
    assert!(lag_seen > 0.0);
    // Stopping both cleanly flushes them; the slave first, so that it holds no more than the master.
    slave.stop();
    master.stop();
    let master_segments = segments(&dir.path().join("master"));
    let slave_segments = segments(&dir.path().join("slave"));
    let with_data: Vec<&String> = master_segments
        .iter()
        .filter(|(_, bytes)| bytes.iter().any(|b| *b != 0))
        .map(|(name, _)| name)
        .collect();
    assert!(with_data.len() > 3, "the log rolled: {with_data:?}");
    for name in with_data {
        let slave_bytes = slave_segments
            .get(name)
            .unwrap_or_else(|| panic!("the slave lacks segment {name}"));
        assert!(
            master_segments[name] == *slave_bytes,
            "segment {name} differs between master and slave"
        );
    }
}

/// Creates `topic` with `queues` queues on `config`'s broker and sends `messages`, all in
/// flight at once; returns once every one was acknowledged.
fn create_and_produce(
    config: &ClientConfig,
    topic: &str,
    queues: u32,
    messages: impl IntoIterator<Item = Message>,
) {
    runtime().block_on(async {
        let producer = smq_tests::topic_and_producer(config, topic, queues).await;
        let mut pending = Vec::new();
        for message in messages {
            pending.push(producer.start_send(topic, message).await.unwrap());
        }
        for delivery in pending {
            delivery.wait().await.unwrap();
        }
    });
}

/// Asserts that every segment of `master_dir` holding data is in `slave_dir`, byte for byte;
/// returns the bytes compared.
fn assert_segments_copied(master_dir: &Path, slave_dir: &Path) -> usize {
    let mut compared_bytes = 0;
    for entry in std::fs::read_dir(master_dir.join("commitlog")).unwrap() {
        let entry = entry.unwrap();
        let ours = std::fs::read(entry.path()).unwrap();
        if ours.iter().all(|b| *b == 0) {
            continue;
        }
        let name = entry.file_name();
        let theirs = std::fs::read(slave_dir.join("commitlog").join(&name))
            .unwrap_or_else(|error| panic!("the slave lacks segment {name:?}: {error}"));
        assert!(
            ours == theirs,
            "segment {name:?} differs between master and slave"
        );
        compared_bytes += ours.len();
    }
    compared_bytes
}

/// Issue 16 point 1, the copy of a long log scaled down (the 2 GiB figure is
/// scripts/bench-replication-copy.sh's, in BENCHMARKS.md): an empty slave copies a 150 MB log,
/// unpaced, while a producer keeps writing to the master; once caught up, every segment with
/// data is the master's byte for byte.
#[test]
fn an_empty_slave_copies_a_150_mb_log_while_the_master_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "copy");
    let (master_dir, slave_dir) = (dir.path().join("master"), dir.path().join("slave"));
    let master = start_master(&secret, &master_dir, &["--flush", "async"]);
    let bench = |topic: &str, amount: &[&str]| {
        let mut command = master.smq();
        command.args([
            "bench",
            "produce",
            "--topic",
            topic,
            "--message-bytes",
            "1024",
        ]);
        command.args(amount).output().unwrap()
    };
    let filled = bench("filled", &["--count", "150000"]);
    assert!(filled.status.success(), "{filled:?}");
    let slave = start_slave(&master, &secret, &slave_dir, &["--flush", "async"]);
    let during = bench("during", &["--duration", "3"]);
    assert!(during.status.success(), "{during:?}");
    wait_for_in_sync(&master);
    wait_for(
        "the slave holds the master's log",
        Duration::from_secs(120),
        || metric(&slave, "smq_replication_lag_bytes").filter(|lag| *lag == 0.0),
    );
    // Stopping both cleanly flushes them; the slave first, so that it holds no more than the master.
    slave.stop();
    master.stop();
    let compared_bytes = assert_segments_copied(&master_dir, &slave_dir);
    assert!(
        compared_bytes >= 150_000_000,
        "only {compared_bytes} bytes compared"
    );
}

/// Every message of `topic` stored at `addr` from its earliest offsets: (queue, offset, body).
fn stored_messages(addr: &str, topic: &str) -> BTreeSet<(u32, u64, Vec<u8>)> {
    runtime().block_on(async {
        let config = ClientConfig::new(addr.to_owned());
        let mut consumer = Consumer::connect(config, topic, None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut stored = BTreeSet::new();
        loop {
            let polled = consumer.poll(1000).await.unwrap();
            if polled.is_empty() {
                return stored;
            }
            for message in polled {
                stored.insert((message.queue_id, message.offset, message.body.to_vec()));
            }
        }
    })
}

/// Issue 16 point 1. A new empty slave of a master whose retention deleted the start of its
/// log cannot copy from 0: it skips to the master's log start, says so in one line, and holds
/// what the master holds from there: the same messages at the same queue offsets, the same
/// segment bytes.
#[test]
fn an_empty_slave_of_a_master_past_retention_starts_at_the_masters_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "retained");
    let (master_dir, slave_dir) = (dir.path().join("master"), dir.path().join("slave"));
    let small = [
        "--flush",
        "async",
        "--segment-bytes",
        "1048576",
        "--retention-bytes",
        "3000000",
        "--retention-check-interval-ms",
        "100",
    ];
    let master = start_master(&secret, &master_dir, &small);
    let produced = master
        .smq()
        .args(["bench", "produce", "--topic", "kept", "--queues", "2"])
        .args(["--message-bytes", "1000", "--count", "8000"])
        .output()
        .unwrap();
    assert!(produced.status.success(), "{produced:?}");
    let first_segment = master_dir.join("commitlog").join(format!("{:020}", 0));
    wait_for(
        "retention deletes the first segment",
        Duration::from_secs(30),
        || (!first_segment.exists()).then_some(()),
    );
    let slave = start_slave(&master, &secret, &slave_dir, &small[..4]);
    let skipped = wait_for_log(&slave, "the slave skipping to the master's start", |line| {
        line.contains("skips to the master's log start")
    });
    assert!(skipped.contains("from_position=0"), "{skipped}");
    wait_for_in_sync(&master);
    let on_master = stored_messages(&master.addr.to_string(), "kept");
    assert!(on_master.len() < 8000, "retention kept everything");
    let on_slave = stored_messages(&slave.addr.to_string(), "kept");
    assert!(
        on_slave == on_master,
        "the slave holds {} messages, the master {}",
        on_slave.len(),
        on_master.len()
    );

    slave.stop();
    master.stop();
    assert_segments_copied(&master_dir, &slave_dir);
}

#[test]
fn under_sync_replication_every_acknowledged_message_survives_losing_the_masters_disk() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "sync");
    let master_dir = dir.path().join("master");
    let master = start_master(
        &secret,
        &master_dir,
        &["--flush", "sync", "--replication", "sync"],
    );
    let slave = start_slave(
        &master,
        &secret,
        &dir.path().join("slave"),
        &["--flush", "sync"],
    );
    let config = ClientConfig::new(master.addr.to_string());
    let runtime = runtime();
    let (keys, total) = (16, 50_000);
    // The master refuses writes (NO_SLAVE) until its slave is in sync.
    wait_for_in_sync(&master);
    let acknowledged: HashSet<(u32, u64)> = runtime.block_on(async {
        let producer = smq_tests::topic_and_producer(&config, "orders", 4).await;
        let pending = keyed::send(&producer, "orders", keys, total).await;
        let mut acknowledged = HashSet::new();
        for (_, delivery) in pending {
            let delivery = delivery.wait().await.unwrap();
            acknowledged.insert((delivery.queue_id, delivery.offset));
        }
        acknowledged
    });
    assert_eq!(acknowledged.len(), total);
    // The master's machine is gone: process and disk.
    master.kill();
    std::fs::remove_dir_all(&master_dir).unwrap();

    let config = ClientConfig::new(slave.addr.to_string());
    runtime.block_on(async {
        let mut consumer = Consumer::connect(config, "orders", None, StartFrom::Earliest)
            .await
            .unwrap();
        let what = "acknowledged messages on the slave";
        keyed::read_in_order(&mut consumer, keys, total, what, |message| {
            acknowledged.contains(&(message.queue_id, message.offset))
        })
        .await;
    });
}

/// Waits until the master's /metrics says a slave is in sync.
fn wait_for_in_sync(master: &Broker) {
    wait_for("a slave in sync", Duration::from_secs(30), || {
        let reply = smq_tests::http::request_blocking(master.http_addr, "GET", "/metrics", None);
        reply
            .body
            .lines()
            .any(|line| line.starts_with("smq_slave_in_sync{") && line.ends_with(" 1"))
            .then_some(())
    });
}

/// A connection speaking the broker protocol by hand: handshake, then raw replication requests.
struct RawPeer {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u32,
}

impl RawPeer {
    fn connect(broker: &Broker) -> RawPeer {
        let stream = TcpStream::connect(broker.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut peer = RawPeer {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        };
        let mut out = BytesMut::new();
        Request::Handshake(HandshakeRequest {
            client_id: "rogue".into(),
            min_version: 1,
            max_version: 1,
            auth_token: Bytes::new(),
        })
        .encode(1, peer.id(), &mut out);
        peer.stream.write_all(&out).unwrap();
        let body = peer.read_frame().expect("a handshake answer");
        assert!(matches!(
            Response::decode(ApiKey::Handshake, 1, body).unwrap(),
            Response::Handshake(_)
        ));
        peer
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// The next response body, or None when the broker closed the connection.
    fn read_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = decode_response(&mut self.buf, 1 << 26).unwrap() {
                return Some(frame.body);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a replication request; its answer, or None when the connection closed instead.
    fn call(&mut self, request: ReplicaRequest) -> Option<ReplicaResponse> {
        let mut out = BytesMut::new();
        request.encode(self.id(), &mut out);
        self.stream.write_all(&out).ok()?;
        let body = self.read_frame()?;
        Some(ReplicaResponse::decode(request.api_key(), body).unwrap())
    }

    fn closed(&mut self) -> bool {
        self.read_frame().is_none()
    }
}

fn error_code(response: Option<ReplicaResponse>) -> Option<u16> {
    match response {
        Some(ReplicaResponse::Error(error)) => Some(error.code),
        _ => None,
    }
}

#[test]
fn a_peer_that_is_not_a_configured_slave_cannot_make_the_master_acknowledge_a_write() {
    let (dir, secret, master) = master_in_temp_dir(
        "right",
        &["--replication", "sync", "--replication-timeout-ms", "1000"],
    );
    let wrong = secret_file(dir.path(), "wrong");
    let produce = |body: &str| {
        smq_tests::run_with_stdin(master.smq().args(["produce", "t"]), body.as_bytes())
    };
    smq_tests::succeeds(master.smq().args(["topic", "create", "t", "--queues", "1"]));

    // A real slave with the wrong secret is refused, and so the write is.
    let rogue_slave = start_slave(&master, &wrong, &dir.path().join("rogue"), &[]);
    wait_for(
        "the master refuses the slave",
        Duration::from_secs(10),
        || {
            master
                .log_lines()
                .iter()
                .any(|line| line.contains("refused a replica") && line.contains("secret"))
                .then_some(())
        },
    );
    let refused = produce("not replicated\n");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("NO_SLAVE") || stderr.contains("no slave in sync"),
        "{stderr}"
    );

    // A hand-written peer: fetching without introducing itself, introducing itself without the
    // secret or for another group, and claiming a position past the master's end get it nothing.
    let mut peer = RawPeer::connect(&master);
    let far = ReplicaRequest::Fetch(ReplicaFetch {
        position: 1 << 40,
        flushed_position: 1 << 40,
        max_bytes: 1024,
        max_wait_ms: 0,
    });
    assert_eq!(
        error_code(peer.call(far.clone())),
        Some(ErrorCode::HandshakeRequired.as_u16())
    );
    let hello = |secret: &str, group: &str| {
        ReplicaRequest::Hello(ReplicaHello {
            cluster: "smq".into(),
            group: group.into(),
            slave_addr: "127.0.0.1:1".into(),
            secret: Bytes::from(secret.to_owned()),
            // Claiming a log ahead of the master's here would make it stop taking writes (it
            // would have lost what its slave holds); the lie comes with the fetch below.
            log_end: 0,
            segment_bytes: 16 << 20,
            epochs: Vec::new(),
        })
    };
    assert_eq!(
        error_code(peer.call(hello("", "broker-a"))),
        Some(ErrorCode::AuthenticationFailed.as_u16())
    );
    assert!(peer.closed(), "a refused peer is disconnected");
    let mut peer = RawPeer::connect(&master);
    assert_eq!(
        error_code(peer.call(hello("right", "another-group"))),
        Some(ErrorCode::AuthenticationFailed.as_u16())
    );
    let refused = produce("still not replicated\n");
    assert!(!refused.status.success(), "no ack from a refused peer");

    // With the secret and the group, a position past the end is refused and counts for nothing.
    let mut peer = RawPeer::connect(&master);
    assert!(matches!(
        peer.call(hello("right", "broker-a")),
        Some(ReplicaResponse::Hello(_))
    ));
    assert_eq!(
        error_code(peer.call(far)),
        Some(ErrorCode::OffsetOutOfRange.as_u16())
    );
    let refused = produce("not by a liar either\n");
    assert!(
        !refused.status.success(),
        "no ack for a position the master never wrote"
    );
    drop(peer);
    drop(rogue_slave);

    // The configured slave is admitted and the same write is acknowledged.
    let slave = start_slave(&master, &secret, &dir.path().join("slave"), &[]);
    wait_for_in_sync(&master);
    let accepted = produce("replicated\n");
    assert!(accepted.status.success(), "{accepted:?}");
    drop(slave);
}

#[test]
fn consumers_read_a_dead_masters_backlog_from_its_slave_while_producers_go_on_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "groups");
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1500"]);
    let ns = nameserver.url();
    let g1_args = [
        "--nameserver",
        &ns,
        "--group",
        "g1",
        "--replication",
        "sync",
    ];
    let g1_master = start_master(&secret, &dir.path().join("g1-master"), &g1_args);
    let g1_slave = start_slave(
        &g1_master,
        &secret,
        &dir.path().join("g1-slave"),
        &["--nameserver", &ns, "--group", "g1"],
    );
    let _g2_master = start_master(
        &secret,
        &dir.path().join("g2-master"),
        &["--nameserver", &ns, "--group", "g2"],
    );
    smq_tests::failover::wait_until_registered(&nameserver, 3);
    wait_for_in_sync(&g1_master);
    smq_tests::succeeds(
        nameserver
            .smq()
            .args(["topic", "create", "t", "--queues", "2", "--groups", "g1,g2"]),
    );
    // The slave has the topic (metadata follows the log) and shows in the route.
    wait_for("the slave in the route", Duration::from_secs(10), || {
        let (status, body) = nameserver.get("/v1/routes/t");
        (status == 200 && body.contains(&g1_slave.addr.to_string())).then_some(())
    });

    // /v1/cluster shows the slave's lag and that its master counts it in sync.
    wait_for(
        "the slave in sync in /v1/cluster",
        Duration::from_secs(10),
        || {
            let (_, body) = nameserver.get("/v1/cluster");
            let view: serde_json::Value = serde_json::from_str(&body).ok()?;
            let slave = view["brokers"]
                .as_array()?
                .iter()
                .find(|broker| broker["role"] == "slave")?
                .clone();
            (slave["in_sync"] == true && slave["replication_lag_bytes"].is_u64()).then_some(())
        },
    );
    let table = nameserver.smq().arg("cluster").output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("in sync"), "{table}");
    let runtime = runtime();
    let config = nameserver.client_config(200);
    let mut consumer = runtime
        .block_on(Consumer::connect(
            config.clone(),
            "t",
            Some("readers"),
            StartFrom::Earliest,
        ))
        .unwrap();
    let producer = runtime.block_on(Producer::connect(config.clone())).unwrap();
    // Keys over the topic's 4 queues (g1/0, g1/1, g2/0, g2/1): where each goes while all is well.
    let keys: Vec<String> = (0..16).map(|i| format!("key-{i}")).collect();
    let keyed = |key: &str| Message {
        key: key.as_bytes().to_vec(),
        ..Message::from_body(format!("keyed {key}"))
    };
    let queue_before: Vec<u32> = runtime.block_on(async {
        let mut queues = Vec::new();
        for key in &keys {
            queues.push(producer.send("t", keyed(key)).await.unwrap().queue_id);
        }
        queues
    });
    let stop = Arc::new(AtomicBool::new(false));
    // Four senders, so that the kill meets sends in flight.
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (stop, producer) = (stop.clone(), producer.clone());
            runtime.spawn(async move {
                let (mut acked, mut failures) = (BTreeSet::new(), Vec::new());
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("m{sender}-{sequence}");
                    match producer.send("t", Message::from_body(body.clone())).await {
                        Ok(_) => {
                            acked.insert(body);
                        }
                        Err(error) => failures.push(format!("{body}: {error}")),
                    }
                    sequence += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (acked, failures)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let (g1_addr, g1_dir) = (g1_master.addr.to_string(), g1_master.data_dir.clone());
    g1_master.kill();
    // The producer goes on to g2; the NameServer drops the dead master within its timeout.
    wait_for(
        "the dead master leaves the routes",
        Duration::from_secs(10),
        || (g1_routes_a_master(&nameserver)? == Some(false)).then_some(()),
    );

    // A producer started now, while g1 has no master, knows g1's queues from its slave: every
    // key of g2 keeps its queue, and every key of g1 waits for g1 (a retryable error naming it)
    // rather than move to g2. So does a fresh `smq produce` process.
    let fresh = runtime.block_on(Producer::connect(config.clone())).unwrap();
    let of_g1 = |key: &str| smq_client::producer::queue_for_key(key.as_bytes(), 4).unwrap() < 2;
    runtime.block_on(async {
        for (key, before) in keys.iter().zip(&queue_before) {
            let sent = fresh.send("t", keyed(key)).await;
            if of_g1(key) {
                let error = sent.expect_err("a key of g1 does not move to g2");
                assert!(error.is_retryable(), "{error}");
                assert!(error.to_string().contains("broker group g1"), "{error}");
            } else {
                assert_eq!(sent.unwrap().queue_id, *before, "{key} keeps its queue");
            }
        }
    });
    let key_of_g1 = keys.iter().find(|key| of_g1(key)).unwrap();
    let cli = nameserver
        .smq()
        .args(["produce", "t", "--key", key_of_g1])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin.as_ref().unwrap().write_all(b"keyed\n").unwrap();
    let cli = cli.wait_with_output().unwrap();
    let cli_error = String::from_utf8_lossy(&cli.stderr);
    assert!(
        !cli.status.success() && cli_error.contains("broker group g1"),
        "{cli_error}"
    );

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut failures) = (BTreeSet::new(), Vec::new());
    for sender in senders {
        let (sender_acked, sender_failures) = runtime.block_on(sender).unwrap();
        acked.extend(sender_acked);
        failures.extend(sender_failures);
    }
    // Sends in flight at the kill went again to g2 (at least once).
    assert!(
        failures.is_empty(),
        "no unkeyed send may fail, but {} did: {:?}",
        failures.len(),
        &failures[..3.min(failures.len())]
    );
    println!("resent to g2 after the kill: {:?}", producer.metrics());
    // Every acknowledged message comes back, g1's from its slave.
    let mut missing = acked.clone();
    let mut from_g1 = 0;
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !missing.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} acknowledged messages never came back, e.g. {:?}",
                missing.len(),
                missing.iter().next()
            );
            // A consumer goes on after retryable errors (the dead master), as `smq consume` does.
            let messages = match consumer.poll(1000).await {
                Ok(messages) => messages,
                Err(error) if error.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => panic!("{error}"),
            };
            for message in messages {
                let body = String::from_utf8(message.body.to_vec()).unwrap();
                if missing.remove(&body) && &*message.broker_group == "g1" {
                    from_g1 += 1;
                }
            }
            if let Err(error) = consumer.commit().await {
                assert!(error.is_retryable(), "{error}");
            }
        }
        // Once the routes name the slave, committing succeeds: the queues read from the slave
        // are left uncommitted (the slave answers NOT_MASTER) rather than failing the commit.
        consumer.commit().await.unwrap();
    });
    assert!(from_g1 > 0, "some of the backlog was g1's");
    println!(
        "{} acknowledged, {from_g1} of them read from g1's slave",
        acked.len()
    );

    // The master returns where it was: its slave is in sync with it again, the routes name it,
    // and g1's keys are written to g1 again.
    let g1_master = restart_as_master(&g1_addr, &g1_dir, &secret, &g1_args);
    wait_for_in_sync(&g1_master);
    wait_for(
        "g1's master back in the routes",
        Duration::from_secs(10),
        || (g1_routes_a_master(&nameserver)? == Some(true)).then_some(()),
    );
    runtime.block_on(async {
        let producer = Producer::connect(config.clone()).await.unwrap();
        let sent = producer.send("t", keyed(key_of_g1)).await.unwrap();
        assert!(
            sent.queue_id < 2,
            "a key of g1 is written to g1 again: {sent:?}"
        );
    });
}

#[test]
fn a_killed_slave_restarts_catches_up_and_sync_writes_resume_refused_meanwhile() {
    let (dir, secret, master) = master_in_temp_dir(
        "restart",
        &["--replication", "sync", "--replica-lag-time-max-ms", "1000"],
    );
    let slave_dir = dir.path().join("slave");
    let slave = start_slave(&master, &secret, &slave_dir, &[]);
    smq_tests::succeeds(master.smq().args(["topic", "create", "t", "--queues", "2"]));
    wait_for_in_sync(&master);
    let lines =
        |from: usize, to: usize| -> String { (from..to).map(|i| format!("m{i}\n")).collect() };
    let produce = |body: String| {
        smq_tests::run_with_stdin(master.smq().args(["produce", "t"]), body.as_bytes())
    };
    let first = produce(lines(0, 1000));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    slave.kill();
    wait_for(
        "the master forgets the slave",
        Duration::from_secs(10),
        || {
            master
                .log_lines()
                .iter()
                .any(|line| line.contains("a slave disconnected"))
                .then_some(())
        },
    );
    // Without its slave the master refuses sync writes, writing nothing.
    let refused = produce(lines(1000, 1001));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no slave in sync"), "{stderr}");

    // The slave recovers its log, resumes from its end, and writes are acknowledged again.
    let slave = start_slave(&master, &secret, &slave_dir, &[]);
    wait_for_in_sync(&master);
    assert!(produce(lines(1000, 2000)).status.success());
    let consumed = slave
        .smq()
        .args([
            "consume",
            "t",
            "--group",
            "check",
            "--count",
            "2000",
            "--idle-timeout",
            "10",
        ])
        .output()
        .unwrap();
    let mut bodies: Vec<String> = String::from_utf8(consumed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    bodies.sort_by_key(|body| body[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    assert!(
        bodies == expected,
        "the slave holds every acknowledged message once"
    );
}

/// Issue 13 point 9 on a lagging slave: the master deletes topic `t` and creates it again while
/// its slave is stopped, with batches of the old `t` the slave has not copied yet. The slave
/// copies them after it learned of the new `t` (its first metadata copy), byte for byte, but
/// never indexes them into it: the new `t` on the slave holds only the new messages, from
/// offset 0, as on the master, also after a kill -9 and recovery.
#[test]
fn a_lagging_slave_never_serves_a_deleted_topics_batches_as_the_topic_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, master, slave) = group_with_topic(dir.path(), &["--flush", "async"], 1);
    let produce = |tag: &str, from: usize, to: usize| {
        let lines: String = (from..to).map(|i| format!("{tag}-{i}\n")).collect();
        let output =
            smq_tests::run_with_stdin(master.smq().args(["produce", "t"]), lines.as_bytes());
        assert!(output.status.success(), "{output:?}");
    };
    produce("old", 0, 300);
    wait_until_caught_up(&slave, "the slave copied the old topic");
    slave.stop();
    // Batches of the old topic that the slave has not copied when it learns of the new one.
    produce("old", 300, 500);
    for command in [
        &["topic", "delete", "t"][..],
        &["topic", "create", "t", "--queues", "1"],
    ] {
        let output = master.smq().args(command).output().unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    produce("new", 0, 100);
    let expected: Vec<Vec<u8>> = (0..100).map(|i| format!("new-{i}").into_bytes()).collect();
    assert_eq!(read_log(&master.addr.to_string(), "t", 100), expected);

    let slave_dir = dir.path().join("slave");
    let slave = start_slave(&master, &secret, &slave_dir, &[]);
    wait_until_caught_up(&slave, "the slave catches up");
    assert_eq!(read_log(&slave.addr.to_string(), "t", 100), expected);
    let slave_addr = slave.addr.to_string();
    slave.kill();
    let master_addr = master.addr.to_string();
    let slave = restart_as_slave(&slave_addr, &slave_dir, &master_addr, &secret);
    wait_until_caught_up(&slave, "the slave catches up again");
    assert_eq!(read_log(&slave.addr.to_string(), "t", 100), expected);
    slave.stop();
    master.stop();
    assert!(
        segments(&dir.path().join("master")) == segments(&slave_dir),
        "the slave's log is the master's byte for byte"
    );
}

/// Waits until `slave` held everything its master had at its last fetch (`lag_seconds` is
/// NaN before its first fetch, as `lag_bytes` is 0).
fn wait_until_caught_up(slave: &Broker, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        metric(slave, "smq_replication_lag_seconds").filter(|lag| *lag == 0.0)
    });
}

/// Sends `count` unkeyed messages `<tag>-<n>` to `topic` at `addr`; returns the bodies that were
/// acknowledged and how many sends failed.
fn produce_tagged(addr: &str, topic: &str, tag: &str, count: usize) -> (BTreeSet<Vec<u8>>, usize) {
    runtime().block_on(async {
        let mut config = ClientConfig::new(addr.to_owned());
        config.request_timeout_ms = 3_000;
        let producer = Producer::connect(config).await.unwrap();
        let mut pending = Vec::new();
        for n in 0..count {
            let body = format!("{tag}-{n:05}").into_bytes();
            let delivery = producer
                .start_send(topic, Message::from_body(body.clone()))
                .await;
            pending.push((body, delivery));
        }
        let (mut acknowledged, mut failed) = (BTreeSet::new(), 0);
        for (body, delivery) in pending {
            let acked = match delivery {
                Ok(delivery) => delivery.wait().await.is_ok(),
                Err(_) => false,
            };
            if acked {
                acknowledged.insert(body);
            } else {
                failed += 1;
            }
        }
        (acknowledged, failed)
    })
}

/// Every message of `topic` stored at `addr` (each as often as stored, queue offsets checked to
/// go on without gaps), once `expected` were read.
fn read_log(addr: &str, topic: &str, expected: usize) -> Vec<Vec<u8>> {
    smq_tests::healthy::read_queues(addr, topic, expected)
        .into_values()
        .flatten()
        .collect()
}

/// Asserts that `stored` holds every body of `acknowledged` exactly once and nothing else.
fn assert_exactly(stored: &[Vec<u8>], acknowledged: &BTreeSet<Vec<u8>>, broker: &str) {
    let mut seen = BTreeSet::new();
    for body in stored {
        assert!(
            seen.insert(body.clone()),
            "{broker}: {} is stored twice",
            String::from_utf8_lossy(body)
        );
    }
    let missing: Vec<_> = acknowledged.difference(&seen).take(3).collect();
    assert!(
        missing.is_empty(),
        "{broker}: acknowledged messages lost: {missing:?}…"
    );
    let extra: Vec<_> = seen.difference(acknowledged).take(3).collect();
    assert!(
        extra.is_empty(),
        "{broker}: unacknowledged messages kept: {extra:?}…"
    );
}

/// A master started with `master_args` and its slave in `dir`, the slave in sync, and topic
/// `t` of `queues` queues; returns the replication secret's file too.
fn group_with_topic(dir: &Path, master_args: &[&str], queues: u32) -> (PathBuf, Broker, Broker) {
    let secret = secret_file(dir, "group");
    let master = start_master(&secret, &dir.join("master"), master_args);
    let slave = start_slave(&master, &secret, &dir.join("slave"), &[]);
    wait_for_in_sync(&master);
    let queues = queues.to_string();
    smq_tests::succeeds(
        master
            .smq()
            .args(["topic", "create", "t", "--queues", &queues]),
    );
    // The slave copies the topic before the first produce needs it: under a loaded machine
    // that copy (a round trip and an fsync) could otherwise time the first writes out.
    wait_for("the slave to know topic t", Duration::from_secs(30), || {
        let listed = slave.smq().args(["topic", "list"]).output().ok()?;
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|line| line.split_whitespace().next() == Some("t"))
            .then_some(())
    });
    (secret, master, slave)
}

/// A broker of the group restarted where its peers know it, as a master replicating
/// synchronously.
fn restart_as_sync_master(addr: &str, data_dir: &Path, secret: &Path) -> Broker {
    restart_as_master(addr, data_dir, secret, &["--replication", "sync"])
}

/// A broker of the group restarted where its peers know it, as a master with `args`.
fn restart_as_master(addr: &str, data_dir: &Path, secret: &Path, args: &[&str]) -> Broker {
    let mut all = vec!["--replication-secret-file", secret.to_str().unwrap()];
    all.extend_from_slice(args);
    Broker::start_on(addr, data_dir, &with_small_segments(all))
}

/// A broker of the group restarted where its peers know it, as a slave of `master`.
fn restart_as_slave(addr: &str, data_dir: &Path, master: &str, secret: &Path) -> Broker {
    let mut args = slave_of(master);
    args.extend(["--replication-secret-file", secret.to_str().unwrap()]);
    Broker::start_on(addr, data_dir, &with_small_segments(args))
}

/// Whether the route of topic `t` gives group g1 a master (`None`: no answer, `Some(None)`: g1
/// is not in it).
fn g1_routes_a_master(nameserver: &NameServer) -> Option<Option<bool>> {
    let (_, body) = nameserver.get("/v1/routes/t");
    let route: serde_json::Value = serde_json::from_str(&body).ok()?;
    let groups = route["groups"].as_array()?;
    let g1 = groups.iter().find(|group| group["group"] == "g1");
    Some(g1.map(|group| !group["master"].is_null()))
}

fn wait_for_log(broker: &Broker, what: &str, found: impl Fn(&str) -> bool) -> String {
    wait_for(what, Duration::from_secs(30), || {
        broker.log_lines().into_iter().find(|line| found(line))
    })
}

/// Synchronous replication whose writes time out within a second, with a slave that stays
/// counted in sync for a minute (frozen, it acknowledges nothing). (300 ms timed the first
/// writes out once, with the whole file's brokers running at once on a slow disk.)
const SYNC_TIMING_OUT_FAST: [&str; 6] = [
    "--replication",
    "sync",
    "--replication-timeout-ms",
    "1000",
    "--replica-lag-time-max-ms",
    "60000",
];

/// After a switchover: `count` messages produced to the new master are all acknowledged, and
/// then the new master and the old one (its slave now) hold exactly `before` and those.
fn both_hold_what_the_new_master_takes(
    new_master: &str,
    old_master: &str,
    before: &BTreeSet<Vec<u8>>,
    count: usize,
) {
    let (after, failed) = produce_tagged(new_master, "t", "after", count);
    assert_eq!((after.len(), failed), (count, 0));
    let all: BTreeSet<Vec<u8>> = before.union(&after).cloned().collect();
    assert_exactly(
        &read_log(new_master, "t", all.len()),
        &all,
        "the new master",
    );
    let now_its_slave = "the old master, now its slave";
    assert_exactly(&read_log(old_master, "t", all.len()), &all, now_its_slave);
}

/// Issue 16 point 2. (1) A master that lost its data directory comes back with an empty log:
/// its slave, which holds every acknowledged message, keeps its log, and the master takes no
/// writes (nothing would be written over the slave's copy). (2) The operator switches over:
/// the slave becomes the master (a new epoch), the old master rejoins as its slave and copies
/// everything back. No acknowledged message is lost or stored twice on either.
#[test]
fn a_restarted_master_with_a_shorter_log_than_its_slave_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let sync = ["--replication", "sync", "--replication-timeout-ms", "2000"];
    let (secret, master, slave) = group_with_topic(dir.path(), &sync, 3);
    let (master_dir, slave_dir) = (master.data_dir.clone(), slave.data_dir.clone());
    let (master_addr, slave_addr) = (master.addr.to_string(), slave.addr.to_string());
    let (before, failed) = produce_tagged(&master_addr, "t", "before", 600);
    assert_eq!((before.len(), failed), (600, 0));

    // The master's disk is gone; it comes back empty where its slave knows it.
    master.kill();
    std::fs::remove_dir_all(&master_dir).unwrap();
    let master = restart_as_sync_master(&master_addr, &master_dir, &secret);
    wait_for_log(&master, "the master refusing writes", |line| {
        line.contains("this master takes no more writes") && line.contains("lost")
    });
    wait_for_log(&slave, "the slave keeping its log", |line| {
        line.contains("replication stopped") && line.contains("keeps its log")
    });
    // It lost its topics too: even creating one is refused.
    let refused = master
        .smq()
        .args(["topic", "create", "t", "--queues", "3"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "the master behind its slave took a write"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("takes no writes"),
        "{refused:?}"
    );
    assert_exactly(&read_log(&slave_addr, "t", 600), &before, "the slave");

    // Switchover: the slave restarts as the master, the old master as its slave.
    slave.stop();
    let new_master = restart_as_sync_master(&slave_addr, &slave_dir, &secret);
    wait_for_log(&new_master, "a promotion epoch", |line| {
        line.contains("began a master epoch") && line.contains("promoted=true")
    });
    master.stop();
    let old_master = restart_as_slave(&master_addr, &master_dir, &slave_addr, &secret);
    wait_for_in_sync(&new_master);
    both_hold_what_the_new_master_takes(&slave_addr, &master_addr, &before, 300);
    drop(old_master);
}

/// Issue 16 point 2. The old master of a switchover rejoins as a slave holding a tail its
/// successor never had (batches whose synchronous replication timed out: written, never
/// acknowledged): it drops exactly that tail, saying so in one line, and then holds what the
/// new master holds, byte for byte. No acknowledged message is lost or stored twice.
#[test]
fn an_old_master_rejoining_after_a_switchover_drops_only_its_unacknowledged_tail() {
    let dir = tempfile::tempdir().unwrap();
    let args = SYNC_TIMING_OUT_FAST;
    let (secret, master, slave) = group_with_topic(dir.path(), &args, 2);
    let (master_dir, slave_dir) = (master.data_dir.clone(), slave.data_dir.clone());
    let (master_addr, slave_addr) = (master.addr.to_string(), slave.addr.to_string());
    let (before, failed) = produce_tagged(&master_addr, "t", "before", 400);
    assert_eq!((before.len(), failed), (400, 0));

    // The slave freezes: still counted in sync, it acknowledges nothing, so these writes time
    // out on the master, which keeps them: its unacknowledged tail.
    slave.signal(libc::SIGSTOP);
    let (timed_out, failed) = produce_tagged(&master_addr, "t", "timed-out", 5);
    assert_eq!(
        (timed_out.len(), failed),
        (0, 5),
        "nothing was acknowledged"
    );
    master.kill();
    slave.kill();

    // The slave becomes the master (a promotion epoch) and takes writes; the old master
    // rejoins as its slave.
    let new_master = restart_as_sync_master(&slave_addr, &slave_dir, &secret);
    let old_master = restart_as_slave(&master_addr, &master_dir, &slave_addr, &secret);
    let dropped = wait_for_log(&old_master, "the dropped tail", |line| {
        line.contains("dropped the tail of this slave's log")
    });
    assert!(dropped.contains("epochs=[1]"), "{dropped}");
    let dropped_messages: usize = dropped
        .split("messages=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the line counts the messages");
    assert!(dropped_messages >= 5, "{dropped}");
    wait_for_in_sync(&new_master);
    both_hold_what_the_new_master_takes(&slave_addr, &master_addr, &before, 200);
    // Stopped slave first, so that it holds no more than its master.
    old_master.stop();
    new_master.stop();
    let (new_log, old_log) = (segments(&slave_dir), segments(&master_dir));
    for (name, bytes) in new_log.iter().filter(|(_, b)| b.iter().any(|b| *b != 0)) {
        assert!(old_log.get(name) == Some(bytes), "segment {name} differs");
    }
}

/// Copies every file of `from` into `to` (one level of subdirectories: commitlog, index).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Issue 16 points 3 and 4. A master restarted under synchronous replication serves only what
/// its slave acknowledged: batches whose replication timed out (the slave was frozen) were
/// written to the master's log, never acknowledged, and stay hidden from consumers until the
/// slave is back and holds them.
#[test]
fn a_restarted_sync_master_serves_only_what_its_slave_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let args = SYNC_TIMING_OUT_FAST;
    let (secret, master, slave) = group_with_topic(dir.path(), &args, 2);
    let (master_addr, master_dir) = (master.addr.to_string(), master.data_dir.clone());
    let (before, failed) = produce_tagged(&master_addr, "t", "before", 300);
    assert_eq!((before.len(), failed), (300, 0));
    slave.signal(libc::SIGSTOP);
    let (unreplicated, failed) = produce_tagged(&master_addr, "t", "unreplicated", 5);
    assert_eq!((unreplicated.len(), failed), (0, 5), "nothing acknowledged");
    master.kill();
    let master = restart_as_master(&master_addr, &master_dir, &secret, &args);
    // What it serves now is what its slave acknowledged before (as far as it wrote that down:
    // at most a second late), never the tail the slave does not hold.
    let served = read_log(&master_addr, "t", 0);
    let unacknowledged: Vec<_> = served
        .iter()
        .filter(|body| !before.contains(*body))
        .collect();
    assert!(
        unacknowledged.is_empty(),
        "the restarted master serves what no slave acknowledged: {unacknowledged:?}"
    );

    // The slave comes back and holds the tail: now it is acknowledged, and consumers see it.
    slave.signal(libc::SIGCONT);
    let tail: BTreeSet<Vec<u8>> = (0..5)
        .map(|n| format!("unreplicated-{n:05}").into_bytes())
        .collect();
    let all: BTreeSet<Vec<u8>> = before.union(&tail).cloned().collect();
    assert_exactly(
        &read_log(&master_addr, "t", 305),
        &all,
        "the restarted master, its slave back",
    );
    drop(master);
}

/// Issue 16 point 3, proto-spec.md section 10.1 with two slaves. Slave B falls out of sync and
/// the master acknowledges writes that only slave A holds; then the master loses the unflushed
/// tail of its log (simulated: its log files are put back as they were before those writes,
/// its fsynced holders file stays) and restarts. B comes back first and catches up: it does
/// not count, so the master takes no writes; A comes back holding what the master lost: the
/// master refuses writes and A keeps every acknowledged message.
#[test]
fn with_two_slaves_a_master_that_lost_its_tail_waits_for_the_slave_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--flush",
        "async",
        "--replication",
        "sync",
        "--replication-timeout-ms",
        "2000",
        "--replica-lag-time-max-ms",
        "1000",
    ];
    let (secret, master, slave_a) = group_with_topic(dir.path(), &args, 2);
    let slave_b = start_slave(&master, &secret, &dir.path().join("slave-b"), &[]);
    let (master_addr, master_dir) = (master.addr.to_string(), master.data_dir.clone());
    let (slave_a_addr, slave_b_addr) = (slave_a.addr.to_string(), slave_b.addr.to_string());
    let in_sync = |master: &Broker, addr: &str| {
        metric(master, &format!("smq_slave_in_sync{{slave=\"{addr}\"}}")) == Some(1.0)
    };
    wait_for("both slaves in sync", Duration::from_secs(30), || {
        let both = [&slave_a_addr, &slave_b_addr]
            .iter()
            .all(|addr| in_sync(&master, addr));
        both.then_some(())
    });
    let (before, failed) = produce_tagged(&master_addr, "t", "before", 200);
    assert_eq!((before.len(), failed), (200, 0));
    // What the master's disk will come back with.
    master.signal(libc::SIGSTOP);
    let snapshot = dir.path().join("master-snapshot");
    copy_dir(&master_dir, &snapshot);
    master.signal(libc::SIGCONT);

    // B freezes and drops out of the holders; A alone acknowledges these.
    slave_b.signal(libc::SIGSTOP);
    wait_for("B out of sync", Duration::from_secs(30), || {
        (!in_sync(&master, &slave_b_addr)).then_some(())
    });
    let (only_on_a, failed) = produce_tagged(&master_addr, "t", "only-on-a", 100);
    assert_eq!((only_on_a.len(), failed), (100, 0));

    // The master loses power: its log is what it was at the snapshot; its fsynced holders
    // file survives. A is away for now.
    slave_a.signal(libc::SIGSTOP);
    master.kill();
    if master_dir.join("holders").exists() {
        std::fs::copy(master_dir.join("holders"), snapshot.join("holders")).unwrap();
    }
    std::fs::remove_dir_all(&master_dir).unwrap();
    std::fs::rename(&snapshot, &master_dir).unwrap();
    let master = restart_as_master(&master_addr, &master_dir, &secret, &args);

    // B, which lacks the lost tail, catches up: the master still takes no writes.
    slave_b.signal(libc::SIGCONT);
    wait_for_log(&master, "B connected to the restarted master", |line| {
        line.contains("a slave connected") && line.contains(&slave_b_addr)
    });
    wait_for(
        "B caught up with the restarted master",
        Duration::from_secs(30),
        || {
            let caught_up = metric(&slave_b, "smq_replication_connected") == Some(1.0)
                && metric(&slave_b, "smq_replication_lag_bytes") == Some(0.0);
            caught_up.then_some(())
        },
    );
    assert!(
        !in_sync(&master, &slave_b_addr),
        "B counts as in sync, though it may lack what the master lost"
    );
    let (after, _) = produce_tagged(&master_addr, "t", "after", 3);
    assert!(
        after.is_empty(),
        "the master took writes with only B: {after:?}"
    );

    // A comes back: it holds more than the master, so the master refuses writes and A keeps
    // every acknowledged message, for the operator to promote it.
    slave_a.signal(libc::SIGCONT);
    wait_for_log(&master, "the master refusing writes", |line| {
        line.contains("this master takes no more writes") && line.contains("lost")
    });
    let acknowledged: BTreeSet<Vec<u8>> = before.union(&only_on_a).cloned().collect();
    assert_exactly(&read_log(&slave_a_addr, "t", 300), &acknowledged, "slave A");
    drop((master, slave_b));
}

/// Issue 16 points 5, 6 and 9. Committed consumer offsets follow the log to the slave: a
/// consumer of the group reading from the slave goes on after them. A slave that falls out of
/// sync and comes back makes the master log one line each way, and the slave's lag in seconds
/// is in its /metrics.
#[test]
fn committed_offsets_reach_the_slave_and_a_slave_out_of_sync_and_back_is_logged_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let (_secret, master, slave) =
        group_with_topic(dir.path(), &["--replica-lag-time-max-ms", "1000"], 1);
    let (master_addr, slave_addr) = (master.addr.to_string(), slave.addr.to_string());
    let (read, failed) = produce_tagged(&master_addr, "t", "read", 10);
    assert_eq!((read.len(), failed), (10, 0));
    runtime().block_on(async {
        let config = ClientConfig::new(master_addr.clone());
        let mut consumer = Consumer::connect(config, "t", Some("g"), StartFrom::Earliest)
            .await
            .unwrap();
        let mut seen = 0;
        while seen < 10 {
            seen += consumer.poll(1000).await.unwrap().len();
        }
        consumer.commit().await.unwrap();
    });
    let (unread, failed) = produce_tagged(&master_addr, "t", "unread", 5);
    assert_eq!((unread.len(), failed), (5, 0));
    // A consumer of group g on the slave starts after what the group committed on the master.
    wait_for(
        "the group's offsets on the slave",
        Duration::from_secs(30),
        || {
            runtime().block_on(async {
                let config = ClientConfig::new(slave_addr.clone());
                let mut consumer = Consumer::connect(config, "t", Some("g"), StartFrom::Earliest)
                    .await
                    .ok()?;
                let bodies: BTreeSet<Vec<u8>> = consumer
                    .poll(1000)
                    .await
                    .ok()?
                    .into_iter()
                    .map(|message| message.body.to_vec())
                    .collect();
                (bodies == unread).then_some(())
            })
        },
    );
    assert_eq!(metric(&slave, "smq_replication_lag_seconds"), Some(0.0));

    slave.signal(libc::SIGSTOP);
    wait_for_log(&master, "the slave falling out of sync", |line| {
        line.contains("a slave fell out of sync") && line.contains(&slave_addr)
    });
    slave.signal(libc::SIGCONT);
    wait_for_log(&master, "the slave in sync again", |line| {
        line.contains("a slave is in sync again") && line.contains(&slave_addr)
    });
}

/// The broker's commit log end and fsynced position, from its /metrics.
fn log_positions(broker: &Broker) -> (u64, u64) {
    let end = metric(broker, "smq_log_end_position").expect("smq_log_end_position");
    let flushed = metric(broker, "smq_log_flushed_position").expect("smq_log_flushed_position");
    (end as u64, flushed as u64)
}

#[test]
fn under_sync_flush_and_sync_replication_an_acknowledged_batch_is_fsynced_on_master_and_slave() {
    let (dir, secret, master) =
        master_in_temp_dir("fsync", &["--flush", "sync", "--replication", "sync"]);
    // The slave flushes asynchronously, once an hour: only the master's --flush sync (which
    // makes it fsync each chunk before acknowledging it) gets its copy to disk in time.
    let slave = start_slave(
        &master,
        &secret,
        &dir.path().join("slave"),
        &["--flush", "async", "--flush-interval-ms", "3600000"],
    );
    wait_for_in_sync(&master);
    let config = ClientConfig::new(master.addr.to_string());
    let runtime = runtime();
    let producer = runtime.block_on(async { smq_tests::topic_and_producer(&config, "t", 2).await });
    // One batch at a time: when its acknowledgement arrives, nothing else is written, so the
    // master's log end is that batch's end.
    for sequence in 0..20 {
        runtime
            .block_on(producer.send("t", Message::from_body(body(sequence % 3, sequence))))
            .unwrap();
        let (end, master_flushed) = log_positions(&master);
        let (_, slave_flushed) = log_positions(&slave);
        assert!(
            master_flushed >= end && slave_flushed >= end,
            "batch {sequence} ending at {end} was acknowledged, but the master fsynced only \
             below {master_flushed} and the slave below {slave_flushed}"
        );
    }
    // Many batches in flight: after the last acknowledgement, the whole log.
    let pending: Vec<_> = runtime.block_on(async {
        let mut pending = Vec::new();
        for sequence in 0..5_000 {
            let message = Message::from_body(body(sequence % 7, sequence));
            pending.push(producer.start_send("t", message).await.unwrap());
        }
        pending
    });
    for delivery in pending {
        runtime.block_on(delivery.wait()).unwrap();
    }
    let (end, master_flushed) = log_positions(&master);
    let (_, slave_flushed) = log_positions(&slave);
    println!(
        "log end {end}: fsynced below {master_flushed} on the master, {slave_flushed} on the slave"
    );
    assert!(master_flushed >= end && slave_flushed >= end);
}

#[test]
fn under_sync_flush_a_slaves_acknowledgement_counts_only_what_it_fsynced() {
    let (_dir, _secret, master) =
        master_in_temp_dir("right", &["--flush", "sync", "--replication", "sync"]);
    smq_tests::succeeds(master.smq().args(["topic", "create", "t", "--queues", "1"]));
    // A hand-written slave with the secret: it holds whatever it fetched, and says how much
    // of it it fsynced.
    let mut peer = RawPeer::connect(&master);
    let hello = peer.call(ReplicaRequest::Hello(ReplicaHello {
        cluster: "smq".into(),
        group: "broker-a".into(),
        slave_addr: "127.0.0.1:1".into(),
        secret: Bytes::from_static(b"right"),
        log_end: 0,
        segment_bytes: 16 << 20,
        epochs: Vec::new(),
    }));
    match hello {
        Some(ReplicaResponse::Hello(hello)) => assert!(hello.fsync_acks),
        other => panic!("admitted, with fsync_acks: {other:?}"),
    }
    let mut position = 0;
    let mut fetch = |peer: &mut RawPeer, fsynced: bool| {
        let request = ReplicaRequest::Fetch(ReplicaFetch {
            position,
            flushed_position: if fsynced { position } else { 0 },
            max_bytes: 1 << 20,
            max_wait_ms: 100,
        });
        match peer.call(request) {
            Some(ReplicaResponse::Fetch(answer)) => {
                position = answer.position + answer.bytes.len() as u64;
            }
            other => panic!("a fetch answer: {other:?}"),
        }
    };
    // Caught up with the empty log: in sync, and so a holder.
    fetch(&mut peer, false);
    fetch(&mut peer, false);
    wait_for_in_sync(&master);

    let runtime = runtime();
    let mut config = ClientConfig::new(master.addr.to_string());
    (config.ack_timeout_ms, config.attempt_timeout_ms) = (1_000, 1_500);
    config.send_timeout_ms = 1_500;
    let producer = runtime.block_on(Producer::connect(config)).unwrap();
    // Runs one send while the peer fetches (fsynced or not), until the send is answered.
    let mut send_while_fetching = |fsynced: bool, body: &'static str| {
        let producer = producer.clone();
        let send = runtime.spawn(async move { producer.send("t", Message::from_body(body)).await });
        while !send.is_finished() {
            fetch(&mut peer, fsynced);
        }
        runtime.block_on(send).unwrap()
    };
    // The peer holds every byte but fsynced none: that acknowledges nothing.
    let unsynced = send_while_fetching(false, "held, not fsynced");
    assert!(
        unsynced.is_err(),
        "a write acknowledged by a slave that fsynced none of it: {unsynced:?}"
    );
    println!("not fsynced on the slave: {}", unsynced.unwrap_err());
    // The same peer, saying it fsynced what it holds: acknowledged.
    let fsynced = send_while_fetching(true, "held and fsynced");
    assert!(fsynced.is_ok(), "{fsynced:?}");
}

#[test]
fn a_dead_masters_backlog_is_read_from_its_slave_within_one_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "backlog");
    let heartbeat_timeout = Duration::from_millis(1500);
    let timeout_ms = heartbeat_timeout.as_millis().to_string();
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", &timeout_ms]);
    let ns = nameserver.url();
    let master = start_master(
        &secret,
        &dir.path().join("master"),
        &["--nameserver", &ns, "--replication", "sync"],
    );
    let slave = start_slave(
        &master,
        &secret,
        &dir.path().join("slave"),
        &["--nameserver", &ns],
    );
    smq_tests::failover::wait_until_registered(&nameserver, 2);
    wait_for_in_sync(&master);
    smq_tests::succeeds(
        nameserver
            .smq()
            .args(["topic", "create", "t", "--queues", "4"]),
    );
    let runtime = runtime();
    // Routes asked again only after errors: the background refresh does not help.
    let config = nameserver.client_config(60_000);
    let backlog = 2_000;
    runtime.block_on(async {
        let producer = Producer::connect(config.clone()).await.unwrap();
        let mut pending = Vec::new();
        for sequence in 0..backlog {
            let message = Message::from_body(format!("backlog {sequence}"));
            pending.push(producer.start_send("t", message).await.unwrap());
        }
        for delivery in pending {
            delivery.wait().await.unwrap();
        }
    });
    wait_until_caught_up(&slave, "the backlog on the slave");

    let died = Instant::now();
    master.kill();
    // A consumer that starts now, as an application restarting it would: its first routes
    // still name the dead master (connecting fails, retryably, until the NameServer drops it).
    let mut unread: BTreeSet<String> = (0..backlog).map(|n| format!("backlog {n}")).collect();
    runtime.block_on(async {
        let mut consumer = loop {
            match Consumer::connect(config.clone(), "t", None, StartFrom::Earliest).await {
                Ok(consumer) => break consumer,
                Err(error) => {
                    assert!(error.is_retryable(), "{error}");
                    tokio::time::sleep(smq_client::consumer::FETCH_RETRY_DELAY).await;
                }
            }
        };
        while !unread.is_empty() {
            assert!(
                died.elapsed() < Duration::from_secs(30),
                "{} of the backlog unread",
                unread.len()
            );
            match consumer.poll(backlog).await {
                Ok(messages) => {
                    for message in messages {
                        unread.remove(std::str::from_utf8(&message.body).unwrap());
                    }
                }
                Err(error) => assert!(error.is_retryable(), "{error}"),
            }
        }
    });
    let read_after = died.elapsed();
    // The NameServer drops the master at most one heartbeat timeout after its last heartbeat
    // (before its death); the connect retried every FETCH_RETRY_DELAY (as the consumer retries
    // a failed fetch, asking for the routes again) then finds the slave in the routes, and its
    // fetches are answered at once: one retry interval for the routes, one for the reads.
    let retry = smq_client::consumer::FETCH_RETRY_DELAY;
    let bound = heartbeat_timeout + 2 * retry;
    println!(
        "the dead master's backlog of {backlog} messages was read from its slave {} ms after \
         its death (heartbeat timeout {} ms, bound {} ms)",
        read_after.as_millis(),
        heartbeat_timeout.as_millis(),
        bound.as_millis()
    );
    assert!(
        read_after <= bound,
        "read {} ms after the death, above the bound of {} ms",
        read_after.as_millis(),
        bound.as_millis()
    );
}

#[test]
fn a_slave_that_caught_up_is_not_held_back_by_the_copy_pace() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "pace");
    // A pace far below what is written next: only the copy of what the master held when the
    // slave connected (nothing here) is paced.
    let pace_bytes_per_sec = 1_000_000;
    let pace = pace_bytes_per_sec.to_string();
    let master = start_master(
        &secret,
        &dir.path().join("master"),
        &[
            "--replication",
            "sync",
            "--replication-max-bytes-per-sec",
            &pace,
        ],
    );
    let _slave = start_slave(&master, &secret, &dir.path().join("slave"), &[]);
    wait_for_in_sync(&master);
    let config = ClientConfig::new(master.addr.to_string());
    let (count, message_bytes) = (4_000, 2_000);
    let started = Instant::now();
    let messages = (0..count).map(|_| Message::from_body(vec![b'p'; message_bytes]));
    create_and_produce(&config, "t", 2, messages);
    let took = started.elapsed();
    let paced = Duration::from_secs_f64((count * message_bytes) as f64 / pace_bytes_per_sec as f64);
    println!(
        "{count} sync-replicated messages of {message_bytes} bytes in {} ms; at the pace they \
         would take {} ms",
        took.as_millis(),
        paced.as_millis()
    );
    assert!(took < paced, "the slave's copy of new writes was paced");
}

/// Index files under `data_dir/index/topic`, by queue directory.
fn index_files_of(data_dir: &Path, topic: &str) -> BTreeMap<String, usize> {
    let Ok(queues) = std::fs::read_dir(data_dir.join("index").join(topic)) else {
        return BTreeMap::new();
    };
    queues
        .map(|queue| {
            let queue = queue.unwrap();
            let files = std::fs::read_dir(queue.path()).unwrap().count();
            (queue.file_name().to_string_lossy().into_owned(), files)
        })
        .collect()
}

/// A new topic's queue indexes are made when it is created, on the master and, once it copies
/// the topic, on the slave, before any batch: its first batches make no file on either
/// broker's worker thread (issue 14 point 2).
#[test]
fn a_new_topics_queue_indexes_are_made_on_master_and_slave_before_its_first_batch() {
    let (dir, secret, master) = master_in_temp_dir("prepare", &["--flush", "async"]);
    let slave = start_slave(&master, &secret, &dir.path().join("slave"), &[]);
    wait_for_in_sync(&master);
    let config = ClientConfig::new(master.addr.to_string());
    runtime().block_on(async {
        let admin = smq_client::Admin::connect(config).await.unwrap();
        admin.create_topic("ready", 4).await.unwrap();
    });
    let every_queue: BTreeMap<String, usize> = (0..4).map(|q| (q.to_string(), 1)).collect();
    assert_eq!(
        index_files_of(&master.data_dir, "ready"),
        every_queue,
        "the master made each queue's index as it created the topic"
    );
    wait_for(
        "the slave makes the copied topic's queue indexes",
        Duration::from_secs(20),
        || (index_files_of(&slave.data_dir, "ready") == every_queue).then_some(()),
    );
}
