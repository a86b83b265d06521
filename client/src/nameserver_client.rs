//! A small HTTP/1.1 JSON client for the NameServer API (proto-spec.md §8), on top of
//! [`Discovery`]: each call asks the NameServers [`Discovery::resolve`] returns, best first, and
//! moves on to the next when one does not answer (connect error, timeout, 5xx, a reply that is not
//! HTTP/JSON), marking it failed so that discovery puts it last and re-resolves. A 503 `fenced`
//! (DNS no longer names that NameServer) is such a failure too: the next resolve asks DNS again.
//! A 503 `warming_up` (the NameServer just started or took over and its brokers may not have
//! registered yet) moves on too, without marking it failed. A 4xx is the NameServer's considered
//! answer and is returned at once.
//!
//! [`NameServerClient::retrying`] is what a first lookup uses: it tries again after every
//! retryable failure, re-resolving between tries with a short backoff, for up to a bound
//! (`route_wait_ms`), so that a process started during a NameServer failover waits for the new
//! NameServer instead of failing.
//!
//! One request per connection (`Connection: close`), written and parsed by hand over a tokio
//! `TcpStream`: the NameServer is asked every few seconds, not on the data path, so no HTTP
//! library is worth its weight here. Plain `http://` only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::discovery::{Discovery, DiscoveryError};
use crate::nameserver_api::{
    route_path, ApiError, ApiErrorCode, ClusterView, Heartbeat, HeartbeatReply, TopicList,
    TopicRoute, CLUSTER_PATH, HEARTBEAT_PATH, TOPICS_PATH,
};

/// How long one request to one NameServer may take, connect to last byte, by default.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);

/// How long a first lookup waits for a NameServer by default (`route_wait_ms`; Kafka's
/// `max.block.ms` plays this part).
pub const ROUTE_WAIT_MS_DEFAULT: u64 = 15_000;

/// The pauses between tries while waiting for a NameServer (a first lookup, a broker's
/// registration): 50 ms, doubled after each try, at most 500 ms, so that a repointed record is
/// followed within half a second and a NameServer outage costs a few requests a second.
///
/// ```
/// use std::time::Duration;
/// use smq_client::nameserver_client::Backoff;
///
/// let mut backoff = Backoff::default();
/// let pauses: Vec<u64> = (0..6).map(|_| backoff.next_pause().as_millis() as u64).collect();
/// assert_eq!(pauses, [50, 100, 200, 400, 500, 500]);
/// backoff.reset();
/// assert_eq!(backoff.next_pause(), Duration::from_millis(50));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_millis(500);

    /// The pause before the next try; the one after it is longer.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(Backoff::MAX);
        pause
    }

    /// Starts again from the shortest pause (after a success).
    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: Backoff::FIRST,
        }
    }
}
/// A wait this long is reported to the [`WaitNotice`] hook (once per call).
pub const WAIT_NOTICE_AFTER: Duration = Duration::from_secs(1);

/// Largest response accepted (a cluster view of thousands of brokers fits easily).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// What went wrong talking to the NameServers.
///
/// ```no_run
/// # async fn example(client: smq_client::nameserver_client::NameServerClient) {
/// use smq_client::nameserver_client::NameServerError;
///
/// match client.route("orders").await {
///     Ok(route) => println!("{} groups", route.groups.len()),
///     Err(NameServerError::Api { error, .. }) => eprintln!("refused: {}", error.error),
///     Err(other) => eprintln!("no NameServer answered: {other}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum NameServerError {
    /// Discovery found no NameServer to ask (DNS never answered, no record, empty list).
    #[error("cannot find a NameServer: {0}")]
    Discovery(#[from] DiscoveryError),
    /// Every NameServer was tried and none answered; each with its problem, in the order asked.
    #[error("no NameServer answered: {}", describe(.failures))]
    Unavailable { failures: Vec<Failure> },
    /// A NameServer answered with a 4xx: the request itself is wrong (or the topic unknown).
    #[error("NameServer {nameserver} answered {status}: {}", .error.error)]
    Api {
        nameserver: String,
        status: u16,
        error: ApiError,
    },
    /// The NameServer answered, but it is warming up (it started or took over less than one
    /// heartbeat timeout ago) and what was asked needs every broker registered.
    #[error("the NameServer is warming up for another {remaining_ms} ms: {reason}")]
    WarmingUp { remaining_ms: u64, reason: String },
    /// [`NameServerClient::retrying`] tried for as long as it was allowed to.
    #[error("gave up after waiting {} ms for a NameServer (raise --route-wait-ms / SMQ_ROUTE_WAIT_MS to wait longer): {last}", .waited.as_millis())]
    GaveUp {
        waited: Duration,
        last: Box<NameServerError>,
    },
}

