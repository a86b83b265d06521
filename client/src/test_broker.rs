//! A broker in memory for the client's own tests, speaking the protocol through the same codec:
//! batches are kept per topic-queue in a `Vec`. It lets the client be tested end to end without
//! the real broker (which depends on this crate). Produce is handled in arrival order; a Fetch
//! is handled on its own task, so a long poll does not hold up the requests behind it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use crate::protocol::frame::decode_request;
use crate::protocol::limits::{MAX_FRAME_BYTES_DEFAULT, MAX_MESSAGE_BYTES_DEFAULT};
use crate::protocol::record_batch::{BatchView, BrokerStamp};
use crate::protocol::response::{
    ErrorResponse, FetchOffsetResponse, FetchResponse, HandshakeResponse, ListOffsetsResponse,
    MetadataResponse, ProduceResponse, QueueMetadata, Role, TopicMetadata,
};
use crate::protocol::{ErrorCode, Request, Response};

/// One stored batch: its base offset, message count and stamped bytes.
type Stored = (u64, u32, Bytes);

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Vec<Vec<Stored>>>,
    offsets: HashMap<(String, String, u32), u64>,
}

pub(crate) struct TestBroker {
    pub(crate) addr: String,
}

/// Starts a broker on a free loopback port, serving until the test's runtime ends.
pub(crate) async fn start() -> TestBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = Arc::new(Mutex::new(State::default()));
    let appended = Arc::new(Notify::new());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, state.clone(), appended.clone()));
        }
    });
    TestBroker { addr }
}

async fn serve(socket: tokio::net::TcpStream, state: Arc<Mutex<State>>, appended: Arc<Notify>) {
    let (mut reader, mut writer) = socket.into_split();
    let (responses, mut responses_rx) = mpsc::unbounded_channel::<BytesMut>();
    tokio::spawn(async move {
        while let Some(frame) = responses_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(frame)) = decode_request(&mut buf, MAX_FRAME_BYTES_DEFAULT) {
            let correlation_id = frame.header.correlation_id;
            let request = Request::decode(&frame.header, frame.body).unwrap();
            let responses = responses.clone();
            let reply = move |response: Response| {
                let mut out = BytesMut::new();
                response.encode(1, correlation_id, &mut out);
                let _ = responses.send(out);
            };
            if let Request::Fetch(fetch) = request {
                let (state, appended) = (state.clone(), appended.clone());
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now()
                        + Duration::from_millis(u64::from(fetch.max_wait_ms));
                    loop {
                        let notified = appended.notified();
                        let response = fetch_now(&state.lock().unwrap(), &fetch);
                        let empty = matches!(&response, Response::Fetch(f) if f.batches.is_empty());
                        if !empty || tokio::time::timeout_at(deadline, notified).await.is_err() {
                            reply(response);
                            return;
                        }
                    }
                });
            } else {
                reply(handle(&mut state.lock().unwrap(), request, &appended));
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::Error(ErrorResponse::new(code, message))
}

fn handle(state: &mut State, request: Request, appended: &Notify) -> Response {
    match request {
        Request::Handshake(_) => Response::Handshake(HandshakeResponse {
            version: 1,
            broker_min_version: 1,
            broker_max_version: 1,
            max_frame_bytes: MAX_FRAME_BYTES_DEFAULT as u32,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT as u32,
        }),
        Request::CreateTopic(create) => {
            if state.topics.contains_key(&create.topic) {
                return error(ErrorCode::TopicAlreadyExists, "topic exists");
            }
            let queues = (0..create.queue_count).map(|_| Vec::new()).collect();
            state.topics.insert(create.topic, queues);
            Response::CreateTopic
        }
        Request::DeleteTopic(delete) => match state.topics.remove(&delete.topic) {
            Some(_) => Response::DeleteTopic,
            None => error(ErrorCode::UnknownTopic, "no such topic"),
        },
        Request::Metadata(metadata) => Response::Metadata(MetadataResponse {
            cluster: "test".into(),
            group: "g".into(),
            role: Role::Master,
            topics: state
                .topics
                .iter()
                .filter(|(name, _)| metadata.topics.is_empty() || metadata.topics.contains(name))
                .map(|(name, queues)| TopicMetadata {
                    name: name.clone(),
                    queues: queues
                        .iter()
                        .enumerate()
                        .map(|(queue_id, stored)| QueueMetadata {
                            queue_id: queue_id as u32,
                            log_start_offset: 0,
                            high_watermark: high_watermark(stored),
                        })
                        .collect(),
                })
                .collect(),
        }),
        Request::Produce(produce) => {
            let Some(queue) = state
                .topics
                .get_mut(&produce.topic)
                .and_then(|queues| queues.get_mut(produce.queue_id as usize))
            else {
                return error(ErrorCode::UnknownTopic, "no such topic-queue");
            };
            let view = match BatchView::parse(&produce.batch) {
                Ok(view) => view,
                Err(e) => return error(ErrorCode::CorruptBatch, &e.to_string()),
            };
            let base_queue_offset = high_watermark(queue);
            let mut stamped = vec![0; view.len()];
            let stamp = BrokerStamp {
                master_epoch: 0,
                base_queue_offset,
                store_timestamp_ms: 1,
            };
            view.copy_stamped(&mut stamped, stamp);
            queue.push((base_queue_offset, view.message_count(), stamped.into()));
            appended.notify_waiters();
            Response::Produce(ProduceResponse {
                base_queue_offset,
                message_count: view.message_count(),
            })
        }
        Request::ListOffsets(list) => match queue_of(state, &list.topic, list.queue_id) {
            Some(queue) => Response::ListOffsets(ListOffsetsResponse {
                log_start_offset: 0,
                high_watermark: high_watermark(queue),
            }),
            None => error(ErrorCode::UnknownTopic, "no such topic-queue"),
        },
        Request::CommitOffset(commit) => {
            let key = (commit.group, commit.topic, commit.queue_id);
            state.offsets.insert(key, commit.offset);
            Response::CommitOffset
        }
        Request::FetchOffset(fetch) => {
            let key = (fetch.group, fetch.topic, fetch.queue_id);
            Response::FetchOffset(FetchOffsetResponse {
                offset: state.offsets.get(&key).copied(),
            })
        }
        Request::Fetch(_) => unreachable!("handled on its own task"),
    }
}

fn queue_of<'a>(state: &'a State, topic: &str, queue_id: u32) -> Option<&'a Vec<Stored>> {
    state.topics.get(topic)?.get(queue_id as usize)
}

fn high_watermark(queue: &[Stored]) -> u64 {
    queue
        .last()
        .map_or(0, |(base, count, _)| base + u64::from(*count))
}

fn fetch_now(state: &State, fetch: &crate::protocol::request::FetchRequest) -> Response {
    let Some(queue) = queue_of(state, &fetch.topic, fetch.queue_id) else {
        return error(ErrorCode::UnknownTopic, "no such topic-queue");
    };
    let high_watermark = high_watermark(queue);
    if fetch.offset > high_watermark {
        return error(ErrorCode::OffsetOutOfRange, "above the high watermark");
    }
    let mut batches = BytesMut::new();
    for (base, count, bytes) in queue {
        if base + u64::from(*count) <= fetch.offset {
            continue;
        }
        if !batches.is_empty() && batches.len() + bytes.len() > fetch.max_bytes as usize {
            break;
        }
        batches.extend_from_slice(bytes);
    }
    Response::Fetch(FetchResponse {
        high_watermark,
        log_start_offset: 0,
        batches: batches.freeze(),
    })
}
