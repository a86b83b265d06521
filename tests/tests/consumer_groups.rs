//! Consumer groups that share a topic, through the real binaries: `smq consume` members of one
//! consumer group coordinated by a NameServer over a topic of 8 queues on two broker groups.
//! Each test prints what it measured (duplicates, gaps, move times).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
use smq_client::nameserver_client::NameServerClient;
use smq_client::{ClientConfig, Message, Producer};
use smq_tests::failover::registered;
use smq_tests::{run_with_stdin, wait_for, Broker, NameServer};

/// Members' session timeout: a killed member's queues move this long after its last heartbeat.
const SESSION_MS: u64 = 2_000;
/// How often members commit what they printed.
const COMMIT_MS: u64 = 200;
const TOPIC: &str = "clicks";

/// A NameServer (1 s heartbeat timeout, so a 1 s warm-up) and two broker groups, g1 and g2,
/// with topic `clicks` of 4 queues in each.
struct Cluster {
    nameserver: NameServer,
    brokers: Vec<Broker>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with_g1_in(None)
    }

    /// With g1's data in `g1_data_dir` (kept when g1 stops), if given.
    fn start_with_g1_in(g1_data_dir: Option<&std::path::Path>) -> Cluster {
        let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1000"]);
        let brokers = vec![
            broker(&nameserver, "g1", g1_data_dir),
            broker(&nameserver, "g2", None),
        ];
        let mut want: Vec<String> = brokers.iter().map(|b| b.addr.to_string()).collect();
        want.sort();
        wait_for("both brokers registered", Duration::from_secs(10), || {
            (registered(&nameserver) == want).then_some(())
        });
        smq_ok(
            &nameserver,
            &[
                "topic", "create", TOPIC, "--queues", "4", "--groups", "g1,g2",
            ],
        );
        Cluster {
            nameserver,
            brokers,
        }
    }

    fn config(&self) -> ClientConfig {
        let mode = DiscoveryMode::Static(vec![self.nameserver.url()]);
        let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
        let mut config = ClientConfig::with_nameserver(NameServerClient::new(Arc::new(discovery)));
        config.route_refresh_ms = 500;
        config
    }
}

/// 64 MiB segments: seven tests of two brokers each preallocate 2 segments per broker.
const SEGMENT_BYTES: &str = "67108864";

fn broker(nameserver: &NameServer, group: &str, data_dir: Option<&std::path::Path>) -> Broker {
    let urls = nameserver.url();
    broker_of(&urls, group, data_dir)
}

/// A broker of `group` heartbeating to the NameServers `urls` (URL[,URL]).
fn broker_of(urls: &str, group: &str, data_dir: Option<&std::path::Path>) -> Broker {
    let args = [
        "--nameserver",
        urls,
        "--group",
        group,
        "--segment-bytes",
        SEGMENT_BYTES,
    ];
    match data_dir {
        Some(dir) => Broker::start_in(dir, &args),
        None => Broker::start(&args),
    }
}

