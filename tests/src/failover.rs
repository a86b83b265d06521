//! The NameServer failover scenarios of proto-spec.md §9, through the real binaries, against any
//! DNS server whose SRV record the test controls (the embedded hickory server, bind9): two
//! NameServers, two broker groups registered through DNS, and a producer (the client library)
//! sending all along while the NameServer it uses dies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
use smq_client::nameserver_client::NameServerClient;
use smq_client::{ClientConfig, ConsumedMessage, Consumer, Message, Producer, StartFrom};

use crate::{binary, run_with_stdin, runtime, wait_for, Broker, NameServer};

/// The zone the scenarios' DNS servers serve; `ns1` and `ns2` are both 127.0.0.1 there.
pub const ZONE: &str = "smq.test.";
/// The SRV record clients and brokers look up.
pub const SRV_NAME: &str = "_smq-ns._tcp.smq.test.";
/// The SRV record's TTL in the scenarios.
pub const TTL: Duration = Duration::from_secs(2);
/// The brokers' heartbeat interval (the NameServer's default).
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A DNS server whose SRV records a test can replace.
pub trait SrvControl {
    /// Where it answers (`--dns-server`).
    fn dns_server(&self) -> SocketAddr;
    /// Replaces the SRV set of `name` with `targets` = (priority, port, host), host `ns1` or
    /// `ns2`, in one step: no client ever sees the name without a record.
    fn point(&self, name: &str, ttl: u32, targets: &[(u16, u16, &str)]);
}

/// The discovery flags for a DNS server, as a broker or NameServer takes them.
fn srv_args(dns: &impl SrvControl) -> Vec<String> {
    vec![
        "--srv".into(),
        SRV_NAME.into(),
        "--dns-server".into(),
        dns.dns_server().to_string(),
    ]
}

