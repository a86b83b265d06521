//! Producers and consumers follow the NameServer's routes over several broker groups: through a
//! DNS repoint with the embedded hickory server, over two SRV priorities, and with the
//! NameServer down from the start of a run; and the CLI creates topics on every master (or the
//! named groups) and produces and consumes through the NameServer, and the library's `Admin`
//! does the same cluster-wide operations.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use smq_client::protocol::ErrorCode;
use smq_client::{Admin, ClientConfig, ClusterError, Consumer, Message, Producer, StartFrom};
use smq_tests::embedded_dns::EmbeddedDns;
use smq_tests::failover::{self, registered, ContinuousSender};
use smq_tests::proxy::SilentProxy;
use smq_tests::{run_with_stdin, wait_for, Broker, NameServer};

#[test]
fn through_the_embedded_dns_a_producer_rides_through_a_repoint_without_a_failed_send() {
    failover::a_producer_rides_through_a_repoint(&EmbeddedDns::start());
}

#[test]
fn through_the_embedded_dns_clients_prefer_the_first_priority_and_fall_over_to_the_second() {
    failover::clients_prefer_the_first_priority_and_fall_over(&EmbeddedDns::start());
}

/// Every segment is reserved on disk whole (and one ahead), and these tests run at once: 16 MiB.
const SMALL_SEGMENTS: [&str; 2] = ["--segment-bytes", "16777216"];

/// A broker of `group` registered with the NameServer at `ns`, with small segments and `extra`.
fn group_broker(ns: &str, group: &str, extra: &[&str]) -> Broker {
    let mut args = vec!["--nameserver", ns, "--group", group];
    args.extend_from_slice(&SMALL_SEGMENTS);
    args.extend_from_slice(extra);
    Broker::start(&args)
}

/// Two groups, g1 and g2, registered with `nameserver`.
fn two_groups(nameserver: &NameServer) -> Vec<Broker> {
    let brokers: Vec<Broker> = ["g1", "g2"]
        .iter()
        .map(|group| group_broker(&nameserver.url(), group, &[]))
        .collect();
    let mut want: Vec<String> = brokers.iter().map(|b| b.addr.to_string()).collect();
    want.sort();
    wait_for("both brokers registered", Duration::from_secs(10), || {
        (registered(nameserver) == want).then_some(())
    });
    brokers
}

