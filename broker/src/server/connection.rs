//! One client connection: a reader that cuts frames and starts each request in arrival order,
//! and a writer that sends responses as they complete, matched to requests by correlation id.
//! A request that has to wait (a long poll, an fsync, a slave's acknowledgement) is handed to
//! the writer, which polls it beside the others and writes its response on the same wake-up:
//! no task of its own, so whatever completes it (an append, a slave's acknowledgement) wakes
//! the one task that answers, and a long poll never blocks the requests behind it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use smq_protocol::frame::{self, FrameError, RequestHeader};
use smq_protocol::replication::{is_replication_api, ReplicaRequest, ReplicaResponse};
use smq_protocol::response::FetchResponse;
use smq_protocol::role_change::{is_role_change_api, RoleRequest};
use smq_protocol::{ErrorResponse, Request, RequestFrame, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Guards;
use crate::auth::Access;
use crate::handlers::{self, handshake, Answer, HandlerError, Outcome, Reply};
use crate::replication::{self, master::ReplicaSession};
use crate::state::Broker;
use crate::visibility::Wakes;

/// Bytes the reader asks the socket for at least at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The writer's buffer: small responses are gathered, larger writes go straight to the socket.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Responses (and waiting requests) queued for the writer; a client that does not read its
/// responses stops being read.
const RESPONSE_QUEUE_LEN: usize = 1024;
/// The largest frame a connection may send before its handshake: the handshake is the only
/// request allowed then, and it is small. A larger frame is refused and the connection closed, so
/// a peer that has not handshaken never holds any of the budget for large frames (nor, on a
/// broker with principals, one that has not authenticated).
const MAX_FRAME_BEFORE_HANDSHAKE_BYTES: usize = READ_CHUNK_BYTES;
/// Requests of one connection that wait for something (a long poll, an fsync) at most; beyond it
/// the broker reads no more of that connection's requests until one is answered, so a client
/// pipelining long polls holds at most this many.
pub const MAX_WAITING_REQUESTS: usize = 1024;

/// An encoded response: the frame up to the payload, then stored batches sent as they are.
struct Outgoing {
    head: BytesMut,
    batches: Vec<Bytes>,
}

/// What the reader hands the writer, in arrival order.
enum ToWriter {
    /// A response to send.
    Ready(Outgoing),
    /// A request that waits: its response once it completes.
    Waiting(BoxFuture<'static, Outgoing>),
    /// The stream cannot be trusted: drop the requests still waiting, send what is queued.
    Abort,
}

/// Why the reader stopped.
enum End {
    /// The client closed its side, or the connection is idle or failed: answer what is in flight.
    Finished,
    /// The broker is shutting down: answer what is in flight, read nothing more.
    Shutdown,
    /// The stream cannot be trusted any more (a frame error, a failed handshake): close at once.
    Abort,
}

struct Connection<'a> {
    broker: &'a Arc<Broker>,
    guards: &'a Arc<Guards>,
    peer: SocketAddr,
    /// The peer's address's share of the budget for large frames (taken before the budget).
    frame_share: Arc<Semaphore>,
    responses: mpsc::Sender<ToWriter>,
    /// One permit per request waiting at the writer, [`MAX_WAITING_REQUESTS`] in all.
    waiting: Arc<Semaphore>,
    /// Agreed in the handshake; `None` until then.
    protocol_version: Option<u16>,
    /// Who the handshake authenticated (`Open` on a broker without principals).
    access: Access,
    /// Set once a slave was admitted on this connection (ReplicaHello).
    replica: Option<ReplicaSession>,
}

/// Serves a plaintext connection.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    frame_share: Arc<Semaphore>,
    broker: &Arc<Broker>,
    guards: &Arc<Guards>,
) {
    let (reader, writer) = stream.into_split();
    serve_halves(reader, writer, peer, frame_share, broker, guards).await
}

