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
//! One request per connection (`Connection: close`) through hyper's HTTP/1.1 client over a tokio
//! `TcpStream` (hyper is in the build for the NameServer's axum anyway): the NameServer is asked
//! every few seconds, not on the data path, so no connection pool. With a CA
//! ([`NameServerClient::with_tls`], `--tls-ca`) every request goes over TLS, whatever the URL's
//! scheme (SRV answers carry none), so that tokens never travel in clear; an `https://` URL
//! without a CA is a failed NameServer whose error says to give one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use smq_tls::{ClientTls, MaybeTls};
use tokio::net::TcpStream;

use crate::discovery::{Discovery, DiscoveryError};
use crate::nameserver_api::{
    consumer_group_path, member_heartbeat_path, route_path, ApiError, ApiErrorCode, ClusterView,
    ConsumerGroupList, ConsumerGroupView, FieldError, Heartbeat, HeartbeatReply, MemberHeartbeat,
    MemberHeartbeatReply, TopicList, TopicRoute, CLUSTER_PATH, CONSUMER_GROUPS_PATH,
    HEARTBEAT_PATH, TOPICS_PATH,
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

    /// Whether a NameServer answered that it is warming up (503 `warming_up`): it is up and
    /// asks to be asked again, rather than gone.
    pub fn is_warming_up(&self) -> bool {
        match self {
            NameServerError::Unavailable { failures } => failures.iter().any(|f| f.warming_up),
            NameServerError::WarmingUp { .. } => true,
            NameServerError::GaveUp { last, .. } => last.is_warming_up(),
            _ => false,
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
    /// It answered 503 `warming_up`: it is up, and asks to be asked again later.
    pub warming_up: bool,
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
    /// Sent as `Authorization: Bearer` with every request: the cluster secret (brokers) or the
    /// read token (clients), when the NameServer requires one.
    token: Option<Arc<str>>,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for NameServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameServerClient")
            .field("mode", self.discovery.mode())
            .field("timeout", &self.timeout)
            .field("wait_notice", &self.wait_notice.is_some())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
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
            token: None,
            tls: None,
        }
    }

    /// The same client calling every NameServer over TLS, trusting `tls`'s CA.
    pub fn with_tls(mut self, tls: ClientTls) -> NameServerClient {
        self.tls = Some(tls);
        self
    }

    /// The same client sending `token` as `Authorization: Bearer <token>` with every request:
    /// a broker's cluster secret, or a client's read token (proto-spec.md §8).
    pub fn with_token(mut self, token: impl Into<Arc<str>>) -> NameServerClient {
        self.token = Some(token.into());
        self
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
        self.call(Method::POST, HEARTBEAT_PATH, Some(&body)).await
    }

    /// `GET /v1/routes/{topic}`. A route out of bounds ([`TopicRoute::validate`]: say 4 billion
    /// queues) is a failed answer of that NameServer, never allocated.
    pub async fn route(&self, topic: &str) -> Result<TopicRoute, NameServerError> {
        self.call_checked(Method::GET, &route_path(topic), None, TopicRoute::validate)
            .await
    }

    /// `GET /v1/routes/{topic}`, waiting up to `wait` for a NameServer that can answer (see
    /// [`NameServerClient::retrying`]) and, while it names groups that have not re-registered
    /// with it yet ([`TopicRoute::missing_groups`]: it has just taken over), for those: what a
    /// topic's first lookup does, so that keys hash over every group. Once `wait` is over, the
    /// route as it is.
    pub async fn route_waiting(
        &self,
        topic: &str,
        wait: Duration,
    ) -> Result<TopicRoute, NameServerError> {
        let what = format!("the route of topic `{topic}`");
        let started = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let route = self.retrying(&what, left, || self.route(topic)).await?;
            let left = wait.saturating_sub(started.elapsed());
            if route.missing_groups.is_empty() || left.is_zero() {
                return Ok(route);
            }
            tracing::debug!(
                topic,
                missing_groups = ?route.missing_groups,
                "the NameServer has just taken over and groups have not re-registered with it \
                 yet: asking again"
            );
            tokio::time::sleep(backoff.next_pause().min(left)).await;
        }
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterView, NameServerError> {
        self.call(Method::GET, CLUSTER_PATH, None).await
    }

    /// `GET /v1/topics`.
    pub async fn topics(&self) -> Result<TopicList, NameServerError> {
        self.call(Method::GET, TOPICS_PATH, None).await
    }

    /// `POST /v1/groups/{consumer_group}/heartbeat`: a consumer group member's heartbeat.
    pub async fn member_heartbeat(
        &self,
        consumer_group: &str,
        heartbeat: &MemberHeartbeat,
    ) -> Result<MemberHeartbeatReply, NameServerError> {
        let body = serde_json::to_vec(heartbeat).expect("a member heartbeat serializes");
        let path = member_heartbeat_path(consumer_group);
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// `GET /v1/groups`.
    pub async fn consumer_groups(&self) -> Result<ConsumerGroupList, NameServerError> {
        self.call(Method::GET, CONSUMER_GROUPS_PATH, None).await
    }

    /// `GET /v1/groups/{consumer_group}`.
    pub async fn consumer_group(
        &self,
        consumer_group: &str,
    ) -> Result<ConsumerGroupView, NameServerError> {
        self.call(Method::GET, &consumer_group_path(consumer_group), None)
            .await
    }

    /// Asks each NameServer in turn until one answers. After every failure discovery is asked
    /// again (it re-resolves after [`Discovery::mark_failed`]) and the first NameServer not yet
    /// tried is next.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, NameServerError> {
        self.call_checked(method, path, body, |_| Ok(())).await
    }

    /// [`NameServerClient::call`], taking an answer that `check` refuses as that NameServer's
    /// failure.
    async fn call_checked<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        check: fn(&T) -> Result<(), FieldError>,
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
            let answer = self.call_one(&url, method.clone(), path, body).await;
            let checked = answer.and_then(|value| {
                check(&value).map_err(|error| {
                    Attempt::Failed(format!("answered with a value out of bounds: {error}"))
                })?;
                Ok(value)
            });
            match checked {
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
                        warming_up: false,
                    });
                }
                Err(Attempt::WarmingUp(problem)) => {
                    // The right NameServer, only too young to answer: not marked failed.
                    tracing::debug!(nameserver = %url, %problem, "NameServer is warming up");
                    failures.push(Failure {
                        nameserver: url,
                        problem,
                        warming_up: true,
                    });
                }
            }
        }
    }

    async fn call_one<T: DeserializeOwned>(
        &self,
        url: &str,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Attempt> {
        let response = tokio::time::timeout(
            self.timeout,
            exchange(
                url,
                method,
                path,
                body,
                self.token.as_deref(),
                self.tls.as_ref(),
            ),
        )
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
                group_epoch: None,
                master_addr: None,
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

struct Response {
    status: u16,
    body: Bytes,
}

/// `http://host:port` or `https://host:port` to `host:port`, and whether it asks for TLS. A
/// [`DiscoveryMode::Static`](crate::discovery::DiscoveryMode) list can be built by hand, so
/// other schemes are refused here too.
fn authority(url: &str) -> Result<(&str, bool), Attempt> {
    let (authority, https) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else {
        return Err(Attempt::Failed(
            "only http:// and https:// NameServer URLs are supported".to_owned(),
        ));
    };
    Ok((authority.trim_end_matches('/'), https))
}

/// `path` with every byte outside RFC 3986's unreserved set (and `/`) percent-encoded, so that
/// any topic name makes a valid request line and the NameServer judges it (a 4xx), not the
/// client.
fn encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// An HTTP failure with its causes, for people: "error reading a body from connection: invalid
/// chunk size".
fn describe_http(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `GET path` on the plain-HTTP server at `addr`, one request per connection, through the same
/// hyper client as the NameServer calls: the status and the body, or why there is none. For
/// probes of a server's `/healthz` and `/metrics` (`smq dev`), which are no NameServer API calls.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
    match exchange(
        &format!("http://{addr}"),
        Method::GET,
        path,
        None,
        None,
        None,
    )
    .await
    {
        Ok(Response { status, body }) => Ok((status, body)),
        Err(Attempt::Failed(reason) | Attempt::WarmingUp(reason)) => Err(reason),
        Err(Attempt::Refused { status, .. }) => Err(format!("refused with status {status}")),
    }
}

/// One request on a fresh connection (`Connection: close`) through hyper's HTTP/1.1 client; the
/// whole body is read, up to [`MAX_RESPONSE_BYTES`]. The connection is driven here, not on a
/// task of its own, so a timeout around this future drops everything.
async fn exchange(
    url: &str,
    method: Method,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<Response, Attempt> {
    let (authority, https) = authority(url)?;
    if https && tls.is_none() {
        return Err(Attempt::Failed(
            "an https:// NameServer needs the CA of its certificate: set --tls-ca (SMQ_TLS_CA)"
                .to_owned(),
        ));
    }
    let mut request = Request::builder()
        .method(method)
        .uri(encode_path(path))
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("smq/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close");
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|error| Attempt::Failed(format!("cannot make the request: {error}")))?;
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|error| Attempt::Failed(format!("cannot connect: {error}")))?;
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => MaybeTls::Plain(stream),
        Some(tls) => MaybeTls::Tls(Box::new(
            tls.connect(authority, stream)
                .await
                .map_err(|error| Attempt::Failed(error.to_string()))?,
        )),
    };
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Attempt::Failed(describe_http(&error)))?;
    let response = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| Attempt::Failed(describe_http(&error)))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| {
                Attempt::Failed(if error.is::<LengthLimitError>() {
                    format!("response larger than {MAX_RESPONSE_BYTES} bytes")
                } else {
                    describe_http(&*error)
                })
            })?
            .to_bytes();
        Ok(Response { status, body })
    };
    tokio::pin!(response);
    tokio::select! {
        biased;
        response = &mut response => response,
        // The connection ended (the response's fate is then known: it completes or fails).
        _ = connection => response.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DiscoveryMode, DiscoveryOptions};
    use http_body_util::channel::Channel;
    use hyper::body::{Frame, Incoming};
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    fn client(urls: &[String]) -> NameServerClient {
        let mode = DiscoveryMode::Static(urls.to_vec());
        let discovery = Discovery::new(mode, DiscoveryOptions::default()).unwrap();
        NameServerClient::new(Arc::new(discovery)).with_timeout(Duration::from_millis(500))
    }

    /// A request as a NameServer stand-in received it.
    struct Received {
        request: hyper::http::request::Parts,
        body: Bytes,
    }

    /// A NameServer stand-in (hyper's server) answering every request with `status` and the
    /// JSON body `chunks`, one chunk each (chunked transfer encoding); returns its URL and the
    /// requests it received.
    async fn server(
        status: u16,
        chunks: &'static [&'static str],
    ) -> (String, mpsc::UnboundedReceiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (seen, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (request, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let _ = seen.send(Received { request, body });
                        let (mut sender, body) = Channel::<Bytes>::new(chunks.len().max(1));
                        for chunk in chunks {
                            sender
                                .try_send(Frame::data(Bytes::from_static(chunk.as_bytes())))
                                .unwrap();
                        }
                        let response = hyper::Response::builder()
                            .status(status)
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(body)
                            .unwrap();
                        Ok::<_, hyper::Error>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (url, received)
    }

    /// A peer that reads a request's head (only GETs are sent here) and answers `response`
    /// verbatim: what no HTTP server would send. It closes the connection after it if `close`,
    /// else keeps it open.
    async fn hostile_server(response: &'static [u8], close: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = stream.write_all(response).await;
                    if !close {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                });
            }
        });
        url
    }

    fn free_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    const NO_BROKERS: &[&str] = &[r#"{"brokers":[]}"#];

    /// Alone, `bad` fails with a problem containing `problem`, naming `bad`; listed before a
    /// live NameServer, the call moves on to that one and `bad` is put last.
    async fn fails_and_is_passed_by(bad: String, problem: &str) {
        let error = client(std::slice::from_ref(&bad))
            .cluster()
            .await
            .unwrap_err();
        let NameServerError::Unavailable { failures } = &error else {
            panic!("{error}")
        };
        assert_eq!(failures.len(), 1, "{error}");
        assert_eq!(failures[0].nameserver, bad);
        assert!(failures[0].problem.contains(problem), "{error}");
        let (live, _requests) = server(200, NO_BROKERS).await;
        let client = client(&[bad.clone(), live.clone()]);
        assert_eq!(client.cluster().await.unwrap().brokers, vec![]);
        assert_eq!(client.discovery().resolve().await.unwrap(), [live, bad]);
    }

    #[tokio::test]
    async fn a_route_claiming_4_billion_queues_is_a_failed_nameserver_not_an_allocation() {
        const HOSTILE_ROUTE: &[&str] = &[r#"{"topic":"t","groups":[{"cluster":"c","group":"g",
            "master":"127.0.0.1:1","slaves":[],"queues":4294967295,
            "readable":true,"writable":true}]}"#];
        let (hostile, _requests) = server(200, HOSTILE_ROUTE).await;
        let error = client(std::slice::from_ref(&hostile))
            .route("t")
            .await
            .unwrap_err();
        let NameServerError::Unavailable { failures } = &error else {
            panic!("{error}")
        };
        assert!(
            failures[0].problem.contains("groups[0].queues")
                && failures[0].problem.contains("4294967295"),
            "{error}"
        );
        assert!(
            error.is_retryable(),
            "another NameServer may answer: {error}"
        );
    }

    #[tokio::test]
    async fn a_dead_nameserver_is_skipped_and_marked_failed() {
        let dead = free_url();
        let (live, mut requests) = server(200, NO_BROKERS).await;
        let client = client(&[dead.clone(), live.clone()]);
        assert_eq!(client.cluster().await.unwrap().brokers, vec![]);
        let Received { request, .. } = requests.recv().await.unwrap();
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.uri, "/v1/cluster");
        assert_eq!(request.version, hyper::Version::HTTP_11);
        assert_eq!(
            client.discovery().resolve().await.unwrap(),
            [live, dead],
            "the dead one goes last"
        );
    }

    #[tokio::test]
    async fn heartbeat_posts_json_and_reads_the_reply() {
        let (url, mut requests) = server(
            200,
            &[
                r#"{"heartbeat_time"#,
                r#"out_ms":10000,"heartbeat_interval_ms":2000,"master_addr":null}"#,
            ],
        )
        .await;
        let heartbeat = Heartbeat {
            data_version: 3,
            log_end_position: 42,
            ..Heartbeat::new("c", "g", crate::protocol::Role::Master, "127.0.0.1:10911")
        };
        let client = client(&[url]).with_token("cluster-s3cret");
        let reply = client.heartbeat(&heartbeat).await.unwrap();
        assert_eq!(reply.heartbeat_interval_ms, 2000);
        let Received { request, body } = requests.recv().await.unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.uri, "/v1/brokers/heartbeat");
        assert_eq!(request.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            request.headers[header::AUTHORIZATION],
            "Bearer cluster-s3cret"
        );
        assert!(!format!("{client:?}").contains("s3cret"));
        assert_eq!(
            serde_json::from_slice::<Heartbeat>(&body).unwrap(),
            heartbeat
        );
    }

    #[tokio::test]
    async fn a_topic_name_is_percent_encoded_in_the_request_path() {
        let (url, mut requests) = server(
            404,
            &[r#"{"error":"invalid topic name","code":"bad_request"}"#],
        )
        .await;
        let error = client(&[url]).route("a b/é").await.unwrap_err();
        assert_eq!(error.code(), Some(ApiErrorCode::BadRequest), "{error}");
        let Received { request, .. } = requests.recv().await.unwrap();
        assert_eq!(request.uri, "/v1/routes/a%20b/%C3%A9");
    }

    #[tokio::test]
    async fn a_4xx_is_returned_at_once_with_the_api_error() {
        let (url, _requests) = server(
            404,
            &[r#"{"error":"no live broker","code":"topic_not_found"}"#],
        )
        .await;
        let other = free_url();
        let error = client(&[url.clone(), other]).route("x").await.unwrap_err();
        assert_eq!(error.code(), Some(ApiErrorCode::TopicNotFound), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
    }

    #[tokio::test]
    async fn fenced_and_dead_nameservers_are_all_named() {
        let (fenced, _requests) =
            server(503, &[r#"{"error":"DNS names another","code":"fenced"}"#]).await;
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

    #[tokio::test]
    async fn a_hostile_chunk_size_is_a_failed_nameserver_not_a_panic() {
        // 2^64 - 1 bytes announced: the hand-written parser this replaced overflowed on `size + 2`.
        let hostile = hostile_server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n{\"brokers\"",
            true,
        )
        .await;
        fails_and_is_passed_by(hostile, "end of file before message length reached").await;
    }

    #[tokio::test]
    async fn a_chunk_size_beyond_64_bits_is_a_failed_nameserver() {
        let hostile = hostile_server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1ffffffffffffffff\r\n{}\r\n0\r\n\r\n",
            true,
        )
        .await;
        fails_and_is_passed_by(hostile, "invalid chunk size: overflow").await;
    }

    #[tokio::test]
    async fn a_malformed_header_is_a_failed_nameserver() {
        let malformed = hostile_server(
            b"HTTP/1.1 200 OK\r\ncontent-type application/json\r\ncontent-length: 2\r\n\r\n{}",
            true,
        )
        .await;
        fails_and_is_passed_by(malformed, "invalid HTTP header parsed").await;
    }

    #[tokio::test]
    async fn a_response_that_never_ends_times_out() {
        let endless = hostile_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"brokers\"",
            false,
        )
        .await;
        fails_and_is_passed_by(endless, "no answer within 500ms").await;
    }
}