fn ok(output: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "smq failed: {stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs `smq` against `nameserver`; its standard output, failing the test unless it exits 0.
fn smq_ok(nameserver: &NameServer, args: &[&str]) -> String {
    ok(nameserver.smq().args(args).output().expect("running smq"))
}

/// The groups a topic's route names.
fn routed_groups(nameserver: &NameServer, topic: &str) -> Vec<String> {
    let (status, body) = nameserver.get(&format!("/v1/routes/{topic}"));
    assert_eq!(status, 200, "{body}");
    let route: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    route["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["group"].as_str().expect("group").to_owned())
        .collect()
}

#[test]
fn ten_thousand_messages_go_through_with_the_nameserver_down_from_the_start() {
    let nameserver = NameServer::start(&[]);
    let _brokers = two_groups(&nameserver);
    // --groups: the NameServer just started and is warming up; without it, create would wait
    // until then for groups that might not have registered yet.
    smq_ok(
        &nameserver,
        &[
            "topic", "create", "orders", "--queues", "4", "--groups", "g1,g2",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Refreshes are due all the time, and all of them fail.
    let config = nameserver.client_config(50);
    let (producer, mut consumer) = runtime.block_on(async {
        let producer = Producer::connect(config.clone()).await.unwrap();
        assert_eq!(producer.queue_count_of("orders").await.unwrap(), 8);
        // No consumer group: a member of one reads only what a NameServer gave it, and none
        // will answer here.
        let consumer = Consumer::connect(config, "orders", None, StartFrom::Earliest)
            .await
            .unwrap();
        (producer, consumer)
    });
    drop(nameserver); // SIGKILL: routes are cached, and no NameServer answers from here on

    let received = runtime.block_on(async {
        let mut pending = Vec::new();
        for i in 0..10_000 {
            let message = Message::from_body(format!("m{i}"));
            pending.push(producer.start_send("orders", message).await.unwrap());
        }
        producer.flush().await.unwrap();
        for delivery in pending {
            delivery.wait().await.unwrap();
        }
        let mut received = Vec::new();
        while received.len() < 10_000 {
            received.extend(consumer.poll(10_000).await.unwrap());
        }
        consumer.commit().await.unwrap();
        received
    });
    let bodies: BTreeSet<String> = received
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 10_000, "every message once");
    assert_eq!(bodies, (0..10_000).map(|i| format!("m{i}")).collect());
    let groups: BTreeSet<&str> = received.iter().map(|m| &*m.broker_group).collect();
    assert_eq!(
        groups,
        BTreeSet::from(["g1", "g2"]),
        "spread over both groups"
    );
}

#[test]
fn a_consumer_follows_the_routes_to_a_group_that_takes_the_topic_later() {
    // A short warm-up: the consumer group's queues are given out once it is over.
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1500"]);
    let _brokers = two_groups(&nameserver);
    smq_ok(
        &nameserver,
        &["topic", "create", "t", "--queues", "2", "--groups", "g1"],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = nameserver.client_config(100);
    let mut consumer = runtime
        .block_on(Consumer::connect(
            config.clone(),
            "t",
            Some("c"),
            StartFrom::Earliest,
        ))
        .unwrap();
    smq_ok(
        &nameserver,
        &["topic", "create", "t", "--queues", "2", "--groups", "g2"],
    );
    let groups = runtime.block_on(async {
        // One message each to the next queue in turn: 100 small messages reach both groups.
        let mut round_robin = config;
        round_robin.sticky_queue_bytes = 0;
        let producer = Producer::connect(round_robin).await.unwrap();
        assert_eq!(producer.queue_count_of("t").await.unwrap(), 4);
        let messages = (0..100)
            .map(|i| Message::from_body(format!("m{i}")))
            .collect();
        producer.send_batch("t", messages).await.unwrap();
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while received.len() < 100 && tokio::time::Instant::now() < deadline {
            received.extend(consumer.poll(100).await.unwrap());
        }
        assert_eq!(received.len(), 100, "every message, from both groups");
        consumer.commit().await.unwrap();
        received
            .iter()
            .map(|m| m.broker_group.to_string())
            .collect::<BTreeSet<String>>()
    });
    assert_eq!(groups, BTreeSet::from(["g1".to_owned(), "g2".to_owned()]));
}

#[test]
fn when_a_master_dies_unkeyed_messages_go_on_to_the_other_group_at_once() {
    let nameserver = NameServer::start(&[]);
    let mut brokers = two_groups(&nameserver);
    smq_ok(
        &nameserver,
        &["topic", "create", "t", "--queues", "2", "--groups", "g1,g2"],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let producer = runtime
        .block_on(Producer::connect(nameserver.client_config(30_000)))
        .unwrap();
    // Several senders, so that the kill meets sends in flight.
    let sender = ContinuousSender::start_concurrent(&runtime, producer.clone(), "t", 4);
    sender.wait_for_more(200);

    let victim = brokers.pop().unwrap();
    let victim_addr = victim.addr.to_string();
    victim.kill();
    // Round robin over both groups would fail every other send until the NameServer drops the
    // dead master (10 s): the producer avoids it instead, and sends the batches in flight at
    // the kill again to the other group.
    sender.wait_for_more(500);
    assert!(
        registered(&nameserver).contains(&victim_addr),
        "the sends went on before the routes dropped the dead master"
    );
    let sent = sender.stop_without_failures(&runtime);
    println!("{sent} sent, none failed; {:?}", producer.metrics());
}

#[test]
fn an_unanswered_batch_goes_to_another_group_within_the_send_timeout_and_a_keyed_one_fails() {
    let nameserver = NameServer::start(&[]);
    let ns = nameserver.url();
    // g1's master is reached through a proxy that can fall silent: a broker that hangs.
    let proxy = SilentProxy::bind();
    let proxy_addr = proxy.addr.to_string();
    let g1 = group_broker(&ns, "g1", &["--advertise", &proxy_addr]);
    proxy.forward_to(g1.addr);
    let _g2 = group_broker(&ns, "g2", &[]);
    wait_for("both brokers registered", Duration::from_secs(10), || {
        (registered(&nameserver).len() == 2).then_some(())
    });
    smq_ok(
        &nameserver,
        &["topic", "create", "t", "--queues", "2", "--groups", "g1,g2"],
    );
    let mut config = nameserver.client_config(30_000);
    config.ack_timeout_ms = 300;
    config.attempt_timeout_ms = 1_000;
    config.send_timeout_ms = 5_000;
    let key_of_g1 = (0..1000)
        .map(|i| format!("key-{i}"))
        .find(|key| smq_client::producer::queue_for_key(key.as_bytes(), 4).unwrap() < 2)
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let producer = Producer::connect(config).await.unwrap();
        // Both lanes open: round robin reaches g1 through the proxy.
        for i in 0..8 {
            producer
                .send("t", Message::from_body(format!("warm-{i}")))
                .await
                .unwrap();
        }
        assert_eq!(producer.metrics().batches_resent, 0);

        proxy.fall_silent();
        let mut slowest = Duration::ZERO;
        for i in 0..8 {
            let started = Instant::now();
            let delivery = producer
                .send("t", Message::from_body(format!("m{i}")))
                .await;
            delivery.unwrap_or_else(|error| panic!("unkeyed message {i} failed: {error}"));
            slowest = slowest.max(started.elapsed());
        }
        let metrics = producer.metrics();
        println!("slowest send {slowest:?}; {metrics:?}");
        assert_eq!(
            metrics.batches_resent, 1,
            "the one batch sent to g1 went to g2"
        );
        assert_eq!(
            metrics.messages_maybe_duplicated, 1,
            "g1 may have stored it"
        );
        assert!(
            slowest >= Duration::from_millis(1_000) && slowest < Duration::from_millis(3_000),
            "sent again after one attempt timeout (1 s), well within the send timeout (5 s): \
             {slowest:?}"
        );

        // A keyed message of g1 is never moved: a retryable error naming the group.
        let started = Instant::now();
        let keyed = Message {
            key: key_of_g1.into_bytes(),
            ..Message::from_body("keyed")
        };
        let error = producer.send("t", keyed).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(
            error
                .to_string()
                .contains("broker group g1 did not acknowledge keyed messages"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_millis(3_000));
        assert_eq!(producer.metrics().batches_resent, 1, "the keyed one stayed");
    });
}

#[test]
fn a_key_keeps_its_queue_when_its_groups_master_dies_and_leaves_the_routes() {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1500"]);
    let mut brokers = two_groups(&nameserver);
    smq_ok(
        &nameserver,
        &["topic", "create", "t", "--queues", "2", "--groups", "g1,g2"],
    );
    // Over the 4 queues (g1/0, g1/1, g2/0, g2/1) a key of g2 hashes to 2 or 3; over g1's two
    // alone it would land on g1.
    let key_of = |group_queues: std::ops::Range<u32>| {
        (0..1000)
            .map(|i| format!("key-{i}"))
            .find(|key| {
                group_queues
                    .contains(&smq_client::producer::queue_for_key(key.as_bytes(), 4).unwrap())
            })
            .unwrap()
    };
    let (key_g1, key_g2) = (key_of(0..2), key_of(2..4));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let producer = Producer::connect(nameserver.client_config(100))
            .await
            .unwrap();
        let keyed = |key: &str| Message {
            key: key.as_bytes().to_vec(),
            ..Message::from_body("m")
        };
        let before = producer.send("t", keyed(&key_g1)).await.unwrap();
        producer.send("t", keyed(&key_g2)).await.unwrap();

        brokers.pop().unwrap().kill(); // g2's master
        let deadline = Instant::now() + Duration::from_secs(10);
        while producer.queue_count_of("t").await.unwrap() != 2 {
            assert!(Instant::now() < deadline, "the routes never dropped g2");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(routed_groups(&nameserver, "t"), ["g1"]);

        let after = producer.send("t", keyed(&key_g1)).await.unwrap();
        assert_eq!(
            after.queue_id, before.queue_id,
            "a key of g1 keeps its queue"
        );
        let error = producer.send("t", keyed(&key_g2)).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(
            error
                .to_string()
                .contains("broker group g2 takes no writes"),
            "a key of g2 waits for its own queue, never moves to g1: {error}"
        );

        // A producer started now, with g2 wholly down (it had no slave), learns g2's queues
        // from the route's down groups: its keys map as before.
        let (_, route) = nameserver.get("/v1/routes/t");
        assert!(route.contains(r#""down_groups":[{"cluster""#), "{route}");
        let fresh = Producer::connect(nameserver.client_config(100))
            .await
            .unwrap();
        let again = fresh.send("t", keyed(&key_g1)).await.unwrap();
        assert_eq!(
            again.queue_id, before.queue_id,
            "a fresh producer maps the key alike"
        );
        let error = fresh.send("t", keyed(&key_g2)).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("broker group g2 takes no writes"),
            "{error}"
        );
    });
}

#[test]
fn a_consumer_reads_the_groups_it_can_reach_while_another_in_the_routes_is_down() {
    let nameserver = NameServer::start(&[]);
    let broker = Broker::start(&["--nameserver", &nameserver.url(), "--group", "g1"]);
    wait_for("the broker registered", Duration::from_secs(10), || {
        (registered(&nameserver) == [broker.addr.to_string()]).then_some(())
    });
    smq_ok(
        &nameserver,
        &["topic", "create", "t", "--queues", "2", "--groups", "g1"],
    );
    // A group whose master heartbeated and then died: nothing listens on port 1.
    let ghost = r#"{"cluster":"smq","group":"ghost","role":"master","addr":"127.0.0.1:1",
        "data_version":1,"log_end_offset":0,"topics":[{"name":"t","queues":2}]}"#;
    let (status, body) = nameserver.request("POST", "/v1/brokers/heartbeat", ghost);
    assert_eq!(status, 200, "{body}");
    assert_eq!(routed_groups(&nameserver, "t"), ["g1", "ghost"]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = nameserver.client_config(100);
    let received = runtime.block_on(async {
        let mut consumer = Consumer::connect(config.clone(), "t", None, StartFrom::Earliest)
            .await
            .expect("the consumer starts with the group it can reach");
        let mut producer_config = config;
        producer_config.nameserver = None;
        producer_config.broker = broker.addr.to_string();
        let producer = Producer::connect(producer_config).await.unwrap();
        let messages = (0..50)
            .map(|i| Message::from_body(format!("m{i}")))
            .collect();
        producer.send_batch("t", messages).await.unwrap();
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while received.len() < 50 && tokio::time::Instant::now() < deadline {
            received.extend(consumer.poll(100).await.expect("polls do not fail"));
        }
        received
    });
    assert_eq!(received.len(), 50);
}

#[test]
fn the_cli_creates_topics_on_every_master_or_the_named_groups_and_produces_through_routes() {
    // A short heartbeat timeout, so that the warm-up (during which creating on every master
    // waits) is short too.
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "2000"]);
    let brokers = two_groups(&nameserver);

    smq_ok(
        &nameserver,
        &[
            "topic", "create", "only-g2", "--queues", "3", "--groups", "g2",
        ],
    );
    assert_eq!(routed_groups(&nameserver, "only-g2"), ["g2"]);
    let output = nameserver
        .smq()
        .args(["topic", "create", "x", "--groups", "g9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`g9` has no live master"), "{stderr}");
    let output = brokers[0]
        .smq()
        .args(["topic", "create", "x", "--groups", "g1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--nameserver"));

    smq_ok(
        &nameserver,
        &["topic", "create", "everywhere", "--queues", "2"],
    );
    assert_eq!(routed_groups(&nameserver, "everywhere"), ["g1", "g2"]);
    let lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
    let input = lines.join("\n") + "\n";
    let output = run_with_stdin(
        // One line each to the next queue in turn, so that both groups get some.
        nameserver
            .smq()
            .args(["produce", "everywhere", "--sticky-queue-bytes", "0"]),
        input.as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("1000 acknowledged"), "{stderr}");
    for broker in &brokers {
        let list = ok(broker.smq().args(["topic", "list"]).output().unwrap());
        let stored: u64 = list
            .lines()
            .find(|line| line.starts_with("everywhere "))
            .and_then(|line| line.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or_else(|| panic!("no row for the topic: {list}"));
        assert!(stored > 0, "group of {} got none: {list}", broker.addr);
    }
    let stdout = smq_ok(
        &nameserver,
        &["consume", "everywhere", "--group", "g", "--count", "1000"],
    );
    let mut got: Vec<&str> = stdout.lines().collect();
    got.sort();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want);

    let output = run_with_stdin(nameserver.smq().args(["produce", "nosuch"]), b"x\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no route to topic `nosuch`"), "{stderr}");
    assert!(stderr.contains("smq topic create nosuch"), "{stderr}");

    smq_ok(&nameserver, &["topic", "delete", "only-g2"]);
    wait_for("the deleted topic unrouted", Duration::from_secs(5), || {
        (nameserver.get("/v1/routes/only-g2").0 == 404).then_some(())
    });
}

#[test]
fn admin_creates_a_topic_on_every_master_waits_until_routed_and_counts_what_each_queue_stores() {
    // A short heartbeat timeout, so that the warm-up (during which creating on every master
    // waits) is short too.
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "2000"]);
    let brokers = two_groups(&nameserver);
    let mut config = nameserver.client_config(100);
    config.route_wait_ms = 10_000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut groups = Admin::create_topic_on_masters(&config, "orders", 2, &[])
            .await
            .unwrap();
        groups.sort();
        assert_eq!(groups, ["g1", "g2"]);
        let route = Admin::wait_until_routed(&config, "orders", &groups, Duration::from_secs(10))
            .await
            .unwrap();
        let routed: Vec<&str> = route.groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(routed, ["g1", "g2"]);

        // One message each to the next queue in turn: 400 small ones reach every queue.
        let mut round_robin = config.clone();
        round_robin.sticky_queue_bytes = 0;
        let producer = Producer::connect(round_robin).await.unwrap();
        let mut pending = Vec::new();
        for i in 0..400 {
            let message = Message::from_body(format!("m{i}"));
            pending.push(producer.start_send("orders", message).await.unwrap());
        }
        for delivery in pending {
            delivery.wait().await.unwrap();
        }
        let stored = Admin::stored_messages(&config, "orders").await.unwrap();
        let mut queues: Vec<(String, u32)> = stored
            .iter()
            .map(|queue| (queue.group.clone(), queue.queue_id))
            .collect();
        queues.sort();
        let want = [("g1", 0), ("g1", 1), ("g2", 0), ("g2", 1)].map(|(g, q)| (g.to_owned(), q));
        assert_eq!(queues, want, "each queue of each group once: {stored:?}");
        assert_eq!(stored.iter().map(|q| q.messages).sum::<u64>(), 400);
        for group in ["g1", "g2"] {
            let in_group: u64 = stored
                .iter()
                .filter(|queue| queue.group == group)
                .map(|queue| queue.messages)
                .sum();
            assert!(in_group > 0, "group {group} stores none: {stored:?}");
        }

        // A master that refuses (it has the topic already) fails alone, named with its broker.
        let g1 = brokers[0].addr.to_string();
        let admin = Admin::connect_to(&config, &g1).await.unwrap();
        admin.create_topic("half", 1).await.unwrap();
        let error = Admin::create_topic_on_masters(&config, "half", 2, &[])
            .await
            .unwrap_err();
        let ClusterError::Partial { done, failed } = &error else {
            panic!("not a partial failure: {error}");
        };
        assert_eq!(done, &["g2"]);
        assert_eq!(failed.len(), 1, "{error}");
        assert_eq!(
            (failed[0].group.as_str(), failed[0].broker.as_str()),
            ("g1", g1.as_str())
        );
        assert_eq!(failed[0].error.code(), Some(ErrorCode::TopicAlreadyExists));
        assert!(
            error
                .to_string()
                .starts_with(&format!("failed in 1 group(s): group g1 ({g1}): ")),
            "{error}"
        );

        let mut deleted = Admin::delete_topic_on_masters(&config, "orders")
            .await
            .unwrap();
        deleted.sort();
        assert_eq!(deleted, ["g1", "g2"]);
        let error = Admin::delete_topic_on_masters(&config, "orders")
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClusterError::NoGroupHasTopic { .. }),
            "{error}"
        );
    });
}