/// Serves a connection given as its two halves (of a TCP stream, or of a TLS stream).
pub async fn serve_halves<R, W>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    frame_share: Arc<Semaphore>,
    broker: &Arc<Broker>,
    guards: &Arc<Guards>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(%peer, "connection opened");
    let (responses, queued) = mpsc::channel(RESPONSE_QUEUE_LEN);
    let write_timeout = Duration::from_millis(broker.config.peer_timeout_ms);
    let writer = tokio::spawn(write_responses(writer, queued, peer, write_timeout));
    let mut connection = Connection {
        broker,
        guards,
        peer,
        frame_share,
        responses,
        waiting: Arc::new(Semaphore::new(MAX_WAITING_REQUESTS)),
        protocol_version: None,
        access: Access::Open,
        replica: None,
    };
    let end = connection.read_requests(reader).await;
    // A slave whose connection ended stops counting at once, not after its last fetch's wait.
    connection.replica = None;
    if let End::Abort = end {
        let _ = connection.responses.send(ToWriter::Abort).await;
    }
    // The writer answers the requests still waiting, then stops.
    drop(connection);
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

impl Connection<'_> {
    async fn read_requests(&mut self, mut reader: impl AsyncRead + Unpin) -> End {
        let max_frame_bytes = self.broker.config.max_frame_bytes();
        let idle = Duration::from_millis(self.broker.config.idle_timeout_ms);
        let peer_timeout = Duration::from_millis(self.broker.config.peer_timeout_ms);
        let handshake_deadline = Instant::now() + peer_timeout;
        let mut idle_deadline = Instant::now() + idle;
        let mut shutdown = self.broker.shutdown.clone();
        // The writer stops for good when the client does not take its responses: stop too.
        let writer_alive = self.responses.clone();
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        // When the bytes of the frame now being read started to arrive.
        let mut frame_started: Option<Instant> = None;
        // What the large frame being read holds of its address's share and of the broker's
        // budget.
        let mut frame_budget: Option<FramePermits> = None;
        loop {
            while self.waiting.available_permits() > 0 {
                let frame_limit = match self.protocol_version {
                    Some(_) => max_frame_bytes,
                    None => MAX_FRAME_BEFORE_HANDSHAKE_BYTES,
                };
                match frame::decode_request(&mut buf, frame_limit) {
                    Ok(Some(frame)) => {
                        frame_started = None;
                        frame_budget = None;
                        if !self.start(frame).await {
                            return End::Abort;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.refuse_frame(&error).await;
                        return End::Abort;
                    }
                }
            }
            let reading = self.waiting.available_permits() > 0;
            if buf.is_empty() {
                frame_started = None;
            } else if reading && frame_started.is_none() {
                frame_started = Some(Instant::now());
            }
            let large_frame = announced_frame_bytes(&buf).filter(|&len| len > READ_CHUNK_BYTES);
            let needs_budget = reading && frame_budget.is_none() && large_frame.is_some();
            if reading && !needs_budget {
                reserve_for_frame(&mut buf);
            }
            let frame_deadline = frame_started
                .filter(|_| reading)
                .map(|started| started + peer_timeout);
            let handshake_deadline = self
                .protocol_version
                .is_none()
                .then_some(handshake_deadline);
            let deadline = [Some(idle_deadline), frame_deadline, handshake_deadline]
                .into_iter()
                .flatten()
                .min()
                .expect("the idle deadline is always there");
            tokio::select! {
                _ = crate::state::shutting_down(&mut shutdown) => return End::Shutdown,
                _ = writer_alive.closed() => return End::Abort,
                // Woken once a waiting request is answered and the reader may read again.
                _ = self.waiting.acquire(), if !reading => {}
                permits = FramePermits::acquire(
                    &self.frame_share,
                    &self.guards.frame_budget,
                    large_frame.unwrap_or(0),
                ), if needs_budget => frame_budget = permits.ok(),
                read = reader.read_buf(&mut buf), if reading && !needs_budget => match read {
                    Ok(0) => {
                        if !buf.is_empty() {
                            self.broker.metrics.request_errors.fetch_add(1, Ordering::Relaxed);
                            self.warn_bad_peer(&format!(
                                "truncated frame: the client closed the connection in the middle of a frame ({} bytes)",
                                buf.len()
                            ));
                        }
                        return End::Finished;
                    }
                    Ok(_) => idle_deadline = Instant::now() + idle,
                    Err(error) => {
                        tracing::debug!(peer = %self.peer, %error, "reading from the connection failed");
                        return End::Finished;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if handshake_deadline.is_some_and(|at| at <= now) {
                        self.warn_bad_peer("no handshake within peer_timeout_ms of connecting: closing the connection");
                        return End::Abort;
                    }
                    if frame_deadline.is_some_and(|at| at <= now) {
                        self.warn_bad_peer(&format!(
                            "a frame not finished within peer_timeout_ms ({} of its bytes came): closing the connection",
                            buf.len()
                        ));
                        return End::Abort;
                    }
                    if idle_deadline <= now {
                        if self.waiting.available_permits() == MAX_WAITING_REQUESTS {
                            tracing::info!(
                                peer = %self.peer,
                                idle_timeout_ms = self.broker.config.idle_timeout_ms,
                                "closing an idle connection"
                            );
                            return End::Finished;
                        }
                        idle_deadline = now + idle;
                    }
                }
            }
        }
    }

    /// A warning about this peer's bad behaviour, at most one line per peer per interval
    /// (with the count of lines left out).
    fn warn_bad_peer(&self, what: &str) {
        if let Some(suppressed) = self.guards.peer_log.admit(self.peer) {
            tracing::warn!(peer = %self.peer, suppressed, "{what}");
        }
    }

    /// Starts one request; false when the connection must close (a failed handshake).
    async fn start(&mut self, frame: RequestFrame) -> bool {
        let header = frame.header;
        if is_replication_api(header.api_key) && self.protocol_version.is_some() {
            return self.start_replication(header, frame.body).await;
        }
        if is_role_change_api(header.api_key) && self.protocol_version.is_some() {
            let reply = match RoleRequest::decode(&header, frame.body) {
                Ok(request) => match self.access.check_admin_all("change a broker's role") {
                    Ok(()) => replication::role_change::handle(self.broker, request),
                    Err(refused) => Reply::Now(Err(refused)),
                },
                Err(error) => Reply::Now(Err(error.into())),
            };
            self.answer(header, reply).await;
            return true;
        }
        let request = match Request::decode(&header, frame.body) {
            Ok(request) => request,
            Err(error) => {
                self.send(header, Err(error.into())).await;
                return true;
            }
        };
        if let Request::Handshake(handshake) = &request {
            return match handshake::handle(self.broker, handshake) {
                Ok((access, version, answer)) => {
                    tracing::debug!(peer = %self.peer, client_id = %handshake.client_id, version, "handshake");
                    self.protocol_version = Some(version);
                    self.access = access;
                    self.send(header, Ok(answer)).await;
                    true
                }
                Err(error) => {
                    self.send(header, Err(error)).await;
                    false
                }
            };
        }
        let api = request.api_key();
        let Some(protocol_version) = self.protocol_version else {
            self.send(header, Err(HandlerError::HandshakeRequired { api }))
                .await;
            return true;
        };
        let agreed = api.version_in(protocol_version).unwrap_or(0);
        if header.api_version != agreed {
            let error = HandlerError::VersionMismatch {
                api,
                version: header.api_version,
                agreed,
                protocol_version,
            };
            self.send(header, Err(error)).await;
            return true;
        }
        if let Err(refused) = self.access.check(&request) {
            self.send(header, Err(refused)).await;
            return true;
        }
        let mut wakes = Wakes::default();
        let reply = handlers::dispatch(self.broker, &self.access, request, &mut wakes);
        self.answer(header, reply).await;
        wakes.wake();
        true
    }

    /// Starts a replication request (api keys 100 to 102); false when the connection must
    /// close (a refused slave).
    async fn start_replication(&mut self, header: RequestHeader, body: Bytes) -> bool {
        let request = match ReplicaRequest::decode(&header, body) {
            Ok(request) => request,
            Err(error) => {
                self.send(header, Err(error.into())).await;
                return true;
            }
        };
        let reply = match (request, &self.replica) {
            (ReplicaRequest::Hello(hello), _) => {
                let admitted = self
                    .access
                    .check_replicate()
                    .and_then(|()| replication::master::hello(self.broker, self.peer, &hello));
                match admitted {
                    Ok((session, answer)) => {
                        self.replica = Some(session);
                        Reply::Now(Ok(answer))
                    }
                    Err(error) => {
                        self.replica = None;
                        self.send(header, Err(error)).await;
                        return false;
                    }
                }
            }
            (_, None) => Reply::Now(Err(HandlerError::ReplicaHelloRequired)),
            (ReplicaRequest::Fetch(fetch), Some(session)) => {
                replication::master::fetch(self.broker, session, fetch)
            }
            (ReplicaRequest::Metadata(metadata), Some(session)) => {
                replication::master::metadata(self.broker, session, self.peer, metadata)
            }
        };
        self.answer(header, reply).await;
        true
    }

    /// Sends an answer now, or hands the waiting request to the writer, which answers it when
    /// it completes.
    async fn answer(&mut self, header: RequestHeader, reply: Reply) {
        match reply {
            Reply::Now(outcome) => self.send(header, outcome).await,
            Reply::Later(pending) => {
                let permit = self
                    .waiting
                    .clone()
                    .try_acquire_owned()
                    .expect("the reader starts a request only with a permit free");
                let broker = self.broker.clone();
                let peer = self.peer;
                let guards = self.guards.clone();
                let waiting = async move {
                    let outcome = pending.await;
                    drop(permit);
                    encode(&broker, &guards, peer, header, outcome)
                };
                let _ = self
                    .responses
                    .send(ToWriter::Waiting(waiting.boxed()))
                    .await;
            }
        }
    }

    async fn send(&self, header: RequestHeader, outcome: Outcome) {
        let outgoing = encode(self.broker, self.guards, self.peer, header, outcome);
        let _ = self.responses.send(ToWriter::Ready(outgoing)).await;
    }

    /// Answers a frame error with correlation id 0; the caller then closes the connection.
    async fn refuse_frame(&self, error: &FrameError) {
        let error_code = error.error_code();
        self.broker
            .metrics
            .request_errors
            .fetch_add(1, Ordering::Relaxed);
        let error = match (self.protocol_version, error) {
            (None, FrameError::TooLarge { .. }) => format!(
                "{error} (before its handshake a connection may send frames of at most \
                 {MAX_FRAME_BEFORE_HANDSHAKE_BYTES} bytes: handshake first)"
            ),
            _ => error.to_string(),
        };
        self.warn_bad_peer(&format!(
            "bad frame: {error}; answered with correlation id 0 and closed the connection"
        ));
        let mut head = BytesMut::new();
        let response = ErrorResponse::new(error_code, error);
        Response::Error(response).encode(0, 0, &mut head);
        let outgoing = Outgoing {
            head,
            batches: Vec::new(),
        };
        let _ = self.responses.send(ToWriter::Ready(outgoing)).await;
    }
}

/// The memory a large frame being read holds: part of its address's share, and as much of the
/// broker's budget; both come back when it is dropped.
struct FramePermits {
    _share: OwnedSemaphorePermit,
    _budget: OwnedSemaphorePermit,
}

impl FramePermits {
    /// Waits until `bytes` fit in the address's share, then in the broker's budget.
    async fn acquire(
        share: &Arc<Semaphore>,
        budget: &Arc<Semaphore>,
        bytes: usize,
    ) -> Result<FramePermits, AcquireError> {
        let bytes = bytes as u32;
        let share = share.clone().acquire_many_owned(bytes).await?;
        let budget = budget.clone().acquire_many_owned(bytes).await?;
        Ok(FramePermits {
            _share: share,
            _budget: budget,
        })
    }
}

/// The length of the frame at the front of `buf`, prefix included, once its prefix has arrived
/// (already checked against the limit by the decoder).
fn announced_frame_bytes(buf: &[u8]) -> Option<usize> {
    let prefix = buf.get(..4)?;
    Some(4 + u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize)
}

/// Makes room for the rest of the frame at the front of `buf`, or for one more chunk when little
/// room is left. (`reserve` counts from the length, not the spare capacity: asking for a chunk
/// whenever some room is left would double every buffer, and copy it whole, on its first read.)
fn reserve_for_frame(buf: &mut BytesMut) {
    let rest_of_frame = announced_frame_bytes(buf)
        .unwrap_or(0)
        .saturating_sub(buf.len());
    let spare = buf.capacity() - buf.len();
    if spare < rest_of_frame {
        buf.reserve(rest_of_frame);
    } else if spare < READ_CHUNK_BYTES / 2 {
        buf.reserve(READ_CHUNK_BYTES);
    }
}

/// Encodes a response, logging each error response (a warning for bad input, at most one line
/// per peer per interval).
fn encode(
    broker: &Broker,
    guards: &Guards,
    peer: SocketAddr,
    header: RequestHeader,
    outcome: Outcome,
) -> Outgoing {
    let mut head = BytesMut::new();
    let correlation_id = header.correlation_id;
    let response = match outcome {
        Ok(Answer::Response(response)) => response,
        Ok(Answer::Fetch {
            high_watermark,
            log_start_offset,
            batches,
        }) => {
            return encode_fetch(
                header,
                FetchResponse {
                    high_watermark,
                    log_start_offset,
                    batches: Bytes::new(),
                },
                batches,
            )
        }
        Ok(Answer::ReplicaFetch(response)) => {
            let mut head = BytesMut::new();
            let bytes = response.bytes.clone();
            response.encode_head(bytes.len(), correlation_id, &mut head);
            return Outgoing {
                head,
                batches: vec![bytes],
            };
        }
        Ok(Answer::ReplicaHello(response)) => {
            return replica_outgoing(ReplicaResponse::Hello(response), correlation_id)
        }
        Ok(Answer::ReplicaMetadata(response)) => {
            return replica_outgoing(ReplicaResponse::Metadata(response), correlation_id)
        }
        Ok(Answer::Role(response)) => {
            let mut head = BytesMut::new();
            response.encode(correlation_id, &mut head);
            return Outgoing {
                head,
                batches: Vec::new(),
            };
        }
        Err(error) => {
            broker
                .metrics
                .request_errors
                .fetch_add(1, Ordering::Relaxed);
            let code = error.code();
            if error.is_bad_input() {
                if let Some(suppressed) = guards.peer_log.admit(peer) {
                    tracing::warn!(%peer, api_key = header.api_key, correlation_id, %code, suppressed, "{error}");
                }
            } else {
                tracing::error!(%peer, api_key = header.api_key, correlation_id, %code, "{error}");
            }
            Response::Error(error.to_response())
        }
    };
    // Success: the version was checked against the handshake. Error bodies have one layout.
    response.encode(header.api_version, correlation_id, &mut head);
    Outgoing {
        head,
        batches: Vec::new(),
    }
}

fn replica_outgoing(response: ReplicaResponse, correlation_id: u32) -> Outgoing {
    let mut head = BytesMut::new();
    response.encode(correlation_id, &mut head);
    Outgoing {
        head,
        batches: Vec::new(),
    }
}

/// A Fetch response whose batches follow its head uncopied (the last field, proto-spec.md
/// section 3 "Payload last").
fn encode_fetch(header: RequestHeader, response: FetchResponse, batches: Vec<Bytes>) -> Outgoing {
    let mut head = BytesMut::new();
    let batches_len = batches.iter().map(Bytes::len).sum();
    response.encode_head(
        batches_len,
        header.api_version,
        header.correlation_id,
        &mut head,
    );
    Outgoing { head, batches }
}

/// Sends responses in completion order, gathering those that are ready into one flush, and
/// polls the requests that wait: one that completes is written on the wake-up that completed it.
/// A client that takes no part of a write for `timeout` is dropped (the reader then stops too),
/// releasing what its responses hold. Ends once the reader is gone and nothing waits.
async fn write_responses(
    writer: impl AsyncWrite + Unpin,
    mut queued: mpsc::Receiver<ToWriter>,
    peer: SocketAddr,
    timeout: Duration,
) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    let mut waiting = Waiting::new();
    let mut reader_gone = false;
    loop {
        let first = tokio::select! {
            Some(outgoing) = waiting.set.next(), if !waiting.is_empty() => Some(outgoing),
            work = queued.recv(), if !reader_gone => match work {
                Some(work) => take(work, &mut waiting),
                None => {
                    reader_gone = true;
                    None
                }
            },
            else => break,
        };
        let Some(first) = first else { continue };
        let mut next = Some(first);
        while let Some(outgoing) = next {
            if let Err(error) = write_one(&mut out, &outgoing, timeout).await {
                tracing::debug!(%peer, %error, "writing a response failed; dropping the connection");
                return;
            }
            next = ready_now(&mut queued, &mut waiting);
        }
        if let Err(error) = within(timeout, out.flush()).await {
            tracing::debug!(%peer, %error, "writing a response failed; dropping the connection");
            return;
        }
    }
    let _ = within(timeout, out.shutdown()).await;
}

