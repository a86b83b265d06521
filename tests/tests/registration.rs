//! Brokers register with a real NameServer: they show in /v1/cluster, their topics in
//! /v1/routes within one heartbeat, a killed broker leaves the routes within the heartbeat
//! timeout, `smq cluster` / `smq topic describe` read the NameServer, and an outage of the
//! NameServer costs one warning while clients are still served.

use std::process::Output;
use std::time::{Duration, Instant};

use smq_tests::{wait_for, Broker, NameServer};

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "smq failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The route of `topic` once it names `master` as a group's master.
fn wait_for_route(nameserver: &NameServer, topic: &str, master: &str, within: Duration) {
    wait_for(&format!("{topic} routed to {master}"), within, || {
        let (status, body) = nameserver.get(&format!("/v1/routes/{topic}"));
        (status == 200
            && json(&body)["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["master"] == master && g["queues"] == 3))
        .then_some(())
    });
}

#[test]
fn a_registered_broker_is_in_the_cluster_and_its_new_topic_routed_within_a_heartbeat() {
    let nameserver = NameServer::start(&[]);
    let broker = Broker::start(&[
        "--nameserver",
        &nameserver.url(),
        "--cluster",
        "c1",
        "--group",
        "g1",
    ]);
    let addr = broker.addr.to_string();
    let cluster = wait_for("broker in /v1/cluster", Duration::from_secs(5), || {
        let (status, body) = nameserver.get("/v1/cluster");
        assert_eq!(status, 200, "{body}");
        let view = json(&body);
        view["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["addr"] == addr.as_str())
            .cloned()
    });
    assert_eq!(cluster["cluster"], "c1");
    assert_eq!(cluster["group"], "g1");
    assert_eq!(cluster["role"], "master");
    assert_eq!(cluster["http_addr"], broker.http_addr.to_string().as_str());

    // The NameServer started less than a heartbeat timeout ago: it cannot say "no such topic" yet.
    let (status, body) = nameserver.get("/v1/routes/orders");
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["code"], "warming_up", "{body}");
    let created = Instant::now();
    ok(broker
        .smq()
        .args(["topic", "create", "orders", "--queues", "3"])
        .output()
        .expect("running smq"));
    // A topic change heartbeats at once; one interval (2 s) is the bound promised.
    wait_for_route(&nameserver, "orders", &addr, Duration::from_secs(2));
    eprintln!("route seen {:?} after the create", created.elapsed());
    let (_, topics) = nameserver.get("/v1/topics");
    assert_eq!(json(&topics)["topics"][0]["name"], "orders", "{topics}");

    assert!(
        broker
            .log_lines()
            .iter()
            .any(|l| l.contains("registered with the NameServer")),
        "{:?}",
        broker.log_lines()
    );
    broker.stop();
    nameserver.stop();
}

#[test]
fn a_killed_broker_leaves_the_routes_within_the_heartbeat_timeout() {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "1500"]);
    let keeper = Broker::start(&["--nameserver", &nameserver.url(), "--group", "keeper"]);
    let victim = Broker::start(&["--nameserver", &nameserver.url(), "--group", "victim"]);
    for broker in [&keeper, &victim] {
        ok(broker
            .smq()
            .args(["topic", "create", "orders", "--queues", "3"])
            .output()
            .expect("running smq"));
    }
    let victim_addr = victim.addr.to_string();
    let keeper_addr = keeper.addr.to_string();
    wait_for_route(&nameserver, "orders", &victim_addr, Duration::from_secs(5));
    wait_for_route(&nameserver, "orders", &keeper_addr, Duration::from_secs(5));

    let killed = Instant::now();
    victim.kill();
    wait_for(
        "the killed broker out of the route",
        Duration::from_millis(1500 + 2000),
        || {
            let (status, body) = nameserver.get("/v1/routes/orders");
            assert_eq!(status, 200, "the keeper still serves orders: {body}");
            let groups = json(&body)["groups"].as_array().unwrap().clone();
            (groups.len() == 1 && groups[0]["master"] == keeper_addr.as_str()).then_some(())
        },
    );
    eprintln!("the killed broker left after {:?}", killed.elapsed());
    // Gone from the live brokers (its group's epoch and last report stay, under `groups`).
    let (_, cluster) = nameserver.get("/v1/cluster");
    let brokers = json(&cluster)["brokers"].to_string();
    assert!(!brokers.contains(&victim_addr), "{cluster}");
    keeper.stop();
    nameserver.stop();
}

