//! A TLS listener for `axum::serve` (the broker's `--http` and the NameServer): handshakes run
//! beside the accept loop, each within a deadline, so that a peer that stalls its handshake
//! holds up no one; a plaintext HTTP request gets a 400 saying to use https.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::{starts_with_tls, ServerTls, ServerTlsStream};

/// How long a peer may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at most; connections beyond wait in the kernel's accept queue.
const HANDSHAKES_MAX: usize = 1024;

/// The answer to a plaintext HTTP request on a TLS port.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 74\r\n\r\n{\"error\":\"this server speaks HTTPS only: use an https:// URL with its CA\"}";

/// `listener` with TLS: what `axum::serve` accepts are connections whose handshake succeeded.
pub struct TlsListener {
    tcp: TcpListener,
    tls: ServerTls,
    handshakes: JoinSet<Option<(ServerTlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, tls: ServerTls) -> TlsListener {
        TlsListener {
            tcp,
            tls,
            handshakes: JoinSet::new(),
        }
    }
}

async fn handshake(
    tls: ServerTls,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(ServerTlsStream<TcpStream>, SocketAddr)> {
    let attempt = async {
        if !starts_with_tls(&stream).await? {
            let _ = stream.write_all(PLAINTEXT_ANSWER).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a plaintext request on the TLS port",
            ));
        }
        tls.accept(stream).await
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok(stream)) => Some((stream, peer)),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = ServerTlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(accepted)) = done {
                        return accepted;
                    }
                }
                accepted = self.tcp.accept(), if self.handshakes.len() < HANDSHAKES_MAX => {
                    match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            self.handshakes.spawn(handshake(self.tls.clone(), stream, peer));
                        }
                        Err(error) => {
                            // Out of file descriptors, typically: back off instead of spinning.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The address of a peer that came through a [`TlsListener`], as
/// `into_make_service_with_connect_info::<TlsPeer>()` records it.
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> TlsPeer {
        TlsPeer(*stream.remote_addr())
    }
}

/// The peer's address a request came from, over plain TCP (`ConnectInfo<SocketAddr>`) or TLS
/// (`ConnectInfo<TlsPeer>`), when the server recorded it.
pub fn peer_addr(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    use axum::extract::ConnectInfo;
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<TlsPeer>>()
                .map(|ConnectInfo(TlsPeer(peer))| *peer)
        })
}