#[test]
fn admin_over_a_cluster_without_a_master_says_so_and_creates_nothing() {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1000"]);
    let mut config = nameserver.client_config(100);
    config.route_wait_ms = 10_000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let error = Admin::create_topic_on_masters(&config, "t", 2, &[])
            .await
            .unwrap_err();
        assert!(matches!(error, ClusterError::NoMaster), "{error}");
        assert!(
            error.to_string().contains("knows no live master"),
            "{error}"
        );
        let error = Admin::delete_topic_on_masters(&config, "t")
            .await
            .unwrap_err();
        assert!(matches!(error, ClusterError::NoMaster), "{error}");
        let g9 = ["g9".to_owned()];
        let error = Admin::create_topic_on_masters(&config, "t", 2, &g9)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClusterError::GroupWithoutMaster { group } if group == "g9"),
            "{error}"
        );
        let error = Admin::wait_until_routed(&config, "t", &g9, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClusterError::NotRouted { missing, .. } if missing == &g9),
            "{error}"
        );

        let without_nameserver = ClientConfig::new("127.0.0.1:1");
        let error = Admin::create_topic_on_masters(&without_nameserver, "t", 2, &[])
            .await
            .unwrap_err();
        assert!(matches!(error, ClusterError::NoNameServer), "{error}");
    });
    let (status, body) = nameserver.get("/v1/topics");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("\"t\""), "no topic was created: {body}");
}