/// The requests waiting at the writer, each polled when it is woken.
///
/// `FuturesUnordered` wakes its task again after every poll that polled all the futures it
/// holds (its cooperative yield), which would cost one more wake-up, and often a worker thread's,
/// for every waiting request on a connection that has only one waiting (a producer under sync
/// replication, a slave's fetch, a consumer's long poll). So the set always holds one more
/// future that never completes and is never woken.
struct Waiting {
    set: FuturesUnordered<BoxFuture<'static, Outgoing>>,
}

impl Waiting {
    fn new() -> Waiting {
        let mut waiting = Waiting {
            set: FuturesUnordered::new(),
        };
        waiting.clear();
        waiting
    }

    fn is_empty(&self) -> bool {
        self.set.len() <= 1
    }

    fn push(&mut self, future: BoxFuture<'static, Outgoing>) {
        self.set.push(future);
    }

    fn clear(&mut self) {
        self.set.clear();
        self.set.push(std::future::pending().boxed());
    }
}

/// A response to write now, if `work` is one; a waiting request joins `waiting`.
fn take(work: ToWriter, waiting: &mut Waiting) -> Option<Outgoing> {
    match work {
        ToWriter::Ready(outgoing) => Some(outgoing),
        ToWriter::Waiting(future) => {
            waiting.push(future);
            None
        }
        ToWriter::Abort => {
            waiting.clear();
            None
        }
    }
}

