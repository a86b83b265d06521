//! The connection against peers that are not brokers: one that closes at once, one that never
//! answers, and an address where nothing listens.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::connection::{Connection, ConnectionOptions};
use crate::Error;

fn options(broker: String) -> ConnectionOptions {
    ConnectionOptions {
        broker,
        client_id: "test".into(),
        credential: None,
        tls: None,
        request_timeout: Duration::from_millis(300),
        max_in_flight_requests: 4,
    }
}

#[tokio::test]
async fn a_broker_that_closes_the_connection_gives_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let error = Connection::connect(options(addr)).await.unwrap_err();
    assert!(matches!(error, Error::ConnectionClosed { .. }), "{error}");
    assert!(
        error.to_string().contains("closed the connection"),
        "{error}"
    );
}

#[tokio::test]
async fn a_broker_that_does_not_answer_times_out_and_a_missing_one_cannot_be_reached() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let error = Connection::connect(options(addr)).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(error.is_retryable());

    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let error = Connection::connect(options(addr)).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error}");
    assert!(error.to_string().contains("--broker"), "{error}");
}
