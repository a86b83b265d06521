//! The slave's side of replication: one task connects to `--master`, introduces itself
//! (cluster, group, address, replication secret), copies the master's topics and consumer
//! offsets, then pulls the master's log from its own log end and appends every batch verbatim
//! at the master's position through the store's append path (CRC and structure checked,
//! indexes built here). Each fetch's position acknowledges what it holds; when the master
//! counts only fsynced bytes, its flushed position what is fsynced: the slave asks for the next
//! chunk while the last one's fsync runs.
//!
//! When the master cannot be reached the task retries (50 ms, doubling to 1 s) and logs one
//! warning per outage, not one per attempt; the slave keeps serving reads meanwhile.
//!
//! The master is the one the broker's role names now (`--master` at start; a role change may
//! name another, or make this broker a master): the task follows each change, and every change
//! it makes to the store runs under `Broker::replica_writes` after checking that the broker is
//! still this master's slave, so that a role change can wait for the last of them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smq_protocol::credential::Credential;
use smq_protocol::frame;
use smq_protocol::record_batch::BatchView;
use smq_protocol::replication::{
    EpochEntry, ReplicaFetch, ReplicaHello, ReplicaHelloResponse, ReplicaMetadata, ReplicaRequest,
    ReplicaResponse,
};
use smq_protocol::request::HandshakeRequest;
use smq_protocol::{ApiKey, Request, Response, Role};
use smq_tls::MaybeTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::{shutting_down, Broker};
use crate::storage::AppendReceipt;

/// Most log bytes asked for in one fetch.
const FETCH_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// How long the master may hold a fetch while it has nothing new.
const FETCH_MAX_WAIT_MS: u32 = 500;
/// How long an answer may take beyond the fetch's wait before the connection counts as dead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How far behind its master this slave is, as of its last fetch.
#[derive(Debug, Default)]
pub struct SlaveStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default, Clone, Copy)]
struct StatusInner {
    connected: bool,
    master_end: u64,
    lag_bytes: u64,
    caught_up_at: Option<Instant>,
}

/// A snapshot of [`SlaveStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub connected: bool,
    pub bytes: u64,
    /// Since the slave last held everything its master had (0 while it does); `None` before
    /// it ever did.
    pub ms: Option<u64>,
}

impl SlaveStatus {
    pub fn lag(&self) -> Lag {
        let inner = *self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Lag {
            connected: inner.connected,
            bytes: inner.lag_bytes,
            // Holding everything the master had at the last answer is no lag, however long
            // ago the master last wrote.
            ms: match inner.caught_up_at {
                Some(_) if inner.lag_bytes == 0 => Some(0),
                caught_up_at => caught_up_at.map(|at| at.elapsed().as_millis() as u64),
            },
        }
    }

