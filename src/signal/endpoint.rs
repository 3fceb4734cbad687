//! The WHIP and WHEP endpoints, `/{stream}/whip` (RFC 9725) and `/{stream}/whep`
//! (draft-ietf-wish-whep): one code path for both, since the HTTP rules are the same. POST
//! an offer, get a session whose `Rtc` is handed to the TX thread.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use super::auth;
use super::error::{shown, ApiError};
use super::origin::{self, RequestOrigin, Scheme};
use super::refusal::{self, Wanted, REFUSAL_LOG_EVERY};
use super::{add_ice_links, options_headers, AppState};
use crate::config::valid_stream_name;
use crate::engine::egress::PublisherOptions;
use crate::engine::offer::{self, OfferError, Role};
use crate::engine::PeerKey;
use crate::log_throttle::{more_text, SharedThrottle};
use crate::media::tx::TxCommand;
use crate::net::DemuxCommand;
use crate::sessions::SessionEntry;
use crate::streams::StreamsFull;

/// Seconds a client is told to wait when the server is full.
const RETRY_AFTER_FULL: u32 = 5;

/// Seconds a publisher is told to wait when `--max-streams` streams exist: an on-demand
/// stream nobody publishes to or watches is gone 5 s after its last publisher.
const RETRY_AFTER_STREAMS: u32 = 10;

/// Seconds a client is told to wait when its address has too many sessions pending: a
/// pending session connects within a second or so, or is dropped after 15 s.
const RETRY_AFTER_PENDING: u32 = 2;

/// The client's address, when the server knows it (`None` when the router is called
/// without a socket, as in tests: treated as a remote client).
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// Where a request comes from, as browsers say (see `signal::origin`).
pub struct Origin(pub RequestOrigin);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let scheme = parts
            .extensions
            .get::<Scheme>()
            .copied()
            .unwrap_or(Scheme::Http);
        let authority = parts.uri.authority().map(|a| a.as_str());
        Ok(Origin(origin::classify(&parts.headers, authority, scheme)))
    }
}

/// Query parameters of a WHIP POST.
#[derive(Debug, Default)]
pub struct PublishQuery {
    /// The publisher's gain in the mix (linear, 0 to 4; default 1).
    gain: Option<f32>,
    /// WHEP: the WHIP session (its id, the last segment of its `Location`) whose mix-minus
    /// the viewer hears.
    minus: Option<String>,
}

impl PublishQuery {
    /// From the query's pairs: `gain` at most once, a number from 0 to 4; parameters we do
    /// not know are ignored.
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(pairs) = query.map_err(|_| {
            ApiError::BadRequest(
                "the query string is not percent-encoded UTF-8 key=value pairs".into(),
            )
        })?;
        let mut q = PublishQuery::default();
        for (key, value) in pairs {
            if key != "gain" {
                continue;
            }
            if q.gain.is_some() {
                return Err(ApiError::BadRequest("gain is given more than once".into()));
            }
            let gain = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|g| (0.0..=4.0).contains(g))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "gain {}: expected a number from 0 to 4",
                        shown(&value)
                    ))
                })?;
            q.gain = Some(gain);
        }
        Ok(q)
    }
}

/// `GET`/`HEAD /{stream}/whep`: 200 with no body for a stream that exists. When the
/// stream's name is covered by a read token, the token is checked first: without it, a
/// stream that exists and one that does not both get 401.
pub async fn whep_get(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    PeerAddr(peer): PeerAddr,
    Origin(from): Origin,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_readable(&state, &stream, &headers, peer, &from)?;
    Ok(StatusCode::OK)
}

/// Whether `stream` may be read and exists: the read token first (its failure logged), so
/// that without it nobody learns whether the stream exists; then 404 for none.
fn check_readable(
    state: &AppState,
    stream: &str,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    from: &RequestOrigin,
) -> Result<(), ApiError> {
    auth::check(headers, &state.0.auth.read.access(stream)).map_err(|e| {
        refusal::log_refused(Wanted::Read(stream), peer, from, &e);
        ApiError::from(e)
    })?;
    if !state.0.directory.contains(stream) {
        return Err(ApiError::NotFound(format!("no stream {}", shown(stream))));
    }
    Ok(())
}

/// `GET`/`HEAD /{stream}/whip`: 200 with no body for any stream name one could publish to
/// (publishing creates the stream).
pub async fn whip_get(Path(stream): Path<String>) -> Result<StatusCode, ApiError> {
    if !valid_stream_name(&stream) {
        return Err(ApiError::NotFound(format!(
            "{} is not a stream name",
            shown(&stream)
        )));
    }
    Ok(StatusCode::OK)
}