#[test]
fn through_the_embedded_dns_fresh_smq_produce_processes_ride_through_a_repoint() {
    failover::fresh_producers_ride_through_a_repoint(
        &EmbeddedDns::start(),
        failover::Standby::Running,
    );
}

#[test]
fn through_the_embedded_dns_fresh_smq_produce_processes_ride_through_a_repoint_to_a_cold_nameserver(
) {
    failover::fresh_producers_ride_through_a_repoint(
        &EmbeddedDns::start(),
        failover::Standby::StartedAfterTheRepoint,
    );
}

#[test]
fn through_the_embedded_dns_a_fenced_nameserver_serves_within_200_ms_of_being_named() {
    failover::a_fenced_nameserver_serves_as_soon_as_the_record_names_it(&EmbeddedDns::start());
}

/// A NameServer that has just taken over hears from one group's broker that the cluster has a
/// group g2 (the groups its previous NameServer knew): until g2 re-registers the route names it
/// missing, and a new `smq produce` waits for it rather than hashing keys over g1 alone.
#[test]
fn a_first_lookup_waits_for_the_groups_that_brokers_name_and_that_have_not_re_registered() {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "20000"]);
    let _g1 = group_broker(&nameserver.url(), "g1", &[]);
    smq_ok(
        &nameserver,
        &[
            "topic", "create", "orders", "--queues", "2", "--groups", "g1",
        ],
    );
    // A broker of another group (no topics) that heard of g1 and g2 from the NameServer before.
    let naming_g2 = r#"{"cluster":"smq","group":"gx","role":"master","addr":"127.0.0.1:1",
        "data_version":1,"log_end_offset":0,"known_groups":["g1","g2","gx"]}"#;
    let (status, body) = nameserver.request("POST", "/v1/brokers/heartbeat", naming_g2);
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["groups"],
        serde_json::json!(["g1", "g2", "gx"]),
        "{body}"
    );
    let missing = |nameserver: &NameServer| {
        let (status, body) = nameserver.get("/v1/routes/orders");
        assert_eq!(status, 200, "{body}");
        let route: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(route["warming_up"], true, "{body}");
        route["missing_groups"].clone()
    };
    assert_eq!(
        missing(&nameserver),
        serde_json::json!([{"cluster": "smq", "group": "g2"}])
    );

    let asked_before = failover::route_requests(&nameserver);
    let (mut child, _lines) = spawn_produce(&nameserver, "orders", b"a\n");
    wait_for(
        "the new process to ask again",
        Duration::from_secs(10),
        || (failover::route_requests(&nameserver) >= asked_before + 3).then_some(()),
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "it sent with g2 missing from the route"
    );
    let _g2 = group_broker(&nameserver.url(), "g2", &[]);
    smq_ok(
        &nameserver,
        &[
            "topic", "create", "orders", "--queues", "2", "--groups", "g2",
        ],
    );
    assert!(child.wait().unwrap().success());
    assert!(
        missing(&nameserver).is_null(),
        "absent once every group is back"
    );
}

