//! The web page (compiled in from `static/`), the stream list and `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

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

/// `GET /api/streams`: `{"streams":[{"name":…,"viewers":…,"publishers":0,"sources":[…]}]}`
pub async fn streams(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::from("{\"streams\":[");
    for (i, s) in state.0.streams.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let sources: Vec<String> = s.sources.iter().map(|x| json_string(x)).collect();
        out.push_str(&format!(
            "{{\"name\":{},\"viewers\":{},\"publishers\":0,\"sources\":[{}]}}",
            json_string(&s.name),
            state.0.sessions.count_of(&s.name),
            sources.join(",")
        ));
    }
    out.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], out)
}

/// `GET /metrics`
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.0.metrics.render(),
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
