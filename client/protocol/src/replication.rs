//! The broker-to-broker apis of replication (keys 100 to 102, proto-spec.md section 10): a slave
//! introduces itself (ReplicaHello), pulls the master's log bytes from its own log end
//! (ReplicaFetch, whose position acknowledges everything below it), and copies the master's
//! topics and consumer offsets (ReplicaMetadata, which carries the offsets the slave took
//! while its master was down). Clients never send these; the codec is here,
//! beside the others, so that both brokers use one definition.

use bytes::{BufMut, Bytes, BytesMut};

use crate::broker_api::{self, read_flag, unknown_api, BROKER_API_VERSION};
use crate::frame::{self, RequestHeader};
use crate::response::ErrorResponse;
use crate::wire::{put_bytes, put_count, put_string, DecodeError, Reader};

/// A slave introduces itself; the master checks who it is before serving it.
pub const REPLICA_HELLO: u16 = 100;
/// A slave asks for the master's log from a position, acknowledging what it holds below it.
pub const REPLICA_FETCH: u16 = 101;
/// A slave asks for the master's topics and consumer offsets, giving the offsets it took itself.
pub const REPLICA_METADATA: u16 = 102;
/// The one version of each replication api so far.
pub const REPLICATION_API_VERSION: u16 = BROKER_API_VERSION;

/// Whether `api_key` is one of the replication apis (the broker hands those to replication).
pub fn is_replication_api(api_key: u16) -> bool {
    (REPLICA_HELLO..=REPLICA_METADATA).contains(&api_key)
}

/// One epoch of a group's masters and the log position where its batches begin: an entry of a
/// broker's epoch history (proto-spec.md section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start: u64,
    /// The epoch began when a slave became master (a promotion): bytes of older epochs at or
    /// past `start` that another replica holds were never acknowledged through this group's
    /// masters and may be dropped. An epoch a master began at its own restart does not say so:
    /// the master may have lost a tail of its previous epoch that a slave still holds.
    pub promoted: bool,
}

/// What a slave says about itself, first on its connection (after the Handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHello {
    /// The slave's `--cluster` and `--group`: the master serves only its own group's slaves.
    pub cluster: String,
    pub group: String,
    /// The slave's advertised address, naming it in the master's logs, metrics and heartbeats.
    pub slave_addr: String,
    /// The replication secret the master was given (`--replication-secret-file`); empty = none.
    pub secret: Bytes,
    /// The slave's log end: where it will ask to start.
    pub log_end: u64,
    /// The slave's segment size, which must be the master's for positions to match.
    pub segment_bytes: u64,
    /// The slave's epoch history: the master compares it with its own.
    pub epochs: Vec<EpochEntry>,
}

/// The master accepted the slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHelloResponse {
    /// The epoch the master writes into its batches.
    pub master_epoch: u32,
    /// Whether the master counts only fsynced bytes (`--flush sync`): the slave then fsyncs
    /// what it received before it acknowledges it.
    pub fsync_acks: bool,
    /// The master's oldest log position and its end.
    pub log_start: u64,
    pub log_end: u64,
    /// Where the slave's log must be cut before it copies: its end when it holds nothing the
    /// master does not have; below it, the last position both histories share.
    pub truncate_to: u64,
    /// The master's epoch history: the slave records the epochs it copies with their flags.
    pub epochs: Vec<EpochEntry>,
}

/// Log bytes from `position`. The position acknowledges every byte below it; the slave's
/// `flushed_position` says how much of that it fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFetch {
    pub position: u64,
    pub flushed_position: u64,
    pub max_bytes: u32,
    /// How long the master may hold the request when it has nothing past `position`.
    pub max_wait_ms: u32,
}

