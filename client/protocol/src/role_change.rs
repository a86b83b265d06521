//! The admin apis that change a broker's role in its group (keys 110 and 111, proto-spec.md
//! section 10.2), which `smq group promote` sends: a master hands over (stops taking writes
//! and waits until a slave holds its whole log), and a slave is promoted (it begins the next
//! master epoch and takes writes). Version 1 only, like the replication apis.

use bytes::{BufMut, Bytes, BytesMut};

use crate::broker_api::{self, read_flag, unknown_api};
use crate::frame::RequestHeader;
use crate::response::ErrorResponse;
use crate::wire::{put_string, DecodeError};

/// To a master: stop taking writes and answer once the named slave holds the whole log.
pub const HAND_OVER: u16 = 110;
/// To a slave: become the group's master with the next epoch.
pub const PROMOTE: u16 = 111;

/// Whether `api_key` is one of the role-change apis.
pub fn is_role_change_api(api_key: u16) -> bool {
    (HAND_OVER..=PROMOTE).contains(&api_key)
}

/// A master hands over to its slave at `slave_addr`, in the steps `action` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOver {
    pub slave_addr: String,
    /// How long [`HandOverAction::Stop`] may wait for the slave.
    pub timeout_ms: u32,
    pub action: HandOverAction,
}

/// The step of a handover (a u8 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOverAction {
    /// 0: stop taking writes (answering `NOT_MASTER`) and answer once the slave acknowledged
    /// the whole log; on timeout take writes again and answer `REPLICATION_TIMEOUT`.
    Stop,
    /// 1: take writes again (a handover given up).
    Resume,
    /// 2: follow the slave, promoted now, as its slave.
    Follow,
}

impl HandOverAction {
    fn code(self) -> u8 {
        match self {
            HandOverAction::Stop => 0,
            HandOverAction::Resume => 1,
            HandOverAction::Follow => 2,
        }
    }

    fn from_code(code: u8) -> Result<HandOverAction, DecodeError> {
        match code {
            0 => Ok(HandOverAction::Stop),
            1 => Ok(HandOverAction::Resume),
            2 => Ok(HandOverAction::Follow),
            value => Err(DecodeError::InvalidValue {
                field: "action",
                value: value.into(),
            }),
        }
    }
}

/// The master's log end when the slave held all of it, and the epoch it wrote in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandOverResponse {
    pub log_end: u64,
    pub master_epoch: u32,
}

/// A slave becomes the group's master: refused (`INVALID_REQUEST`, the message saying by how
/// many bytes) when its log ends below `min_log_end`, unless `force`. Its epoch is the next
/// above both its history's last and `min_epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promote {
    pub min_log_end: u64,
    pub min_epoch: u32,
    pub force: bool,
}

/// The new master's epoch and its log end (where the epoch begins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromoteResponse {
    pub master_epoch: u32,
    pub log_end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRequest {
    HandOver(HandOver),
    Promote(Promote),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleResponse {
    HandOver(HandOverResponse),
    Promote(PromoteResponse),
    Error(ErrorResponse),
}

impl RoleRequest {
    pub fn api_key(&self) -> u16 {
        match self {
            RoleRequest::HandOver(_) => HAND_OVER,
            RoleRequest::Promote(_) => PROMOTE,
        }
    }

    /// Appends the request frame.
    pub fn encode(&self, correlation_id: u32, out: &mut BytesMut) {
        broker_api::encode_request(self.api_key(), correlation_id, out, |out| match self {
            RoleRequest::HandOver(hand_over) => {
                put_string(out, &hand_over.slave_addr);
                out.put_u32(hand_over.timeout_ms);
                out.put_u8(hand_over.action.code());
            }
            RoleRequest::Promote(promote) => {
                out.put_u64(promote.min_log_end);
                out.put_u32(promote.min_epoch);
                out.put_u8(u8::from(promote.force));
            }
        });
    }

    /// Decodes the body of a request frame with a role-change api key.
    pub fn decode(header: &RequestHeader, body: Bytes) -> Result<RoleRequest, DecodeError> {
        broker_api::decode_request(header, body, |api_key, reader| {
            Ok(match api_key {
                HAND_OVER => RoleRequest::HandOver(HandOver {
                    slave_addr: reader.string("slave_addr")?,
                    timeout_ms: reader.u32("timeout_ms")?,
                    action: HandOverAction::from_code(reader.u8("action")?)?,
                }),
                PROMOTE => RoleRequest::Promote(Promote {
                    min_log_end: reader.u64("min_log_end")?,
                    min_epoch: reader.u32("min_epoch")?,
                    force: read_flag(reader, "force")?,
                }),
                api_key => return Err(unknown_api(api_key)),
            })
        })
    }
}

impl RoleResponse {
    /// Appends the response frame.
    pub fn encode(&self, correlation_id: u32, out: &mut BytesMut) {
        let error = match self {
            RoleResponse::Error(error) => Some(error),
            _ => None,
        };
        broker_api::encode_response(correlation_id, error, out, |out| match self {
            RoleResponse::HandOver(hand_over) => {
                out.put_u64(hand_over.log_end);
                out.put_u32(hand_over.master_epoch);
            }
            RoleResponse::Promote(promote) => {
                out.put_u32(promote.master_epoch);
                out.put_u64(promote.log_end);
            }
            RoleResponse::Error(_) => unreachable!("an error has no body"),
        });
    }

    /// Decodes the body of the response to a request of `api_key`.
    pub fn decode(api_key: u16, body: Bytes) -> Result<RoleResponse, DecodeError> {
        broker_api::decode_response(api_key, body, RoleResponse::Error, |api_key, reader| {
            Ok(match api_key {
                HAND_OVER => RoleResponse::HandOver(HandOverResponse {
                    log_end: reader.u64("log_end")?,
                    master_epoch: reader.u32("master_epoch")?,
                }),
                PROMOTE => RoleResponse::Promote(PromoteResponse {
                    master_epoch: reader.u32("master_epoch")?,
                    log_end: reader.u64("log_end")?,
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
    use crate::ErrorCode;

    fn round_trip(request: RoleRequest) {
        round_trip::request(&request, RoleRequest::encode, RoleRequest::decode);
    }

    #[test]
    fn role_change_requests_and_responses_round_trip() {
        round_trip(RoleRequest::HandOver(HandOver {
            slave_addr: "10.0.0.2:10911".into(),
            timeout_ms: 30_000,
            action: HandOverAction::Stop,
        }));
        round_trip(RoleRequest::HandOver(HandOver {
            slave_addr: "s".into(),
            timeout_ms: 0,
            action: HandOverAction::Follow,
        }));
        round_trip(RoleRequest::Promote(Promote {
            min_log_end: 1 << 40,
            min_epoch: 9,
            force: true,
        }));
        let responses = [
            (
                HAND_OVER,
                RoleResponse::HandOver(HandOverResponse {
                    log_end: 4096,
                    master_epoch: 3,
                }),
            ),
            (
                PROMOTE,
                RoleResponse::Promote(PromoteResponse {
                    master_epoch: 4,
                    log_end: 4096,
                }),
            ),
            (
                PROMOTE,
                RoleResponse::Error(ErrorResponse::new(ErrorCode::InvalidRequest, "behind")),
            ),
        ];
        for (api_key, response) in responses {
            round_trip::response(
                api_key,
                &response,
                RoleResponse::encode,
                RoleResponse::decode,
            );
        }
    }
}