/// `OPTIONS` on a WHEP endpoint: any origin may view (a read token still decides).
pub async fn whep_options(State(state): State<AppState>, req: HeaderMap) -> Response {
    endpoint_options(&state, &req)
}

/// `OPTIONS` on a WHIP endpoint. A preflight from another origin is granted only when the
/// POST could succeed from there: with a publish token for the stream, or when anyone may
/// publish; otherwise 403 (the loopback rule does not cover foreign pages).
pub async fn whip_options(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    PeerAddr(peer): PeerAddr,
    Origin(from): Origin,
    req: HeaderMap,
) -> Response {
    let preflight = req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let token_could_help = matches!(state.0.auth.publish.access(&stream), auth::Access::Token(_));
    if preflight
        && !from.trusted_locally()
        && !token_could_help
        && !state.0.auth.allow_public_publish
    {
        let e = auth::AuthError::CrossOrigin;
        refusal::log_refused(Wanted::Publish(&stream), peer, &from, &e);
        return ApiError::from(e).into_response();
    }
    endpoint_options(&state, &req)
}

fn endpoint_options(state: &AppState, req: &HeaderMap) -> Response {
    let mut h = options_headers(state, "GET, HEAD, POST, OPTIONS", req);
    // CORS lists the session's methods too: MediaMTX as a client trickles only when the
    // endpoint's `Access-Control-Allow-Methods` names PATCH (WHIP-WHEP.md).
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PATCH, DELETE, OPTIONS"),
    );
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

/// The `?minus=` of a WHEP POST: the WHIP session id once, 32 hex digits; other
/// parameters are ignored.
fn parse_minus(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Option<String>, ApiError> {
    let Query(pairs) = query.map_err(|_| {
        ApiError::BadRequest("the query string is not percent-encoded UTF-8 key=value pairs".into())
    })?;
    let mut minus = None;
    for (key, value) in pairs {
        if key != "minus" {
            continue;
        }
        if minus.is_some() {
            return Err(ApiError::BadRequest("minus is given more than once".into()));
        }
        let id = value.trim();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::BadRequest(format!(
                "minus {}: expected a WHIP session id (the 32 hex digits that end its Location)",
                shown(&value)
            )));
        }
        minus = Some(id.to_ascii_lowercase());
    }
    Ok(minus)
}

/// The engine key of the live WHIP session `id` of `stream`, for a viewer that hears the
/// mix minus it. The id is the proof: it is the publisher's secret session URL.
fn minus_publisher(state: &AppState, stream: &str, id: &str) -> Result<PeerKey, ApiError> {
    match state.0.sessions.get(id) {
        Some(e) if e.role == Role::Publisher && e.stream == stream => Ok(e.key),
        Some(e) if e.role == Role::Publisher => Err(ApiError::Forbidden(format!(
            "minus names a WHIP session of another stream, not of {}",
            shown(stream)
        ))),
        _ => Err(ApiError::NotFound(format!(
            "minus names no live WHIP session of {} (it ended, or the id is wrong)",
            shown(stream)
        ))),
    }
}

/// `POST /{stream}/whep`: a viewer of an existing stream. `?minus=<WHIP session id>`: the
/// viewer hears the mix without that publisher (the same person's two sessions).
pub async fn whep_post(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    PeerAddr(peer): PeerAddr,
    Origin(from): Origin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, "application/sdp") {
        return Err(ApiError::UnsupportedMediaType("application/sdp"));
    }
    check_readable(&state, &stream, &headers, peer, &from)?;
    let minus = parse_minus(query)?;
    if let Some(id) = &minus {
        minus_publisher(&state, &stream, id)?;
    }
    if state.0.sessions.count_role(Role::Viewer) >= state.0.max_viewers {
        return Err(ApiError::Overloaded(
            format!("at most {} viewers", state.0.max_viewers),
            RETRY_AFTER_FULL,
        ));
    }
    let query = PublishQuery {
        minus,
        ..PublishQuery::default()
    };
    create(&state, stream, Role::Viewer, &body, query, peer).await
}

