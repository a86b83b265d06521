//! The `smq` CLI against a real broker: messages come back exactly, long polls answer at once
//! without burning CPU, `bench e2e` and `bench mixed` receive what they send (e2e on the threads
//! it was given, the broker on its `--worker-threads`), and bad input ends in a clear
//! error and a non-zero exit; the library's warnings reach stderr (RUST_LOG).

use std::process::Stdio;
use std::time::Duration;

use smq_tests::{ok, process_cpu_time, run_with_stdin as run, wait_for, Broker, NameServer};

fn create_topic(broker: &Broker, topic: &str, queues: u32) {
    ok(run(
        broker
            .smq()
            .args(["topic", "create", topic, "--queues", &queues.to_string()]),
        b"",
    ));
}

#[test]
fn cli_round_trips_100000_keyed_messages_in_order() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "orders", 4);
    let lines: Vec<String> = (0..100_000)
        .map(|i| format!("order-{i:06}-{}", "x".repeat(i % 50)))
        .collect();
    let input = lines.join("\n") + "\n";
    let produced = ok(run(
        broker
            .smq()
            .args(["produce", "orders", "--key", "customer-7"]),
        input.as_bytes(),
    ));
    let report = String::from_utf8_lossy(&produced.stderr);
    assert!(
        report.contains("100000"),
        "produce should say how many were sent: {report}"
    );

    let consumed = ok(run(
        broker.smq().args([
            "consume",
            "orders",
            "--group",
            "audit",
            "--from",
            "earliest",
            "--count",
            "100000",
            "--idle-timeout",
            "10",
        ]),
        b"",
    ));
    let got: Vec<&str> = std::str::from_utf8(&consumed.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(got.len(), lines.len());
    assert!(
        got.iter().zip(&lines).all(|(a, b)| a == b),
        "one key keeps its order, content intact"
    );
}

#[test]
fn cli_round_trips_unkeyed_messages_across_queues() {
    let broker = Broker::start(&["--flush", "async"]);
    create_topic(&broker, "events", 4);
    let lines: Vec<String> = (0..20_000).map(|i| format!("event-{i}")).collect();
    ok(run(
        broker.smq().args(["produce", "events"]),
        (lines.join("\n") + "\n").as_bytes(),
    ));
    let consumed = ok(run(
        broker.smq().args([
            "consume",
            "events",
            "--group",
            "g",
            "--from",
            "earliest",
            "--idle-timeout",
            "2",
        ]),
        b"",
    ));
    let mut got: Vec<String> = String::from_utf8(consumed.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let mut expected = lines.clone();
    expected.sort();
    assert_eq!(got, expected);
    // A second consume of the same group starts after the committed offsets: nothing is left.
    let again = ok(run(
        broker
            .smq()
            .args(["consume", "events", "--group", "g", "--idle-timeout", "1"]),
        b"",
    ));
    assert!(again.stdout.is_empty(), "committed offsets are honoured");
}

#[test]
fn a_waiting_consumer_and_its_broker_burn_no_cpu_and_the_message_arrives() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "live", 1);
    let consumer = broker
        .smq()
        .args([
            "consume",
            "live",
            "--group",
            "watcher",
            "--from",
            "latest",
            "--count",
            "1",
            "--idle-timeout",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the consumer's fetch is parked at the end of the queue, measure two idle seconds.
    wait_for("the consumer's long poll", Duration::from_secs(10), || {
        (broker
            .metric("smq_fetches_waiting")
            .is_some_and(|waiting| waiting >= 1.0))
        .then_some(())
    });
    // The less used of two windows: polling instead of waiting burns both, while the broker's
    // start-up work (the next segment made and read ahead) may still reach into the first.
    let window = || {
        let (broker_cpu, consumer_cpu) = (broker.cpu_time(), process_cpu_time(consumer.id()));
        std::thread::sleep(Duration::from_secs(2));
        (
            broker.cpu_time() - broker_cpu,
            process_cpu_time(consumer.id()) - consumer_cpu,
        )
    };
    let ((broker_first, consumer_first), (broker_second, consumer_second)) = (window(), window());
    let broker_used = broker_first.min(broker_second);
    let consumer_used = consumer_first.min(consumer_second);
    // Polling instead of waiting would use a core (2 s); a tenth of the interval leaves room
    // for a busy machine's accounting and the broker's timers.
    let bound = Duration::from_millis(200);
    assert!(
        broker_used <= bound,
        "broker used {broker_used:?} of CPU in 2 s of waiting"
    );
    assert!(
        consumer_used <= bound,
        "consumer used {consumer_used:?} of CPU in 2 s of waiting"
    );

    // Delivered (how soon after the append, library.rs measures: here it would include
    // starting the `smq produce` process).
    ok(run(broker.smq().args(["produce", "live"]), b"hello\n"));
    let output = consumer.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
}

/// Issue 13 point 7: `smq consume` is never stuck and does not give up: its broker is killed
/// and restarted under it (same address), and it says once that it retries, waits without
/// spinning, and goes on with the messages produced after the restart.
#[test]
fn smq_consume_goes_on_across_a_broker_crash_and_restart() {
    use std::io::BufRead;
    let broker = Broker::start(&["--flush", "sync"]);
    create_topic(&broker, "events", 1);
    ok(run(broker.smq().args(["produce", "events"]), b"one\ntwo\n"));
    let mut consumer = broker
        .smq()
        .args(["consume", "events", "--group", "g", "--count", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let received = received.clone();
        let stdout = std::io::BufReader::new(consumer.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines() {
                received.lock().unwrap().push(line.unwrap());
            }
        })
    };
    let count = || received.lock().unwrap().len();
    wait_for("the first two messages", Duration::from_secs(20), || {
        (count() == 2).then_some(())
    });

    let broker = broker.kill_and_restart(&["--flush", "sync"]);
    ok(run(
        broker.smq().args(["produce", "events"]),
        b"three\nfour\n",
    ));
    let status = wait_for("smq consume to end", Duration::from_secs(30), || {
        consumer.try_wait().unwrap()
    });
    reader.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut consumer.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        *received.lock().unwrap(),
        ["one", "two", "three", "four"],
        "{stderr}"
    );
    let retrying = stderr
        .lines()
        .filter(|line| line.contains("retrying"))
        .count();
    assert!(
        (1..=3).contains(&retrying),
        "says that it retries, not once per attempt: {stderr}"
    );
}

