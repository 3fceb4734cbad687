//! HTTP signalling (axum): the WHIP and WHEP endpoints, the page, the stream list and
//! `/metrics`.
//!
//! Handlers parse and negotiate, then hand each `Rtc` to its owning TX thread over a
//! bounded channel; they never touch a running session's `Rtc` themselves.

pub mod assets;
pub mod auth;
mod conn;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod listen;
pub mod origin;
pub mod refusal;
pub mod session;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use crossbeam_channel::Sender;

use crate::config::{AuthConfig, IceServer};
use crate::media::tx::TxCommand;
use crate::metrics::Metrics;
use crate::net::DemuxCommand;
use crate::sessions::Sessions;
use crate::streams::StreamDirectory;

/// A TX thread as signalling reaches it.
#[derive(Clone)]
pub struct TxHandle {
    /// Its command channel.
    pub commands: Sender<TxCommand>,
    /// Its thread, unparked after each command.
    pub thread: Thread,
}

impl TxHandle {
    /// Sends a command and wakes the thread. False if the queue is full or closed.
    pub fn send(&self, cmd: TxCommand) -> bool {
        let ok = self.commands.try_send(cmd).is_ok();
        self.thread.unpark();
        ok
    }
}

/// The TX threads as signalling reaches them. Thread 0 mixes: publishers and viewers
/// of video go there; audio-only viewers go to the thread with the fewest viewers.
pub struct TxThreads {
    /// One per thread, by index.
    pub handles: Vec<TxHandle>,
    /// Viewers per thread: incremented here when one is handed over, decremented by the
    /// thread when it ends.
    pub load: Arc<[AtomicUsize]>,
}

impl TxThreads {
    /// One TX thread (which mixes).
    pub fn one(handle: TxHandle) -> TxThreads {
        TxThreads {
            handles: vec![handle],
            load: Arc::new([AtomicUsize::new(0)]),
        }
    }

    /// The thread a new viewer goes to: the mixing thread for a viewer of video (video is
    /// forwarded there only), else the one with the fewest viewers. Counts it there.
    pub fn place_viewer(&self, takes_video: bool) -> usize {
        let owner = if takes_video {
            0
        } else {
            (0..self.load.len())
                .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        self.load[owner].fetch_add(1, Ordering::Relaxed);
        owner
    }

    /// Undoes [`TxThreads::place_viewer`] for a viewer that never reached its thread.
    pub fn unplace_viewer(&self, owner: usize) {
        self.load[owner].fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends `cmd` to thread `owner` (see [`TxHandle::send`]).
    pub fn send(&self, owner: usize, cmd: TxCommand) -> bool {
        self.handles.get(owner).is_some_and(|h| h.send(cmd))
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    /// The streams that exist (configured, and created by publishers).
    pub directory: Arc<StreamDirectory>,
    /// Tokens and the publishing rule.
    pub auth: AuthConfig,
    /// Host candidates every answer advertises.
    pub candidates: Vec<SocketAddr>,
    /// STUN/TURN servers offered to clients in `Link` headers.
    pub ice_servers: Vec<IceServer>,
    /// Most viewers at once.
    pub max_viewers: usize,
    /// Most publishers at once.
    pub max_publishers: usize,
    /// Live sessions.
    pub sessions: Arc<Sessions>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The TX threads, which own the sessions.
    pub tx: TxThreads,
    /// Routing updates for the RX thread.
    pub demux: Sender<DemuxCommand>,
    /// The next session key.
    pub next_key: AtomicU64,
    /// The recordings made since start-up (`GET /api/recordings`).
    pub recordings: Arc<crate::record::Recordings>,
    /// Open server-sent event streams, capped.
    pub event_streams: events::EventStreams,
}

/// The whole HTTP API as a `Router`, so tests can call it without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/api/streams", get(assets::streams))
        .route("/api/recordings", get(assets::recordings))
        .route("/api/events", get(events::api_events))
        .route("/metrics", get(assets::metrics))
        .route(
            "/{stream}/whep",
            get(endpoint::whep_get)
                .head(endpoint::whep_get)
                .post(endpoint::whep_post)
                .options(endpoint::whep_options),
        )
        .route(
            "/{stream}/whip",
            get(endpoint::whip_get)
                .head(endpoint::whip_get)
                .post(endpoint::whip_post)
                .options(endpoint::whip_options),
        )
        .route(
            "/{stream}/whep/{id}",
            axum::routing::patch(session::whep_patch)
                .delete(session::whep_delete)
                .options(session::options),
        )
        .route(
            "/{stream}/whep/{id}/events",
            get(events::session_events)
                .post(events::subscribe)
                .options(events::events_options),
        )
        .route(
            "/{stream}/whip/{id}",
            axum::routing::patch(session::whip_patch)
                .delete(session::whip_delete)
                .options(session::options),
        )
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(listen::MAX_BODY))
        .layer(middleware::from_fn(error::problem_shape))
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Headers a browser page on another origin may read.
const EXPOSE: &str = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After";

/// Adds the CORS headers every response carries (WHEP players are often on other origins).
/// `*` grants no ambient authority: nothing here is behind a cookie, every credential is a
/// Bearer token the page must know; who may publish is decided per request (`origin`).
async fn cors(req: Request<axum::body::Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
    res
}

/// The headers of an OPTIONS answer to `req`. A CORS preflight gets no `Link`, and gets
/// Private Network Access when it asks (`origin` says when a preflight is refused instead).
pub(crate) fn options_headers(
    state: &AppState,
    methods: &'static str,
    req: &HeaderMap,
) -> HeaderMap {
    let preflight = req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut h = HeaderMap::new();
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        HeaderName::from_static("accept-post"),
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    if preflight {
        origin::grant_private_network(req, &mut h);
    } else {
        add_ice_links(state, &mut h);
    }
    h
}

/// `Link: <stun:…>; rel="ice-server"` for each configured STUN/TURN server.
pub(crate) fn add_ice_links(state: &AppState, h: &mut HeaderMap) {
    for s in &state.0.ice_servers {
        if let Ok(v) = HeaderValue::from_str(&s.link_value()) {
            h.append(header::LINK, v);
        }
    }
}