    fn update(&self, change: impl FnOnce(&mut StatusInner)) {
        change(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

#[derive(Debug, thiserror::Error)]
enum ReplicationError {
    #[error("cannot reach the master at {master}: {source}")]
    Io {
        master: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the master at {master} did not answer within {timeout_ms} ms")]
    Timeout { master: String, timeout_ms: u64 },
    #[error("the master at {master} refused: {message}")]
    Refused { master: String, message: String },
    #[error("{0}")]
    Tls(#[from] smq_tls::TlsError),
    #[error("the master at {master} sent something this slave cannot read: {reason}")]
    Protocol { master: String, reason: String },
    #[error("cannot apply the master's data: {0}")]
    Apply(String),
}

/// Copies from the master the broker's role names until the broker shuts down or stops being
/// a slave.
pub async fn run(broker: Arc<Broker>, slave_addr: String) {
    let mut shutdown = broker.shutdown.clone();
    let mut role = broker.role.subscribe();
    let mut pause = Duration::from_millis(50);
    let mut in_outage = false;
    let mut logged_kind = None;
    loop {
        let now = role.borrow_and_update().clone();
        if now.role != Role::Slave {
            return;
        }
        let Some(master) = now.master else {
            // No master is known (this broker was superseded while its group had none live):
            // wait until a heartbeat names one.
            tokio::select! {
                _ = shutting_down(&mut shutdown) => return,
                _ = role.changed() => continue,
            }
        };
        let result = tokio::select! {
            _ = shutting_down(&mut shutdown) => return,
            _ = role.changed() => {
                broker.slave_status.update(|status| status.connected = false);
                pause = Duration::from_millis(50);
                continue;
            }
            result = replicate(&broker, &master, &slave_addr, &mut in_outage) => result,
        };
        broker
            .slave_status
            .update(|status| status.connected = false);
        let error = match result {
            Ok(()) => return,
            Err(error) => error,
        };
        // One warning per outage, and one more when it fails differently (the master is back
        // but refuses this slave): the operator needs to see that.
        let kind = std::mem::discriminant(&error);
        if in_outage && logged_kind == Some(kind) {
            tracing::debug!(%error, "replication failed again");
        } else {
            tracing::warn!(%error, "replication stopped: this slave keeps serving reads and reconnects");
            in_outage = true;
            logged_kind = Some(kind);
        }
        tokio::select! {
            _ = shutting_down(&mut shutdown) => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// One connection to the master: introduce, copy metadata, then fetch and append forever.
async fn replicate(
    broker: &Arc<Broker>,
    master: &str,
    slave_addr: &str,
    in_outage: &mut bool,
) -> Result<(), ReplicationError> {
    let mut link = Link::connect(broker, master).await?;
    let secret = broker.config.replication_secret.clone().unwrap_or_default();
    let hello = ReplicaRequest::Hello(ReplicaHello {
        cluster: broker.config.cluster.clone(),
        group: broker.config.group.clone(),
        slave_addr: slave_addr.to_owned(),
        secret: Bytes::from(secret),
        log_end: broker.store.end_position(),
        segment_bytes: broker.config.store.segment_bytes,
        epochs: broker.store.epoch_history().entries,
    });
    let ReplicaHelloResponse {
        fsync_acks,
        log_start: master_start,
        log_end: master_end,
        master_epoch,
        truncate_to,
        epochs: master_epochs,
        ..
    } = match link.call(&hello).await? {
        ReplicaResponse::Hello(hello) => hello,
        other => return Err(link.unexpected(other)),
    };
    if truncate_to < broker.store.end_position() {
        drop_divergent_tail(broker, master, master_epoch, truncate_to).await?;
    }
    if broker.store.end_position() < master_start {
        skip_to_master_start(broker, master, master_start).await?;
    }
    tracing::info!(%master, master_log_end = master_end, log_end = broker.store.end_position(), master_epoch, fsync_acks, "replicating from the master");
    *in_outage = false;
    broker.slave_status.update(|status| {
        status.connected = true;
        status.master_end = master_end;
    });
    let (mut topics_version, mut offsets_version) = link.copy_metadata(broker).await?;
    let mut offsets_copied_at = Instant::now();
    let offsets_interval = Duration::from_millis(broker.config.offsets_flush_interval_ms);
    let mut unflushed = Unflushed::default();
    loop {
        unflushed.wake_durable(broker);
        let fetch = ReplicaRequest::Fetch(ReplicaFetch {
            position: broker.store.end_position(),
            flushed_position: broker.store.flushed_position(),
            max_bytes: FETCH_MAX_BYTES,
            // While an fsync runs the master must not hold the fetch: its end is acknowledged
            // by the next one, which should not wait for the master's next write.
            max_wait_ms: if unflushed.is_empty() {
                FETCH_MAX_WAIT_MS
            } else {
                0
            },
        });
        let answer = match link.call(&fetch).await? {
            ReplicaResponse::Fetch(answer) => answer,
            other => return Err(link.unexpected(other)),
        };
        let offsets_due = answer.offsets_version != offsets_version
            && offsets_copied_at.elapsed() >= offsets_interval;
        if answer.topics_version != topics_version || offsets_due {
            (topics_version, offsets_version) = link.copy_metadata(broker).await?;
            offsets_copied_at = Instant::now();
        }
        if !answer.bytes.is_empty() {
            apply(
                broker,
                master,
                answer.position,
                answer.bytes,
                fsync_acks,
                &master_epochs,
                &mut unflushed,
            )
            .await?;
        } else {
            unflushed.wait(broker).await?;
        }
        let end = broker.store.end_position();
        broker.slave_status.update(|status| {
            status.master_end = answer.master_end;
            status.lag_bytes = answer.master_end.saturating_sub(end);
            if end >= answer.master_end {
                status.caught_up_at = Some(Instant::now());
            }
        });
    }
}

/// Cuts this slave's log at `truncate_to`, where its master's history says they part: what
/// lies past it the master does not have and never acknowledged (proto-spec.md section 10.1).
/// Says in one line what it dropped.
async fn drop_divergent_tail(
    broker: &Arc<Broker>,
    master: &str,
    master_epoch: u32,
    truncate_to: u64,
) -> Result<(), ReplicationError> {
    let dropped = while_following(broker, master, move |writer| {
        writer
            .store
            .truncate_to(truncate_to)
            .map_err(|error| ReplicationError::Apply(error.to_string()))
    })
    .await?;
    tracing::warn!(
        %master,
        master_epoch,
        from_position = dropped.from_position,
        to_position = dropped.to_position,
        bytes = dropped.bytes(),
        batches = dropped.batches,
        messages = dropped.messages,
        epochs = ?dropped.epochs,
        "dropped the tail of this slave's log that its master does not have (written by an \
         older master and never acknowledged through the group's masters since)"
    );
    wake_every_queue(broker);
    Ok(())
}

/// Makes this slave's log begin at its master's log start, when it ends before it (the
/// master's retention deleted the log in between, so it cannot be copied): what this slave
/// held is dropped, and one line says what was skipped.
async fn skip_to_master_start(
    broker: &Arc<Broker>,
    master: &str,
    master_start: u64,
) -> Result<(), ReplicationError> {
    let writer = broker.clone();
    let (end, dropped_bytes) = tokio::task::spawn_blocking(move || {
        let store = &writer.store;
        let (start, end) = (store.log_start_position(), store.end_position());
        let dropped_bytes = if end > start {
            store.truncate_to(start)?.bytes()
        } else {
            0
        };
        store.restart_empty_log_at(master_start)?;
        Ok::<_, crate::storage::StorageError>((end, dropped_bytes))
    })
    .await
    .map_err(|error| ReplicationError::Apply(error.to_string()))?
    .map_err(|error| ReplicationError::Apply(error.to_string()))?;
    tracing::warn!(
        %master,
        from_position = end,
        to_position = master_start,
        skipped_bytes = master_start - end,
        dropped_bytes,
        "this slave's log ends before its master's log start (the master's retention deleted \
         the log in between): it skips to the master's log start, dropping what it held, and \
         copies from there"
    );
    wake_every_queue(broker);
    Ok(())
}

/// Wakes every consumer waiting on a queue of this broker (its log changed under them).
fn wake_every_queue(broker: &Broker) {
    for topic in broker.topics() {
        for queue in 0..topic.queue_count {
            topic.appended(queue).notify_waiters();
        }
    }
}

/// Appends the batches of `bytes` (log bytes from `position`) verbatim, recording each new
/// master epoch first (with the flags of the master's history), then wakes the consumers
/// waiting on their queues, or, when the master counts only fsynced bytes (or this slave
/// flushes synchronously), leaves that to `unflushed` once the fsync covering the chunk is done.
/// The next fetch does not wait for that fsync (the flusher runs it meanwhile): it
/// acknowledges what is fsynced so far, so copying the next chunk overlaps this one's fsync.
///
/// A chunk of the epoch this slave already records is appended right here, as a producer's
/// batch is on the master (the preparer keeps the pages ahead of the writer in memory, so the
/// copy does not wait for the disk): the next fetch goes out without a hand-over to a blocking
/// thread and back. Only a chunk that begins an epoch (a write of the history file) is
/// appended on a blocking thread.
async fn apply(
    broker: &Arc<Broker>,
    master: &str,
    position: u64,
    bytes: Bytes,
    fsync: bool,
    master_epochs: &[EpochEntry],
    unflushed: &mut Unflushed,
) -> Result<(), ReplicationError> {
    let last_epoch = broker.store.epoch_history().last_epoch();
    let (queues, last) = if changes_epoch(&bytes, last_epoch) {
        let master_epochs = master_epochs.to_vec();
        while_following(broker, master, move |writer| {
            append_chunk(writer, position, &bytes, fsync, &master_epochs)
        })
        .await?
    } else {
        following_now(broker, master, |writer| {
            append_chunk(writer, position, &bytes, fsync, master_epochs)
        })?
    };
    match last {
        Some(receipt) if receipt.waits_for_flush() => {
            let end = receipt.appended.position + u64::from(receipt.appended.size);
            unflushed.chunks.push_back((end, queues));
        }
        _ => wake_queues(broker, &queues),
    }
    Ok(())
}

/// Wakes the consumers waiting on `queues`.
fn wake_queues(broker: &Broker, queues: &Queues) {
    for (topic, queue) in queues {
        if let Some(state) = broker.topic(topic) {
            if *queue < state.queue_count {
                state.appended(*queue).notify_waiters();
            }
        }
    }
}

/// Chunks appended whose fsync is not done yet, oldest first: the end of each and the queues
/// whose consumers wake once it is durable (under sync flush they see only fsynced messages).
#[derive(Default)]
struct Unflushed {
    chunks: VecDeque<(u64, Queues)>,
}

impl Unflushed {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Wakes the consumers of every chunk fsynced by now.
    fn wake_durable(&mut self, broker: &Broker) {
        let flushed = broker.store.flushed_position();
        while let Some((end, queues)) = self.chunks.front() {
            if *end > flushed {
                break;
            }
            wake_queues(broker, queues);
            self.chunks.pop_front();
        }
    }

    /// Waits for the fsync of every chunk appended, then wakes their consumers. A failed
    /// fsync is an error: the flushed position, which the fetches acknowledge, stays behind.
    async fn wait(&mut self, broker: &Broker) -> Result<(), ReplicationError> {
        let Some(&(end, _)) = self.chunks.back() else {
            return Ok(());
        };
        broker
            .store
            .durable_through(end, true)
            .done()
            .await
            .map_err(|error| ReplicationError::Apply(error.to_string()))?;
        for (_, queues) in self.chunks.drain(..) {
            wake_queues(broker, &queues);
        }
        Ok(())
    }
}

/// Whether a batch of `bytes` carries another master epoch than `epoch`.
fn changes_epoch(bytes: &[u8], epoch: u32) -> bool {
    let mut at = 0usize;
    while let Some(field) = bytes.get(at..at + 4) {
        let size = 4 + u32::from_be_bytes(field.try_into().expect("4 bytes")) as usize;
        let Some(batch) = bytes.get(at..at + size) else {
            return false; // a torn chunk: append_chunk says so
        };
        if BatchView::parse_with_limit(batch, usize::MAX)
            .is_ok_and(|view| view.master_epoch() != epoch)
        {
            return true;
        }
        at += size;
    }
    false
}

/// Topics and queues appended to.
type Queues = BTreeSet<(String, u32)>;

/// The queues appended to and the receipt of the last batch.
type Appends = (Queues, Option<AppendReceipt>);

/// Appends the batches of a chunk (see [`apply`]); records each new epoch first.
fn append_chunk(
    writer: &Broker,
    position: u64,
    bytes: &[u8],
    fsync: bool,
    master_epochs: &[EpochEntry],
) -> Result<Appends, ReplicationError> {
    let mut epoch = writer.store.epoch_history().last_epoch();
    let mut queues = BTreeSet::new();
    let mut last: Option<AppendReceipt> = None;
    let mut at = 0usize;
    while at < bytes.len() {
        let size = bytes
            .get(at..at + 4)
            .map(|field| 4 + u32::from_be_bytes(field.try_into().expect("4 bytes")) as usize)
            .filter(|size| at + size <= bytes.len())
            .ok_or_else(|| {
                ReplicationError::Apply(format!(
                    "the master's log chunk at {position} ends inside a batch at {}",
                    position + at as u64
                ))
            })?;
        let batch = &bytes[at..at + size];
        let batch_epoch = BatchView::parse_with_limit(batch, usize::MAX)
            .map(|view| view.master_epoch())
            .unwrap_or(epoch);
        if batch_epoch != epoch {
            let start = position + at as u64;
            let promoted = master_epochs
                .iter()
                .any(|entry| entry.epoch == batch_epoch && entry.promoted);
            writer
                .store
                .record_epoch(EpochEntry {
                    epoch: batch_epoch,
                    start,
                    promoted,
                })
                .map_err(|error| ReplicationError::Apply(error.to_string()))?;
            epoch = batch_epoch;
        }
        let receipt = writer
            .store
            .append_replicated(position + at as u64, batch, fsync)
            .map_err(|error| ReplicationError::Apply(error.to_string()))?;
        if let Ok(view) = BatchView::parse(batch) {
            queues.insert((view.topic().to_owned(), view.queue_id()));
        }
        last = Some(receipt);
        at += size;
    }
    Ok((queues, last))
}

/// Runs `work` (a change to the store) on a blocking thread, holding `replica_writes`, unless
/// the broker stopped being `master`'s slave meanwhile: a role change that took the lock after
/// changing the role knows that no change of the old role's comes after it.
async fn while_following<T: Send + 'static>(
    broker: &Arc<Broker>,
    master: &str,
    work: impl FnOnce(&Broker) -> Result<T, ReplicationError> + Send + 'static,
) -> Result<T, ReplicationError> {
    let writer = broker.clone();
    let master = master.to_owned();
    tokio::task::spawn_blocking(move || following_now(&writer, &master, work))
        .await
        .map_err(|error| ReplicationError::Apply(error.to_string()))?
}

/// [`while_following`] on this thread, for work that does not wait for the disk.
fn following_now<T>(
    broker: &Broker,
    master: &str,
    work: impl FnOnce(&Broker) -> Result<T, ReplicationError>,
) -> Result<T, ReplicationError> {
    let _writing = broker
        .replica_writes
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = broker.role_now();
    if now.role != Role::Slave || now.master.as_deref() != Some(master) {
        return Err(ReplicationError::Apply(format!(
            "this broker no longer copies from {master}: its role changed"
        )));
    }
    work(broker)
}

/// One connection to the master, one request at a time.
struct Link {
    master: String,
    /// TLS with `--tls-ca`.
    stream: MaybeTls,
    buf: BytesMut,
    next_correlation_id: u32,
    max_frame_bytes: usize,
}

impl Link {
    async fn connect(broker: &Broker, master: &str) -> Result<Link, ReplicationError> {
        let io = |source| ReplicationError::Io {
            master: master.to_owned(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(master))
            .await
            .map_err(|_| ReplicationError::Timeout {
                master: master.to_owned(),
                timeout_ms: CONNECT_TIMEOUT.as_millis() as u64,
            })?
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let stream = match &broker.config.tls_ca {
            None => MaybeTls::Plain(stream),
            Some(tls) => {
                let connecting = tls.connect(master, stream);
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                    .await
                    .map_err(|_| ReplicationError::Timeout {
                        master: master.to_owned(),
                        timeout_ms: CONNECT_TIMEOUT.as_millis() as u64,
                    })??;
                MaybeTls::Tls(Box::new(stream))
            }
        };
        let mut link = Link {
            master: master.to_owned(),
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            next_correlation_id: 1,
            max_frame_bytes: broker.config.max_frame_bytes() + FETCH_MAX_BYTES as usize,
        };
        let handshake = HandshakeRequest {
            client_id: format!("smq-broker/{} slave", env!("CARGO_PKG_VERSION")),
            min_version: smq_protocol::api::PROTOCOL_VERSION_MIN,
            max_version: smq_protocol::api::PROTOCOL_VERSION_MAX,
            auth_token: broker
                .config
                .credential
                .as_ref()
                .map(Credential::to_auth_token)
                .unwrap_or_default(),
        };
        let id = link.next_id();
        let mut out = BytesMut::new();
        Request::Handshake(handshake).encode(1, id, &mut out);
        link.send(&out).await?;
        let body = link.receive(id, ANSWER_TIMEOUT).await?;
        match Response::decode(ApiKey::Handshake, 1, body) {
            Ok(Response::Handshake(_)) => Ok(link),
            Ok(Response::Error(error)) => Err(ReplicationError::Refused {
                master: master.to_owned(),
                message: error.to_string(),
            }),
            Ok(_) => Err(link.protocol("a handshake answered with another api")),
            Err(error) => Err(link.protocol(&error.to_string())),
        }
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        id
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), ReplicationError> {
        self.stream
            .write_all(frame)
            .await
            .map_err(|source| ReplicationError::Io {
                master: self.master.clone(),
                source,
            })
    }

    /// Reads the next response frame, which must answer `id`.
    async fn receive(&mut self, id: u32, timeout: Duration) -> Result<Bytes, ReplicationError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match frame::decode_response(&mut self.buf, self.max_frame_bytes) {
                Ok(Some(frame)) if frame.correlation_id == id => return Ok(frame.body),
                // What a master answers a frame it cannot read (or plaintext on its TLS port)
                // before it closes the connection.
                Ok(Some(frame)) if frame.correlation_id == 0 => {
                    return match Response::decode(ApiKey::Handshake, 1, frame.body) {
                        Ok(Response::Error(error)) => Err(ReplicationError::Refused {
                            master: self.master.clone(),
                            message: error.to_string(),
                        }),
                        _ => Err(self.protocol("an answer with correlation id 0")),
                    }
                }
                Ok(Some(frame)) => {
                    return Err(self.protocol(&format!(
                        "an answer to request {} while waiting for {id}",
                        frame.correlation_id
                    )))
                }
                Ok(None) => {}
                Err(error) => return Err(self.protocol(&error.to_string())),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| ReplicationError::Timeout {
                    master: self.master.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                })?;
            match read {
                Ok(0) => {
                    return Err(ReplicationError::Io {
                        master: self.master.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(ReplicationError::Io {
                        master: self.master.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Sends a replication request and reads its answer; an error answer is `Refused`.
    async fn call(
        &mut self,
        request: &ReplicaRequest,
    ) -> Result<ReplicaResponse, ReplicationError> {
        let id = self.next_id();
        let mut out = BytesMut::new();
        request.encode(id, &mut out);
        self.send(&out).await?;
        let wait = match request {
            ReplicaRequest::Fetch(fetch) => Duration::from_millis(fetch.max_wait_ms.into()),
            _ => Duration::ZERO,
        };
        let body = self.receive(id, wait + ANSWER_TIMEOUT).await?;
        match ReplicaResponse::decode(request.api_key(), body) {
            Ok(ReplicaResponse::Error(error)) => Err(ReplicationError::Refused {
                master: self.master.clone(),
                message: error.to_string(),
            }),
            Ok(response) => Ok(response),
            Err(error) => Err(self.protocol(&error.to_string())),
        }
    }

    /// Copies the master's topics and offsets; returns their versions.
    async fn copy_metadata(
        &mut self,
        broker: &Arc<Broker>,
    ) -> Result<(u64, u64), ReplicationError> {
        // The offsets this slave took while it could not reach the master go with the request.
        let request = ReplicaRequest::Metadata(ReplicaMetadata {
            slave_offsets_json: broker.offsets.unconfirmed_json().into(),
        });
        let metadata = match self.call(&request).await? {
            ReplicaResponse::Metadata(metadata) => metadata,
            other => return Err(self.unexpected(other)),
        };
        let versions = (metadata.topics_version, metadata.offsets_version);
        while_following(broker, &self.master.clone(), move |writer| {
            if writer.topic_configs().0 != metadata.topics_version {
                writer
                    .replace_topics(&metadata.topics_json)
                    .map_err(|error| ReplicationError::Apply(error.to_string()))?;
            }
            writer
                .offsets
                .replace_from_json(&metadata.offsets_json)
                .map_err(|error| ReplicationError::Apply(error.to_string()))
        })
        .await?;
        Ok(versions)
    }

    fn unexpected(&self, response: ReplicaResponse) -> ReplicationError {
        self.protocol(&format!("an unexpected answer: {response:?}"))
    }

    fn protocol(&self, reason: &str) -> ReplicationError {
        ReplicationError::Protocol {
            master: self.master.clone(),
            reason: reason.to_owned(),
        }
    }
}
