//! Issue 19 point 5: a client inventing consumer group names cannot grow a broker's offsets
//! without end. Past `--max-consumer-groups` and `--max-committed-offsets` a commit of a new
//! group or queue is refused with OFFSETS_LIMIT_REACHED and a message naming the bound; groups
//! and queues already stored still commit, and nothing refused is stored.

use std::time::Duration;

use smq_client::connection::{Connection, ConnectionOptions};
use smq_client::protocol::request::{CommitOffsetRequest, FetchOffsetRequest};
use smq_client::protocol::{ErrorCode, Request, Response};
use smq_client::{Admin, ClientConfig, Error};
use smq_tests::{ok, Broker};

fn commit(group: &str, queue_id: u32) -> Request {
    Request::CommitOffset(CommitOffsetRequest {
        consumer_group: group.into(),
        topic: "orders".into(),
        queue_id,
        offset: 0,
        owner_epoch: 0,
        topic_id: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_beyond_the_offset_limits_are_refused_with_a_clear_error() {
    let broker = Broker::start(&["--max-consumer-groups", "2", "--max-committed-offsets", "3"]);
    ok(broker
        .smq()
        .args(["topic", "create", "orders", "--queues", "4"])
        .output()
        .unwrap());
    let connection = Connection::connect(ConnectionOptions {
        broker: broker.addr.to_string(),
        client_id: "offset-limits".into(),
        credential: None,
        tls: None,
        request_timeout: Duration::from_secs(10),
        max_in_flight_requests: 4,
    })
    .await
    .unwrap();
    let refused = |result: smq_client::Result<Response>, bound: &str| match result {
        Err(Error::Broker { response, .. }) => {
            assert_eq!(response.error_code(), Some(ErrorCode::OffsetsLimitReached));
            assert!(response.message.contains(bound), "{}", response.message);
        }
        other => panic!("expected OFFSETS_LIMIT_REACHED, got {other:?}"),
    };
    connection.request(commit("billing", 0)).await.unwrap();
    connection.request(commit("audit", 0)).await.unwrap();
    refused(
        connection.request(commit("invented-1", 0)).await,
        "max_consumer_groups",
    );
    connection.request(commit("billing", 1)).await.unwrap();
    refused(
        connection.request(commit("audit", 1)).await,
        "max_committed_offsets",
    );
    // Known ones still commit; the refused group has nothing stored.
    connection.request(commit("billing", 1)).await.unwrap();
    let fetched = connection
        .request(Request::FetchOffset(FetchOffsetRequest {
            consumer_group: "invented-1".into(),
            topic: "orders".into(),
            queue_id: 0,
        }))
        .await
        .unwrap();
    let Response::FetchOffset(fetched) = fetched else {
        panic!("not a FetchOffset answer");
    };
    assert_eq!(fetched.offset, None, "{fetched:?}");
    // The broker serves on.
    let admin = Admin::connect(ClientConfig::new(broker.addr.to_string()))
        .await
        .unwrap();
    assert_eq!(
        admin.describe_topic("orders").await.unwrap().queues.len(),
        4
    );
}
