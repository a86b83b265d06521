//! Who may talk to the NameServer: broker heartbeats need the cluster secret, everything else
//! but `/healthz` needs the read token once one is configured (the cluster secret also reads),
//! both as `Authorization: Bearer <secret>`, compared in constant time. A refused peer is
//! logged at most once per [`REFUSAL_LOG_INTERVAL`] per address, with the count left out.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use smq_client::peer_log::PeerLog;
use smq_protocol::credential::constant_time_eq;
use smq_protocol::nameserver_api::{ApiError, ApiErrorCode};

use crate::AppState;

/// A refused peer is logged at most this often.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The secrets the NameServer checks.
pub struct Guard {
    /// Required on `POST /v1/brokers/heartbeat`; `None`: heartbeats are open.
    cluster_secret: Option<String>,
    /// Required on every other request but `/healthz`; `None`: those are open.
    read_token: Option<String>,
    /// Refusals (401, and heartbeats refused with 409) logged per peer address.
    pub refusals: PeerLog<IpAddr>,
}

/// Which secret a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A broker: the cluster secret.
    Broker,
    /// A client: the read token, or the cluster secret.
    Reader,
}

impl Guard {
    pub fn new(cluster_secret: Option<String>, read_token: Option<String>) -> Guard {
        Guard {
            cluster_secret,
            read_token,
            refusals: PeerLog::new(REFUSAL_LOG_INTERVAL),
        }
    }

    pub fn has_cluster_secret(&self) -> bool {
        self.cluster_secret.is_some()
    }

    pub fn has_read_token(&self) -> bool {
        self.read_token.is_some()
    }

    /// Whether `bearer` (the `Authorization: Bearer` value, if any) may make a request of
    /// `level`; the reason when not.
    fn admit(&self, level: Level, bearer: Option<&str>) -> Result<(), &'static str> {
        let matches = |secret: &Option<String>| {
            secret
                .as_deref()
                .zip(bearer)
                .is_some_and(|(secret, given)| {
                    constant_time_eq(secret.as_bytes(), given.as_bytes())
                })
        };
        let (required, ok) = match level {
            Level::Broker => (&self.cluster_secret, matches(&self.cluster_secret)),
            Level::Reader => (
                &self.read_token,
                matches(&self.read_token) || matches(&self.cluster_secret),
            ),
        };
        match (required, bearer) {
            (None, _) => Ok(()),
            _ if ok => Ok(()),
            (Some(_), None) => Err("no Authorization: Bearer header"),
            (Some(_), Some(_)) => Err("a wrong secret"),
        }
    }
}

/// Middleware of `POST /v1/brokers/heartbeat`: the cluster secret.
pub async fn brokers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    check(&state, Level::Broker, request, next).await
}

/// Middleware of the reads and of consumer-group member heartbeats: the read token.
pub async fn readers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    check(&state, Level::Reader, request, next).await
}

async fn check(state: &AppState, level: Level, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Err(reason) = state.auth.admit(level, bearer) else {
        return next.run(request).await;
    };
    let peer = smq_tls::listener::peer_addr(request.extensions());
    let path = request.uri().path().to_owned();
    if let Some(peer) = peer {
        if let Some(suppressed) = state.auth.refusals.admit(peer.ip()) {
            tracing::warn!(%peer, %path, suppressed, "refused a request with {reason} (401); further refusals of this peer are logged at most once a minute");
        }
    }
    state.metrics.request_unauthorized();
    let error = match level {
        Level::Broker => "this NameServer accepts heartbeats only from brokers of its cluster: send the cluster secret as Authorization: Bearer (give the broker SMQ_CLUSTER_SECRET or --cluster-secret-file)",
        Level::Reader => "this NameServer requires its read token: send it as Authorization: Bearer (give the client SMQ_READ_TOKEN or --read-token-file)",
    };
    let body = ApiError {
        error: format!("{error}; got {reason}"),
        code: ApiErrorCode::Unauthorized,
        field: None,
        group_epoch: None,
        master_addr: None,
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_need_the_cluster_secret_and_reads_the_read_token_or_the_cluster_secret() {
        let guard = Guard::new(Some("cluster".into()), Some("reader".into()));
        assert!(guard.admit(Level::Broker, Some("cluster")).is_ok());
        assert!(guard.admit(Level::Broker, Some("reader")).is_err());
        assert!(guard.admit(Level::Broker, None).is_err());
        assert!(guard.admit(Level::Reader, Some("reader")).is_ok());
        assert!(guard.admit(Level::Reader, Some("cluster")).is_ok());
        assert!(guard.admit(Level::Reader, Some("clusterx")).is_err());
        let open_reads = Guard::new(Some("cluster".into()), None);
        assert!(open_reads.admit(Level::Reader, None).is_ok());
        assert!(Guard::new(None, None).admit(Level::Broker, None).is_ok());
    }
}