/// The next response that is ready without waiting: queued, or of a request that completed.
fn ready_now(queued: &mut mpsc::Receiver<ToWriter>, waiting: &mut Waiting) -> Option<Outgoing> {
    while let Ok(work) = queued.try_recv() {
        if let Some(outgoing) = take(work, waiting) {
            return Some(outgoing);
        }
    }
    // Polled with a no-op waker; the loop polls it again with its own before it sleeps.
    waiting.set.next().now_or_never().flatten()
}

async fn write_one(
    out: &mut BufWriter<impl AsyncWrite + Unpin>,
    outgoing: &Outgoing,
    timeout: Duration,
) -> std::io::Result<()> {
    within(timeout, out.write_all(&outgoing.head)).await?;
    for batch in &outgoing.batches {
        within(timeout, out.write_all(batch)).await?;
    }
    Ok(())
}

/// One write to the client, failed with `TimedOut` when the client takes none of it in time.
async fn within(
    timeout: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no response bytes within peer_timeout_ms",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smq_protocol::api::ApiKey;

    #[test]
    fn fetch_responses_written_in_two_parts_decode_as_one() {
        let header = RequestHeader {
            api_key: ApiKey::Fetch as u16,
            api_version: 1,
            correlation_id: 42,
        };
        let batches = vec![
            Bytes::from_static(b"first batch"),
            Bytes::from_static(b"second"),
        ];
        let response = FetchResponse {
            high_watermark: 9,
            log_start_offset: 3,
            batches: Bytes::new(),
        };
        let outgoing = encode_fetch(header, response, batches);
        let mut wire = outgoing.head.clone();
        for batch in &outgoing.batches {
            wire.extend_from_slice(batch);
        }
        let frame = frame::decode_response(&mut wire, 1 << 20).unwrap().unwrap();
        assert!(wire.is_empty());
        assert_eq!(frame.correlation_id, 42);
        let decoded = Response::decode(ApiKey::Fetch, 1, frame.body).unwrap();
        assert_eq!(
            decoded,
            Response::Fetch(FetchResponse {
                high_watermark: 9,
                log_start_offset: 3,
                batches: Bytes::from_static(b"first batchsecond"),
            })
        );
    }
}
