//! Handshake: authenticate the peer, agree on the protocol version and tell the client the
//! broker's limits.

use smq_protocol::api::{negotiate, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN};
use smq_protocol::request::HandshakeRequest;
use smq_protocol::response::HandshakeResponse;
use smq_protocol::Response;

use super::{Answer, HandlerError};
use crate::auth::Access;
use crate::state::Broker;

/// Who the peer is and the protocol version agreed on, or the error to answer before closing
/// the connection.
pub fn handle(
    broker: &Broker,
    request: &HandshakeRequest,
) -> Result<(Access, u16, Answer), HandlerError> {
    let access = broker.config.principals.authenticate(&request.auth_token)?;
    let version = negotiate(
        request.min_version..=request.max_version,
        PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX,
    )
    .ok_or(HandlerError::NoCommonVersion {
        client_min: request.min_version,
        client_max: request.max_version,
        broker_min: PROTOCOL_VERSION_MIN,
        broker_max: PROTOCOL_VERSION_MAX,
    })?;
    let response = HandshakeResponse {
        version,
        broker_min_version: PROTOCOL_VERSION_MIN,
        broker_max_version: PROTOCOL_VERSION_MAX,
        max_frame_bytes: broker.config.max_frame_bytes() as u32,
        max_message_bytes: broker.config.store.max_message_bytes as u32,
    };
    Ok((
        access,
        version,
        Answer::Response(Response::Handshake(response)),
    ))
}
