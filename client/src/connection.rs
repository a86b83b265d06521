//! One TCP connection to a broker (TLS over it with a CA): the handshake, then pipelined requests matched to their
//! responses by correlation id, with a bounded number in flight and a timeout on each.
//!
//! A writer task sends frames in the order they were submitted (a Produce batch goes to the
//! socket as its own buffer, never copied into the frame); a reader task cuts response frames
//! and hands each body to the waiting request, which decodes it. When the connection fails,
//! every waiting request gets the same error.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use smq_tls::ClientTls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, ProtocolViolation, Result};
use crate::protocol::api::{PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN};
use crate::protocol::credential::Credential;
use crate::protocol::frame::{self, RESPONSE_HEADER_BYTES};
use crate::protocol::limits::MAX_FRAME_BYTES_DEFAULT;
use crate::protocol::request::{HandshakeRequest, ProduceRequest};
use crate::protocol::response::HandshakeResponse;
use crate::protocol::{ApiKey, Request, Response};

/// Most buffers the writer hands to one `writev`.
const WRITE_SLICES_MAX: usize = 64;
/// Bytes the reader asks the socket for at least, per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Where a connection goes and how it behaves.
///
/// ```no_run
/// # async fn example() -> smq_client::Result<()> {
/// use std::time::Duration;
/// use smq_client::connection::{Connection, ConnectionOptions};
///
/// let options = ConnectionOptions {
///     broker: "127.0.0.1:10911".into(),
///     client_id: "inventory-sync".into(),
///     credential: None,
///     tls: None,
///     request_timeout: Duration::from_secs(5),
///     max_in_flight_requests: 8,
/// };
/// let connection = Connection::connect(options).await?;
/// assert_eq!(connection.broker(), "127.0.0.1:10911");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// `host:port` of the broker.
    pub broker: String,
    /// Sent in the handshake; shows up in the broker's logs.
    pub client_id: String,
    /// Sent in the handshake's `auth_token`; `None`: anonymous.
    pub credential: Option<Credential>,
    /// TLS to the broker, trusting this CA (`--tls-ca`); `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// How long a request (and the TCP connect) may wait for its answer; a Fetch also gets its
    /// `max_wait_ms` on top.
    pub request_timeout: Duration,
    /// Most requests sent and not yet answered; more wait before they are sent.
    pub max_in_flight_requests: usize,
}

impl ConnectionOptions {
    /// The same options for the broker at `broker`.
    pub(crate) fn to(&self, broker: &str) -> ConnectionOptions {
        ConnectionOptions {
            broker: broker.to_owned(),
            ..self.clone()
        }
    }
}

/// One open, handshaken connection; clones share it.
///
/// ```no_run
/// # async fn example() -> smq_client::Result<()> {
/// use std::time::Duration;
/// use smq_client::connection::{Connection, ConnectionOptions};
/// use smq_client::protocol::request::MetadataRequest;
/// use smq_client::protocol::{Request, Response};
///
/// let connection = Connection::connect(ConnectionOptions {
///     broker: "127.0.0.1:10911".into(),
///     client_id: "example".into(),
///     credential: None,
///     tls: None,
///     request_timeout: Duration::from_secs(10),
///     max_in_flight_requests: 32,
/// })
/// .await?;
/// if let Response::Metadata(metadata) = connection
///     .request(Request::Metadata(MetadataRequest::default()))
///     .await?
/// {
///     println!("{} topics", metadata.topics.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: String,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    waiters: Arc<Mutex<Waiters>>,
    in_flight: Arc<Semaphore>,
    next_correlation_id: AtomicU32,
    request_timeout: Duration,
    /// Set once the handshake is answered; 1 before (the handshake itself is version 1).
    protocol_version: AtomicU32,
    max_message_bytes: AtomicU32,
    max_frame_bytes: AtomicU32,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One frame for the writer, as buffers written one after the other: for Produce the batches
/// are buffers of their own, sent unchanged.
#[derive(Debug)]
struct Outgoing {
    parts: Vec<Bytes>,
}

/// Requests waiting for their answer, and why the connection ended once it has.
#[derive(Debug, Default)]
struct Waiters {
    by_correlation_id: HashMap<u32, oneshot::Sender<Result<Bytes>>>,
    closed: Option<Error>,
}