/// A NameServer that fences itself when the SRV record stops naming it (checked every 200 ms).
fn fenced_nameserver(dns: &impl SrvControl, listen: &str) -> NameServer {
    let mut args = srv_args(dns);
    args.extend(["--fencing-interval-ms".into(), "200".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NameServer::start_on(listen, &args)
}

/// One master per group, each registering through the SRV record.
fn brokers(dns: &impl SrvControl, groups: &[&str]) -> Vec<Broker> {
    groups
        .iter()
        .map(|group| {
            let mut args = srv_args(dns);
            args.extend(["--group".into(), (*group).into()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Broker::start(&args)
        })
        .collect()
}

/// The `smq` CLI finding the NameServer through the SRV record.
pub fn smq(dns: &impl SrvControl) -> Command {
    smq_asking(dns.dns_server())
}

/// The `smq` CLI finding the NameServer through the SRV record, asking `dns_server`.
fn smq_asking(dns_server: SocketAddr) -> Command {
    let mut command = Command::new(binary("smq"));
    command
        .env("SMQ_SRV", SRV_NAME)
        .env("SMQ_DNS_SERVER", dns_server.to_string())
        .env_remove("SMQ_BROKER")
        .env_remove("SMQ_NAMESERVER")
        .env_remove("SMQ_ROUTE_WAIT_MS");
    command
}

/// Runs `smq` and returns its standard error, failing the test unless it exits 0.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("running smq");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "smq failed: {stderr}");
    stderr
}

/// A client configuration following the SRV record, refreshing routes every 500 ms so that
/// refreshes fail while the NameServer is gone.
pub fn client_config(dns: &impl SrvControl) -> ClientConfig {
    let mode = DiscoveryMode::Srv {
        name: SRV_NAME.into(),
        dns_server: Some(dns.dns_server()),
    };
    let discovery = Discovery::new(mode, DiscoveryOptions::default()).expect("discovery");
    let mut config = ClientConfig::with_nameserver(NameServerClient::new(Arc::new(discovery)));
    config.route_refresh_ms = 500;
    config
}

/// The addresses of the brokers `nameserver` lists in /v1/cluster.
pub fn registered(nameserver: &NameServer) -> Vec<String> {
    let (status, body) = nameserver.get("/v1/cluster");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let mut addrs: Vec<String> = view["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| b["addr"].as_str().expect("addr").to_owned())
        .collect();
    addrs.sort();
    addrs
}

/// Waits up to 10 s until `count` brokers are registered with `nameserver`.
pub fn wait_until_registered(nameserver: &NameServer, count: usize) {
    wait_for(
        &format!("{count} brokers registered"),
        Duration::from_secs(10),
        || (registered(nameserver).len() == count).then_some(()),
    );
}

fn addrs(brokers: &[Broker]) -> Vec<String> {
    let mut addrs: Vec<String> = brokers.iter().map(|b| b.addr.to_string()).collect();
    addrs.sort();
    addrs
}

/// Waits until `nameserver` lists exactly `brokers`; returns how long that took.
fn wait_registered(nameserver: &NameServer, brokers: &[Broker], within: Duration) -> Duration {
    let start = Instant::now();
    let want = addrs(brokers);
    wait_for("the brokers registered", within, || {
        (registered(nameserver) == want).then_some(())
    });
    start.elapsed()
}

/// Route requests a NameServer has answered, by its /metrics.
pub fn route_requests(nameserver: &NameServer) -> u64 {
    let (status, text) = nameserver.get("/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| line.starts_with("smq_nameserver_route_requests_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A producer task sending one message after another to a topic until stopped, counting every
/// acknowledgement and keeping every failure.
pub struct ContinuousSender {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl ContinuousSender {
    pub fn start(runtime: &tokio::runtime::Runtime, producer: Producer, topic: &str) -> Self {
        ContinuousSender::start_concurrent(runtime, producer, topic, 1)
    }

    /// `senders` loops sending at once, so that several sends are in flight at any time.
    pub fn start_concurrent(
        runtime: &tokio::runtime::Runtime,
        producer: Producer,
        topic: &str,
        senders: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let loops: Vec<_> = (0..senders)
            .map(|index| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let (producer, topic) = (producer.clone(), topic.to_owned());
                async move {
                    let (mut sent, mut failures) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let message = Message::from_body(format!("m{index}-{sent}"));
                        match producer.send(&topic, message).await {
                            Ok(_) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => failures.push(format!("message {index}-{sent}: {error}")),
                        }
                        sent += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    (sent, failures)
                }
            })
            .collect();
        let task = runtime.spawn(async move {
            let loops: Vec<_> = loops.into_iter().map(tokio::spawn).collect();
            let (mut sent, mut failures) = (0, Vec::new());
            for one in loops {
                let (loop_sent, loop_failures) = one.await.expect("a sender loop");
                sent += loop_sent;
                failures.extend(loop_failures);
            }
            (sent, failures)
        });
        ContinuousSender { stop, acked, task }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further messages are acknowledged.
    pub fn wait_for_more(&self, more: u64) {
        let target = self.acked() + more;
        wait_for("more acknowledged sends", Duration::from_secs(20), || {
            (self.acked() >= target).then_some(())
        });
    }

    /// Stops sending; returns how many were sent and each failure.
    pub fn stop(self, runtime: &tokio::runtime::Runtime) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        runtime.block_on(self.task).expect("the sender task")
    }

    /// Stops sending and asserts that no send failed; returns how many were sent.
    pub fn stop_without_failures(self, runtime: &tokio::runtime::Runtime) -> u64 {
        let (sent, failures) = self.stop(runtime);
        assert!(
            failures.is_empty(),
            "{} failed sends of {sent}: {failures:?}",
            failures.len()
        );
        sent
    }
}

/// Reads `topic` from the start through the NameServer until `count` messages came.
pub fn consume_all(
    runtime: &tokio::runtime::Runtime,
    config: ClientConfig,
    topic: &str,
    count: u64,
) -> Vec<String> {
    consume_messages(runtime, config, topic, count)
        .into_iter()
        .map(|message| String::from_utf8_lossy(&message.body).into_owned())
        .collect()
}

/// Reads `topic` from the start through the NameServer until `count` messages came (or 30 s
/// passed), keeping where each came from.
pub fn consume_messages(
    runtime: &tokio::runtime::Runtime,
    config: ClientConfig,
    topic: &str,
    count: u64,
) -> Vec<ConsumedMessage> {
    runtime.block_on(async {
        let mut consumer = Consumer::connect(config, topic, None, StartFrom::Earliest)
            .await
            .expect("a consumer");
        let mut messages = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (messages.len() as u64) < count && Instant::now() < deadline {
            messages.extend(consumer.poll(10_000).await.expect("poll"));
        }
        messages
    })
}

/// Creates topic `orders` through the SRV record and starts a producer sending to it all along;
/// returns once 200 messages are acknowledged.
fn start_producing(dns: &impl SrvControl) -> (tokio::runtime::Runtime, Producer, ContinuousSender) {
    run_ok(smq(dns).args([
        "topic", "create", "orders", "--queues", "2", "--groups", "g1,g2",
    ]));
    let runtime = runtime();
    let producer = runtime
        .block_on(Producer::connect(client_config(dns)))
        .expect("a producer");
    let sender = ContinuousSender::start(&runtime, producer.clone(), "orders");
    sender.wait_for_more(200);
    (runtime, producer, sender)
}

/// Creates `topic` through the SRV record (so at the NameServer it names now) and has the
/// producer send one message to it: the producer must get its route from that NameServer.
fn send_to_new_topic(
    dns: &impl SrvControl,
    runtime: &tokio::runtime::Runtime,
    producer: &Producer,
    topic: &str,
) {
    run_ok(smq(dns).args([
        "topic", "create", topic, "--queues", "2", "--groups", "g1,g2",
    ]));
    runtime
        .block_on(producer.send(topic, Message::from_body("new")))
        .expect("the producer reaches the new topic");
}

/// ns1 and ns2 run, the SRV record (TTL 2 s) names ns1, two groups register there, a producer
/// sends all along; ns1 is killed and the record repointed to ns2. The brokers register at ns2
/// within TTL + one heartbeat, a topic created after the switch is routed through ns2, the
/// producer saw no failed send, everything acknowledged is read back, and ns1 restarted answers
/// routes with 503.
pub fn a_producer_rides_through_a_repoint(dns: &impl SrvControl) {
    let ns1 = fenced_nameserver(dns, "127.0.0.1:0");
    let ns2 = fenced_nameserver(dns, "127.0.0.1:0");
    let ttl = TTL.as_secs() as u32;
    dns.point(SRV_NAME, ttl, &[(0, ns1.addr.port(), "ns1")]);
    let brokers = brokers(dns, &["g1", "g2"]);
    wait_registered(&ns1, &brokers, Duration::from_secs(10));
    let (runtime, producer, sender) = start_producing(dns);

    let ns1_addr = ns1.addr.to_string();
    drop(ns1); // SIGKILL
    dns.point(SRV_NAME, ttl, &[(0, ns2.addr.port(), "ns2")]);
    let took = wait_registered(&ns2, &brokers, TTL + HEARTBEAT + Duration::from_secs(2));
    println!("both brokers registered at ns2 {took:?} after the repoint");
    sender.wait_for_more(200);

    send_to_new_topic(dns, &runtime, &producer, "after-switch");
    let (status, body) = ns2.get("/v1/routes/after-switch");
    assert_eq!(status, 200, "{body}");
    let route: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        route["groups"].as_array().expect("groups").len(),
        2,
        "{body}"
    );

    sender.wait_for_more(100);
    let sent = sender.stop_without_failures(&runtime);
    println!("{sent} messages sent during the switch, none failed");
    let bodies = consume_all(&runtime, client_config(dns), "orders", sent);
    assert_eq!(
        bodies.len() as u64,
        sent,
        "every acknowledged message is read back"
    );

    let restarted = fenced_nameserver(dns, &ns1_addr);
    let (status, body) = restarted.get("/v1/routes/orders");
    assert_eq!(status, 503, "a restarted ns1 must not serve routes: {body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let message = error["error"].as_str().expect("an error field");
    assert!(message.contains("re-resolve"), "{message}");
}

/// The SRV record names ns1 (priority 10) and ns2 (priority 20). Brokers and clients use ns1
/// alone; when it dies, they fall over to ns2 without any change to DNS, and the producer saw
/// no failed send.
pub fn clients_prefer_the_first_priority_and_fall_over(dns: &impl SrvControl) {
    let ns1 = NameServer::start(&[]);
    let ns2 = NameServer::start(&[]);
    let ttl = TTL.as_secs() as u32;
    let targets = [(10, ns1.addr.port(), "ns1"), (20, ns2.addr.port(), "ns2")];
    dns.point(SRV_NAME, ttl, &targets);
    let brokers = brokers(dns, &["g1", "g2"]);
    wait_registered(&ns1, &brokers, Duration::from_secs(10));
    assert!(
        registered(&ns2).is_empty(),
        "brokers register with the preferred NameServer only"
    );
    let (runtime, producer, sender) = start_producing(dns);
    assert!(route_requests(&ns1) > 0, "routes come from ns1");
    assert_eq!(
        route_requests(&ns2),
        0,
        "ns2 is not asked while ns1 answers"
    );

    drop(ns1); // SIGKILL; DNS stays as it is
    let took = wait_registered(&ns2, &brokers, HEARTBEAT * 2 + Duration::from_secs(2));
    println!("both brokers registered at ns2 {took:?} after ns1 died");
    send_to_new_topic(dns, &runtime, &producer, "later");
    assert!(route_requests(&ns2) > 0, "routes now come from ns2");
    sender.wait_for_more(200);
    sender.stop_without_failures(&runtime);
}

/// Lines each fresh `smq produce` process sends.
pub const LINES_PER_PROCESS: usize = 100;

/// One `smq produce` process of a [`FreshProducers`] loop.
#[derive(Debug, Clone)]
pub struct ProduceRun {
    /// Its number: its lines are `p{index}-{line}`.
    pub index: usize,
    /// Every other process sends all its lines with key `k{index % 8}`.
    pub key: Option<String>,
    pub started: Instant,
    pub took: Duration,
    pub succeeded: bool,
    pub stderr: String,
}

/// Loops of `smq produce` processes, each a new process (no cached routes) sending
/// [`LINES_PER_PROCESS`] lines through the SRV record, until stopped.
pub struct FreshProducers {
    stop: Arc<AtomicBool>,
    runs: Arc<Mutex<Vec<ProduceRun>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FreshProducers {
    /// Starts `loops` loops side by side.
    pub fn start(dns: &impl SrvControl, topic: &str, loops: usize) -> FreshProducers {
        let stop = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let dns_server = dns.dns_server();
        let threads = (0..loops)
            .map(|_| {
                let (stop, runs, next) = (stop.clone(), runs.clone(), next.clone());
                let topic = topic.to_owned();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let input: String = (0..LINES_PER_PROCESS)
                            .map(|line| format!("p{index}-{line}\n"))
                            .collect();
                        let key = (index % 2 == 1).then(|| format!("k{}", index % 8));
                        let mut command = smq_asking(dns_server);
                        command.args(["produce", &topic]);
                        if let Some(key) = &key {
                            command.args(["--key", key]);
                        }
                        let started = Instant::now();
                        let output = run_with_stdin(&mut command, input.as_bytes());
                        runs.lock().unwrap().push(ProduceRun {
                            index,
                            key,
                            started,
                            took: started.elapsed(),
                            succeeded: output.status.success(),
                            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                        });
                    }
                })
            })
            .collect();
        FreshProducers {
            stop,
            runs,
            threads,
        }
    }

    /// Waits until `count` processes that started at or after `since` have finished.
    pub fn wait_for_runs_since(&self, since: Instant, count: usize, within: Duration) {
        wait_for("fresh smq produce processes", within, || {
            let runs = self.runs.lock().unwrap();
            (runs.iter().filter(|run| run.started >= since).count() >= count).then_some(())
        });
    }

    /// Stops the loops after their current processes; returns every run, in index order.
    pub fn stop(self) -> Vec<ProduceRun> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a produce loop");
        }
        let mut runs = self.runs.lock().unwrap().clone();
        runs.sort_by_key(|run| run.index);
        runs
    }
}

/// How the standby NameServer of [`fresh_producers_ride_through_a_repoint`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// Running from the start, fenced while the record names ns1.
    Running,
    /// Started only after the record was repointed to it: it knows nothing yet.
    StartedAfterTheRepoint,
}

/// A free loopback port (bound and released at once): for a NameServer started later under a
/// name the SRV record already gives.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// ns1 serves, the SRV record (TTL 2 s) names it, two groups register there; two loops of fresh
/// `smq produce` processes (100 lines each, every other one with a key) and a long-running
/// producer send all along. ns1 is SIGKILLed; once a new process has started against the dead
/// NameServer, the record is repointed to ns2 (which runs already, or is started only now).
/// Every produce call succeeds, every acknowledged message is read back, and each key's
/// messages are all in one queue. Prints how long the slowest new process took.
pub fn fresh_producers_ride_through_a_repoint(dns: &impl SrvControl, standby: Standby) {
    let ttl = TTL.as_secs() as u32;
    let ns1 = fenced_nameserver(dns, "127.0.0.1:0");
    let mut ns2 = (standby == Standby::Running).then(|| fenced_nameserver(dns, "127.0.0.1:0"));
    let ns2_port = ns2.as_ref().map_or_else(free_port, |ns| ns.addr.port());
    dns.point(SRV_NAME, ttl, &[(0, ns1.addr.port(), "ns1")]);
    let brokers = brokers(dns, &["g1", "g2"]);
    wait_registered(&ns1, &brokers, Duration::from_secs(10));
    let (runtime, _producer, sender) = start_producing(dns);
    let started = Instant::now();
    let loops = FreshProducers::start(dns, "orders", 2);
    loops.wait_for_runs_since(started, 4, Duration::from_secs(30));

    drop(ns1); // SIGKILL
    let killed = Instant::now();
    // The operator's reaction time: for a second the record names a dead NameServer, and the
    // processes that look for a route meanwhile find none.
    std::thread::sleep(Duration::from_secs(1));
    dns.point(SRV_NAME, ttl, &[(0, ns2_port, "ns2")]);
    let repointed = Instant::now();
    if standby == Standby::StartedAfterTheRepoint {
        ns2 = Some(fenced_nameserver(dns, &format!("127.0.0.1:{ns2_port}")));
    }
    let ns2 = ns2.expect("ns2 runs");
    let took = wait_registered(&ns2, &brokers, TTL + HEARTBEAT + Duration::from_secs(2));
    println!("both brokers registered at ns2 {took:?} after the repoint");
    // Processes that start during and after the switch, well past the brokers' re-registration.
    loops.wait_for_runs_since(
        repointed + took + Duration::from_secs(1),
        4,
        Duration::from_secs(60),
    );
    let runs = loops.stop();
    sender.wait_for_more(100);
    let sent = sender.stop_without_failures(&runtime);

    let failed: Vec<&ProduceRun> = runs.iter().filter(|run| !run.succeeded).collect();
    assert!(
        failed.is_empty(),
        "{} of {} smq produce processes failed, the first: {:?}",
        failed.len(),
        runs.len(),
        failed.first()
    );
    let switched = repointed + took;
    let during: Vec<&ProduceRun> = runs
        .iter()
        .filter(|run| run.started < switched && run.started + run.took > killed)
        .collect();
    assert!(during.len() >= 2, "no process ran during the switch");
    let slowest = runs.iter().max_by_key(|run| run.took).expect("runs");
    let mut took_all: Vec<Duration> = runs.iter().map(|run| run.took).collect();
    took_all.sort();
    println!(
        "{} fresh smq produce processes ({} ran during the switch), none failed; the slowest \
         took {:?} (started {:?} after the kill; median {:?}); the long-running producer sent {sent}",
        runs.len(),
        during.len(),
        slowest.took,
        slowest.started.saturating_duration_since(killed),
        took_all[took_all.len() / 2]
    );
    if let Some(waited) = runs
        .iter()
        .find(|run| run.stderr.contains("waiting for a NameServer"))
    {
        println!(
            "a process that waited said: {}",
            waited.stderr.lines().next().unwrap_or("")
        );
    }

    let total = sent + (runs.len() * LINES_PER_PROCESS) as u64;
    let messages = consume_messages(&runtime, client_config(dns), "orders", total);
    let bodies: BTreeSet<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(
        messages.len() as u64,
        total,
        "every acknowledged message once"
    );
    for run in &runs {
        for line in 0..LINES_PER_PROCESS {
            let body = format!("p{}-{line}", run.index);
            assert!(
                bodies.contains(&body),
                "{body} acknowledged but not read back"
            );
        }
    }
    // A key keeps its queue across the switch: processes before, during and after it.
    let mut queues_of_key: BTreeMap<String, BTreeSet<(String, u32)>> = BTreeMap::new();
    for message in messages.iter().filter(|m| !m.key.is_empty()) {
        queues_of_key
            .entry(String::from_utf8_lossy(&message.key).into_owned())
            .or_default()
            .insert((message.broker_group.to_string(), message.queue_id));
    }
    assert!(queues_of_key.len() >= 4, "{queues_of_key:?}");
    for (key, queues) in &queues_of_key {
        assert_eq!(queues.len(), 1, "key {key} moved: {queues:?}");
    }
}

/// A NameServer fenced because the record names another (and checking it only every minute on
/// its own) is named by the record: it serves routes within 200 ms, because a route request
/// that finds it fenced has it look the record up again.
pub fn a_fenced_nameserver_serves_as_soon_as_the_record_names_it(dns: &impl SrvControl) {
    let ttl = TTL.as_secs() as u32;
    let other = free_port();
    dns.point(SRV_NAME, ttl, &[(0, other, "ns1")]);
    let mut args = srv_args(dns);
    args.extend(["--fencing-interval-ms".into(), "60000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nameserver = NameServer::start(&args);
    let heartbeat = r#"{"cluster":"smq","group":"g1","role":"master","addr":"127.0.0.1:1",
        "data_version":1,"log_end_offset":0,"topics":[{"name":"orders","queues":2}]}"#;
    let (status, body) = nameserver.request("POST", "/v1/brokers/heartbeat", heartbeat);
    assert_eq!(status, 200, "{body}");
    let (status, body) = nameserver.get("/v1/routes/orders");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"fenced\""), "{body}");

    dns.point(SRV_NAME, ttl, &[(0, nameserver.addr.port(), "ns2")]);
    let repointed = Instant::now();
    let (status, body) = wait_for("routes served", Duration::from_secs(5), || {
        let (status, body) = nameserver.get("/v1/routes/orders");
        (status != 503).then_some((status, body))
    });
    let took = repointed.elapsed();
    println!("the fenced NameServer served {took:?} after the record named it");
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_millis(200),
        "served only {took:?} after the repoint"
    );
}
