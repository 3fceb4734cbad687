//! A session's URL, `/{stream}/whep/{id}` or `/{stream}/whip/{id}`: PATCH (trickle, ICE
//! restart) and DELETE. The same rules for viewers and publishers; a session is found only
//! under its own endpoint.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use str0m::{Candidate, IceCreds};

use super::endpoint::{content_type_is, new_etag};
use super::error::ApiError;
use super::{options_headers, AppState};
use crate::engine::offer::Role;
use crate::media::tx::TxCommand;
use crate::net::DemuxCommand;
use crate::sessions::SessionEntry;

fn lookup(state: &AppState, stream: &str, id: &str, role: Role) -> Result<SessionEntry, ApiError> {
    match state.0.sessions.get(id) {
        Some(e) if e.stream == stream && e.role == role => Ok(e),
        _ => Err(ApiError::NotFound("no such session".into())),
    }
}

/// `DELETE /{stream}/whep/{id}`
pub async fn whep_delete(
    state: State<AppState>,
    path: Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(state, path, Role::Viewer).await
}

/// `DELETE /{stream}/whip/{id}`
pub async fn whip_delete(
    state: State<AppState>,
    path: Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(state, path, Role::Publisher).await
}

/// `PATCH /{stream}/whep/{id}`
pub async fn whep_patch(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    patch(state, path, headers, body, Role::Viewer).await
}

/// `PATCH /{stream}/whip/{id}`
pub async fn whip_patch(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    patch(state, path, headers, body, Role::Publisher).await
}

/// `DELETE`: ends the session (and its consent). 200. The session URL is an unguessable
/// capability, so no token is asked for (clients do not all resend it).
async fn delete(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    role: Role,
) -> Result<StatusCode, ApiError> {
    let entry = match lookup(&state, &stream, &id, role) {
        Ok(e) => e,
        // Already over (the peer closed first): the DELETE's goal holds.
        Err(_) if state.0.sessions.recently_ended(&id, &stream) => return Ok(StatusCode::OK),
        Err(e) => return Err(e),
    };
    if !state
        .0
        .tx
        .send(entry.owner, TxCommand::RemoveViewer { key: entry.key })
    {
        return Err(ApiError::Overloaded("the TX thread is busy".into(), 1));
    }
    tracing::debug!(stream, key = entry.key, "session deleted");
    Ok(StatusCode::OK)
}

/// `OPTIONS` on a session.
pub async fn options(State(state): State<AppState>, req: HeaderMap) -> Response {
    let h = options_headers(&state, "PATCH, DELETE, OPTIONS", &req);
    (StatusCode::NO_CONTENT, h).into_response()
}

/// What an sdpfrag (RFC 8840) carries.
#[derive(Debug, Default, PartialEq)]
pub struct SdpFrag {
    /// `a=ice-ufrag:` (the last one): new credentials mean an ICE restart.
    pub ufrag: Option<String>,
    /// `a=ice-pwd:` (the last one).
    pub pwd: Option<String>,
    /// Every `a=candidate:` line, without its `a=`.
    pub candidates: Vec<String>,
}

/// The ICE credentials and candidates of a PATCH body. Never fails: lines it does not
/// know are ignored (RFC 8840 allows media-level lines it has no use for here).
pub(crate) fn parse_sdpfrag(body: &str) -> SdpFrag {
    let mut f = SdpFrag::default();
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            f.ufrag = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            f.pwd = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                f.candidates.push(v.to_string());
            }
        }
    }
    f
}

/// `PATCH` (`application/trickle-ice-sdpfrag`): trickled candidates (204) or, with new ICE
/// credentials and `If-Match: "*"`, an ICE restart (200 with our new credentials and a new
/// ETag). `If-Match` is required (428) and must match (412).
async fn patch(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    role: Role,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return Err(ApiError::UnsupportedMediaType(
            "application/trickle-ice-sdpfrag",
        ));
    }
    let entry = lookup(&state, &stream, &id, role)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(ApiError::PreconditionRequired)?;
    // `*` as HTTP writes it (RFC 9110), or quoted as the WHIP/WHEP texts show it.
    let if_match = if if_match == "\"*\"" { "*" } else { if_match };
    let body = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the sdpfrag is not UTF-8".into()))?;
    let frag = parse_sdpfrag(body);

    let restart = match (&frag.ufrag, &entry.remote_ufrag) {
        (Some(new), Some(old)) => new != old,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if restart {
        if if_match != "*" {
            return Err(ApiError::PreconditionFailed);
        }
        let (Some(ufrag), Some(pass)) = (frag.ufrag.clone(), frag.pwd.clone()) else {
            return Err(ApiError::BadRequest(
                "an ICE restart needs a=ice-ufrag and a=ice-pwd".into(),
            ));
        };
        return ice_restart(&state, &id, entry, IceCreds { ufrag, pass }, &frag).await;
    }
    if if_match != "*" && if_match != entry.etag {
        return Err(ApiError::PreconditionFailed);
    }
    for c in &frag.candidates {
        // Candidates we cannot use (mDNS names, TCP, garbage) are dropped silently.
        match Candidate::from_sdp_string(c) {
            Ok(candidate) => {
                state.0.tx.send(
                    entry.owner,
                    TxCommand::RemoteCandidate {
                        key: entry.key,
                        candidate,
                    },
                );
            }
            Err(e) => tracing::debug!("trickled candidate ignored ({e}): {c}"),
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ice_restart(
    state: &AppState,
    id: &str,
    entry: SessionEntry,
    remote: IceCreds,
    frag: &SdpFrag,
) -> Result<Response, ApiError> {
    let remote_ufrag = remote.ufrag.clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !state.0.tx.send(
        entry.owner,
        TxCommand::IceRestart {
            key: entry.key,
            remote,
            reply,
        },
    ) {
        return Err(ApiError::Overloaded("the TX thread is busy".into(), 1));
    }
    let local = answer
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::NotFound("the session ended".into()))?;
    let _ = state.0.demux.try_send(DemuxCommand::Register {
        ufrag: local.ufrag.clone(),
        pwd: local.pass.clone(),
        key: entry.key,
        owner: entry.owner,
    });
    for c in &frag.candidates {
        if let Ok(candidate) = Candidate::from_sdp_string(c) {
            state.0.tx.send(
                entry.owner,
                TxCommand::RemoteCandidate {
                    key: entry.key,
                    candidate,
                },
            );
        }
    }
    let etag = new_etag();
    state.0.sessions.restarted(id, etag.clone(), remote_ufrag);
    let mut body = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        local.ufrag, local.pass
    );
    for addr in &state.0.candidates {
        if let Ok(c) = Candidate::host(*addr, "udp") {
            body.push_str(&format!("a={}\r\n", c.to_sdp_string()));
        }
    }
    body.push_str("a=end-of-candidates\r\n");
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    // The etag is hex between quotes: always a valid header value.
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex etag"),
    );
    tracing::debug!(key = entry.key, "ICE restarted");
    Ok((StatusCode::OK, h, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdpfrag() {
        let f = parse_sdpfrag(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\na=end-of-candidates\r\n",
        );
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(Candidate::from_sdp_string(&f.candidates[0]).is_ok());
    }
}