#[test]
fn producing_to_a_missing_topic_names_it_and_fails() {
    let broker = Broker::start(&[]);
    let output = run(broker.smq().args(["produce", "nowhere"]), b"lost?\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nowhere") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn an_oversized_message_is_refused_with_its_size_and_the_limit() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "big", 1);
    let mut input = vec![b'a'; 5 * 1024 * 1024];
    input.push(b'\n');
    let output = run(broker.smq().args(["produce", "big"]), &input);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("4194304") || stderr.contains("4 MiB"),
        "the limit is named: {stderr}"
    );
    // The broker is fine and nothing was stored.
    let empty = ok(run(
        broker.smq().args([
            "consume",
            "big",
            "--group",
            "g",
            "--from",
            "earliest",
            "--idle-timeout",
            "1",
        ]),
        b"",
    ));
    assert!(empty.stdout.is_empty());
    wait_for("broker still answers", Duration::from_secs(5), || {
        run(broker.smq().args(["topic", "list"]), b"")
            .status
            .success()
            .then_some(())
    });
}

/// `bench e2e` at 2,000 msg/s for 1 s with `extra` flags: its JSON summary.
fn bench_e2e(broker: &Broker, extra: &[&str]) -> serde_json::Value {
    let output = ok(run(
        broker
            .smq()
            .args(["bench", "e2e", "--topic", "e2e", "--queues", "1"])
            .args(["--rate", "2000", "--duration", "1", "--json"])
            .args(extra),
        b"",
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert!(summary["messages"].as_u64().unwrap() > 1000, "{summary}");
    assert!(summary["latency_ms"]["p99"].is_f64(), "{summary}");
    summary
}

#[test]
fn bench_e2e_runs_on_one_thread_unless_told_otherwise() {
    let broker = Broker::start(&[]);
    assert_eq!(bench_e2e(&broker, &[])["threads"], 1);
    assert_eq!(bench_e2e(&broker, &["--threads", "3"])["threads"], 3);
}

#[test]
fn the_broker_serves_on_the_worker_threads_asked_for_or_one_per_core_less_one() {
    let workers = |broker: &Broker| {
        broker
            .log_lines()
            .iter()
            .find(|line| line.contains("broker started"))
            .and_then(|line| line.split("workers=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    let three = Broker::start(&["--worker-threads", "3"]);
    assert_eq!(workers(&three).as_deref(), Some("3"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let default = Broker::start(&[]);
    assert_eq!(
        workers(&default),
        Some(cores.saturating_sub(1).max(1).to_string())
    );
    // Both serve: a message goes through each.
    for broker in [&three, &default] {
        assert_eq!(bench_e2e(broker, &["--threads", "0"])["threads"], cores);
    }
}

#[test]
fn bench_mixed_receives_every_message_its_producers_sent() {
    let broker = Broker::start(&[]);
    // 4 producers share 2,000 msg/s; 3 consumers split 8 queues (3, 3 and 2).
    let output = ok(run(
        broker.smq().args([
            "bench",
            "mixed",
            "--topic",
            "mixed",
            "--queues",
            "8",
            "--producers",
            "4",
            "--consumers",
            "3",
            "--rate",
            "2000",
            "--message-bytes",
            "100",
            "--duration",
            "2",
            "--json",
        ]),
        b"",
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    let (sent, received) = (&summary["sent"], &summary["received"]);
    assert!(received.as_u64().unwrap() > 0, "{summary}");
    assert_eq!(sent, received, "{summary}");
    assert_eq!(summary["messages"], *received, "{summary}");
    for quantile in ["p50", "p99", "p99_9", "p99_99", "max"] {
        assert!(summary["latency_ms"][quantile].is_f64(), "{summary}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("received:"), "a progress line: {stderr}");
}

#[test]
fn a_consumer_behind_retention_moves_to_the_earliest_or_latest_offset_says_so_and_goes_on() {
    let broker = Broker::start(&[
        "--flush",
        "async",
        "--segment-bytes",
        "1048576",
        "--retention-bytes",
        "2097152",
        "--retention-check-interval-ms",
        "20",
    ]);
    create_topic(&broker, "old", 1);
    ok(run(
        broker.smq().args(["produce", "old"]),
        b"first\nsecond\n",
    ));
    // Two groups commit offset 2 of the queue.
    for group in ["reader", "skipper"] {
        let output = ok(run(
            broker
                .smq()
                .args(["consume", "old", "--group", group, "--count", "2"]),
            b"",
        ));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "first\nsecond\n");
    }
    // About 5 MB more: retention deletes the first segments, offset 2 among them.
    let body = "x".repeat(999);
    let input: String = (0..5000).map(|n| format!("{n:05}{body}\n")).collect();
    ok(run(broker.smq().args(["produce", "old"]), input.as_bytes()));
    let first_segment = broker.data_dir.join("commitlog").join(format!("{:020}", 0));
    wait_for(
        "retention to delete the first segment",
        Duration::from_secs(10),
        || (!first_segment.exists()).then_some(()),
    );

    // From earliest: the retained messages, after one line saying what was skipped.
    let output = ok(run(
        broker
            .smq()
            .args(["consume", "old", "--group", "reader", "--idle-timeout", "1"]),
        b"",
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let received: Vec<&str> = stdout.lines().collect();
    assert!(!received.is_empty() && received.len() < 5000, "{stderr}");
    let first_kept: u64 = received[0][..5].parse().expect("a numbered message");
    // Offsets: "first" 0, "second" 1, then message n at n + 2.
    let earliest = first_kept + 2;
    assert_eq!(received.last().map(|line| &line[..5]), Some("04999"));
    assert_eq!(received.len() as u64, 5002 - earliest);
    let resets: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("out of range"))
        .collect();
    assert_eq!(
        resets,
        [format!(
            "smq consume: topic old queue broker-a/0: offset 2 is out of range (earliest {earliest}, next 5002): moved to offset {earliest}, {} messages skipped",
            earliest - 2
        )],
        "{stderr}"
    );

    // From latest: nothing more, one line, and the commit makes the next run quiet.
    for round in 0..2 {
        let output = ok(run(
            broker.smq().args([
                "consume",
                "old",
                "--group",
                "skipper",
                "--from",
                "latest",
                "--idle-timeout",
                "1",
            ]),
            b"",
        ));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.stdout.is_empty(), "{stderr}");
        let resets = stderr
            .lines()
            .filter(|l| l.contains("out of range"))
            .count();
        assert_eq!(resets, usize::from(round == 0), "round {round}: {stderr}");
        if round == 0 {
            assert!(
                stderr.contains("offset 2 is out of range")
                    && stderr.contains("moved to offset 5002, 5000 messages skipped"),
                "{stderr}"
            );
        }
    }
    broker.stop();
}

#[test]
fn library_warnings_reach_stderr_under_rust_log() {
    let stderr = consume_losing_its_nameserver(None);
    println!("smq consume's stderr without RUST_LOG:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("NameServer")),
        "by default the library's warnings show:\n{stderr}"
    );
    let stderr = consume_losing_its_nameserver(Some("error"));
    assert!(
        !stderr.contains("WARN"),
        "RUST_LOG=error hides them:\n{stderr}"
    );
}

/// The stderr of an `smq consume` member (with RUST_LOG as given) whose NameServer stops while
/// it holds a queue, then stopped with SIGTERM: the library warns that member heartbeats and
/// the leave find no NameServer.
fn consume_losing_its_nameserver(rust_log: Option<&str>) -> String {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1000"]);
    let broker = Broker::start(&["--nameserver", &nameserver.url(), "--group", "broker-a"]);
    wait_for("the broker to register", Duration::from_secs(30), || {
        let cluster = nameserver.get("/v1/cluster").1;
        cluster.contains("broker-a").then_some(())
    });
    ok(run(
        nameserver
            .smq()
            .args(["topic", "create", "logged", "--queues", "1"]),
        b"",
    ));
    let mut command = nameserver.smq();
    command
        .args([
            "consume",
            "logged",
            "--group",
            "g",
            "--session-timeout-ms",
            "1500",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let consumer = command.spawn().expect("starting smq consume");
    // Holding the queue: past connecting, so SIGTERM makes it leave cleanly.
    wait_for(
        "the member to hold the queue",
        Duration::from_secs(30),
        || {
            let (status, body) = nameserver.get("/v1/groups/g");
            let view: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && view["topics"][0]["queues"][0]["owner"].is_string()).then_some(())
        },
    );
    nameserver.stop();
    // SAFETY: plain syscall on a child we have not reaped.
    unsafe { libc::kill(consumer.id() as i32, libc::SIGTERM) };
    let output = ok(consumer
        .wait_with_output()
        .expect("waiting for smq consume"));
    broker.stop();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A "broker" that answers the first request with a frame whose body is one byte: the CLI's
/// error names the unreadable answer and the codec's reason, each once.
#[test]
fn an_unreadable_answer_is_reported_with_each_cause_once() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).unwrap();
        let mut request = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut request).unwrap();
        let correlation_id = &request[4..8]; // after the api key and version
        let mut answer = 5u32.to_be_bytes().to_vec();
        answer.extend_from_slice(correlation_id);
        answer.push(0xff);
        stream.write_all(&answer).unwrap();
        // Keep the connection open until the CLI has read the answer and gone.
        let _ = stream.read(&mut [0u8; 1]);
    });
    let output = std::process::Command::new(smq_tests::binary("smq"))
        .args(["topic", "list", "--broker", &addr.to_string()])
        .env_remove("SMQ_NAMESERVER")
        .env_remove("SMQ_SRV")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    fake.join().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("unreadable"))
        .unwrap_or_else(|| panic!("no unreadable answer reported: {stderr}"));
    assert!(line.contains(&format!("from broker {addr}")), "{line}");
    let causes: Vec<&str> = line.split(": ").collect();
    let mut distinct = causes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), causes.len(), "a cause said twice: {line}");
    assert!(causes.len() >= 3, "the codec's reason is missing: {line}");
}
