//! A TCP forwarder in front of a real broker that can be told to fall silent: from then on it
//! keeps accepting connections and reading what clients send, and forwards and answers nothing,
//! as a broker that hangs (or a network that drops its packets) looks to a client.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Forwards every connection to its upstream until [`SilentProxy::fall_silent`].
pub struct SilentProxy {
    pub addr: SocketAddr,
    upstream: Arc<OnceLock<SocketAddr>>,
    silent: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl SilentProxy {
    /// Listens on an ephemeral loopback port; give it its upstream with
    /// [`SilentProxy::forward_to`] (so that a broker can be started advertising this address).
    pub fn bind() -> SilentProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let upstream = Arc::new(OnceLock::<SocketAddr>::new());
        let silent = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        std::thread::spawn({
            let (upstream, silent, stopped) = (upstream.clone(), silent.clone(), stopped.clone());
            move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let upstream = match upstream.get() {
                        Some(upstream) if !silent.load(Ordering::Relaxed) => {
                            TcpStream::connect(upstream).ok()
                        }
                        _ => None,
                    };
                    connect_both(client, upstream, silent.clone());
                }
            }
        });
        SilentProxy {
            addr,
            upstream,
            silent,
            stopped,
        }
    }

    /// Connections accepted from now on are forwarded to `upstream`.
    pub fn forward_to(&self, upstream: SocketAddr) {
        self.upstream.set(upstream).expect("one upstream");
    }

    /// From now on nothing is forwarded either way; clients' bytes are read and dropped.
    pub fn fall_silent(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies client -> upstream and upstream -> client while not `silent`; a silent proxy reads
/// the client's bytes and drops them. Without an upstream, the client is only read.
fn connect_both(client: TcpStream, upstream: Option<TcpStream>, silent: Arc<AtomicBool>) {
    let Some(upstream) = upstream else {
        std::thread::spawn(move || copy(client, None, &silent));
        return;
    };
    let (client_in, upstream_in) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    std::thread::spawn({
        let silent = silent.clone();
        move || copy(client_in, Some(upstream), &silent)
    });
    std::thread::spawn(move || copy(upstream_in, Some(client), &silent));
}

/// Reads `from` until it ends, writing to `to` while not `silent`.
fn copy(mut from: TcpStream, mut to: Option<TcpStream>, silent: &AtomicBool) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if silent.load(Ordering::Relaxed) {
            continue;
        }
        if let Some(out) = to.as_mut() {
            if out.write_all(&buf[..read]).is_err() {
                break;
            }
        }
    }
    if let Some(out) = to {
        if !silent.load(Ordering::Relaxed) {
            let _ = out.shutdown(Shutdown::Write);
        }
    }
}