impl NameServerError {
    /// The NameServer's error code for a 4xx answer (e.g. [`ApiErrorCode::TopicNotFound`]).
    pub fn code(&self) -> Option<ApiErrorCode> {
        match self {
            NameServerError::Api { error, .. } => Some(error.code),
            NameServerError::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Whether asking again may succeed: no NameServer answered (refused, timed out, 5xx,
    /// 503 `fenced` or `warming_up`), DNS failed or has no record yet. A 4xx answer and a bad
    /// setting are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            NameServerError::Discovery(error) => matches!(
                error,
                DiscoveryError::Dns { .. }
                    | DiscoveryError::NoRecord { .. }
                    | DiscoveryError::NotAvailable { .. }
                    | DiscoveryError::NoAddress { .. }
            ),
            NameServerError::Unavailable { .. }
            | NameServerError::WarmingUp { .. }
            | NameServerError::GaveUp { .. } => true,
            NameServerError::Api { .. } => false,
        }
    }
}

/// Told once per [`NameServerClient::retrying`] call that has waited [`WAIT_NOTICE_AFTER`]:
/// what it waits for, the failure that keeps it waiting, and how long it will wait at most. The
/// CLI prints it on stderr.
pub type WaitNotice = Arc<dyn Fn(&str, &NameServerError, Duration) + Send + Sync>;

/// One NameServer that did not answer, and why.
///
/// ```no_run
/// # fn example(error: smq_client::nameserver_client::NameServerError) {
/// use smq_client::nameserver_client::NameServerError;
///
/// if let NameServerError::Unavailable { failures } = error {
///     for failure in failures {
///         eprintln!("{}: {}", failure.nameserver, failure.problem);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The NameServer's base URL, e.g. `http://127.0.0.1:9876`.
    pub nameserver: String,
    /// What happened, for people: "connection refused", "no answer within 3s", "503 fenced: ...".
    pub problem: String,
}

fn describe(failures: &[Failure]) -> String {
    if failures.is_empty() {
        return "the NameServer list is empty".to_owned();
    }
    failures
        .iter()
        .map(|f| format!("{}: {}", f.nameserver, f.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Talks to the NameServers that a [`Discovery`] finds. Cheap to clone and to share.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
/// use smq_client::nameserver_client::NameServerClient;
///
/// let mode = DiscoveryMode::from_flags(Some("127.0.0.1:9876"), None, None)?.expect("a mode");
/// let discovery = Arc::new(Discovery::new(mode, DiscoveryOptions::default())?);
/// let client = NameServerClient::new(discovery);
/// for broker in client.cluster().await?.brokers {
///     println!("{} {} {:?} {}", broker.cluster, broker.group, broker.role, broker.addr);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NameServerClient {
    discovery: Arc<Discovery>,
    timeout: Duration,
    wait_notice: Option<WaitNotice>,
}

impl std::fmt::Debug for NameServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameServerClient")
            .field("mode", self.discovery.mode())
            .field("timeout", &self.timeout)
            .field("wait_notice", &self.wait_notice.is_some())
            .finish()
    }
}

impl NameServerClient {
    /// A client asking the NameServers `discovery` finds, [`REQUEST_TIMEOUT_DEFAULT`] per request.
    pub fn new(discovery: Arc<Discovery>) -> NameServerClient {
        NameServerClient {
            discovery,
            timeout: REQUEST_TIMEOUT_DEFAULT,
            wait_notice: None,
        }
    }

    /// The same client telling `notice` when a [`NameServerClient::retrying`] call has waited
    /// [`WAIT_NOTICE_AFTER`] (once per call).
    pub fn with_wait_notice(mut self, notice: WaitNotice) -> NameServerClient {
        self.wait_notice = Some(notice);
        self
    }