impl Waiters {
    /// Ends the connection: every waiting request and every later one gets `error`.
    fn close(&mut self, error: Error) {
        for (_, waiter) in self.by_correlation_id.drain() {
            let _ = waiter.send(Err(error.clone()));
        }
        self.closed.get_or_insert(error);
    }
}

/// A request on the wire; [`PendingResponse::wait`] gives its answer.
///
/// ```no_run
/// # async fn example(connection: smq_client::connection::Connection) -> smq_client::Result<()> {
/// use smq_client::protocol::request::ListOffsetsRequest;
/// use smq_client::protocol::{Request, Response};
///
/// // Put four requests on the wire before waiting for any answer.
/// let mut pending = Vec::new();
/// for queue_id in 0..4 {
///     let request = Request::ListOffsets(ListOffsetsRequest { topic: "orders".into(), queue_id });
///     pending.push(connection.submit(request).await?);
/// }
/// for answer in pending {
///     if let Response::ListOffsets(offsets) = answer.wait().await? {
///         println!("{} messages", offsets.high_watermark - offsets.log_start_offset);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PendingResponse {
    connection: Connection,
    api: ApiKey,
    correlation_id: u32,
    receiver: oneshot::Receiver<Result<Bytes>>,
    deadline: Instant,
    /// The request's timeout: `deadline` is this long after it was submitted.
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
}

impl PendingResponse {
    /// The broker's answer, decoded; an error answer becomes [`Error::Broker`].
    pub async fn wait(self) -> Result<Response> {
        let deadline = self.deadline;
        self.wait_until(deadline).await
    }

