//! The TCP server: an accept loop with a connection limit, one task per connection (TLS first
//! with `--tls-cert`), and a graceful stop that lets in-flight requests finish within
//! `shutdown_timeout_ms`.

mod connection;
mod per_ip;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use smq_client::peer_log::PeerLog;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::state::Broker;
use per_ip::ConnectionsPerIp;

/// At most one warning about one peer's bad input per this.
const PEER_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes of frames larger than a read chunk that all connections together may hold while they
/// are still arriving (at least one largest frame); a connection whose large frame does not fit
/// waits, unread, until others finish theirs (or it hits `peer_timeout_ms`). Frames that fit in
/// a read chunk are not counted: their memory is the connection's buffer.
const LARGE_FRAMES_BUDGET_BYTES: usize = 256 * 1024 * 1024;
/// The part of that budget the connections of one source address may hold together (at least one
/// largest frame): a host that starts large frames and never finishes them leaves the rest to
/// the others.
const LARGE_FRAMES_SHARE_PER_ADDRESS_BYTES: usize = LARGE_FRAMES_BUDGET_BYTES / 4;

/// What the connections share to protect the broker from any one of them.
pub(crate) struct Guards {
    frame_budget: Arc<Semaphore>,
    /// One warning per peer (address and port) per 10 s.
    peer_log: PeerLog<SocketAddr>,
}

/// Accepts connections until the broker shuts down, then waits for the open ones to finish their
/// in-flight requests (each stops reading at once) and cuts those still busy after the timeout.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    let budget = LARGE_FRAMES_BUDGET_BYTES.max(broker.config.max_frame_bytes());
    let share = LARGE_FRAMES_SHARE_PER_ADDRESS_BYTES.max(broker.config.max_frame_bytes());
    let per_ip = ConnectionsPerIp::new(broker.config.max_connections_per_ip, share);
    let guards = Arc::new(Guards {
        frame_budget: Arc::new(Semaphore::new(budget)),
        peer_log: PeerLog::new(PEER_LOG_INTERVAL),
    });
    let mut connections = JoinSet::new();
    let mut shutdown = broker.shutdown.clone();
    loop {
        tokio::select! {
            _ = crate::state::shutting_down(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    broker.metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %peer,
                        max_connections = broker.config.max_connections,
                        "connection limit reached: closing the new connection; raise --max-connections"
                    );
                    continue;
                };
                let Some(ip_slot) = per_ip.open(peer.ip()) else {
                    broker.metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
                    // One line per address per interval, however many it opens.
                    let address = std::net::SocketAddr::new(peer.ip(), 0);
                    if let Some(suppressed) = guards.peer_log.admit(address) {
                        tracing::warn!(
                            %peer,
                            suppressed,
                            max_connections_per_ip = broker.config.max_connections_per_ip,
                            "connection limit of this address reached: closing the new connection; raise --max-connections-per-ip"
                        );
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                broker.metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                let broker = broker.clone();
                let guards = guards.clone();
                connections.spawn(async move {
                    broker.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                    let share = ip_slot.frame_share.clone();
                    match &broker.config.tls {
                        None => connection::serve(stream, peer, share, &broker, &guards).await,
                        Some(tls) => tls::serve(tls, stream, peer, share, &broker, &guards).await,
                    }
                    broker.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                    drop((permit, ip_slot));
                });
            }
        }
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            "stopped accepting; waiting for in-flight requests"
        );
    }
    let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms);
    let drained = tokio::time::timeout(timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            timeout_ms = broker.config.shutdown_timeout_ms,
            "connections still busy after shutdown_timeout_ms: closing them"
        );
        connections.shutdown().await;
    }
}
