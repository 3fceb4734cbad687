//! The web page (compiled in from `static/`), the stream list, the recordings and `/metrics`.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;

use super::auth;
use super::endpoint::{Origin, PeerAddr};
use super::error::ApiError;
use super::refusal::{self, Wanted};
use super::AppState;
use crate::engine::offer::Role;

/// `GET /`
pub async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../static/index.html"),
    )
}

/// `GET /app.js`
pub async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/app.js"),
    )
}

/// `GET /style.css`
pub async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/style.css"),
    )
}

/// One stream as `/api/streams` and the event streams show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamView {
    /// Its name.
    pub name: String,
    /// Viewers (answered or connected).
    pub viewers: usize,
    /// WHIP publishers feeding its mix.
    pub publishers: usize,
    /// From the configuration rather than created by a publisher.
    pub configured: bool,
    /// Its video codec while a publisher sends video.
    pub video: Option<String>,
    /// Its configured sources, as text.
    pub sources: Vec<String>,
    /// Whether it has an input now (a configured source or a publisher): the WHEP event
    /// extension's `active` / `inactive`.
    pub active: bool,
}

fn view_of(name: String, s: crate::streams::StreamState, viewers: usize) -> StreamView {
    StreamView {
        viewers,
        active: !s.sources.is_empty() || s.publishers > 0,
        name,
        publishers: s.publishers,
        configured: s.configured,
        video: s.video.map(|c| c.to_string()),
        sources: s.sources,
    }
}

/// The streams a request with `headers` may see: a stream covered by a read token is
/// listed only to a request that shows that token.
pub(crate) fn visible_streams(state: &AppState, headers: &HeaderMap) -> Vec<StreamView> {
    let read = &state.0.auth.read;
    let viewers = state.0.sessions.viewers_by_stream();
    state
        .0
        .directory
        .list()
        .into_iter()
        .filter(|(name, _)| auth::check(headers, &read.access(name)).is_ok())
        .map(|(name, s)| {
            let n = viewers.get(&name).copied().unwrap_or(0);
            view_of(name, s, n)
        })
        .collect()
}

/// Stream `name` as the lists show it, whatever the read token (for a caller that has
/// checked access another way), if it exists.
pub(crate) fn stream_view(state: &AppState, name: &str) -> Option<StreamView> {
    let s = state.0.directory.get(name)?;
    let viewers = state.0.sessions.count_of(name, Role::Viewer);
    Some(view_of(name.to_string(), s, viewers))
}

/// `GET /api/streams`:
/// `{"streams":[{"name":…,"viewers":…,"publishers":…,"configured":…,"video":"vp8"|null,
/// "sources":[…],"active":…}]}`, as [`visible_streams`] filters them: with a general read
/// token, a request without one gets an empty list.
pub async fn streams(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "streams": visible_streams(&state, &headers) }))
}

/// `GET /api/recordings`: `{"recordings":[{"file":…,"stream":…,"bytes":…,"started":…,
/// "duration_seconds":…,"recording":true|false}]}`, this run's recordings in the order they
/// started, each listed only to a request that may read its stream (the rule of
/// [`streams`]).
pub async fn recordings(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let read = &state.0.auth.read;
    let list: Vec<_> = state
        .0
        .recordings
        .list()
        .into_iter()
        .filter(|r| auth::check(&headers, &read.access(&r.stream)).is_ok())
        .collect();
    axum::Json(serde_json::json!({ "recordings": list }))
}

/// `GET /metrics`: who may read it is [`auth::check_metrics`]'s rule.
pub async fn metrics(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    Origin(from): Origin,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let auth = &state.0.auth;
    // No address (a router called without a socket) counts as a remote client.
    let client = peer.unwrap_or_else(|| SocketAddr::from(([192, 0, 2, 1], 0)));
    auth::check_metrics(
        &headers,
        client,
        from.trusted_locally(),
        &auth.metrics_access(),
        auth.read.any(),
    )
    .map_err(|e| {
        refusal::log_refused(Wanted::Metrics, peer, &from, &e);
        ApiError::from(e)
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let streams: Vec<String> = state
            .0
            .directory
            .list()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut text = state.0.metrics.render_with(&streams);
        render_tx_load(&state.0.tx, &mut text);
        text
    }))
}

/// `mixcast_tx_thread_viewers{thread="i"}`: how signalling has spread the viewers.
fn render_tx_load(tx: &super::TxThreads, out: &mut String) {
    use std::fmt::Write;
    let name = "mixcast_tx_thread_viewers";
    let _ = writeln!(
        out,
        "# HELP {name} Viewers owned by each TX thread (0 mixes).\n# TYPE {name} gauge"
    );
    for (i, n) in tx.load.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}{{thread=\"{i}\"}} {}",
            n.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
