//! The web page (compiled in from `static/`), the stream list and `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

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

/// `GET /api/streams`:
/// `{"streams":[{"name":…,"viewers":…,"publishers":…,"configured":…,"video":"vp8"|null,
/// "sources":[…]}]}`
pub async fn streams(State(state): State<AppState>) -> impl IntoResponse {
    let streams: Vec<serde_json::Value> = state
        .0
        .directory
        .list()
        .into_iter()
        .map(|(name, s)| {
            serde_json::json!({
                "viewers": state.0.sessions.count_of(&name, Role::Viewer),
                "name": name,
                "publishers": s.publishers,
                "configured": s.configured,
                "video": s.video.map(|c| c.to_string()),
                "sources": s.sources,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "streams": streams }))
}

/// `GET /metrics`
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = state.0.metrics.render();
        render_tx_load(&state.0.tx, &mut text);
        text
    })
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