/// Whole batches of the master's log as stored, from `position` (which is past the asked
/// position only when that was a segment's end: the log goes on in the next segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    /// The master's log end when it answered.
    pub master_end: u64,
    /// Versions of the master's topics and consumer offsets: a slave whose copies are older
    /// asks ReplicaMetadata.
    pub topics_version: u64,
    pub offsets_version: u64,
    pub position: u64,
    /// Last: a broker writes the log bytes after the head uncopied.
    pub bytes: Bytes,
}

/// A slave asks for its master's topics and consumer offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaMetadata {
    /// Consumer offsets the slave took while it had no connection to its master (consumers read
    /// from it then), not yet confirmed by the master, as consumer_offsets.json has them; empty
    /// when there are none. The master keeps the newer of each (proto-spec.md section 10).
    pub slave_offsets_json: Bytes,
}

/// The master's topics and consumer offsets, each as its JSON file has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMetadataResponse {
    pub topics_version: u64,
    pub offsets_version: u64,
    pub topics_json: Bytes,
    pub offsets_json: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaRequest {
    Hello(ReplicaHello),
    Fetch(ReplicaFetch),
    Metadata(ReplicaMetadata),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaResponse {
    Hello(ReplicaHelloResponse),
    Fetch(ReplicaFetchResponse),
    Metadata(ReplicaMetadataResponse),
    Error(ErrorResponse),
}

impl ReplicaRequest {
    pub fn api_key(&self) -> u16 {
        match self {
            ReplicaRequest::Hello(_) => REPLICA_HELLO,
            ReplicaRequest::Fetch(_) => REPLICA_FETCH,
            ReplicaRequest::Metadata(_) => REPLICA_METADATA,
        }
    }

    /// Appends the request frame. Panics on a string field above 65,535 bytes.
    pub fn encode(&self, correlation_id: u32, out: &mut BytesMut) {
        broker_api::encode_request(self.api_key(), correlation_id, out, |out| match self {
            ReplicaRequest::Hello(hello) => {
                put_string(out, &hello.cluster);
                put_string(out, &hello.group);
                put_string(out, &hello.slave_addr);
                put_bytes(out, &hello.secret);
                out.put_u64(hello.log_end);
                out.put_u64(hello.segment_bytes);
                put_epochs(out, &hello.epochs);
            }
            ReplicaRequest::Fetch(fetch) => {
                out.put_u64(fetch.position);
                out.put_u64(fetch.flushed_position);
                out.put_u32(fetch.max_bytes);
                out.put_u32(fetch.max_wait_ms);
            }
            // Nothing when the slave took no offsets: the frame of a slave built before
            // slaves took offsets.
            ReplicaRequest::Metadata(metadata) => {
                if !metadata.slave_offsets_json.is_empty() {
                    put_bytes(out, &metadata.slave_offsets_json);
                }
            }
        });
    }

    /// Decodes the body of a request frame with a replication api key.
    pub fn decode(header: &RequestHeader, body: Bytes) -> Result<ReplicaRequest, DecodeError> {
        broker_api::decode_request(header, body, |api_key, reader| {
            Ok(match api_key {
                REPLICA_HELLO => ReplicaRequest::Hello(ReplicaHello {
                    cluster: reader.string("cluster")?,
                    group: reader.string("group")?,
                    slave_addr: reader.string("slave_addr")?,
                    secret: reader.bytes("secret")?,
                    log_end: reader.u64("log_end")?,
                    segment_bytes: reader.u64("segment_bytes")?,
                    epochs: read_epochs(reader)?,
                }),
                REPLICA_FETCH => ReplicaRequest::Fetch(ReplicaFetch {
                    position: reader.u64("position")?,
                    flushed_position: reader.u64("flushed_position")?,
                    max_bytes: reader.u32("max_bytes")?,
                    max_wait_ms: reader.u32("max_wait_ms")?,
                }),
                REPLICA_METADATA => ReplicaRequest::Metadata(ReplicaMetadata {
                    slave_offsets_json: if reader.is_empty() {
                        Bytes::new()
                    } else {
                        reader.bytes("slave_offsets_json")?
                    },
                }),
                api_key => return Err(unknown_api(api_key)),
            })
        })
    }
}

/// Bytes of one encoded [`EpochEntry`]: epoch u32, start u64, flags u8.
const EPOCH_ENTRY_BYTES: usize = 13;

fn put_epochs(out: &mut BytesMut, epochs: &[EpochEntry]) {
    put_count(out, epochs.len());
    for entry in epochs {
        out.put_u32(entry.epoch);
        out.put_u64(entry.start);
        out.put_u8(u8::from(entry.promoted));
    }
}

fn read_epochs(reader: &mut Reader) -> Result<Vec<EpochEntry>, DecodeError> {
    let count = reader.count("epochs", EPOCH_ENTRY_BYTES)?;
    let mut epochs = Vec::with_capacity(count);
    for _ in 0..count {
        epochs.push(EpochEntry {
            epoch: reader.u32("epoch")?,
            start: reader.u64("start")?,
            promoted: read_flag(reader, "flags")?,
        });
    }
    Ok(epochs)
}

impl ReplicaFetchResponse {
    /// Appends the response frame up to its log bytes (`bytes_len` of them), which the sender
    /// writes right after it, uncopied; `self.bytes` is not written.
    pub fn encode_head(&self, bytes_len: usize, correlation_id: u32, out: &mut BytesMut) {
        let start = out.len();
        broker_api::encode_response(correlation_id, None, out, |out| {
            out.put_u64(self.master_end);
            out.put_u64(self.topics_version);
            out.put_u64(self.offsets_version);
            out.put_u64(self.position);
            out.put_u32(u32::try_from(bytes_len).expect("log bytes above 4 GiB"));
        });
        frame::extend_length(out, start, bytes_len);
    }
}

impl ReplicaResponse {
    /// Appends the whole response frame.
    pub fn encode(&self, correlation_id: u32, out: &mut BytesMut) {
        if let ReplicaResponse::Fetch(fetch) = self {
            fetch.encode_head(fetch.bytes.len(), correlation_id, out);
            out.extend_from_slice(&fetch.bytes);
            return;
        }
        let error = match self {
            ReplicaResponse::Error(error) => Some(error),
            _ => None,
        };
        broker_api::encode_response(correlation_id, error, out, |out| match self {
            ReplicaResponse::Hello(hello) => {
                out.put_u32(hello.master_epoch);
                out.put_u8(u8::from(hello.fsync_acks));
                out.put_u64(hello.log_start);
                out.put_u64(hello.log_end);
                out.put_u64(hello.truncate_to);
                put_epochs(out, &hello.epochs);
            }
            ReplicaResponse::Metadata(metadata) => {
                out.put_u64(metadata.topics_version);
                out.put_u64(metadata.offsets_version);
                put_bytes(out, &metadata.topics_json);
                put_bytes(out, &metadata.offsets_json);
            }
            ReplicaResponse::Fetch(_) | ReplicaResponse::Error(_) => {
                unreachable!("written above")
            }
        });
    }

    /// Decodes the body of the response to a request of `api_key`.
    pub fn decode(api_key: u16, body: Bytes) -> Result<ReplicaResponse, DecodeError> {
        broker_api::decode_response(api_key, body, ReplicaResponse::Error, |api_key, reader| {
            Ok(match api_key {
                REPLICA_HELLO => ReplicaResponse::Hello(ReplicaHelloResponse {
                    master_epoch: reader.u32("master_epoch")?,
                    fsync_acks: read_flag(reader, "fsync_acks")?,
                    log_start: reader.u64("log_start")?,
                    log_end: reader.u64("log_end")?,
                    truncate_to: reader.u64("truncate_to")?,
                    epochs: read_epochs(reader)?,
                }),
                REPLICA_FETCH => ReplicaResponse::Fetch(ReplicaFetchResponse {
                    master_end: reader.u64("master_end")?,
                    topics_version: reader.u64("topics_version")?,
                    offsets_version: reader.u64("offsets_version")?,
                    position: reader.u64("position")?,
                    bytes: reader.bytes("bytes")?,
                }),
                REPLICA_METADATA => ReplicaResponse::Metadata(ReplicaMetadataResponse {
                    topics_version: reader.u64("topics_version")?,
                    offsets_version: reader.u64("offsets_version")?,
                    topics_json: reader.bytes("topics_json")?,
                    offsets_json: reader.bytes("offsets_json")?,
                }),
                api_key => return Err(unknown_api(api_key)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_api::round_trip;
    use crate::error_code::ErrorCode;

    fn round_trip_request(request: ReplicaRequest) {
        assert!(is_replication_api(request.api_key()));
        round_trip::request(&request, ReplicaRequest::encode, ReplicaRequest::decode);
    }

    fn round_trip_response(api_key: u16, response: ReplicaResponse) {
        round_trip::response(
            api_key,
            &response,
            ReplicaResponse::encode,
            ReplicaResponse::decode,
        );
    }

    #[test]
    fn replication_requests_and_responses_decode_as_encoded() {
        round_trip_request(ReplicaRequest::Hello(ReplicaHello {
            cluster: "prod".into(),
            group: "g1".into(),
            slave_addr: "10.0.0.2:10911".into(),
            secret: Bytes::from_static(b"s3cret"),
            log_end: 42,
            segment_bytes: 1 << 30,
            epochs: vec![EpochEntry {
                epoch: 1,
                start: 0,
                promoted: false,
            }],
        }));
        round_trip_request(ReplicaRequest::Fetch(ReplicaFetch {
            position: 1,
            flushed_position: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        }));
        round_trip_request(ReplicaRequest::Metadata(ReplicaMetadata::default()));
        round_trip_request(ReplicaRequest::Metadata(ReplicaMetadata {
            slave_offsets_json: Bytes::from_static(b"{\"offsets\":[]}"),
        }));
        round_trip_response(
            REPLICA_HELLO,
            ReplicaResponse::Hello(ReplicaHelloResponse {
                master_epoch: 3,
                fsync_acks: true,
                log_start: 0,
                log_end: 99,
                truncate_to: 42,
                epochs: vec![
                    EpochEntry {
                        epoch: 1,
                        start: 0,
                        promoted: false,
                    },
                    EpochEntry {
                        epoch: 2,
                        start: 40,
                        promoted: true,
                    },
                ],
            }),
        );
        round_trip_response(
            REPLICA_FETCH,
            ReplicaResponse::Fetch(ReplicaFetchResponse {
                master_end: 100,
                topics_version: 2,
                offsets_version: 5,
                position: 64,
                bytes: Bytes::from_static(b"log bytes"),
            }),
        );
        round_trip_response(
            REPLICA_METADATA,
            ReplicaResponse::Metadata(ReplicaMetadataResponse {
                topics_version: 2,
                offsets_version: 5,
                topics_json: Bytes::from_static(b"{}"),
                offsets_json: Bytes::from_static(b"[]"),
            }),
        );
        round_trip_response(
            REPLICA_FETCH,
            ReplicaResponse::Error(ErrorResponse::new(
                ErrorCode::AuthenticationFailed,
                "wrong secret",
            )),
        );
    }

    #[test]
    fn a_wrong_version_or_a_truncated_body_is_a_decode_error() {
        let header = RequestHeader {
            api_key: REPLICA_FETCH,
            api_version: 2,
            correlation_id: 1,
        };
        assert!(ReplicaRequest::decode(&header, Bytes::new()).is_err());
        let header = RequestHeader {
            api_version: 1,
            ..header
        };
        assert!(ReplicaRequest::decode(&header, Bytes::from_static(&[0; 5])).is_err());
    }
}
