//! The admin HTTP endpoint (`--http`): `GET /healthz` and `GET /metrics` (Prometheus text),
//! over HTTPS when the broker has `--tls-cert`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use smq_tls::listener::TlsListener;
use tokio::net::TcpListener;

use crate::state::Broker;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(broker)
}

/// Serves until the broker shuts down, over TLS with `--tls-cert`.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown.clone();
    let stopped = async move {
        crate::state::shutting_down(&mut shutdown).await;
    };
    let served = match broker.config.tls.clone() {
        None => {
            axum::serve(listener, router(broker))
                .with_graceful_shutdown(stopped)
                .await
        }
        Some(tls) => {
            axum::serve(TlsListener::new(listener, tls), router(broker))
                .with_graceful_shutdown(stopped)
                .await
        }
    };
    if let Err(error) = served {
        tracing::error!(%error, "the HTTP endpoint failed");
    }
}

/// 200 `ok`; 503 with the reason while shutting down or once the log is fenced (it refuses
/// writes until a restart), so that a load balancer or an operator sees it.
async fn healthz(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    use axum::http::StatusCode;
    if broker.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        )
    } else if let Some(reason) = broker.store.fenced_reason() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("fenced: the commit log refuses writes since {reason}; reads still work; restart the broker once the disk is healthy\n"),
        )
    } else {
        (StatusCode::OK, "ok\n".to_owned())
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let topics = broker.topics();
    let mut text = broker.metrics.render(
        topics
            .iter()
            .map(|topic| (topic.name.as_str(), &topic.counters)),
    );
    crate::metrics::render_log_positions(
        broker.store.end_position(),
        broker.store.flushed_position(),
        &mut text,
    );
    crate::replication::render_metrics(&broker, &mut text);
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    crate::metrics::render_consumer_lag(
        &crate::registration::consumer_offsets(&broker),
        wall_ms,
        &mut text,
    );
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