/// `smq produce` with stderr read line by line as it runs; `lines` receives them.
fn spawn_produce(
    nameserver: &NameServer,
    topic: &str,
    input: &'static [u8],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, Write};
    let mut child = nameserver
        .smq()
        .args(["produce", topic])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(input));
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    (child, received)
}

#[test]
fn during_the_warm_up_the_cli_waits_for_a_topic_and_after_it_a_missing_topic_fails_at_once() {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "6000"]);

    // Warming up, with a short wait: it waits, says so, and fails saying why.
    let started = Instant::now();
    let output = run_with_stdin(
        nameserver
            .smq()
            .args(["produce", "nosuch", "--route-wait-ms", "1500"]),
        b"x\n",
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(took >= Duration::from_millis(1200), "{took:?}: {stderr}");
    assert_eq!(
        stderr.matches("smq: waiting for a NameServer").count(),
        1,
        "said once: {stderr}"
    );
    assert!(stderr.contains("is warming up"), "{stderr}");
    assert!(stderr.contains("--route-wait-ms"), "{stderr}");

    // Warming up: it waits until the topic's broker registers, then sends.
    let (mut child, lines) = spawn_produce(&nameserver, "late", b"a\nb\n");
    let notice = lines
        .recv_timeout(Duration::from_secs(5))
        .expect("a line on stderr");
    assert!(notice.contains("waiting for a NameServer"), "{notice}");
    assert!(notice.contains("warming up"), "{notice}");
    let broker = Broker::start(&["--nameserver", &nameserver.url(), "--group", "g1"]);
    ok(broker
        .smq()
        .args(["topic", "create", "late", "--queues", "2"])
        .output()
        .unwrap());
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("2 acknowledged")),
        "{rest:?}"
    );
    println!(
        "the waiting produce finished {:?} after the NameServer started",
        started.elapsed()
    );

    // Warm: a topic that does not exist fails at once, saying how to create it.
    wait_for("the warm-up over", Duration::from_secs(10), || {
        let (_, body) = nameserver.get("/v1/cluster");
        (!body.contains("warming_up_ms")).then_some(())
    });
    let started = Instant::now();
    let output = run_with_stdin(nameserver.smq().args(["produce", "nosuch"]), b"x\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(1), "{stderr}");
    assert!(stderr.contains("no route to topic `nosuch`"), "{stderr}");
    assert!(stderr.contains("smq topic create nosuch"), "{stderr}");
    assert!(!stderr.contains("waiting"), "{stderr}");
}