fn smq_ok(nameserver: &NameServer, args: &[&str]) -> String {
    let output = nameserver.smq().args(args).output().expect("running smq");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "smq {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// One `smq consume clicks --group G` process; a thread collects its lines with their arrival
/// times.
struct Member {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Member {
    fn start(nameserver: &NameServer, consumer_group: &str) -> Member {
        Member::start_with(&nameserver.url(), consumer_group)
    }

    /// A member asking the NameServers `urls` (URL[,URL]).
    fn start_with(urls: &str, consumer_group: &str) -> Member {
        let mut child = Command::new(smq_tests::binary("smq"))
            .env("SMQ_NAMESERVER", urls)
            .env_remove("SMQ_BROKER")
            .args(["consume", TOPIC, "--group", consumer_group])
            .args(["--session-timeout-ms", &SESSION_MS.to_string()])
            .args(["--commit-interval-ms", &COMMIT_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting smq consume");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Member {
            child: Some(child),
            lines,
            stderr,
            reader: Some(reader),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether `member_id` (client id, pid, a random part) is this process's.
    fn is(&self, member_id: &str) -> bool {
        member_id.contains(&format!("-{}-", self.pid()))
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for a clean exit and for its last lines.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain syscall on a pid we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_for("smq consume exits", Duration::from_secs(15), || {
            child.try_wait().expect("try_wait")
        });
        let stderr = self.stderr.lock().unwrap().join("\n");
        assert!(
            status.success(),
            "smq consume exited with {status}: {stderr}"
        );
        self.reader.take().unwrap().join().unwrap();
    }

    /// SIGKILL, then waits for the lines it printed before.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("waiting for the killed member");
        self.reader.take().unwrap().join().unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /v1/groups/{group}`, if the NameServer knows the group.
fn group_view(nameserver: &NameServer, consumer_group: &str) -> Option<serde_json::Value> {
    let (status, body) = nameserver.get(&format!("/v1/groups/{consumer_group}"));
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    Some(serde_json::from_str(&body).expect("JSON"))
}

/// Per member id, the queues it holds (`g1/0`), from the NameServer's API; asserts that no
/// queue has two owners.
fn owners(nameserver: &NameServer, consumer_group: &str) -> BTreeMap<String, BTreeSet<String>> {
    let Some(view) = group_view(nameserver, consumer_group) else {
        return BTreeMap::new();
    };
    let mut by_member = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for topic in view["topics"].as_array().unwrap() {
        for member in topic["members"].as_array().unwrap() {
            let id = member["member_id"].as_str().unwrap().to_owned();
            let mut queues = BTreeSet::new();
            for queue in member["queues"].as_array().unwrap() {
                let name = format!(
                    "{}/{}",
                    queue["broker_group"].as_str().unwrap(),
                    queue["queue_id"]
                );
                if let Some(other) = seen.insert(name.clone(), id.clone()) {
                    panic!("queue {name} has two owners: {other} and {id}");
                }
                queues.insert(name);
            }
            by_member.insert(id, queues);
        }
    }
    by_member
}

/// Waits until `members` live members hold all 8 queues between them.
fn wait_balanced(
    nameserver: &NameServer,
    consumer_group: &str,
    members: usize,
) -> BTreeMap<String, BTreeSet<String>> {
    wait_for(
        &format!("{members} members holding all 8 queues"),
        Duration::from_secs(20),
        || {
            let owners = owners(nameserver, consumer_group);
            let held: usize = owners.values().map(BTreeSet::len).sum();
            let even = owners.values().all(|q| q.len() >= 8 / members);
            (owners.len() == members && held == 8 && even).then_some(owners)
        },
    )
}

/// Sends `count` messages at about `per_second` from a thread: `m{i}`, or with `keys` keyed
/// messages `k{key}:{seq}` (seq counts per key) with key `k{key}`.
fn produce(
    config: ClientConfig,
    count: usize,
    per_second: usize,
    keys: Option<usize>,
) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let producer = Producer::connect(config).await.unwrap();
            let mut sent = Vec::with_capacity(count);
            let mut pending = Vec::with_capacity(count);
            let start = tokio::time::Instant::now();
            for i in 0..count {
                let (body, key) = match keys {
                    Some(keys) => (
                        format!("k{}:{}", i % keys, i / keys),
                        Some(format!("k{}", i % keys)),
                    ),
                    None => (format!("m{i}"), None),
                };
                let mut message = Message::from_body(body.clone());
                if let Some(key) = key {
                    message.key = key.into_bytes();
                }
                pending.push(producer.start_send(TOPIC, message).await.unwrap());
                sent.push(body);
                let due = start + Duration::from_secs_f64((i + 1) as f64 / per_second as f64);
                tokio::time::sleep_until(due).await;
            }
            producer.flush().await.unwrap();
            for delivery in pending {
                delivery.wait().await.unwrap();
            }
            sent
        })
    })
}

/// Every line the members printed, and how many were printed more than once.
fn tally(members: &[&Member]) -> (BTreeSet<String>, usize) {
    let all: Vec<String> = members
        .iter()
        .flat_map(|m| m.lines().into_iter().map(|(_, line)| line))
        .collect();
    let distinct: BTreeSet<String> = all.iter().cloned().collect();
    let duplicates = all.len() - distinct.len();
    (distinct, duplicates)
}

fn wait_all_delivered(members: &[&Member], sent: &[String]) {
    let want: BTreeSet<String> = sent.iter().cloned().collect();
    wait_for("every message delivered", Duration::from_secs(30), || {
        let (got, _) = tally(members);
        want.is_subset(&got).then_some(())
    });
}

#[test]
fn three_members_share_eight_queues_one_owner_each_and_a_killed_members_queues_move_within_its_session(
) {
    let cluster = Cluster::start();
    let ns = &cluster.nameserver;
    let mut members: Vec<Member> = (0..3).map(|_| Member::start(ns, "shared")).collect();
    let before = wait_balanced(ns, "shared", 3);
    println!("assignment of 3 members: {before:?}");

    let producer = produce(cluster.config(), 6_000, 1_000, None);
    // Owners checked from the API while messages flow.
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        owners(ns, "shared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim_id = before
        .keys()
        .find(|id| members[2].is(id))
        .expect("the third member in the API")
        .clone();
    members[2].kill();
    let killed_at = Instant::now();
    let after = wait_for(
        "the killed member's queues moved",
        Duration::from_secs(15),
        || {
            let owners = owners(ns, "shared");
            let held: usize = owners.values().map(BTreeSet::len).sum();
            (!owners.contains_key(&victim_id) && owners.len() == 2 && held == 8).then_some(owners)
        },
    );
    let moved_after = killed_at.elapsed();
    println!("a SIGKILLed member's queues moved after {moved_after:?} (session {SESSION_MS} ms): {after:?}");
    assert!(
        moved_after <= Duration::from_millis(SESSION_MS + 1_500),
        "queues moved only after {moved_after:?}"
    );
    // The survivors kept their own queues.
    for (id, queues) in &after {
        assert!(
            before[id].is_subset(queues),
            "{id} lost queues: {:?} -> {queues:?}",
            before[id]
        );
    }
    let sent = producer.join().unwrap();
    let refs: Vec<&Member> = members.iter().collect();
    wait_all_delivered(&refs, &sent);
    for member in &mut members[..2] {
        member.terminate();
    }
    let refs: Vec<&Member> = members.iter().collect();
    let (got, duplicates) = tally(&refs);
    assert_eq!(got.len(), sent.len(), "every message and nothing else");
    println!(
        "{} messages, {duplicates} delivered twice (the killed member's last {COMMIT_MS} ms commit interval)",
        sent.len()
    );
    // At 1,000 messages/s over 8 queues, the killed member's 2-3 queues get ~375/s: what it
    // printed after its last commit (one interval, plus a poll) is read again.
    assert!(duplicates <= 375, "{duplicates} duplicates");
}

#[test]
fn a_joining_member_takes_only_the_queues_it_gets_and_the_others_do_not_pause() {
    let cluster = Cluster::start();
    let ns = &cluster.nameserver;
    let mut members: Vec<Member> = (0..2).map(|_| Member::start(ns, "busy")).collect();
    let before = wait_balanced(ns, "busy", 2);
    let producer = produce(cluster.config(), 5_000, 1_000, None);
    std::thread::sleep(Duration::from_millis(1_500));
    let joined_at = Instant::now();
    members.push(Member::start(ns, "busy"));
    let after = wait_balanced(ns, "busy", 3);
    let settled_at = Instant::now();
    println!(
        "2 members: {before:?}\n3 members after {:?}: {after:?}",
        settled_at - joined_at
    );
    let mut moved = 0;
    for (id, queues) in &before {
        let now = &after[id];
        assert!(
            now.is_subset(queues),
            "{id} got a queue it did not have: {queues:?} -> {now:?}"
        );
        moved += queues.len() - now.len();
    }
    let newcomer: usize = after
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .map(|(_, q)| q.len())
        .sum();
    assert_eq!(moved, newcomer, "only the queues the newcomer took moved");
    let sent = producer.join().unwrap();
    let refs: Vec<&Member> = members.iter().collect();
    wait_all_delivered(&refs, &sent);
    // The longest pause in each old member's deliveries around the join.
    for member in &members[..2] {
        let times: Vec<Instant> = member
            .lines()
            .into_iter()
            .map(|(at, _)| at)
            .filter(|at| {
                *at >= joined_at - Duration::from_millis(500)
                    && *at <= settled_at + Duration::from_millis(500)
            })
            .collect();
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        println!(
            "member {}: longest gap between deliveries during the join: {gap:?}",
            member.pid()
        );
        assert!(gap < Duration::from_millis(1_000), "a pause of {gap:?}");
    }
    for member in &mut members {
        member.terminate();
    }
    let refs: Vec<&Member> = members.iter().collect();
    let (got, duplicates) = tally(&refs);
    assert_eq!(got.len(), sent.len());
    println!("{} messages, {duplicates} duplicates", sent.len());
    assert_eq!(
        duplicates, 0,
        "a join moves queues only after their owner committed"
    );
}

#[test]
fn a_second_consumer_group_receives_every_message_independently() {
    let cluster = Cluster::start();
    let ns = &cluster.nameserver;
    let lines: Vec<String> = (0..2_000).map(|i| format!("m{i}")).collect();
    let output = run_with_stdin(
        ns.smq().args(["produce", TOPIC]),
        (lines.join("\n") + "\n").as_bytes(),
    );
    assert!(output.status.success());
    let want: BTreeSet<String> = lines.iter().cloned().collect();
    for consumer_group in ["first", "second"] {
        let mut members: Vec<Member> = (0..2).map(|_| Member::start(ns, consumer_group)).collect();
        let refs: Vec<&Member> = members.iter().collect();
        wait_all_delivered(&refs, &lines);
        for member in &mut members {
            member.terminate();
        }
        let refs: Vec<&Member> = members.iter().collect();
        let (got, duplicates) = tally(&refs);
        assert_eq!(got, want, "consumer group {consumer_group}");
        assert_eq!(duplicates, 0, "consumer group {consumer_group}");
    }
}

/// Committed offsets per queue (`g1/0` -> offset) from the NameServer.
fn committed(nameserver: &NameServer, consumer_group: &str) -> BTreeMap<String, u64> {
    let Some(view) = group_view(nameserver, consumer_group) else {
        return BTreeMap::new();
    };
    let mut offsets = BTreeMap::new();
    for topic in view["topics"].as_array().unwrap() {
        for queue in topic["queues"].as_array().unwrap() {
            if let Some(offset) = queue["committed_offset"].as_u64() {
                let name = format!(
                    "{}/{}",
                    queue["broker_group"].as_str().unwrap(),
                    queue["queue_id"]
                );
                offsets.insert(name, offset);
            }
        }
    }
    offsets
}

#[test]
fn committed_offsets_survive_a_broker_restart_without_going_back() {
    let g1_dir = tempfile::tempdir().unwrap();
    let data_dir = g1_dir.path().join("data");
    let mut cluster = Cluster::start_with_g1_in(Some(&data_dir));
    let lines: Vec<String> = (0..2_000).map(|i| format!("m{i}")).collect();
    let output = run_with_stdin(
        cluster.nameserver.smq().args(["produce", TOPIC]),
        (lines.join("\n") + "\n").as_bytes(),
    );
    assert!(output.status.success());
    // Half the messages, then exit (committing); --idle-timeout bounds a failure.
    let consume_half = [
        "consume",
        TOPIC,
        "--group",
        "restart",
        "--count",
        "1000",
        "--idle-timeout",
        "20",
    ];
    let first = smq_ok(&cluster.nameserver, &consume_half);
    let before = wait_for("8 offsets reported", Duration::from_secs(10), || {
        let offsets = committed(&cluster.nameserver, "restart");
        (offsets.len() == 8 && offsets.values().sum::<u64>() == 1_000).then_some(offsets)
    });
    cluster.brokers.remove(0).stop();
    cluster
        .brokers
        .insert(0, broker(&cluster.nameserver, "g1", Some(&data_dir)));
    let mut want: Vec<String> = cluster.brokers.iter().map(|b| b.addr.to_string()).collect();
    want.sort();
    // The restarted broker has a new port: wait until only it speaks for g1.
    wait_for(
        "the restarted broker registered alone",
        Duration::from_secs(10),
        || (registered(&cluster.nameserver) == want).then_some(()),
    );
    let after = wait_for(
        "the restarted broker reports its offsets",
        Duration::from_secs(10),
        || {
            let offsets = committed(&cluster.nameserver, "restart");
            (offsets.len() == 8).then_some(offsets)
        },
    );
    assert_eq!(
        after, before,
        "no offset went back (or anywhere) across the restart"
    );
    let rest = smq_ok(&cluster.nameserver, &consume_half);
    let mut got: Vec<&str> = first.lines().chain(rest.lines()).collect();
    got.sort();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(
        got, want,
        "the second run read exactly what the first did not"
    );
}

#[test]
fn reported_lag_matches_a_known_backlog_in_messages_and_seconds() {
    let cluster = Cluster::start();
    let ns = &cluster.nameserver;
    let lines: Vec<String> = (0..1_000).map(|i| format!("m{i}")).collect();
    let produced_at = std::time::SystemTime::now();
    let output = run_with_stdin(
        ns.smq().args(["produce", TOPIC]),
        (lines.join("\n") + "\n").as_bytes(),
    );
    assert!(output.status.success());
    smq_ok(
        ns,
        &["consume", TOPIC, "--group", "lagging", "--count", "400"],
    );
    std::thread::sleep(Duration::from_millis(1_500));
    let (lag_messages, lag_seconds) =
        wait_for("the lag of 600 reported", Duration::from_secs(10), || {
            let (status, body) = ns.get("/v1/groups");
            assert_eq!(status, 200, "{body}");
            let list: serde_json::Value = serde_json::from_str(&body).unwrap();
            let group = list["groups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["consumer_group"] == "lagging")?
                .clone();
            let messages = group["lag_messages"].as_u64().unwrap();
            (messages == 600).then(|| (messages, group["lag_seconds"].as_f64().unwrap()))
        });
    let true_age = produced_at.elapsed().unwrap().as_secs_f64();
    println!("lag: {lag_messages} messages, {lag_seconds:.2} s (the backlog was produced {true_age:.2} s ago)");
    assert!(
        lag_seconds <= true_age + 0.1 && lag_seconds >= true_age - 1.0,
        "reported {lag_seconds} s, the oldest unconsumed message is {true_age} s old"
    );
    let metrics = ns.get("/metrics").1;
    let total: u64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("smq_consumer_group_lag_messages{consumer_group=\"lagging\"")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 600, "{metrics}");
    // Each broker's own /metrics has the lag of its queues: over both groups, the backlog.
    let age_before = produced_at.elapsed().unwrap().as_secs_f64();
    let (mut broker_messages, mut broker_seconds) = (0, 0.0_f64);
    for broker in &cluster.brokers {
        let metrics =
            smq_tests::http::request_blocking(broker.http_addr, "GET", "/metrics", None).body;
        for line in metrics.lines() {
            let value = line.rsplit(' ').next().unwrap();
            let of_lagging = |name: &str| {
                line.starts_with(&format!(
                    "{name}{{consumer_group=\"lagging\",topic=\"{TOPIC}\",queue=\""
                ))
            };
            if of_lagging("smq_consumer_group_lag_messages") {
                broker_messages += value.parse::<u64>().unwrap();
            } else if of_lagging("smq_consumer_group_lag_seconds") {
                broker_seconds = broker_seconds.max(value.parse().unwrap());
            }
        }
    }
    let age_after = produced_at.elapsed().unwrap().as_secs_f64();
    println!("brokers' /metrics: {broker_messages} messages, {broker_seconds:.2} s");
    assert_eq!(broker_messages, 600);
    assert!(
        broker_seconds <= age_after + 0.1 && broker_seconds >= age_before - 1.0,
        "brokers report {broker_seconds} s, the oldest unconsumed message is {age_before} s old"
    );
    let table = smq_ok(ns, &["group", "list"]);
    let row = table
        .lines()
        .find(|line| line.starts_with("lagging "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.split_whitespace().any(|field| field == "600"), "{row}");
    let describe = smq_ok(ns, &["group", "describe", "lagging"]);
    assert!(
        describe.contains("BROKER GROUP") && describe.lines().count() >= 10,
        "{describe}"
    );
}

/// Per key, whether its sequence numbers arrive in increasing order over the members' output
/// merged by arrival time.
fn keys_in_order(members: &[&Member]) -> Result<(), String> {
    let mut all: Vec<(Instant, String)> = members.iter().flat_map(|m| m.lines()).collect();
    all.sort();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (_, line) in all {
        let (key, seq) = line.split_once(':').ok_or_else(|| format!("line {line}"))?;
        let seq: u64 = seq.parse().map_err(|_| format!("line {line}"))?;
        if let Some(previous) = last.insert(key.to_owned(), seq) {
            if seq <= previous {
                return Err(format!("key {key}: {seq} after {previous}"));
            }
        }
    }
    Ok(())
}

#[test]
fn a_rolling_restart_with_sigterm_delivers_every_message_once_and_each_key_in_order() {
    let cluster = Cluster::start();
    let ns = &cluster.nameserver;
    let mut members: Vec<Member> = (0..3).map(|_| Member::start(ns, "rolling")).collect();
    wait_balanced(ns, "rolling", 3);
    let producer = produce(cluster.config(), 8_000, 1_000, Some(40));
    let mut stopped = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1_500));
        let mut old = members.remove(0);
        let (pid, started) = (old.pid(), Instant::now());
        old.terminate();
        println!(
            "member {pid} stopped with SIGTERM in {:?}",
            started.elapsed()
        );
        stopped.push(old);
        members.push(Member::start(ns, "rolling"));
        wait_balanced(ns, "rolling", 3);
    }
    let sent = producer.join().unwrap();
    let refs: Vec<&Member> = members.iter().chain(stopped.iter()).collect();
    wait_all_delivered(&refs, &sent);
    for member in &mut members {
        member.terminate();
    }
    let refs: Vec<&Member> = members.iter().chain(stopped.iter()).collect();
    let (got, duplicates) = tally(&refs);
    println!(
        "rolling restart: {} messages, {duplicates} duplicates",
        sent.len()
    );
    assert_eq!(got.len(), sent.len());
    assert_eq!(duplicates, 0, "a member that leaves commits first");
    keys_in_order(&refs).unwrap();
}

#[test]
fn a_new_consumer_group_is_served_during_the_nameservers_warm_up() {
    // A warm-up of one heartbeat timeout: 10 s, the default.
    const WARM_UP_MS: u64 = 10_000;
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", &WARM_UP_MS.to_string()]);
    let started = Instant::now();
    let _brokers = [
        broker(&nameserver, "g1", None),
        broker(&nameserver, "g2", None),
    ];
    wait_for("both brokers registered", Duration::from_secs(10), || {
        (registered(&nameserver).len() == 2).then_some(())
    });
    smq_ok(
        &nameserver,
        &[
            "topic", "create", TOPIC, "--queues", "4", "--groups", "g1,g2",
        ],
    );
    let lines: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let output = run_with_stdin(
        nameserver.smq().args(["produce", TOPIC]),
        (lines.join("\n") + "\n").as_bytes(),
    );
    assert!(output.status.success());
    let joined = Instant::now();
    let member = Member::start(&nameserver, "newcomer");
    let owned_after = wait_for(
        "the new consumer group's member to own all 8 queues",
        Duration::from_millis(WARM_UP_MS),
        || {
            let held: usize = owners(&nameserver, "newcomer")
                .values()
                .map(BTreeSet::len)
                .sum();
            (held == 8).then(|| joined.elapsed())
        },
    );
    let view = group_view(&nameserver, "newcomer").expect("the group");
    let warming_up_ms = view["warming_up_ms"].as_u64().unwrap();
    println!(
        "a new consumer group owned every queue {} ms after its member started, {} ms after the \
         NameServer did, {warming_up_ms} ms before the end of its warm-up",
        owned_after.as_millis(),
        started.elapsed().as_millis()
    );
    assert!(
        warming_up_ms > 0,
        "the queues were given out only after the warm-up ({WARM_UP_MS} ms)"
    );
    wait_all_delivered(&[&member], &lines);
}

#[test]
fn a_nameserver_failover_moves_no_queue() {
    let first = NameServer::start(&["--heartbeat-timeout-ms", "1000"]);
    // The standby runs from the start (so its own warm-up is long over) and gets nothing until
    // the first dies.
    let standby = NameServer::start(&["--heartbeat-timeout-ms", "1000"]);
    let both = format!("{},{}", first.url(), standby.url());
    let brokers: Vec<Broker> = ["g1", "g2"]
        .iter()
        .map(|group| broker_of(&both, group, None))
        .collect();
    wait_for("both brokers registered", Duration::from_secs(10), || {
        (registered(&first).len() == 2).then_some(())
    });
    smq_ok(
        &first,
        &[
            "topic", "create", TOPIC, "--queues", "4", "--groups", "g1,g2",
        ],
    );
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::start_with(&both, "steady"))
        .collect();
    let before = wait_balanced(&first, "steady", 3);
    let producer_config = {
        let mode = DiscoveryMode::Static(vec![first.url(), standby.url()]);
        let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
        ClientConfig::with_nameserver(NameServerClient::new(Arc::new(discovery)))
    };
    let producer = produce(producer_config, 6_000, 1_000, None);
    std::thread::sleep(Duration::from_millis(1_500));
    first.stop();
    let failed_over_at = Instant::now();
    // Through the standby's warm-up and past it, the owners stay.
    let mut checks = 0;
    while failed_over_at.elapsed() < Duration::from_secs(4) {
        let now = owners(&standby, "steady");
        if now.len() == 3 {
            assert_eq!(now, before, "a queue moved after the failover");
            checks += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        checks > 10,
        "the standby saw all three members only {checks} times"
    );
    let sent = producer.join().unwrap();
    let refs: Vec<&Member> = members.iter().collect();
    wait_all_delivered(&refs, &sent);
    for member in &mut members {
        member.terminate();
    }
    let refs: Vec<&Member> = members.iter().collect();
    let (_, duplicates) = tally(&refs);
    println!(
        "NameServer failover: {} messages, {duplicates} duplicates",
        sent.len()
    );
    assert_eq!(duplicates, 0);
    drop(brokers);
    drop(standby);
}

/// The heartbeat timeout of [`ReplicatedGroup`]'s NameServer: a dead master leaves the routes
/// this long after its last heartbeat.
const REPLICATED_HEARTBEAT_TIMEOUT_MS: u64 = 1_000;

/// A master and its slave of broker group g1 (synchronous replication) with topic `clicks` of
/// 4 queues; the master's data directory and address stay so that it can come back.
struct ReplicatedGroup {
    dir: tempfile::TempDir,
    nameserver: NameServer,
    master: Option<Broker>,
    master_addr: String,
    slave: Broker,
}

impl ReplicatedGroup {
    fn start() -> ReplicatedGroup {
        ReplicatedGroup::start_with(REPLICATED_HEARTBEAT_TIMEOUT_MS, &[])
    }

    /// With a NameServer of `heartbeat_timeout_ms` and `slave_extra` on the slave's command
    /// line.
    fn start_with(heartbeat_timeout_ms: u64, slave_extra: &[&str]) -> ReplicatedGroup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "outage-secret\n").unwrap();
        let timeout_ms = heartbeat_timeout_ms.to_string();
        let nameserver = NameServer::start(&["--heartbeat-timeout-ms", &timeout_ms]);
        let master = Broker::start_in(
            &dir.path().join("master"),
            &strs(&group_args(&dir, &nameserver, &[])),
        );
        let master_addr = master.addr.to_string();
        let mut slave_role = vec!["--role", "slave", "--master", &master_addr];
        slave_role.extend_from_slice(slave_extra);
        let slave = Broker::start_in(
            &dir.path().join("slave"),
            &strs(&group_args(&dir, &nameserver, &slave_role)),
        );
        wait_for("the slave in sync", Duration::from_secs(30), || {
            let (_, body) = nameserver.get("/v1/cluster");
            body.contains("\"in_sync\":true").then_some(())
        });
        smq_ok(&nameserver, &["topic", "create", TOPIC, "--queues", "4"]);
        ReplicatedGroup {
            dir,
            nameserver,
            master: Some(master),
            master_addr,
            slave,
        }
    }

    /// SIGKILLs the master.
    fn kill_master(&mut self) {
        self.master.take().expect("the master runs").kill();
    }

    /// Starts the master again on its address and data directory.
    fn restart_master(&mut self) {
        let args = group_args(&self.dir, &self.nameserver, &[]);
        let master = Broker::start_on(
            &self.master_addr,
            &self.dir.path().join("master"),
            &strs(&args),
        );
        self.master = Some(master);
    }

    /// Waits until the NameServer lists `addr` with `role` (`"master"`, `"slave"`).
    fn wait_for_role(&self, addr: &str, role: &str) {
        wait_for(
            &format!("{addr} as {role}"),
            Duration::from_secs(30),
            || {
                let (_, body) = self.nameserver.get("/v1/cluster");
                let view: serde_json::Value = serde_json::from_str(&body).unwrap();
                view["brokers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["addr"] == addr && b["role"] == role)
                    .then_some(())
            },
        );
    }
}

/// A failed test shows what the processes logged.
impl Drop for ReplicatedGroup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let logs = [
            ("master", self.master.as_ref().map(Broker::log_lines)),
            ("slave", Some(self.slave.log_lines())),
            ("nameserver", Some(self.nameserver.log_lines())),
        ];
        for (name, lines) in logs {
            for line in lines.unwrap_or_default() {
                eprintln!("[{name}] {line}");
            }
        }
    }
}

/// Arguments of a broker of g1 under synchronous replication, and `extra`.
fn group_args(dir: &tempfile::TempDir, nameserver: &NameServer, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--nameserver",
        &nameserver.url(),
        "--group",
        "g1",
        "--replication",
        "sync",
        "--replication-secret-file",
        dir.path().join("secret").to_str().unwrap(),
        "--segment-bytes",
        SEGMENT_BYTES,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The sum over the 4 queues of the offsets `consumer_group` committed on the broker at
/// `addr`, as its FetchOffset answers (its own copy, not the NameServer's view).
fn offsets_on(addr: &str, consumer_group: &str) -> u64 {
    fetch_offsets(addr, consumer_group, TOPIC, 4)
        .unwrap_or_else(|code| panic!("FetchOffset on {addr} answered {code}"))
        .into_iter()
        .map(|offset| offset.unwrap_or(0))
        .sum()
}

/// What the broker at `addr` answers FetchOffset for `consumer_group` and each of the first
/// `queues` queues of `topic` (`None`: no offset committed), or the first error code it answers.
fn fetch_offsets(
    addr: &str,
    consumer_group: &str,
    topic: &str,
    queues: u32,
) -> Result<Vec<Option<u64>>, smq_client::protocol::error_code::ErrorCode> {
    use smq_client::protocol::api::ApiKey;
    use smq_client::protocol::request::FetchOffsetRequest;
    use smq_client::protocol::{Request, Response};
    let mut raw = smq_tests::raw::Raw::handshake(addr.parse().unwrap());
    (0..queues)
        .map(|queue_id| {
            let request = Request::FetchOffset(FetchOffsetRequest {
                consumer_group: consumer_group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
            });
            match raw.call(ApiKey::FetchOffset, &request) {
                Response::FetchOffset(fetched) => Ok(fetched.offset),
                Response::Error(error) => Err(error.error_code().expect("a known error code")),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

/// Waits until the broker at `addr` holds offsets of `consumer_group` that sum to `total`
/// (a master back from an outage answers FetchOffset once it has its slave's offsets).
fn wait_for_offsets_on(addr: &str, consumer_group: &str, total: u64, what: &str) {
    use smq_client::protocol::error_code::ErrorCode;
    wait_for(what, Duration::from_secs(30), || {
        match fetch_offsets(addr, consumer_group, TOPIC, 4) {
            Ok(offsets) => (offsets.into_iter().flatten().sum::<u64>() == total).then_some(()),
            Err(ErrorCode::OffsetsNotReady) => None,
            Err(code) => panic!("FetchOffset on {addr} answered {code}"),
        }
    });
}

/// Members of one consumer group that read only as many messages as the test allows
/// (`allow`), so that the test decides where the group is when it kills or restarts a broker.
struct GatedMembers {
    allowed: Arc<std::sync::atomic::AtomicUsize>,
    /// Messages taken (returned by poll) or reserved by a poll under way.
    taken: Arc<std::sync::atomic::AtomicUsize>,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl GatedMembers {
    fn start(nameserver: &NameServer, consumer_group: &'static str, members: usize) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let gate = GatedMembers {
            allowed: Arc::new(AtomicUsize::new(0)),
            taken: Arc::new(AtomicUsize::new(0)),
            received: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let threads = (0..members)
            .map(|_| {
                let mut config = nameserver.client_config(200);
                config.commit_interval_ms = COMMIT_MS;
                config.session_timeout_ms = SESSION_MS;
                config.request_timeout_ms = 2_000;
                let (allowed, taken) = (gate.allowed.clone(), gate.taken.clone());
                let (received, stop) = (gate.received.clone(), gate.stop.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Runtime::new().unwrap();
                    runtime.block_on(gated_member(
                        config,
                        consumer_group,
                        allowed,
                        taken,
                        received,
                        stop,
                    ))
                })
            })
            .collect();
        GatedMembers { threads, ..gate }
    }

    /// Lets the members read up to `total` messages in all, and waits until they did and
    /// the NameServer shows every one of them committed.
    fn allow_and_wait(&self, nameserver: &NameServer, consumer_group: &str, total: usize) {
        use std::sync::atomic::Ordering;
        self.allowed.store(total, Ordering::SeqCst);
        let mut last_said = Instant::now();
        wait_for(
            &format!("{total} messages read and committed"),
            Duration::from_secs(60),
            || {
                let received = self.received.lock().unwrap().len();
                let offsets = committed(nameserver, consumer_group);
                let sum: u64 = offsets.values().sum();
                let done = received == total && sum == distinct(&self.received) as u64;
                if !done && last_said.elapsed() > Duration::from_secs(5) {
                    eprintln!("waiting: {received} of {total} received, committed {offsets:?}");
                    last_said = Instant::now();
                }
                done.then_some(())
            },
        );
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.received)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn distinct(received: &Mutex<Vec<String>>) -> usize {
    received
        .lock()
        .unwrap()
        .iter()
        .collect::<BTreeSet<_>>()
        .len()
}

/// One member of [`GatedMembers`]: polls at most what the gate allows, commits every
/// `COMMIT_MS` (also while it may read nothing), and closes when told to stop.
async fn gated_member(
    config: ClientConfig,
    consumer_group: &str,
    allowed: Arc<std::sync::atomic::AtomicUsize>,
    taken: Arc<std::sync::atomic::AtomicUsize>,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut consumer = smq_client::Consumer::connect(
        config,
        TOPIC,
        Some(consumer_group),
        smq_client::StartFrom::Earliest,
    )
    .await
    .unwrap();
    while !stop.load(Ordering::SeqCst) {
        // Reserve up to 10 messages of what the gate allows.
        let mut reserved = 0;
        let _ = taken.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
            reserved = allowed.load(Ordering::SeqCst).saturating_sub(taken).min(10);
            (reserved > 0).then_some(taken + reserved)
        });
        if reserved == 0 {
            // Nothing more to read yet: commit what was read, as poll would.
            let _ = consumer.commit().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let polled = consumer.poll(reserved).await.unwrap_or_default();
        taken.fetch_sub(reserved - polled.len(), Ordering::SeqCst);
        if polled.is_empty() {
            // Its queues hold nothing more now: leave what the gate allows to the others.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut received = received.lock().unwrap();
        for message in polled {
            received.push(String::from_utf8(message.body.to_vec()).unwrap());
        }
    }
    let _ = consumer.close().await;
}

/// Samples the NameServer's committed offsets of `consumer_group` every 50 ms until stopped;
/// returns every time a queue's offset was seen below what it was before.
fn watch_offsets_never_go_back(
    nameserver_addr: std::net::SocketAddr,
    consumer_group: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut highest: BTreeMap<String, u64> = BTreeMap::new();
        let (mut samples, mut went_back) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let reply = smq_tests::http::request_blocking(
                nameserver_addr,
                "GET",
                &format!("/v1/groups/{consumer_group}"),
                None,
            );
            if reply.status == 200 {
                let view: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                samples += 1;
                for topic in view["topics"].as_array().unwrap() {
                    for queue in topic["queues"].as_array().unwrap() {
                        let Some(offset) = queue["committed_offset"].as_u64() else {
                            continue;
                        };
                        let name = format!("{}/{}", queue["broker_group"], queue["queue_id"]);
                        let before = highest.entry(name.clone()).or_default();
                        if offset < *before {
                            went_back.push(format!("{name}: {before} -> {offset}"));
                        }
                        *before = offset.max(*before);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (samples, went_back)
    })
}

/// Issue 17's must-show (RocketMQ #1094): a consumer group reads from the slave while its
/// master is down and commits there; (a) the master comes back and takes the slave's newer
/// offsets, (b) after a second outage the slave is promoted and keeps them, and the old master,
/// back as its slave, copies them. The committed offsets the NameServer shows never go back,
/// each broker's own copy ends at what the group read, and the group receives no message
/// twice.
#[test]
fn offsets_committed_on_the_slave_during_a_master_outage_never_go_back() {
    const GROUP: &str = "outage";
    const MESSAGES: usize = 8_000;
    let mut group = ReplicatedGroup::start();
    let slave_addr = group.slave.addr.to_string();
    let sent = produce(
        group.nameserver.client_config(200),
        MESSAGES,
        20_000,
        Some(16),
    )
    .join()
    .unwrap();
    let stop_watching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_offsets_never_go_back(group.nameserver.addr, GROUP, stop_watching.clone());
    let members = GatedMembers::start(&group.nameserver, GROUP, 2);
    members.allow_and_wait(&group.nameserver, GROUP, 1_500);
    assert_eq!(offsets_on(&group.master_addr, GROUP), 1_500);
    // A master copies offsets to its slave within `offsets_flush_interval_ms`; a commit it took
    // in the last interval before it dies is not on the slave, whose older offset the
    // NameServer shows until the member commits again there (proto-spec.md §5.7; the test
    // a_commit_the_dead_master_had_not_copied_to_its_slave_is_committed_again_on_the_slave).
    wait_for_offsets_on(
        &slave_addr,
        GROUP,
        1_500,
        "the slave holds the master's offsets",
    );

    // (a) The master dies; the group reads from the slave and commits there.
    group.kill_master();
    members.allow_and_wait(&group.nameserver, GROUP, 3_500);
    assert_eq!(
        offsets_on(&slave_addr, GROUP),
        3_500,
        "the slave took the commits"
    );
    group.restart_master();
    group.wait_for_role(&group.master_addr, "master");
    wait_for_offsets_on(
        &group.master_addr,
        GROUP,
        3_500,
        "the restarted master holds the offsets committed on its slave",
    );
    members.allow_and_wait(&group.nameserver, GROUP, 5_000);
    assert_eq!(offsets_on(&group.master_addr, GROUP), 5_000);
    wait_for_offsets_on(
        &slave_addr,
        GROUP,
        5_000,
        "the slave holds the master's offsets",
    );

    // (b) The master dies again; the group commits on the slave, which is then promoted.
    group.kill_master();
    members.allow_and_wait(&group.nameserver, GROUP, 6_500);
    let promoted = group.nameserver.promote("g1", &["--slave", &slave_addr]);
    assert!(promoted.status.success(), "{promoted:?}");
    group.wait_for_role(&slave_addr, "master");
    assert_eq!(
        offsets_on(&slave_addr, GROUP),
        6_500,
        "the promoted slave kept them"
    );
    members.allow_and_wait(&group.nameserver, GROUP, MESSAGES);
    // The old master, back, learns it was superseded and copies the new master's offsets.
    group.restart_master();
    group.wait_for_role(&group.master_addr, "slave");
    wait_for_offsets_on(
        &group.master_addr,
        GROUP,
        MESSAGES as u64,
        "the old master, now a slave, holds the group's offsets",
    );

    let received = members.stop();
    stop_watching.store(true, std::sync::atomic::Ordering::SeqCst);
    let (samples, went_back) = watcher.join().unwrap();
    let got: BTreeSet<&String> = received.iter().collect();
    let duplicates = received.len() - got.len();
    println!(
        "master outage twice (restart, then promotion): {} messages received, {duplicates} \
         duplicates; {samples} samples of the committed offsets, {} went back",
        received.len(),
        went_back.len()
    );
    assert_eq!(got, sent.iter().collect(), "every message received");
    assert!(
        went_back.is_empty(),
        "committed offsets went back: {went_back:?}"
    );
    assert_eq!(duplicates, 0, "no message received twice");
}

/// Issue 16's "reads from the slave" for a consumer group (its bug: such a consumer read
/// nothing for `route_refresh_ms`, 30 s): an `smq consume --group` started right after its
/// broker group's master is SIGKILLed reads the whole backlog from the slave within one
/// heartbeat timeout of the death, plus the consumer's retries: two rounds of following the
/// routes again after a broker could not be reached (`FOLLOW_RETRY_DELAY` each: the first may
/// still see the master), one member heartbeat interval to be given the queues, and a second to
/// start the process and print. Before the fix it took 30 s (`route_refresh_ms`).
#[test]
fn a_group_consumer_started_after_its_masters_death_reads_the_backlog_from_the_slave_at_once() {
    const MESSAGES: usize = 2_000;
    let bound = Duration::from_millis(REPLICATED_HEARTBEAT_TIMEOUT_MS + SESSION_MS / 5 + 1_000)
        + 2 * smq_client::consumer::FOLLOW_RETRY_DELAY;
    let mut group = ReplicatedGroup::start();
    let sent = produce(group.nameserver.client_config(200), MESSAGES, 20_000, None)
        .join()
        .unwrap();

    group.kill_master();
    let killed_at = Instant::now();
    let member = Member::start(&group.nameserver, "late");
    let want: BTreeSet<String> = sent.into_iter().collect();
    wait_for(
        "the late member read the backlog from the slave",
        Duration::from_secs(60),
        || {
            let got: BTreeSet<String> = member.lines().into_iter().map(|(_, l)| l).collect();
            (got == want).then_some(())
        },
    );
    let last_line_at = member.lines().iter().map(|(at, _)| *at).max().unwrap();
    let took = last_line_at - killed_at;
    println!(
        "a consumer group member started at its master's SIGKILL read the {MESSAGES} messages \
         of the backlog from the slave {} ms after the kill (bound {} ms)",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(took <= bound, "took {took:?}, more than {bound:?}");
}

/// A master copies its offsets to its slave only every `offsets_flush_interval_ms` (the
/// slave's setting), so the commits of its last interval are not on the slave when it dies. A
/// member that reads on commits its position again on the broker that serves its queues now:
/// the slave ends with every offset the group committed, and the NameServer shows it.
#[test]
fn a_commit_the_dead_master_had_not_copied_to_its_slave_is_committed_again_on_the_slave() {
    const GROUP: &str = "recommit";
    const MESSAGES: usize = 2_000;
    // The slave copies offsets when it connects and then once a minute: not during this test.
    let mut group = ReplicatedGroup::start_with(
        REPLICATED_HEARTBEAT_TIMEOUT_MS,
        &["--offsets-flush-interval-ms", "60000"],
    );
    let slave_addr = group.slave.addr.to_string();
    produce(group.nameserver.client_config(200), MESSAGES, 20_000, None)
        .join()
        .unwrap();
    let members = GatedMembers::start(&group.nameserver, GROUP, 1);
    members.allow_and_wait(&group.nameserver, GROUP, MESSAGES);
    assert_eq!(offsets_on(&group.master_addr, GROUP), MESSAGES as u64);
    assert_eq!(
        offsets_on(&slave_addr, GROUP),
        0,
        "the slave has not copied them"
    );

    group.kill_master();
    let killed_at = Instant::now();
    wait_for_offsets_on(
        &slave_addr,
        GROUP,
        MESSAGES as u64,
        "the member committed its positions on the slave",
    );
    println!(
        "the member committed its positions again on the slave {} ms after its master's death",
        killed_at.elapsed().as_millis()
    );
    wait_for("the NameServer shows them", Duration::from_secs(30), || {
        let shown: u64 = committed(&group.nameserver, GROUP).values().sum();
        (shown == MESSAGES as u64).then_some(())
    });
    members.stop();
}

/// Reads `count` messages as a new member of `consumer_group` (where the group has no offset
/// it starts as `from` says), commits them and leaves the group.
fn read_and_commit(
    config: ClientConfig,
    consumer_group: &'static str,
    from: smq_client::StartFrom,
    count: usize,
) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let mut consumer =
                smq_client::Consumer::connect(config, TOPIC, Some(consumer_group), from)
                    .await
                    .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut read = Vec::with_capacity(count);
            while read.len() < count {
                assert!(
                    Instant::now() < deadline,
                    "{consumer_group}: {} of {count} messages read in 60 s",
                    read.len()
                );
                let polled = consumer.poll(count - read.len()).await.unwrap_or_default();
                for message in polled {
                    read.push(String::from_utf8(message.body.to_vec()).unwrap());
                }
            }
            consumer.commit().await.unwrap();
            consumer.close().await.unwrap();
            read
        })
    })
}

/// Issue 17's last window (proto-spec.md §5.7): between a master's return and its slave's
/// reconnection, the master's offsets are older than those the group committed on the slave
/// during the outage, or missing for a group only ever committed there. The returning master
/// answers FetchOffset `OFFSETS_NOT_READY` until the slave handed them over, so members given
/// the queues right after the return start from the slave's offsets: the one of a group that
/// committed on both reads no message twice (it would start from the master's older offset,
/// and its commits with a higher owner epoch would then win over the slave's), and the one of
/// a group only the slave knew, starting from `latest` where it has no offset, skips none.
/// The slave is stopped (SIGSTOP) across the master's return to hold the window open; the
/// NameServer's heartbeat timeout (10 s) keeps it live meanwhile.
#[test]
fn members_given_queues_right_after_their_masters_return_start_from_the_offsets_committed_on_the_slave(
) {
    let mut group = ReplicatedGroup::start_with(10_000, &[]);
    let outage = OutageCommits::before(&group);
    // The master dies; the groups commit on the slave.
    group.kill_master();
    let outage = outage.commit_on_the_slave(&group);
    // It comes back while its slave cannot hand over what it took.
    group.slave.signal(libc::SIGSTOP);
    group.restart_master();
    outage.members_after_the_return_start_from_the_slaves_offsets(&group);
}

/// The same when the master does not restart but was away (stopped with SIGSTOP, as a long
/// pause or a cut-off would keep it) longer than the NameServer's heartbeat timeout: it was
/// dropped from the routes, the groups committed on its slave (once the slave gave up its
/// replication connection), and when it goes on it learns that no heartbeat of it was accepted
/// for longer than the timeout, and waits again for its slave's offsets before its heartbeat
/// puts it back in the routes.
#[test]
fn members_given_queues_right_after_a_paused_master_goes_on_start_from_the_offsets_committed_on_the_slave(
) {
    let group = ReplicatedGroup::start_with(10_000, &[]);
    let outage = OutageCommits::before(&group);
    let master = group.master.as_ref().expect("the master runs");
    let replication_stops = |slave: &Broker| {
        slave
            .log_lines()
            .iter()
            .filter(|line| line.contains("replication stopped"))
            .count()
    };
    let stopped_before = replication_stops(&group.slave);
    master.signal(libc::SIGSTOP);
    wait_for(
        "the NameServer drops the stopped master and its slave gives up its connection",
        Duration::from_secs(30),
        || {
            let (_, body) = group.nameserver.get("/v1/cluster");
            let view: serde_json::Value = serde_json::from_str(&body).unwrap();
            let brokers = view["brokers"].as_array().unwrap();
            let dropped = !brokers.iter().any(|b| b["addr"] == group.master_addr);
            (dropped && replication_stops(&group.slave) > stopped_before).then_some(())
        },
    );
    let outage = outage.commit_on_the_slave(&group);
    // It goes on while its slave cannot hand over what it took.
    group.slave.signal(libc::SIGSTOP);
    master.signal(libc::SIGCONT);
    outage.members_after_the_return_start_from_the_slaves_offsets(&group);
}

/// What two consumer groups read around a master's outage: "resume" commits on the master,
/// then on the slave; "fresh" only on the slave.
struct OutageCommits {
    sent: Vec<String>,
    resume_first: Vec<String>,
    resume_on_slave: Vec<String>,
    fresh_on_slave: Vec<String>,
}

const OUTAGE_MESSAGES: usize = 2_000;

impl OutageCommits {
    /// Produces the messages; "resume" reads some and commits on the master.
    fn before(group: &ReplicatedGroup) -> OutageCommits {
        use smq_client::StartFrom::Earliest;
        let config = group.nameserver.client_config(200);
        let sent = produce(config.clone(), OUTAGE_MESSAGES, 20_000, None)
            .join()
            .unwrap();
        let resume_first = read_and_commit(config, "resume", Earliest, 600)
            .join()
            .unwrap();
        let slave_addr = group.slave.addr.to_string();
        wait_for_offsets_on(&slave_addr, "resume", 600, "the slave copied the offsets");
        OutageCommits {
            sent,
            resume_first,
            resume_on_slave: Vec::new(),
            fresh_on_slave: Vec::new(),
        }
    }

    /// With the master away: "resume" reads further, "fresh" reads first, both commit on the
    /// slave.
    fn commit_on_the_slave(mut self, group: &ReplicatedGroup) -> OutageCommits {
        use smq_client::StartFrom::Earliest;
        let config = group.nameserver.client_config(200);
        let resume = read_and_commit(config.clone(), "resume", Earliest, 600);
        let fresh = read_and_commit(config, "fresh", Earliest, 500);
        self.resume_on_slave = resume.join().unwrap();
        self.fresh_on_slave = fresh.join().unwrap();
        let slave_addr = group.slave.addr.to_string();
        assert_eq!(offsets_on(&slave_addr, "resume"), 1_200);
        assert_eq!(offsets_on(&slave_addr, "fresh"), 500);
        self
    }

    /// With the master back (in the routes soon) and the slave stopped: the master answers no
    /// offsets yet; new members of both groups get the queues; then the slave goes on, and
    /// the members read every message not read yet, none twice.
    fn members_after_the_return_start_from_the_slaves_offsets(self, group: &ReplicatedGroup) {
        use smq_client::protocol::error_code::ErrorCode;
        use smq_client::StartFrom::{Earliest, Latest};
        group.wait_for_role(&group.master_addr, "master");
        for consumer_group in ["resume", "fresh"] {
            assert_eq!(
                fetch_offsets(&group.master_addr, consumer_group, TOPIC, 4),
                Err(ErrorCode::OffsetsNotReady),
                "{consumer_group}: the returning master does not answer its own offsets yet"
            );
        }
        let config = group.nameserver.client_config(200);
        let resume_after =
            read_and_commit(config.clone(), "resume", Earliest, OUTAGE_MESSAGES - 1_200);
        let fresh_after = read_and_commit(config, "fresh", Latest, OUTAGE_MESSAGES - 500);
        // (Members that started from the master's own offsets could be done already.)
        wait_for(
            "the new members hold the queues",
            Duration::from_secs(20),
            || {
                let held = |consumer_group| {
                    owners(&group.nameserver, consumer_group)
                        .values()
                        .map(BTreeSet::len)
                        .sum::<usize>()
                };
                let done = resume_after.is_finished() || fresh_after.is_finished();
                (done || (held("resume") == 4 && held("fresh") == 4)).then_some(())
            },
        );
        group.slave.signal(libc::SIGCONT);
        let resume_after = resume_after.join().unwrap();
        let fresh_after = fresh_after.join().unwrap();

        let all: BTreeSet<&String> = self.sent.iter().collect();
        for (consumer_group, reads) in [
            (
                "resume",
                vec![self.resume_first, self.resume_on_slave, resume_after],
            ),
            ("fresh", vec![self.fresh_on_slave, fresh_after]),
        ] {
            let received: Vec<&String> = reads.iter().flatten().collect();
            let distinct: BTreeSet<&String> = received.iter().copied().collect();
            assert_eq!(
                received.len() - distinct.len(),
                0,
                "{consumer_group}: no message read twice"
            );
            assert_eq!(distinct, all, "{consumer_group}: every message read");
            wait_for_offsets_on(
                &group.master_addr,
                consumer_group,
                OUTAGE_MESSAGES as u64,
                "the master holds the group's offsets",
            );
        }
    }
}