/// `POST /{stream}/whip`: a publisher; the stream is created if it does not exist.
pub async fn whip_post(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    PeerAddr(peer): PeerAddr,
    Origin(from): Origin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, "application/sdp") {
        return Err(ApiError::UnsupportedMediaType("application/sdp"));
    }
    if !valid_stream_name(&stream) {
        return Err(ApiError::NotFound(format!(
            "{} is not a stream name (letters, digits, '-', '_', '.'; at most 64)",
            shown(&stream)
        )));
    }
    let query = PublishQuery::parse(query)?;
    let access = state.0.auth.publish.access(&stream);
    // No address (a router called without a socket) counts as a remote client.
    let client = peer.unwrap_or_else(|| SocketAddr::from(([192, 0, 2, 1], 0)));
    if let Err(e) = auth::check_publish(
        &headers,
        client,
        from.trusted_locally(),
        &access,
        state.0.auth.allow_public_publish,
    ) {
        refusal::log_refused(Wanted::Publish(&stream), peer, &from, &e);
        return Err(e.into());
    }
    if state.0.sessions.count_role(Role::Publisher) >= state.0.max_publishers {
        return Err(ApiError::Overloaded(
            format!("at most {} publishers", state.0.max_publishers),
            RETRY_AFTER_FULL,
        ));
    }
    if let Some(full) = state.0.directory.would_refuse(&stream) {
        return Err(streams_full(full, &stream, client));
    }
    create(&state, stream, Role::Publisher, &body, query, peer).await
}

/// The 503 for a publisher that would create one stream too many, and its log line: one
/// a minute at most ([`crate::log_throttle`]), saying how many were refused in between.
fn streams_full(full: StreamsFull, stream: &str, client: SocketAddr) -> ApiError {
    static REFUSED: SharedThrottle = SharedThrottle::every(crate::log_throttle::LOG_EVERY);
    if let Some(more) = REFUSED.tick() {
        tracing::warn!(
            stream = %shown(stream),
            %client,
            max_streams = full.max,
            "refused a publisher: creating {} would exceed --max-streams {}{}",
            shown(stream),
            full.max,
            more_text(more)
        );
    }
    ApiError::Overloaded(
        format!(
            "at most {} streams may be created by publishers; publish to an existing one or retry later",
            full.max
        ),
        RETRY_AFTER_STREAMS,
    )
}

/// A client address for a log line.
pub(crate) fn client_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string())
}

/// Counts session `key` as pending for the client's address (until it connects or ends),
/// or refuses it with 503 when that address has its share pending already.
fn hold_pending(state: &AppState, key: u64, peer: Option<SocketAddr>) -> Result<(), ApiError> {
    state
        .0
        .sessions
        .hold_pending(key, peer.map(|p| p.ip()))
        .map_err(|e| {
            static REFUSED: SharedThrottle = SharedThrottle::every(REFUSAL_LOG_EVERY);
            if let Some(more) = REFUSED.tick() {
                tracing::warn!(
                    client = %e.ip,
                    pending = e.pending,
                    "refused a session: {} has {} sessions answered and not yet connected \
                     (--max-pending-per-ip){}",
                    e.ip,
                    e.pending,
                    more_text(more)
                );
            }
            ApiError::Overloaded(
                format!(
                    "{} has {} sessions not yet connected; connect or DELETE them first",
                    e.ip, e.pending
                ),
                RETRY_AFTER_PENDING,
            )
        })
}