#[test]
fn smq_cluster_and_topic_describe_read_the_nameserver() {
    let nameserver = NameServer::start(&[]);
    let broker = Broker::start(&[
        "--nameserver",
        &nameserver.url(),
        "--cluster",
        "prod",
        "--group",
        "east",
    ]);
    let addr = broker.addr.to_string();
    ok(broker
        .smq()
        .args(["topic", "create", "payments", "--queues", "3"])
        .output()
        .expect("running smq"));
    wait_for_route(&nameserver, "payments", &addr, Duration::from_secs(5));

    let table = ok(nameserver
        .smq()
        .arg("cluster")
        .output()
        .expect("smq cluster"));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("REPLICATION LAG"), "{table}");
    let row = lines
        .iter()
        .find(|l| l.contains(&addr))
        .unwrap_or_else(|| panic!("no row for {addr}:\n{table}"));
    for column in ["prod", "east", "master", "s ago"] {
        assert!(row.contains(column), "{column} missing: {row}");
    }

    // The flag works as well as the environment variable.
    let described = ok(nameserver
        .smq()
        .env_remove("SMQ_NAMESERVER")
        .args([
            "--nameserver",
            &nameserver.url(),
            "topic",
            "describe",
            "payments",
        ])
        .output()
        .expect("smq topic describe"));
    assert!(
        described.contains("topic payments in 1 broker group"),
        "{described}"
    );
    let row = described
        .lines()
        .find(|l| l.contains("east"))
        .unwrap_or_else(|| panic!("no group row:\n{described}"));
    assert!(row.contains(&addr) && row.contains("rw"), "{row}");

    let listed = ok(nameserver
        .smq()
        .args(["topic", "list"])
        .output()
        .expect("smq topic list"));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("payments") && l.contains("east")),
        "{listed}"
    );

    let unknown = nameserver
        .smq()
        .args(["topic", "describe", "nope"])
        .output()
        .expect("smq topic describe");
    assert!(!unknown.status.success());
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        error.contains("nope") && error.contains(&nameserver.url()),
        "{error}"
    );

    // Without a discovery flag `smq cluster` says what it needs.
    let missing = broker.smq().arg("cluster").output().expect("smq cluster");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--nameserver"),
        "{missing:?}"
    );
    broker.stop();
    nameserver.stop();
}

#[test]
fn a_nameserver_outage_is_one_warning_and_the_broker_registers_when_it_comes() {
    // An address nobody listens on yet: the NameServer comes there later.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ns_addr = free.local_addr().unwrap().to_string();
    drop(free);
    let broker = Broker::start(&[
        "--nameserver",
        &ns_addr,
        "--log-level",
        "info,smq_broker=debug",
    ]);
    let count = |needle: &str| {
        broker
            .log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    wait_for("the outage warning", Duration::from_secs(5), || {
        (count("heartbeat failed: still serving clients") == 1).then_some(())
    });
    // Clients are served meanwhile; the topic change makes the broker try again at once.
    ok(broker
        .smq()
        .args(["topic", "create", "orders", "--queues", "3"])
        .output()
        .expect("running smq"));
    wait_for("a second failed attempt", Duration::from_secs(5), || {
        (count("heartbeat failed again") >= 1).then_some(())
    });

    let nameserver = NameServer::start_on(&ns_addr, &[]);
    // The broker retries every 2 s while the NameServer is away.
    wait_for_route(
        &nameserver,
        "orders",
        &broker.addr.to_string(),
        Duration::from_secs(5),
    );
    wait_for("the recovery line", Duration::from_secs(5), || {
        (count("a NameServer answers again") == 1).then_some(())
    });
    assert_eq!(
        count("heartbeat failed: still serving clients"),
        1,
        "one warning per outage: {:?}",
        broker.log_lines()
    );
    broker.stop();
    nameserver.stop();
}

#[test]
fn the_nameserver_binary_answers_curl_style_requests_with_json_errors_and_prometheus_text() {
    let nameserver = NameServer::start(&["--heartbeat-timeout-ms", "3000"]);
    // Past its warm-up, an unknown topic is a 404 (before, a 503 `warming_up`).
    wait_for("the NameServer warm", Duration::from_secs(5), || {
        let (_, body) = nameserver.get("/v1/cluster");
        json(&body).get("warming_up_ms").is_none().then_some(())
    });
    let broker = Broker::start(&[
        "--nameserver",
        &nameserver.url(),
        "--group",
        "g1",
        "--advertise",
        "broker1.example.com:10911",
    ]);
    // The broker registers the address it advertises, not the one it is bound to.
    let registered = wait_for("broker in /v1/cluster", Duration::from_secs(5), || {
        let (_, body) = nameserver.get("/v1/cluster");
        let view = json(&body);
        view["brokers"].as_array().unwrap().first().cloned()
    });
    assert_eq!(registered["addr"], "broker1.example.com:10911");
    drop(broker);

    let (status, body) = nameserver.request(
        "POST",
        "/v1/brokers/heartbeat",
        r#"{"cluster":"c1","role":"master","addr":"10.0.0.9:10911","data_version":1,"log_end_offset":0}"#,
    );
    assert_eq!(status, 400, "{body}");
    let error = json(&body);
    assert_eq!(error["field"], "group", "{body}");
    assert!(error["error"].as_str().unwrap().contains("group"), "{body}");
    let (status, body) = nameserver.request("POST", "/v1/brokers/heartbeat", "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(json(&body)["error"].is_string(), "{body}");

    let (status, body) = nameserver.get("/v1/routes/nosuch");
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["code"], "topic_not_found", "{body}");

    let (status, text) = nameserver.get("/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("# TYPE smq_nameserver_brokers_live gauge"),
        "{text}"
    );
    assert!(text.contains("smq_nameserver_brokers_live 1\n"), "{text}");
    assert!(
        text.contains("smq_nameserver_route_requests_total{status=\"404\"} 1\n"),
        "{text}"
    );
}
