//! The NameServer's HTTP API through a real listener on 127.0.0.1:0, with plain HTTP/1.1 requests
//! (what curl sends, through the tests' one HTTP client), and fencing against an embedded DNS
//! server.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smq_client::discovery::dev_dns::{DevDns, SrvRecord};
use smq_nameserver::{Config, Running};
use smq_tests::http::{request as http, Reply};

async fn start(heartbeat_timeout_ms: u64) -> Running {
    smq_nameserver::start(Config {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        heartbeat_timeout_ms,
        ..Config::default()
    })
    .await
    .unwrap()
}

fn heartbeat(group: &str, role: &str, addr: &str) -> String {
    let mut hb = json!({
        "cluster": "c1", "group": group, "role": role, "addr": addr,
        "data_version": 1, "log_end_offset": 4096,
        "topics": [{"name": "orders", "queues": 4, "readable": true, "writable": true}]
    });
    if role == "slave" {
        hb["master_addr"] = json!("127.0.0.1:10911");
    }
    hb.to_string()
}

async fn post_heartbeat(addr: SocketAddr, body: &str) -> Reply {
    http(addr, "POST", "/v1/brokers/heartbeat", Some(body)).await
}

/// Waits until the NameServer's warm-up (one heartbeat timeout after its start) is over, as
/// /v1/cluster tells.
async fn wait_until_warm(addr: SocketAddr) {
    let since = Instant::now();
    loop {
        let cluster = http(addr, "GET", "/v1/cluster", None).await.json();
        if cluster.get("warming_up_ms").is_none() {
            return;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "{cluster}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A NameServer with a 1 s heartbeat timeout whose warm-up is over.
async fn start_warm() -> Running {
    let ns = start(1_000).await;
    wait_until_warm(ns.addr()).await;
    ns
}

#[tokio::test]
async fn heartbeat_then_route_names_the_master_and_slaves() {
    let ns = start(10_000).await;
    let addr = ns.addr();
    let reply = post_heartbeat(addr, &heartbeat("g1", "master", "127.0.0.1:10911")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["heartbeat_timeout_ms"], 10_000);
    let reply = post_heartbeat(addr, &heartbeat("g1", "slave", "127.0.0.1:10921")).await;
    assert_eq!(reply.json()["master_addr"], "127.0.0.1:10911");

    let route = http(addr, "GET", "/v1/routes/orders", None).await;
    assert_eq!(route.status, 200, "{}", route.body);
    assert!(route
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    assert_eq!(
        route.json(),
        json!({"topic": "orders", "groups": [{
            "cluster": "c1", "group": "g1",
            "master": "127.0.0.1:10911", "slaves": ["127.0.0.1:10921"],
            "queues": 4, "readable": true, "writable": true
        }], "warming_up": true})
    );

    let cluster = http(addr, "GET", "/v1/cluster", None).await.json();
    let brokers = cluster["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 2);
    assert_eq!(brokers[0]["role"], "master");
    assert_eq!(brokers[1]["replication_lag_bytes"], 0);
    let topics = http(addr, "GET", "/v1/topics", None).await.json();
    assert_eq!(
        topics,
        json!({"topics": [{"name": "orders", "queues": 4, "groups": ["g1"]}]})
    );
    let health = http(addr, "GET", "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        json!({"status": "ok", "fenced": false, "brokers_live": 2})
    );
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn while_warming_up_an_unknown_topic_is_a_retryable_503_and_then_a_404() {
    let ns = start(1_000).await;
    let addr = ns.addr();
    let reply = http(addr, "GET", "/v1/routes/nosuch", None).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let error = reply.json();
    assert_eq!(error["code"], "warming_up");
    let text = error["error"].as_str().unwrap();
    assert!(
        text.contains("warming up") && text.contains("\"nosuch\""),
        "{text}"
    );
    let warming_up_ms = http(addr, "GET", "/v1/cluster", None).await.json()["warming_up_ms"]
        .as_u64()
        .expect("warming_up_ms while warming up");
    assert!((1..=1_000).contains(&warming_up_ms), "{warming_up_ms}");

    wait_until_warm(addr).await;
    let reply = http(addr, "GET", "/v1/routes/nosuch", None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), None);
    assert_eq!(reply.json()["code"], "topic_not_found");
    post_heartbeat(addr, &heartbeat("g1", "master", "127.0.0.1:10911")).await;
    let route = http(addr, "GET", "/v1/routes/orders", None).await.json();
    assert_eq!(route.get("warming_up"), None, "{route}");
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_topic_is_a_404_json_error() {
    let ns = start_warm().await;
    let reply = http(ns.addr(), "GET", "/v1/routes/nosuch", None).await;
    assert_eq!(reply.status, 404);
    let error = reply.json();
    assert_eq!(error["code"], "topic_not_found");
    assert!(
        error["error"].as_str().unwrap().contains("\"nosuch\""),
        "{error}"
    );

    let reply = http(ns.addr(), "GET", "/v1/routes/bad%20name", None).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["field"], "topic");
    let reply = http(ns.addr(), "GET", "/v2/whatever", None).await;
    assert_eq!(
        (reply.status, reply.json()["code"].clone()),
        (404, json!("not_found"))
    );
    let reply = http(ns.addr(), "GET", "/v1/brokers/heartbeat", None).await;
    assert_eq!(reply.status, 405);
    assert!(reply.json()["error"].as_str().unwrap().contains("use POST"));
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_heartbeat_is_a_400_naming_the_field() {
    let ns = start_warm().await;
    let mut hb: Value =
        serde_json::from_str(&heartbeat("g1", "master", "127.0.0.1:10911")).unwrap();
    hb.as_object_mut().unwrap().remove("group");
    let reply = post_heartbeat(ns.addr(), &hb.to_string()).await;
    assert_eq!(reply.status, 400);
    let error = reply.json();
    assert_eq!(error["code"], "bad_request");
    assert_eq!(error["field"], "group");
    assert!(
        error["error"].as_str().unwrap().contains("group"),
        "{error}"
    );

    hb["group"] = json!("g1");
    hb["topics"][0]["queues"] = json!(0);
    let error = post_heartbeat(ns.addr(), &hb.to_string()).await.json();
    assert_eq!(error["field"], "topics[0].queues");
    // More queues than a broker may have: a route built from it would make clients allocate
    // billions of entries.
    hb["topics"][0]["queues"] = json!(5000);
    let reply = post_heartbeat(ns.addr(), &hb.to_string()).await;
    assert_eq!(reply.status, 400);
    let error = reply.json();
    assert_eq!(error["field"], "topics[0].queues");
    assert!(
        error["error"].as_str().unwrap().contains("1 to 1024"),
        "{error}"
    );
    hb["topics"][0]["queues"] = json!(4);
    hb["addr"] = json!(format!("{}:10911", "h".repeat(300)));
    assert_eq!(
        post_heartbeat(ns.addr(), &hb.to_string()).await.json()["field"],
        "addr"
    );
    hb["addr"] = json!("127.0.0.1:10911");
    let reply = post_heartbeat(ns.addr(), "{not json").await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed heartbeat"));
    // Nothing was registered.
    assert_eq!(
        http(ns.addr(), "GET", "/v1/routes/orders", None)
            .await
            .status,
        404
    );
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_master_in_a_group_is_a_409() {
    let ns = start(10_000).await;
    post_heartbeat(ns.addr(), &heartbeat("g1", "master", "127.0.0.1:10911")).await;
    let reply = post_heartbeat(ns.addr(), &heartbeat("g1", "master", "127.0.0.1:10912")).await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json()["code"], "conflict");
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let ns = start_warm().await;
    post_heartbeat(ns.addr(), &heartbeat("g1", "master", "127.0.0.1:10911")).await;
    post_heartbeat(ns.addr(), "{}").await;
    http(ns.addr(), "GET", "/v1/routes/orders", None).await;
    http(ns.addr(), "GET", "/v1/routes/nosuch", None).await;
    let reply = http(ns.addr(), "GET", "/metrics", None).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        reply.header("content-type").unwrap_or_default()
    );
    for line in [
        "# TYPE smq_nameserver_brokers_live gauge",
        "smq_nameserver_brokers_live 1",
        "smq_nameserver_heartbeats_received_total 1",
        "smq_nameserver_heartbeats_rejected_total 1",
        "smq_nameserver_route_requests_total{status=\"200\"} 1",
        "smq_nameserver_route_requests_total{status=\"404\"} 1",
        "smq_nameserver_fenced 0",
    ] {
        assert!(
            reply.body.lines().any(|l| l == line),
            "{line:?} missing in\n{}",
            reply.body
        );
    }
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broker_that_stops_heartbeating_leaves_the_routes_within_the_timeout() {
    let ns = start(300).await;
    let addr = ns.addr();
    let before_heartbeat = Instant::now();
    post_heartbeat(addr, &heartbeat("g1", "master", "127.0.0.1:10911")).await;
    let after_heartbeat = Instant::now();
    // g2 goes on heartbeating every 50 ms while g1 is silent.
    let keep_alive = tokio::spawn(async move {
        loop {
            post_heartbeat(addr, &heartbeat("g2", "master", "127.0.0.1:10931")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let groups = |route: Value| -> Vec<String> {
        route["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .map(|g| g["group"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The deadline is 300 ms after the NameServer received the heartbeat, i.e. between
    // before_heartbeat + 300 and after_heartbeat + 300 (+1 for whole milliseconds).
    let timeout = Duration::from_millis(300);
    // Until g2's first heartbeat lands, both are routed; an answer that came back before g1's
    // earliest deadline must still route g1 (a machine too busy to ask in time skips this).
    loop {
        let route = groups(http(addr, "GET", "/v1/routes/orders", None).await.json());
        let answered = Instant::now();
        if answered < before_heartbeat + timeout {
            assert_eq!(
                route.first().map(String::as_str),
                Some("g1"),
                "g1 left the routes before its heartbeat timeout"
            );
        }
        if route.contains(&"g2".to_owned()) || answered >= before_heartbeat + timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        let sent = Instant::now();
        let route = http(addr, "GET", "/v1/routes/orders", None).await.json();
        if groups(route) == ["g2"] {
            break;
        }
        assert!(
            sent < after_heartbeat + timeout + Duration::from_millis(1),
            "g1 still routed after its heartbeat timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(before_heartbeat.elapsed() + Duration::from_millis(1) >= timeout);
    keep_alive.abort();
    let cluster = http(addr, "GET", "/v1/cluster", None).await.json();
    assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1);
    ns.shutdown().await.unwrap();
}

const SRV: &str = "_smq-ns._tcp.smq.test.";

/// An embedded DNS server, and a NameServer that checks every 50 ms whether the SRV record
/// `SRV` names it (no record yet: fenced).
async fn start_following_srv(heartbeat_timeout_ms: u64) -> (DevDns, Running) {
    let dns = DevDns::start((Ipv4Addr::LOCALHOST, 0).into(), "smq.test.")
        .await
        .unwrap();
    dns.set_addrs("ns1.smq.test.", 1, &[Ipv4Addr::LOCALHOST.into()])
        .await
        .unwrap();
    let ns = smq_nameserver::start(Config {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        heartbeat_timeout_ms,
        srv: Some(SRV.into()),
        dns_server: Some(dns.addr()),
        fencing_interval_ms: 50,
        ..Config::default()
    })
    .await
    .unwrap();
    (dns, ns)
}

/// The SRV record naming ns1.smq.test. at `port`.
fn point_at(port: u16) -> [SrvRecord; 1] {
    [SrvRecord {
        priority: 0,
        weight: 0,
        port,
        target: "ns1.smq.test.".into(),
    }]
}

#[tokio::test]
async fn a_nameserver_whose_srv_record_is_repointed_answers_503() {
    let (dns, ns) = start_following_srv(Config::default().heartbeat_timeout_ms).await;
    let addr = ns.addr();
    post_heartbeat(addr, &heartbeat("g1", "master", "127.0.0.1:10911")).await;
    let wait_for_status = |want: u16| async move {
        let since = Instant::now();
        loop {
            let reply = http(addr, "GET", "/v1/routes/orders", None).await;
            if reply.status == want {
                return reply;
            }
            assert!(
                since.elapsed() < Duration::from_secs(3),
                "still {} {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // No record yet: fenced from the first check.
    assert_eq!(
        http(addr, "GET", "/v1/routes/orders", None).await.status,
        503
    );
    dns.set_srv(SRV, 1, &point_at(addr.port())).await.unwrap();
    wait_for_status(200).await;

    dns.set_srv(SRV, 1, &point_at(addr.port().wrapping_add(1).max(1)))
        .await
        .unwrap();
    let reply = wait_for_status(503).await;
    let error = reply.json();
    assert_eq!(error["code"], "fenced");
    assert!(
        error["error"].as_str().unwrap().contains("re-resolve"),
        "{error}"
    );
    // Heartbeats, the cluster view and health still work while fenced.
    assert_eq!(
        post_heartbeat(addr, &heartbeat("g1", "master", "127.0.0.1:10911"))
            .await
            .status,
        200
    );
    assert_eq!(
        http(addr, "GET", "/healthz", None).await.json()["fenced"],
        true
    );

    dns.set_srv(SRV, 1, &point_at(addr.port())).await.unwrap();
    wait_for_status(200).await;
    ns.shutdown().await.unwrap();
    dns.shutdown().await;
}

async fn post_member_heartbeat(addr: SocketAddr, consumer_group: &str, body: &Value) -> Reply {
    let path = format!("/v1/groups/{consumer_group}/heartbeat");
    http(addr, "POST", &path, Some(&body.to_string())).await
}

/// The (broker group, queue, owner epoch) of each queue a member heartbeat's reply assigns.
fn assigned_queues(reply: &Value) -> Vec<(String, u64, u64)> {
    reply["assigned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let group = q["broker_group"].as_str().unwrap().to_owned();
            (
                group,
                q["queue_id"].as_u64().unwrap(),
                q["owner_epoch"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn in_the_take_over_window_a_known_group_keeps_what_it_holds_and_a_new_one_is_served_at_once()
{
    let ns = start_warm().await;
    // A member of a group that held queues before (it reports one) ...
    let member = json!({"member_id": "m1", "topic": "orders", "session_timeout_ms": 3000,
        "owned": [{"broker_group": "g1", "queue_id": 0, "owner_epoch": 3}]});
    let since = Instant::now();
    let mut first_round = true;
    let assigned = loop {
        // Keep the broker live; its first heartbeat starts the take-over window.
        let reply = post_heartbeat(ns.addr(), &heartbeat("g1", "master", "127.0.0.1:10911")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = post_member_heartbeat(ns.addr(), "billing", &member).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = reply.json();
        if reply["warming_up"] == json!(false) {
            break assigned_queues(&reply);
        }
        assert_eq!(
            assigned_queues(&reply),
            [("g1".to_owned(), 0, 3)],
            "while warming up it keeps what it holds and gets nothing more"
        );
        if first_round {
            // ... and, in the same window, a consumer group this NameServer never heard of,
            // whose member holds nothing, with no offset on the broker: served at once, with
            // owner epochs above the wall clock (above any an earlier NameServer gave).
            let wall_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let newcomer =
                json!({"member_id": "m2", "topic": "orders", "session_timeout_ms": 3000});
            let reply = post_member_heartbeat(ns.addr(), "audit", &newcomer)
                .await
                .json();
            assert_eq!(reply["warming_up"], json!(false), "{reply}");
            let queues = assigned_queues(&reply);
            assert_eq!(queues.len(), 4, "{reply}");
            assert!(
                queues.iter().all(|(_, _, epoch)| *epoch > wall_ms),
                "{reply}"
            );
            first_round = false;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        since.elapsed() >= Duration::from_millis(900),
        "{:?}",
        since.elapsed()
    );
    // Once warm: it keeps its queue and epoch, and the free ones come with epoch 1.
    let want: Vec<(String, u64, u64)> = (0..4)
        .map(|q| ("g1".to_owned(), q, if q == 0 { 3 } else { 1 }))
        .collect();
    assert_eq!(assigned, want);

    let list = http(ns.addr(), "GET", "/v1/groups", None).await.json();
    let billing = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["consumer_group"] == "billing")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(billing["members"], 1);
    assert_eq!(billing["queues"], 4);
    let view = http(ns.addr(), "GET", "/v1/groups/billing", None)
        .await
        .json();
    assert_eq!(view["topics"][0]["queues"][2]["owner"], "m1");
    let missing = http(ns.addr(), "GET", "/v1/groups/nobody", None).await;
    assert_eq!(missing.status, 404, "{}", missing.body);

    let leave =
        json!({"member_id": "m1", "topic": "orders", "session_timeout_ms": 3000, "leave": true});
    let reply = post_member_heartbeat(ns.addr(), "billing", &leave).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // No member left and no offset committed: the group is gone.
    let gone = http(ns.addr(), "GET", "/v1/groups/billing", None).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    ns.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_member_heartbeat_is_a_400_naming_the_field() {
    let ns = start_warm().await;
    for (body, field) in [
        (
            json!({"member_id": "m1", "session_timeout_ms": 3000}),
            "topic",
        ),
        (
            json!({"member_id": "m1", "topic": "orders", "session_timeout_ms": 10}),
            "session_timeout_ms",
        ),
        (
            json!({"member_id": "", "topic": "orders", "session_timeout_ms": 3000}),
            "member_id",
        ),
        (
            json!({"member_id": "m1", "topic": "orders", "session_timeout_ms": 3000, "owned": [{"queue_id": 1}]}),
            "owned[0].broker_group",
        ),
    ] {
        let reply = post_member_heartbeat(ns.addr(), "billing", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.json()["field"], field, "{body}: {}", reply.body);
    }
    ns.shutdown().await.unwrap();
}

/// proto-spec §8.2, §9.3: a NameServer the SRV record names again (it was fenced) warms up
/// again: brokers that followed the record elsewhere may not have come back yet, so a master's
/// claim of an epoch waits (503 `warming_up`) while a master writing in its epoch renews.
#[tokio::test]
async fn a_fenced_nameserver_named_again_warms_up_again_and_holds_epoch_claims() {
    let (dns, ns) = start_following_srv(500).await;
    let addr = ns.addr();
    let wait_for_fenced = |want: bool| async move {
        let since = Instant::now();
        loop {
            let health = http(addr, "GET", "/healthz", None).await.json();
            if health["fenced"] == json!(want) {
                return;
            }
            assert!(since.elapsed() < Duration::from_secs(3), "{health}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let master = |group: &str, port: u16, epoch: u32, claim: bool| {
        let mut hb: Value =
            serde_json::from_str(&heartbeat(group, "master", &format!("127.0.0.1:{port}")))
                .unwrap();
        hb["master_epoch"] = json!(epoch);
        hb["claim"] = json!(claim);
        hb.to_string()
    };
    dns.set_srv(SRV, 1, &point_at(addr.port())).await.unwrap();
    wait_for_fenced(false).await;
    wait_until_warm(addr).await;
    // Warm: a claim is decided at once.
    assert_eq!(
        post_heartbeat(addr, &master("g1", 10911, 2, true))
            .await
            .status,
        200
    );

    dns.set_srv(SRV, 1, &point_at(addr.port().wrapping_add(1).max(1)))
        .await
        .unwrap();
    wait_for_fenced(true).await;
    dns.set_srv(SRV, 1, &point_at(addr.port())).await.unwrap();
    wait_for_fenced(false).await;
    let cluster = http(addr, "GET", "/v1/cluster", None).await.json();
    assert!(cluster["warming_up_ms"].as_u64().is_some(), "{cluster}");
    // Named again, it warms up: another group's claim of epoch 2 waits ...
    let reply = post_heartbeat(addr, &master("g2", 10921, 2, true)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["code"], "warming_up");
    // ... while the master writing in its epoch renews.
    assert_eq!(
        post_heartbeat(addr, &master("g1", 10911, 2, false))
            .await
            .status,
        200
    );
    wait_until_warm(addr).await;
    assert_eq!(
        post_heartbeat(addr, &master("g2", 10921, 2, true))
            .await
            .status,
        200
    );
    ns.shutdown().await.unwrap();
    dns.shutdown().await;
}