    /// Like [`PendingResponse::wait`], giving up at `deadline` if that comes before the request
    /// timeout (a producer's overall send timeout running out during an attempt).
    pub async fn wait_until(self, deadline: Instant) -> Result<Response> {
        let inner = &self.connection.inner;
        let deadline = deadline.min(self.deadline);
        let body = match tokio::time::timeout_at(deadline, self.receiver).await {
            Ok(Ok(body)) => body?,
            Ok(Err(_)) => {
                return Err(Error::ConnectionClosed {
                    broker: inner.broker.clone(),
                    reason: "the connection's tasks stopped".into(),
                })
            }
            Err(_) => {
                lock(&inner.waiters)
                    .by_correlation_id
                    .remove(&self.correlation_id);
                return Err(Error::Timeout {
                    what: format!("{:?} request", self.api),
                    broker: inner.broker.clone(),
                    after: self.timeout.saturating_sub(self.deadline - deadline),
                });
            }
        };
        let version = self.connection.api_version(self.api);
        let response = Response::decode(self.api, version, body).map_err(|error| {
            Error::decode(format!("{:?} response", self.api), &inner.broker, error)
        })?;
        match response {
            Response::Error(error) => Err(Error::from_response(self.api, &inner.broker, error)),
            response => Ok(response),
        }
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // A panic while holding this lock leaves the map consistent (single inserts and removes).
    waiters
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connection {
    /// Opens a TCP connection to `options.broker` and makes the handshake.
    pub async fn connect(options: ConnectionOptions) -> Result<Connection> {
        if options.max_in_flight_requests == 0 {
            return Err(Error::InvalidArgument(
                "max in-flight requests must be at least 1".into(),
            ));
        }
        let broker = options.broker.clone();
        let connect_error = |source: std::io::Error| Error::Connect {
            broker: broker.clone(),
            source: Arc::new(source),
        };
        let stream = tokio::time::timeout(options.request_timeout, TcpStream::connect(&broker))
            .await
            .map_err(|_| {
                connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {} ms",
                        options.request_timeout.as_millis()
                    ),
                ))
            })?
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let tasks = match &options.tls {
            None => {
                let (read_half, write_half) = stream.into_split();
                spawn_tasks(read_half, write_half, outgoing_rx, &waiters, &broker)
            }
            Some(tls) => {
                let stream =
                    tokio::time::timeout(options.request_timeout, tls.connect(&broker, stream))
                        .await
                        .map_err(|_| Error::Timeout {
                            what: "TLS handshake".into(),
                            broker: broker.clone(),
                            after: options.request_timeout,
                        })?
                        .map_err(Error::Tls)?;
                let (read_half, write_half) = tokio::io::split(stream);
                spawn_tasks(read_half, write_half, outgoing_rx, &waiters, &broker)
            }
        };
        let connection = Connection {
            inner: Arc::new(Inner {
                broker,
                outgoing,
                waiters,
                in_flight: Arc::new(Semaphore::new(options.max_in_flight_requests)),
                next_correlation_id: AtomicU32::new(1),
                request_timeout: options.request_timeout,
                protocol_version: AtomicU32::new(u32::from(PROTOCOL_VERSION_MIN)),
                max_message_bytes: AtomicU32::new(0),
                max_frame_bytes: AtomicU32::new(0),
                tasks,
            }),
        };
        let handshake = connection
            .request(Request::Handshake(HandshakeRequest {
                client_id: options.client_id,
                min_version: PROTOCOL_VERSION_MIN,
                max_version: PROTOCOL_VERSION_MAX,
                auth_token: options
                    .credential
                    .as_ref()
                    .map(Credential::to_auth_token)
                    .unwrap_or_default(),
            }))
            .await?;
        let Response::Handshake(handshake) = handshake else {
            return Err(connection.unexpected(ApiKey::Handshake));
        };
        connection.accept_handshake(&handshake)?;
        Ok(connection)
    }

    fn accept_handshake(&self, handshake: &HandshakeResponse) -> Result<()> {
        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX).contains(&handshake.version) {
            return Err(Error::Protocol {
                what: "handshake".into(),
                broker: self.inner.broker.clone(),
                reason: ProtocolViolation::Mismatch(format!(
                    "the broker chose protocol version {}, this client speaks {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION_MAX}",
                    handshake.version
                )),
            });
        }
        let inner = &self.inner;
        inner
            .protocol_version
            .store(u32::from(handshake.version), Ordering::Relaxed);
        inner
            .max_message_bytes
            .store(handshake.max_message_bytes, Ordering::Relaxed);
        inner
            .max_frame_bytes
            .store(handshake.max_frame_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// The broker's address, as given.
    pub fn broker(&self) -> &str {
        &self.inner.broker
    }

    /// Whether the connection has ended (broker gone, socket error): every request on it fails,
    /// so open a new one.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.waiters).closed.is_some()
    }

    /// The largest message the broker accepts, from its handshake.
    pub fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes.load(Ordering::Relaxed) as usize
    }

    /// The largest frame the broker accepts, from its handshake.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.inner.max_frame_bytes.load(Ordering::Relaxed) as usize
    }

    /// The version of `api` this connection sends, as the handshake decided.
    pub(crate) fn api_version(&self, api: ApiKey) -> u16 {
        let protocol_version = self.inner.protocol_version.load(Ordering::Relaxed) as u16;
        api.version_in(protocol_version)
            .expect("the handshake accepted only protocol versions this build speaks")
    }

    /// The error for an answer of the wrong kind (a broker bug).
    pub(crate) fn unexpected(&self, api: ApiKey) -> Error {
        Error::wrong_api(api, &self.inner.broker)
    }

    /// Sends `request` and waits for its answer, within the request timeout (plus `max_wait_ms`
    /// for a Fetch).
    pub async fn request(&self, request: Request) -> Result<Response> {
        self.submit(request).await?.wait().await
    }

    /// Puts `request` on the wire once fewer than the maximum requests are in flight, and
    /// returns without waiting for the answer: requests submitted one after the other reach the
    /// broker in that order.
    pub async fn submit(&self, request: Request) -> Result<PendingResponse> {
        let inner = &self.inner;
        let permit = inner
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let api = request.api_key();
        let mut timeout = inner.request_timeout;
        if let Request::Fetch(fetch) = &request {
            timeout += Duration::from_millis(u64::from(fetch.max_wait_ms));
        }
        let correlation_id = self.next_correlation_id();
        let version = self.api_version(api);
        let mut head = BytesMut::new();
        let parts = match &request {
            Request::Produce(produce) => {
                ProduceRequest::encode_head(produce, version, correlation_id, &mut head);
                vec![head.freeze(), produce.batch.clone()]
            }
            Request::ProduceMany(produce) => {
                let mut parts = Vec::with_capacity(2 * produce.entries.len() + 1);
                produce.encode_parts(correlation_id, &mut parts);
                parts
            }
            request => {
                request.encode(version, correlation_id, &mut head);
                vec![head.freeze()]
            }
        };
        let outgoing = Outgoing { parts };
        let receiver = self.send_awaiting(correlation_id, outgoing)?;
        Ok(PendingResponse {
            connection: self.clone(),
            api,
            correlation_id,
            receiver,
            deadline: Instant::now() + timeout,
            timeout,
            _permit: permit,
        })
    }

    /// Sends a frame that `encode` writes (given its correlation id) and returns the body of
    /// its answer, within `timeout`: for the apis outside [`Request`] (the role-change apis of
    /// `smq group promote`), whose callers decode the answer themselves.
    pub(crate) async fn call_raw(
        &self,
        what: &str,
        timeout: Duration,
        encode: impl FnOnce(u32, &mut BytesMut),
    ) -> Result<Bytes> {
        let inner = &self.inner;
        let _permit = inner
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let correlation_id = self.next_correlation_id();
        let mut head = BytesMut::new();
        encode(correlation_id, &mut head);
        let outgoing = Outgoing {
            parts: vec![head.freeze()],
        };
        let receiver = self.send_awaiting(correlation_id, outgoing)?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => Err(Error::ConnectionClosed {
                broker: inner.broker.clone(),
                reason: "the connection's tasks stopped".into(),
            }),
            Err(_) => {
                lock(&inner.waiters)
                    .by_correlation_id
                    .remove(&correlation_id);
                Err(Error::Timeout {
                    what: what.to_owned(),
                    broker: inner.broker.clone(),
                    after: timeout,
                })
            }
        }
    }

    /// Registers the waiter of `correlation_id` and hands `outgoing` to the writer; the
    /// receiver gets the answer's body.
    fn send_awaiting(
        &self,
        correlation_id: u32,
        outgoing: Outgoing,
    ) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let inner = &self.inner;
        let (sender, receiver) = oneshot::channel();
        let mut waiters = lock(&inner.waiters);
        if let Some(error) = &waiters.closed {
            return Err(error.clone());
        }
        waiters.by_correlation_id.insert(correlation_id, sender);
        // Sent under the lock so that a concurrent `close` cannot miss this waiter.
        if inner.outgoing.send(outgoing).is_err() {
            waiters.by_correlation_id.remove(&correlation_id);
            return Err(Error::ConnectionClosed {
                broker: inner.broker.clone(),
                reason: "the writer task stopped".into(),
            });
        }
        Ok(receiver)
    }

    fn next_correlation_id(&self) -> u32 {
        loop {
            // 0 is what a broker answers errors it cannot tie to a request with.
            let id = self
                .inner
                .next_correlation_id
                .fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// The reader and writer tasks of a connection's two halves (TCP, or TLS over it).
fn spawn_tasks<R, W>(
    read_half: R,
    write_half: W,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
    waiters: &Arc<Mutex<Waiters>>,
    broker: &str,
) -> Vec<JoinHandle<()>>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let reader = tokio::spawn(read_responses(
        read_half,
        waiters.clone(),
        broker.to_owned(),
    ));
    let writer = tokio::spawn(write_requests(
        write_half,
        outgoing,
        waiters.clone(),
        broker.to_owned(),
    ));
    vec![reader, writer]
}

async fn read_responses(
    mut socket: impl AsyncRead + Unpin,
    waiters: Arc<Mutex<Waiters>>,
    broker: String,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let error = loop {
        match frame::decode_response(&mut buf, MAX_FRAME_BYTES_DEFAULT) {
            Ok(Some(frame)) => {
                if frame.correlation_id == 0 {
                    // The broker could not tie an error to a request (a frame error) and is
                    // closing the connection: show its message.
                    break Error::ConnectionClosed {
                        broker: broker.clone(),
                        reason: describe_uncorrelated(&frame.body),
                    };
                }
                let waiter = lock(&waiters)
                    .by_correlation_id
                    .remove(&frame.correlation_id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(frame.body));
                }
                // No waiter: the request timed out and its answer came late; drop it.
                continue;
            }
            Ok(None) => {}
            Err(error) => break Error::frame(&broker, error),
        }
        // Make room for the whole frame being read, so a large Fetch answer is read in few
        // reads and lands in one buffer.
        let frame_bytes = match buf.get(..4) {
            Some(prefix) => 4 + u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize,
            None => RESPONSE_HEADER_BYTES,
        };
        buf.reserve(frame_bytes.saturating_sub(buf.len()).max(READ_CHUNK_BYTES));
        match socket.read_buf(&mut buf).await {
            Ok(0) => {
                break Error::ConnectionClosed {
                    broker: broker.clone(),
                    reason: "the broker closed the connection".into(),
                }
            }
            Ok(_) => {}
            Err(error) => {
                break Error::ConnectionClosed {
                    broker: broker.clone(),
                    reason: format!("read failed: {error}"),
                }
            }
        }
    };
    lock(&waiters).close(error);
}

