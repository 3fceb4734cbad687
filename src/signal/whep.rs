//! `/{stream}/whep`: POST an offer, get a viewer session (draft-ietf-wish-whep).

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use super::error::ApiError;
use super::{add_ice_links, options_headers, AppState};
use crate::engine::offer::{self, OfferError, Role};
use crate::media::tx::TxCommand;
use crate::net::DemuxCommand;
use crate::sessions::SessionEntry;

/// Seconds a client is told to wait when the server is full.
const RETRY_AFTER_FULL: u32 = 5;

/// `GET`/`HEAD /{stream}/whep`: 200 with no body for a known stream.
pub async fn get_endpoint(
    State(state): State<AppState>,
    Path(stream): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .stream(&stream)
        .ok_or_else(|| ApiError::NotFound(format!("no stream {stream:?}")))?;
    Ok(StatusCode::OK)
}

/// `OPTIONS /{stream}/whep`
pub async fn options(State(state): State<AppState>, req: HeaderMap) -> Response {
    let preflight = req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let h = options_headers(&state, "GET, HEAD, POST, OPTIONS", preflight);
    (StatusCode::NO_CONTENT, h).into_response()
}

/// True if the request's Content-Type is `want` (parameters ignored, case-insensitive).
pub(crate) fn content_type_is(h: &HeaderMap, want: &str) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// A fresh unguessable id (128 bits from the OS-seeded CSPRNG), as hex.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A strong ETag, quoted.
pub(crate) fn new_etag() -> String {
    format!("\"{}\"", &random_id()[..16])
}

/// The `a=ice-ufrag` of an SDP (session or first media level).
pub(crate) fn sdp_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(|s| s.to_string())
}

/// `POST /{stream}/whep`
pub async fn post(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, "application/sdp") {
        return Err(ApiError::UnsupportedMediaType("application/sdp"));
    }
    let (index, _) = state
        .stream(&stream)
        .ok_or_else(|| ApiError::NotFound(format!("no stream {stream:?}")))?;
    if state.0.sessions.len() >= state.0.max_viewers {
        return Err(ApiError::Overloaded(
            format!("at most {} viewers", state.0.max_viewers),
            RETRY_AFTER_FULL,
        ));
    }
    let offer = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the offer is not UTF-8".into()))?;
    let negotiated = offer::accept(offer, Role::Viewer, &state.0.candidates, Instant::now())
        .map_err(|e| match e {
            OfferError::Malformed(m) => ApiError::BadRequest(m),
            OfferError::Unusable(m) => ApiError::Unprocessable(m),
        })?;

    let key = state.0.next_key.fetch_add(1, Ordering::Relaxed);
    let id = random_id();
    let etag = new_etag();
    state
        .0
        .demux
        .try_send(DemuxCommand::Register {
            ufrag: negotiated.local_ufrag.clone(),
            key,
            owner: 0,
        })
        .map_err(|_| ApiError::Overloaded("the UDP loop is busy".into(), RETRY_AFTER_FULL))?;
    state.0.sessions.insert(
        id.clone(),
        SessionEntry {
            key,
            stream: stream.clone(),
            etag: etag.clone(),
            remote_ufrag: sdp_ufrag(offer),
        },
    );
    let sent = state.0.tx.send(TxCommand::AddViewer {
        key,
        rtc: Box::new(negotiated.rtc),
        stream: index,
    });
    if !sent {
        state.0.sessions.remove_key(key);
        let _ = state.0.demux.try_send(DemuxCommand::Unregister { key });
        return Err(ApiError::Overloaded(
            "the TX thread is busy".into(),
            RETRY_AFTER_FULL,
        ));
    }
    state.0.metrics.session_created();
    tracing::info!(stream, key, "viewer session created");

    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    let location = format!("/{stream}/whep/{id}");
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location)
            .map_err(|_| ApiError::BadRequest("stream name not valid in a URL".into()))?,
    );
    // The etag is hex between quotes: always a valid header value.
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
    h.insert(
        header::HeaderName::from_static("accept-patch"),
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    add_ice_links(&state, &mut h);
    Ok((StatusCode::CREATED, h, negotiated.answer).into_response())
}
