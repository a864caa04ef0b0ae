//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (Kafka, the guardrail store and the executor are all reachable), plus the
//! Alertmanager webhook (`POST /v1/alertmanager`, see `crate::alertmanager`) when it is enabled, and
//! the approval API (`/v1/approvals`, see `crate::approval`) and the approvals console
//! (`/console`, see `crate::console`) when a token is configured.

use crate::alertmanager::Intake;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
}

/// The router, separate from serving so tests can call it directly. `intake` adds the
/// Alertmanager webhook route (`None`: the route does not exist, 404); `humans` the routes of
/// the approval API and the console.
pub fn router(metrics: Metrics, health: Arc<Health>, intake: Option<Arc<Intake>>, humans: Option<Router>) -> Router {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health });
    let app = match intake {
        Some(intake) => app.merge(intake.routes()),
        None => app,
    };
    match humans {
        Some(routes) => app.merge(routes),
        None => app,
    }
}

/// The bearer token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<AppState>) -> impl IntoResponse {
    let (kafka, store, executor) = s.health.snapshot();
    let body = format!(
        "kafka: {}\nstore: {}\nexecutor: {}\n",
        word(kafka),
        word(store),
        word(executor)
    );
    let code = if kafka && store && executor {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unavailable"
    }
}

/// Bind `listen` and serve until shutdown. Returns the bound address (useful with port 0).
pub async fn serve(
    listen: &str,
    metrics: Metrics,
    health: Arc<Health>,
    intake: Option<Arc<Intake>>,
    humans: Option<Router>,
    mut shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(metrics, health, intake, humans);
    // Owned by the shutdown tracker: in-flight requests (an approval answer) finish first.
    let task = shutdown.clone().spawn(async move {
        // The peer's address is what a trusted proxy's identity header is believed on.
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok((addr, task))
}