/// The message of an error response sent with correlation id 0.
fn describe_uncorrelated(body: &Bytes) -> String {
    match Response::decode(ApiKey::Handshake, 1, body.clone()) {
        Ok(Response::Error(error)) => format!("the broker closed it after answering: {error}"),
        _ => "the broker answered with correlation id 0 and closed it".into(),
    }
}

async fn write_requests(
    mut socket: impl AsyncWrite + Unpin,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    waiters: Arc<Mutex<Waiters>>,
    broker: String,
) {
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    while let Some(first) = outgoing.recv().await {
        push_chunks(&mut chunks, first);
        while chunks.len() < WRITE_SLICES_MAX {
            match outgoing.try_recv() {
                Ok(next) => push_chunks(&mut chunks, next),
                Err(_) => break,
            }
        }
        if let Err(error) = write_chunks(&mut socket, &mut chunks).await {
            lock(&waiters).close(Error::ConnectionClosed {
                broker,
                reason: format!("write failed: {error}"),
            });
            return;
        }
    }
    let _ = socket.shutdown().await;
}

fn push_chunks(chunks: &mut VecDeque<Bytes>, outgoing: Outgoing) {
    chunks.extend(outgoing.parts.into_iter().filter(|part| !part.is_empty()));
}

/// Writes every chunk with vectored writes, dropping each once written.
async fn write_chunks(
    socket: &mut (impl AsyncWrite + Unpin),
    chunks: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let slices: Vec<IoSlice<'_>> = chunks
            .iter()
            .take(WRITE_SLICES_MAX)
            .map(|chunk| IoSlice::new(chunk))
            .collect();
        let mut written = socket.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let front = chunks.front_mut().expect("written bytes came from a chunk");
            if front.len() <= written {
                written -= front.len();
                chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}

/// Something that lives on one broker connection (the connection itself, a producer lane) and
/// is of no use once that connection has ended.
pub(crate) trait OnConnection {
    fn connection(&self) -> &Connection;
}

impl OnConnection for Connection {
    fn connection(&self) -> &Connection {
        self
    }
}

impl<T: OnConnection> OnConnection for Arc<T> {
    fn connection(&self) -> &Connection {
        (**self).connection()
    }
}

/// One value per broker, opened on first use and opened again once its connection has ended.
/// Opening happens without holding the map, so that a broker slow to answer delays only what is
/// bound to it; of two values opened at once for one broker, the first stored is kept and the
/// other dropped unused.
#[derive(Debug)]
pub(crate) struct PerBroker<T> {
    open: Mutex<HashMap<Arc<str>, T>>,
}

impl<T> Default for PerBroker<T> {
    fn default() -> Self {
        PerBroker {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: OnConnection + Clone> PerBroker<T> {
    /// The value for `broker` whose connection is still open, or the one `open` makes.
    pub(crate) async fn get_or_open<F>(&self, broker: &str, open: impl FnOnce() -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        if let Some(value) = self.get_open(broker) {
            return Ok(value);
        }
        let value = open().await?;
        let mut values = self.lock();
        if let Some(existing) = values.get(broker).filter(|v| !v.connection().is_closed()) {
            return Ok(existing.clone());
        }
        values.insert(Arc::from(broker), value.clone());
        Ok(value)
    }

    /// Every value held, open or not.
    pub(crate) fn all(&self) -> Vec<T> {
        self.lock().values().cloned().collect()
    }

    fn get_open(&self, broker: &str) -> Option<T> {
        let values = self.lock();
        values
            .get(broker)
            .filter(|value| !value.connection().is_closed())
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, T>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One open connection per broker: what a client that talks to several brokers (a consumer
/// reading every group of a topic) keeps.
#[derive(Debug)]
pub(crate) struct ConnectionPool {
    options: ConnectionOptions,
    open: PerBroker<Connection>,
}

impl ConnectionPool {
    /// A pool whose connections use `options` (its `broker` is replaced by each address asked).
    pub(crate) fn new(options: ConnectionOptions) -> ConnectionPool {
        ConnectionPool {
            options,
            open: PerBroker::default(),
        }
    }

    /// The open connection to `broker`, connecting if there is none or it has ended.
    pub(crate) async fn get(&self, broker: &str) -> Result<Connection> {
        self.open
            .get_or_open(broker, || Connection::connect(self.options.to(broker)))
            .await
    }
}