    /// Runs `call` until it succeeds, fails in a way retrying cannot help, or `wait` has
    /// passed; between tries, discovery re-resolves (so a repointed SRV record is followed at
    /// once) and the pause grows from 50 ms to 500 ms. `what` names what is waited for, for the
    /// [`WaitNotice`]. With a `wait` of zero, `call` runs once.
    ///
    /// ```no_run
    /// # async fn example(client: smq_client::nameserver_client::NameServerClient) {
    /// use std::time::Duration;
    /// // A process started during a NameServer failover waits for the new one.
    /// let wait = Duration::from_secs(15);
    /// let route = client.retrying("the route of topic `orders`", wait, || client.route("orders")).await;
    /// # }
    /// ```
    pub async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        wait: Duration,
        mut call: F,
    ) -> Result<T, NameServerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, NameServerError>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut noticed = false;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) if !error.is_retryable() => return Err(error),
                Err(error) => error,
            };
            let waited = started.elapsed();
            if waited >= wait {
                return Err(if wait.is_zero() {
                    error
                } else {
                    NameServerError::GaveUp {
                        waited,
                        last: Box::new(error),
                    }
                });
            }
            if !noticed && waited >= WAIT_NOTICE_AFTER {
                noticed = true;
                if let Some(notice) = &self.wait_notice {
                    notice(what, &error, wait);
                }
            }
            tracing::debug!(%error, ?waited, "waiting for a NameServer: {what}");
            tokio::time::sleep(backoff.next_pause().min(wait - waited)).await;
            self.discovery.refresh_soon();
        }
    }

    /// The same client with another per-NameServer request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> NameServerClient {
        self.timeout = timeout;
        self
    }

    /// The discovery this client asks.
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// `POST /v1/brokers/heartbeat`.
    pub async fn heartbeat(
        &self,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReply, NameServerError> {
        let body = serde_json::to_vec(heartbeat).expect("a heartbeat serializes");
        self.call("POST", HEARTBEAT_PATH, Some(&body)).await
    }

    /// `GET /v1/routes/{topic}`.
    pub async fn route(&self, topic: &str) -> Result<TopicRoute, NameServerError> {
        self.call("GET", &route_path(topic), None).await
    }

    /// `GET /v1/routes/{topic}`, waiting up to `wait` for a NameServer that can answer (see
    /// [`NameServerClient::retrying`]): what a topic's first lookup does.
    pub async fn route_waiting(
        &self,
        topic: &str,
        wait: Duration,
    ) -> Result<TopicRoute, NameServerError> {
        let what = format!("the route of topic `{topic}`");
        self.retrying(&what, wait, || self.route(topic)).await
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterView, NameServerError> {
        self.call("GET", CLUSTER_PATH, None).await
    }

    /// `GET /v1/topics`.
    pub async fn topics(&self) -> Result<TopicList, NameServerError> {
        self.call("GET", TOPICS_PATH, None).await
    }

    /// Asks each NameServer in turn until one answers. After every failure discovery is asked
    /// again (it re-resolves after [`Discovery::mark_failed`]) and the first NameServer not yet
    /// tried is next.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, NameServerError> {
        let mut failures: Vec<Failure> = Vec::new();
        loop {
            let urls = self.discovery.resolve().await?;
            let Some(url) = urls
                .into_iter()
                .find(|url| !failures.iter().any(|f| &f.nameserver == url))
            else {
                return Err(NameServerError::Unavailable { failures });
            };
            match self.call_one(&url, method, path, body).await {
                Ok(value) => return Ok(value),
                Err(Attempt::Refused { status, error }) => {
                    return Err(NameServerError::Api {
                        nameserver: url,
                        status,
                        error,
                    })
                }
                Err(Attempt::Failed(problem)) => {
                    tracing::debug!(nameserver = %url, %problem, "NameServer did not answer");
                    self.discovery.mark_failed(&url);
                    failures.push(Failure {
                        nameserver: url,
                        problem,
                    });
                }
                Err(Attempt::WarmingUp(problem)) => {
                    // The right NameServer, only too young to answer: not marked failed.
                    tracing::debug!(nameserver = %url, %problem, "NameServer is warming up");
                    failures.push(Failure {
                        nameserver: url,
                        problem,
                    });
                }
            }
        }
    }

    async fn call_one<T: DeserializeOwned>(
        &self,
        url: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Attempt> {
        let response = tokio::time::timeout(self.timeout, exchange(url, method, path, body))
            .await
            .map_err(|_| Attempt::Failed(format!("no answer within {:?}", self.timeout)))??;
        if (200..300).contains(&response.status) {
            return serde_json::from_slice(&response.body).map_err(|error| {
                Attempt::Failed(format!(
                    "answered {} with JSON this client cannot read: {error}",
                    response.status
                ))
            });
        }
        let error =
            serde_json::from_slice::<ApiError>(&response.body).unwrap_or_else(|_| ApiError {
                error: String::from_utf8_lossy(&response.body).trim().to_owned(),
                code: ApiErrorCode::Unknown,
                field: None,
            });
        if response.status >= 500 {
            let code = match error.code {
                ApiErrorCode::Fenced => "fenced: ",
                ApiErrorCode::WarmingUp => "warming_up: ",
                _ => "",
            };
            let problem = format!("answered {} {code}{}", response.status, error.error);
            if error.code == ApiErrorCode::WarmingUp {
                Err(Attempt::WarmingUp(problem))
            } else {
                Err(Attempt::Failed(problem))
            }
        } else {
            Err(Attempt::Refused {
                status: response.status,
                error,
            })
        }
    }
}

/// How one request to one NameServer ended, when it did not succeed.
enum Attempt {
    /// Try the next NameServer.
    Failed(String),
    /// 503 `warming_up`: try the next NameServer, but this one is not failed.
    WarmingUp(String),
    /// A 4xx: the answer stands.
    Refused { status: u16, error: ApiError },
}

impl From<std::io::Error> for Attempt {
    fn from(error: std::io::Error) -> Attempt {
        Attempt::Failed(error.to_string())
    }
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// `http://host:port` to `host:port`.
fn authority(url: &str) -> Result<&str, Attempt> {
    match url.strip_prefix("http://") {
        Some(authority) => Ok(authority.trim_end_matches('/')),
        None => Err(Attempt::Failed(
            "only http:// NameServer URLs are supported".to_owned(),
        )),
    }
}

/// One request on a fresh connection; the response is read until the server closes (or the
/// Content-Length is reached).
async fn exchange(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, Attempt> {
    let authority = authority(url)?;
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|error| Attempt::Failed(format!("cannot connect: {error}")))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: smq/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    if let Some(body) = body {
        request.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        request.extend_from_slice(body);
    }
    stream.write_all(&request).await?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        if received.len() > MAX_RESPONSE_BYTES {
            return Err(Attempt::Failed(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        if let Some(response) = parse_response(&received, false)? {
            return Ok(response);
        }
    }
    match parse_response(&received, true)? {
        Some(response) => Ok(response),
        None => Err(Attempt::Failed(
            "closed the connection before a whole HTTP response".to_owned(),
        )),
    }
}

/// Parses a whole response out of `bytes`; `None` while more is needed. At `eof`, a body without
/// Content-Length or chunking ends where the bytes end.
fn parse_response(bytes: &[u8], eof: bool) -> Result<Option<Response>, Attempt> {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..head_end])
        .map_err(|_| Attempt::Failed("the response head is not UTF-8".to_owned()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| Attempt::Failed(format!("not an HTTP response: {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| Attempt::Failed(format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &bytes[head_end + 4..];
    if chunked {
        return Ok(dechunk(rest)?.map(|body| Response { status, body }));
    }
    match content_length {
        Some(length) if rest.len() >= length => Ok(Some(Response {
            status,
            body: rest[..length].to_vec(),
        })),
        Some(_) if eof => Err(Attempt::Failed(
            "closed the connection before the whole body".to_owned(),
        )),
        Some(_) => Ok(None),
        None if eof => Ok(Some(Response {
            status,
            body: rest.to_vec(),
        })),
        None => Ok(None),
    }
}

/// The body of a chunked transfer encoding, once its last chunk is in.
fn dechunk(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, Attempt> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&bytes[..line_end]).unwrap_or_default();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Attempt::Failed(format!("bad chunk size {size_text:?}")))?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if bytes.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DiscoveryMode, DiscoveryOptions};
    use tokio::net::TcpListener;

    fn client(urls: &[String]) -> NameServerClient {
        let mode = DiscoveryMode::Static(urls.to_vec());
        let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
        NameServerClient::new(Arc::new(discovery)).with_timeout(Duration::from_millis(500))
    }

    /// A one-shot HTTP server answering every connection with `response`; returns its URL and
    /// the requests it received.
    async fn server(response: String) -> (String, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (seen, requests) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buffer = vec![0u8; 65536];
                let mut len = 0;
                loop {
                    let n = stream.read(&mut buffer[len..]).await.unwrap();
                    len += n;
                    let text = String::from_utf8_lossy(&buffer[..len]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let body_len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        if len >= end + 4 + body_len || n == 0 {
                            let _ = seen.send(text).await;
                            break;
                        }
                    }
                }
                stream.write_all(response.as_bytes()).await.unwrap();
                let _ = stream.shutdown().await;
            }
        });
        (url, requests)
    }

    fn free_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn reply(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn a_dead_nameserver_is_skipped_and_marked_failed() {
        let dead = free_url();
        let (live, mut requests) = server(reply("200 OK", r#"{"brokers":[]}"#)).await;
        let client = client(&[dead.clone(), live.clone()]);
        assert_eq!(client.cluster().await.unwrap().brokers, vec![]);
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("GET /v1/cluster HTTP/1.1\r\n"),
            "{request}"
        );
        assert_eq!(
            client.discovery().resolve().await.unwrap(),
            [live, dead],
            "the dead one goes last"
        );
    }

    #[tokio::test]
    async fn heartbeat_posts_json_and_reads_the_reply() {
        let (url, mut requests) = server(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             10\r\n{\"heartbeat_time\r\n\
             3e\r\nout_ms\":10000,\"heartbeat_interval_ms\":2000,\"master_addr\":null}\r\n0\r\n\r\n"
                .to_owned(),
        )
        .await;
        let heartbeat = Heartbeat {
            cluster: "c".into(),
            group: "g".into(),
            role: crate::nameserver_api::Role::Master,
            addr: "127.0.0.1:10911".into(),
            http_addr: None,
            master_addr: None,
            data_version: 3,
            log_end_offset: 42,
            topics: vec![],
        };
        let reply = client(&[url]).heartbeat(&heartbeat).await.unwrap();
        assert_eq!(reply.heartbeat_interval_ms, 2000);
        let request = requests.recv().await.unwrap();
        assert!(request.starts_with("POST /v1/brokers/heartbeat HTTP/1.1\r\n"));
        assert!(request.contains("Content-Type: application/json\r\n"));
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(serde_json::from_str::<Heartbeat>(body).unwrap(), heartbeat);
    }

    #[tokio::test]
    async fn a_4xx_is_returned_at_once_with_the_api_error() {
        let (url, _requests) = server(reply(
            "404 Not Found",
            r#"{"error":"no live broker","code":"topic_not_found"}"#,
        ))
        .await;
        let other = free_url();
        let error = client(&[url.clone(), other]).route("x").await.unwrap_err();
        assert_eq!(error.code(), Some(ApiErrorCode::TopicNotFound), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
    }

    #[tokio::test]
    async fn fenced_and_dead_nameservers_are_all_named() {
        let (fenced, _requests) = server(reply(
            "503 Service Unavailable",
            r#"{"error":"DNS names another","code":"fenced"}"#,
        ))
        .await;
        let dead = free_url();
        let client = client(&[fenced.clone(), dead.clone()]);
        let error = client.topics().await.unwrap_err();
        let NameServerError::Unavailable { failures } = &error else {
            panic!("{error}")
        };
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0].nameserver, fenced);
        assert!(failures[0].problem.contains("503 fenced"), "{error}");
        assert_eq!(failures[1].nameserver, dead);
        assert!(failures[1].problem.contains("cannot connect"), "{error}");
    }

    #[tokio::test]
    async fn a_silent_nameserver_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let error = client(&[url]).cluster().await.unwrap_err();
        assert!(error.to_string().contains("no answer within"), "{error}");
        drop(listener);
    }
}
