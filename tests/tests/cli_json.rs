//! The CLI's output for scripts: `smq consume --format json` says where each message came from,
//! and `smq cluster --json`, `smq topic describe --json`, `smq group list --json` and
//! `smq group describe --json` print what the tables show as JSON.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use smq_tests::{ok, run_with_stdin as run, wait_for, Broker, NameServer};

fn json_lines(output: Output) -> Vec<Value> {
    String::from_utf8(ok(output).stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn consume_json_names_group_queue_offset_key_and_body_and_cluster_topic_and_group_print_json() {
    let nameserver = NameServer::start(&[]);
    let broker = Broker::start(&["--nameserver", &nameserver.url(), "--group", "broker-j"]);
    wait_for("the broker to register", Duration::from_secs(30), || {
        nameserver
            .get("/v1/cluster")
            .1
            .contains("broker-j")
            .then_some(())
    });
    ok(run(
        nameserver
            .smq()
            .args(["topic", "create", "events", "--queues", "2"]),
        b"",
    ));
    ok(run(
        nameserver
            .smq()
            .args(["produce", "events", "--key", "user-1"]),
        b"first\nsecond\n",
    ));

    let messages = json_lines(run(
        nameserver.smq().args([
            "consume", "events", "--group", "g", "--count", "2", "--format", "json",
        ]),
        b"",
    ));
    assert_eq!(messages.len(), 2);
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(message["broker_group"], "broker-j");
        assert_eq!(message["offset"], i as u64, "one key: one queue, in order");
        assert_eq!(message["queue"], messages[0]["queue"]);
        assert_eq!(message["key"], "user-1");
        assert_eq!(message["body_base64"], false);
        assert!(message["timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(message["headers"].as_array().unwrap().is_empty());
    }
    assert_eq!(
        (&messages[0]["body"], &messages[1]["body"]),
        (&Value::from("first"), &Value::from("second"))
    );

    // The consumer committed both messages and left: the broker's next heartbeat (every 2 s)
    // brings the offset to the NameServer.
    let queue = messages[0]["queue"].clone();
    let described = wait_for(
        "consumer group g's commit in smq group describe --json",
        Duration::from_secs(30),
        || {
            // 404 until the heartbeat came: the group has no member and no offset yet.
            let output = run(
                nameserver.smq().args(["group", "describe", "g", "--json"]),
                b"",
            );
            if !output.status.success() {
                return None;
            }
            let view = json_lines(output);
            let committed = view[0]["topics"][0]["queues"]
                .as_array()?
                .iter()
                .any(|q| q["queue_id"] == queue && q["committed_offset"] == 2);
            committed.then(|| view[0].clone())
        },
    );
    assert_eq!(described["consumer_group"], "g");
    let topic = &described["topics"][0];
    assert_eq!(topic["topic"], "events");
    assert_eq!(topic["members"].as_array().unwrap().len(), 0, "it left");
    let queues = topic["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2, "{described}");
    for q in queues {
        assert_eq!(q["broker_group"], "broker-j");
        assert_eq!(q["owner"], Value::Null);
    }
    let read = queues.iter().find(|q| q["queue_id"] == queue).unwrap();
    assert_eq!(
        (&read["end_offset"], &read["lag_messages"]),
        (&2.into(), &0.into())
    );
    let list = json_lines(run(nameserver.smq().args(["group", "list", "--json"]), b""));
    let groups = list[0]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{}", list[0]);
    assert_eq!(
        (
            &groups[0]["consumer_group"],
            &groups[0]["topic"],
            &groups[0]["lag_messages"]
        ),
        (&"g".into(), &"events".into(), &0.into())
    );

    let cluster = json_lines(run(nameserver.smq().args(["cluster", "--json"]), b""));
    let brokers = cluster[0]["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["group"], "broker-j");
    assert_eq!(brokers[0]["addr"], broker.addr.to_string());

    let route = json_lines(run(
        nameserver
            .smq()
            .args(["topic", "describe", "events", "--json"]),
        b"",
    ));
    assert_eq!(route[0]["topic"], "events");
    assert_eq!(route[0]["groups"][0]["group"], "broker-j");
    assert_eq!(route[0]["groups"][0]["queues"], 2);

    let described = json_lines(run(
        broker.smq().args(["topic", "describe", "events", "--json"]),
        b"",
    ));
    let queues = described[0]["queues"].as_array().unwrap();
    assert_eq!(described[0]["broker_group"], "broker-j");
    assert_eq!(queues.len(), 2);
    let stored: u64 = queues.iter().map(|q| q["messages"].as_u64().unwrap()).sum();
    assert_eq!(stored, 2);
}
