//! One HTTP/1.1 request to a server under test (a NameServer, a broker's /healthz and /metrics),
//! sent as curl would send it, through hyper's client: the one HTTP client of the tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long one request may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A server's answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The value of header `name`, if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// The body as JSON (the test fails if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// One request on a fresh connection (`Connection: close`, `Content-Type: application/json`,
/// `body` or an empty one); the test fails if the server does not answer within 10 s.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    request_as(addr, method, path, body, None).await
}

/// [`request`] with `Authorization: Bearer <bearer>` when `bearer` is given.
pub async fn request_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .header(CONTENT_TYPE, "application/json");
    if let Some(bearer) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {bearer}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
            status,
            headers,
            body: String::from_utf8(body.to_vec())?,
        })
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} to {addr}: no answer within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// `GET path`: the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = request(addr, "GET", path, None).await;
    (reply.status, reply.body)
}

/// [`request`] for blocking code, through [`blocking`].
pub fn request_blocking(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    blocking(request(addr, method, path, body))
}

/// Runs `exchange` (a [`request`] or [`request_as`]) to its end for blocking code: on a runtime
/// of its own, on a thread of its own (so that it works inside a runtime too).
pub fn blocking<T: Send>(exchange: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(exchange)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
