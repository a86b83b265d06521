//! TLS on the broker's client port (`--tls-cert`): the TLS handshake within `peer_timeout_ms`,
//! then the same connection code as plaintext over the TLS stream's halves. A client that
//! speaks plaintext to this port gets an error frame saying to use TLS, not a silent close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use smq_protocol::{ErrorCode, ErrorResponse, Response};
use smq_tls::ServerTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{connection, Guards};
use crate::state::Broker;

/// What a plaintext client is told before the connection closes.
pub const PLAINTEXT_REFUSED: &str = "this broker's port speaks TLS only: connect with TLS, trusting the CA of its certificate (--tls-ca, SMQ_TLS_CA)";

/// How long the refusal waits for the plaintext client's request to arrive in full, so that
/// closing does not reset the connection before the client reads the refusal.
const PLAINTEXT_DRAIN: Duration = Duration::from_millis(500);

pub(super) async fn serve(
    tls: &ServerTls,
    stream: TcpStream,
    peer: SocketAddr,
    frame_share: Arc<Semaphore>,
    broker: &Arc<Broker>,
    guards: &Arc<Guards>,
) {
    let deadline = Duration::from_millis(broker.config.peer_timeout_ms);
    let handshake = async {
        match smq_tls::starts_with_tls(&stream).await {
            Ok(true) => tls.accept(stream).await.map(Some),
            Ok(false) => {
                refuse_plaintext(stream).await;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    };
    let warn = |what: String| {
        if let Some(suppressed) = guards.peer_log.admit(peer) {
            tracing::warn!(%peer, suppressed, "{what}");
        }
    };
    match tokio::time::timeout(deadline, handshake).await {
        Ok(Ok(Some(stream))) => {
            let (reader, writer) = tokio::io::split(stream);
            connection::serve_halves(reader, writer, peer, frame_share, broker, guards).await;
        }
        Ok(Ok(None)) => warn("a plaintext client on the TLS port: answered that TLS is required and closed the connection".into()),
        Ok(Err(error)) => warn(format!("TLS handshake failed: {error}; closed the connection")),
        Err(_) => warn(format!(
            "no TLS handshake within peer_timeout_ms ({} ms): closed the connection",
            broker.config.peer_timeout_ms
        )),
    }
}

/// Answers the plaintext client's first request with an error frame (correlation id 0, as for
/// any frame the broker cannot read) and closes.
async fn refuse_plaintext(mut stream: TcpStream) {
    let mut head = BytesMut::new();
    let response = ErrorResponse::new(ErrorCode::MalformedRequest, PLAINTEXT_REFUSED.to_owned());
    Response::Error(response).encode(0, 0, &mut head);
    if stream.write_all(&head).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(PLAINTEXT_DRAIN, async {
        while let Ok(read) = stream.read(&mut sink).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
}