/// Negotiates, registers and hands over a session; the 201 response.
async fn create(
    state: &AppState,
    stream: String,
    role: Role,
    body: &[u8],
    query: PublishQuery,
    peer: Option<SocketAddr>,
) -> Result<Response, ApiError> {
    let offer = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the offer is not UTF-8".into()))?;
    let (video_source, video) = state
        .0
        .directory
        .get(&stream)
        .map(|s| (s.video_source, s.video))
        .unwrap_or_default();
    let negotiated = offer::accept_for_stream(
        offer,
        role,
        &state.0.candidates,
        Instant::now(),
        video_source,
        video,
    )
    .map_err(|e| {
        // The client gets our reason; str0m's words (which can hold addresses of the
        // server's memory) go to the log only.
        let client = peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::info!(
            stream,
            client,
            endpoint = role.endpoint(),
            "offer refused: {}",
            e.detail()
        );
        match e {
            OfferError::Malformed(m) => ApiError::BadRequest(m),
            OfferError::Unparsable(_) => {
                ApiError::BadRequest("the offer is not SDP we can parse (RFC 8866)".into())
            }
            OfferError::Unusable(m) => ApiError::Unprocessable(m),
            OfferError::Refused(_) => ApiError::Unprocessable(
                "the offer cannot be answered: its media sections, codecs or transport \
                 parameters are not usable"
                    .into(),
            ),
        }
    })?;

    // Looked up again: the publisher may have left while the offer was answered.
    let minus = match &query.minus {
        Some(id) => Some(minus_publisher(state, &stream, id)?),
        None => None,
    };
    let key = state.0.next_key.fetch_add(1, Ordering::Relaxed);
    hold_pending(state, key, peer)?;
    let id = random_id();
    let etag = new_etag();
    // Publishers feed the mix on the mixing thread (0); viewers are spread.
    let owner = match role {
        // A viewer of a mix-minus needs the talkers' frames: the mixing thread has them.
        Role::Viewer => state
            .0
            .tx
            .place_viewer(answer_has_video(&negotiated.answer) || minus.is_some()),
        Role::Publisher => 0,
    };
    let unplace = || {
        if role == Role::Viewer {
            state.0.tx.unplace_viewer(owner);
        }
    };
    if state
        .0
        .demux
        .try_send(DemuxCommand::Register {
            ufrag: negotiated.local_ufrag.clone(),
            pwd: negotiated.local_pwd.clone(),
            key,
            owner,
        })
        .is_err()
    {
        unplace();
        state.0.sessions.remove_key(key); // releases its pending hold
        return Err(ApiError::Overloaded(
            "the UDP loop is busy".into(),
            RETRY_AFTER_FULL,
        ));
    }
    state.0.sessions.insert(
        id.clone(),
        SessionEntry {
            key,
            stream: stream.clone(),
            role,
            etag: etag.clone(),
            remote_ufrag: sdp_ufrag(offer),
            owner,
            client: peer,
            created: Instant::now(),
            connected_after: None,
        },
    );
    let rtc = Box::new(negotiated.rtc);
    let command = match role {
        Role::Viewer => TxCommand::AddViewer {
            key,
            rtc,
            srtp_keys: negotiated.srtp_keys,
            stream: stream.clone(),
            minus,
        },
        Role::Publisher => {
            // The stream exists for viewers from now on, before the TX thread has its mix.
            match state.0.directory.create_on_demand(&stream) {
                Ok(true) => tracing::info!(
                    stream,
                    "stream {} created by publisher {id} from {}",
                    shown(&stream),
                    client_text(peer)
                ),
                Ok(false) => {}
                Err(full) => {
                    // Another POST took the last slot since the early check.
                    state.0.sessions.remove_key(key);
                    let _ = state.0.demux.try_send(DemuxCommand::Unregister { key });
                    let client = peer.unwrap_or_else(|| SocketAddr::from(([192, 0, 2, 1], 0)));
                    return Err(streams_full(full, &stream, client));
                }
            }
            TxCommand::AddPublisher {
                key,
                rtc,
                stream: stream.clone(),
                options: PublisherOptions {
                    gain: query.gain.unwrap_or(1.0),
                    ice_lite: negotiated.ice_lite,
                },
            }
        }
    };
    if !state.0.tx.send(owner, command) {
        unplace();
        state.0.sessions.remove_key(key);
        let _ = state.0.demux.try_send(DemuxCommand::Unregister { key });
        return Err(ApiError::Overloaded(
            "the TX thread is busy".into(),
            RETRY_AFTER_FULL,
        ));
    }
    state.0.metrics.session_created();
    tracing::info!(
        key,
        ice_lite = negotiated.ice_lite,
        minus_of = ?minus,
        "{} {id} of stream {} from {}: answered",
        role.noun(),
        shown(&stream),
        client_text(peer)
    );

    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/{stream}/{}/{id}", role.endpoint());
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location)
            .map_err(|_| ApiError::BadRequest("stream name not valid in a URL".into()))?,
    );
    // The etag is hex between quotes: always a valid header value.
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex etag"),
    );
    h.insert(
        header::HeaderName::from_static("accept-patch"),
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    add_ice_links(state, &mut h);
    if role == Role::Viewer {
        if let Ok(v) = HeaderValue::from_str(&super::events::link_value(&stream, &id)) {
            h.append(header::LINK, v);
        }
    }
    Ok((StatusCode::CREATED, h, negotiated.answer).into_response())
}

/// Whether an answer accepts video: an `m=video` line with a port other than 0.
fn answer_has_video(answer: &str) -> bool {
    answer.lines().any(|l| {
        l.strip_prefix("m=video ")
            .and_then(|rest| rest.split(' ').next())
            .is_some_and(|port| port != "0")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn answer_has_video() {
        use super::answer_has_video as f;
        assert!(f(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        ));
        assert!(!f(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n"
        ));
        assert!(!f("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
    }
}
