//! The approvals console: one page for the humans in the loop, served by the worker beside the
//! approval API it drives (README, "Approvals console").
//!
//! - `GET /console` (and `/console/app.js`, `/console/app.css`): the page. Its files are compiled
//!   into the binary: nothing is built, nothing is fetched from elsewhere, no framework. The page
//!   holds no data and needs no token; everything it shows comes from the routes below.
//! - `GET /v1/console/runbooks`: every runbook with its mode (demoted or not), circuit, verified
//!   success rate and the checks an execution runs ([`RunbookStatus`]).
//! - `GET /v1/console/outcomes?runbook=&service=&decision=&limit=`: the newest outcomes on the
//!   audit topic, filtered ([`Recent`]).
//! - `POST /v1/console/runbooks/{id}/promote` (`{"by": "<name>"}`): a human promotes a runbook
//!   with a rollout policy one stage right, as `remediator promote` does: refused (409, with the
//!   evidence it lacks) until its policy's evidence is there (docs/rollout.md).
//! - Pending approvals and the answers go through the approval API (`GET /v1/approvals`,
//!   `POST /v1/approvals/{id}/approve|deny`, `crate::approval`), with its rules: the same bearer
//!   token, the action hash the page showed must still be the approval's, an answer is taken once,
//!   and the execution re-checks every guardrail.
//!
//! The data routes need the approval API's bearer token, compared in constant time. The page
//! forbids framing (an Approve button must not be clickable through someone else's page), runs
//! only its own script, and writes everything it shows as text, never as markup: an incident's
//! fields and the audit topic are not trusted (anyone who can produce to a topic can write
//! there), so a field holding `<script>` is shown as those characters.

mod recent;
mod status;

pub use recent::Recent;
pub use status::{runbook_statuses, RunbookStatus};

use crate::approval::identity::{Caller, Gate};
use crate::engine::Engine;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The page, its script and its style, compiled in.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page's Content-Security-Policy: its own script and style only, data only from this
/// origin, no plugins, no framing, forms post nowhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Most outcomes one request returns.
pub const MAX_LIMIT: usize = 500;

/// The console's routes and what they read.
pub struct Console {
    engine: Arc<Engine>,
    gate: Gate,
    recent: Recent,
    /// Where a human's promotion is audited (`None`: not published, in tests).
    publisher: Option<crate::approval::Publisher>,
}

#[derive(Clone)]
struct ConsoleState(Arc<Console>);

impl Console {
    /// A console over `engine`'s catalogue and store, guarded by the approval API's `gate`,
    /// showing the outcomes `recent` holds; a promotion's outcome goes to `publisher`.
    pub fn new(engine: Arc<Engine>, gate: Gate, recent: Recent, publisher: Option<crate::approval::Publisher>) -> Self {
        Self {
            engine,
            gate,
            recent,
            publisher,
        }
    }

    /// The routes, to merge into the worker's router.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/console",
                get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
            )
            .route(
                "/console/",
                get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
            )
            .route(
                "/console/app.js",
                get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
            )
            .route(
                "/console/app.css",
                get(|| async { page("text/css; charset=utf-8", APP_CSS) }),
            )
            .route("/v1/console/runbooks", get(runbooks))
            .route("/v1/console/runbooks/{id}/promote", post(promote))
            .route("/v1/console/outcomes", get(outcomes))
            .with_state(ConsoleState(self))
    }

    fn caller(&self, headers: &HeaderMap, peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<Caller> {
        self.gate.caller(headers, peer.map(|Extension(ConnectInfo(a))| a))
    }
}

/// A compiled-in file with the headers every console response carries.
fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    r
}

/// Headers of every console response: no framing, no sniffing, no caching (the data answers
/// are live state, and the page changes with the binary), no referrer (an approval's address
/// names it).
fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn json_reply<T: serde::Serialize>(code: StatusCode, body: T) -> Response {
    let mut r = (code, Json(body)).into_response();
    secure(r.headers_mut());
    r
}

fn refuse(code: StatusCode, reason: &str) -> Response {
    json_reply(code, serde_json::json!({ "reason": reason }))
}

async fn runbooks(
    State(ConsoleState(c)): State<ConsoleState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if c.caller(&headers, peer).is_none() {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match runbook_statuses(c.engine.catalogue(), c.engine.store().as_ref()).await {
        Ok(list) => json_reply(StatusCode::OK, list),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The body of `POST /v1/console/runbooks/{id}/promote`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    /// Who promotes (audited in the logs and the change's `why`).
    by: String,
}

async fn promote(
    State(ConsoleState(c)): State<ConsoleState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<PromoteBody>>,
) -> Response {
    let Some(caller) = c.caller(&headers, peer) else {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    };
    let Some(Json(PromoteBody { by })) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"by\": \"<who promotes>\"}",
        );
    };
    // Behind a trusted proxy, the identity it vouches for is who promotes.
    let by = caller.name(by.trim());
    let by = by.as_str();
    if by.is_empty() || by.len() > 200 || by.chars().any(char::is_control) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "by: 1..200 printable characters naming who promotes",
        );
    }
    let Some(rb) = c.engine.catalogue().get(&id) else {
        return refuse(StatusCode::NOT_FOUND, "no such runbook");
    };
    match c.engine.promote_rollout(rb, by).await {
        Ok(Ok(outcome)) => {
            // The stage changed: say so on the audit topic. Should the broker not take it, the
            // change stands (the store is the truth) and the answer says the audit is missing.
            let published = match &c.publisher {
                Some(p) => match p.publish(std::slice::from_ref(&outcome), PUBLISH_WITHIN).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, runbook = %rb.id, "rollout promotion not published to the audit topic");
                        false
                    }
                },
                None => false,
            };
            let change = outcome.rollout.as_ref().and_then(|r| r.change.clone());
            json_reply(
                StatusCode::OK,
                serde_json::json!({ "promoted": true, "change": change, "published": published, "outcome": outcome }),
            )
        }
        Ok(Err(refusal)) => refuse(StatusCode::CONFLICT, &format!("not promoted: {refusal}")),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// How long a promotion's outcome may take to be acknowledged by the broker.
const PUBLISH_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The filters of `GET /v1/console/outcomes`; an empty or absent filter matches everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeFilter {
    /// Only outcomes of this runbook.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Only outcomes for this service.
    #[serde(default)]
    pub service: Option<String>,
    /// Only outcomes with this decision (`executed`, `blocked`, `pending_approval`, ...).
    #[serde(default)]
    pub decision: Option<String>,
    /// At most this many, newest first (default 50, at most [`MAX_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

async fn outcomes(
    State(ConsoleState(c)): State<ConsoleState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    query: Result<Query<OutcomeFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if c.caller(&headers, peer).is_none() {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let Query(filter) = match query {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if filter.limit.is_some_and(|l| l == 0 || l > MAX_LIMIT) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("limit: must be between 1 and {MAX_LIMIT}"),
        );
    }
    json_reply(StatusCode::OK, c.recent.newest(&filter))
}

#[cfg(test)]
mod tests;
