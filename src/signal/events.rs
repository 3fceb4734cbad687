//! Server-sent events: `GET /api/events` (every stream the request may see: the page uses it
//! instead of polling) and the WHEP extension's per-session event stream
//! (`/{stream}/whep/{id}/events`, announced in the answer's `Link`).
//!
//! Each event stream waits on the stream directory's and the session table's change signals
//! (`change_signal`), coalesces what changed within [`COALESCE`], and sends the difference
//! from what it sent before: `streams` (the whole list, `/api/events` only), `active`,
//! `inactive` and `viewercount`. Nothing polls; a quiet server sends a keep-alive comment
//! every [`KEEP_ALIVE`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::watch;

use super::assets::{stream_view, visible_streams, StreamView};
use super::error::ApiError;
use super::AppState;
use crate::engine::offer::Role;

/// The WHEP extension's link relation for server-sent events.
pub const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// What a WHEP session's event stream can carry (the `events` attribute of its `Link`).
pub const SESSION_EVENT_KINDS: [&str; 3] = ["active", "inactive", "viewercount"];

/// Changes within this long after the first are sent together (a burst of joins is one
/// `viewercount`, not hundreds).
pub const COALESCE: Duration = Duration::from_millis(100);

/// A comment line this often keeps proxies and the HTTP/1.1 idle timer from closing a quiet
/// stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Most event streams open at once, server-wide: each wakes on every change, so they are
/// bounded like sessions are (the per-address connection cap bounds one client's share).
pub const MAX_EVENT_STREAMS: usize = 1024;

/// The open event streams, counted against [`MAX_EVENT_STREAMS`].
#[derive(Debug, Default)]
pub struct EventStreams(Arc<AtomicUsize>);

/// One open event stream's place in the count, given back when the stream is dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventStreams {
    fn take(&self) -> Result<Slot, ApiError> {
        let open = self.0.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.0.clone());
        if open >= MAX_EVENT_STREAMS {
            return Err(ApiError::Overloaded(
                format!("{MAX_EVENT_STREAMS} event streams are open already"),
                10,
            ));
        }
        Ok(slot)
    }

    /// Event streams open now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Which events a WHEP session's stream asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    /// `active`.
    pub active: bool,
    /// `inactive`.
    pub inactive: bool,
    /// `viewercount`.
    pub viewercount: bool,
}

impl Kinds {
    /// Every kind this server sends.
    pub const ALL: Kinds = Kinds {
        active: true,
        inactive: true,
        viewercount: true,
    };

    /// The kinds named in `names`; names this server does not send are left out (the
    /// extension lets a server offer fewer than asked).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Kinds {
        let mut k = Kinds {
            active: false,
            inactive: false,
            viewercount: false,
        };
        for n in names {
            match n.trim() {
                "active" => k.active = true,
                "inactive" => k.inactive = true,
                "viewercount" => k.viewercount = true,
                _ => {}
            }
        }
        k
    }

    fn names(self) -> String {
        let mut v = Vec::new();
        if self.active {
            v.push("active");
        }
        if self.inactive {
            v.push("inactive");
        }
        if self.viewercount {
            v.push("viewercount");
        }
        v.join(",")
    }

    fn any(self) -> bool {
        self.active || self.inactive || self.viewercount
    }
}

/// One change between two looks at the streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The stream has an input now (or is seen for the first time with one).
    Active(String),
    /// The stream has no input now, or is gone.
    Inactive(String),
    /// The stream's viewer count is now this.
    ViewerCount(String, usize),
}

/// What changed from `old` (`None`: nothing sent yet, so everything is new) to `new`.
pub fn changes(old: Option<&[StreamView]>, new: &[StreamView]) -> Vec<Change> {
    let mut out = Vec::new();
    let before = |name: &str| old.and_then(|o| o.iter().find(|s| s.name == name));
    for s in new {
        let was = before(&s.name);
        if was.map(|w| w.active) != Some(s.active) {
            out.push(if s.active {
                Change::Active(s.name.clone())
            } else {
                Change::Inactive(s.name.clone())
            });
        }
        if was.map(|w| w.viewers) != Some(s.viewers) {
            out.push(Change::ViewerCount(s.name.clone(), s.viewers));
        }
    }
    for gone in old.unwrap_or_default() {
        if gone.active && !new.iter().any(|s| s.name == gone.name) {
            out.push(Change::Inactive(gone.name.clone()));
        }
    }
    out
}

/// What one event stream shows.
enum Scope {
    /// `/api/events`: every stream the request's token opens, with the stream's name in
    /// each event and the whole list as `streams`.
    All(HeaderMap),
    /// A WHEP session's stream: its stream only, the kinds asked for, in the extension's
    /// shapes (`{}`, `{"viewercount":N}`), until the session ends.
    Session {
        stream: String,
        id: String,
        kinds: Kinds,
    },
}

/// An event stream's state between sends.
struct Feed {
    state: AppState,
    scope: Scope,
    /// What was sent last (`None` before the first look).
    last: Option<Vec<StreamView>>,
    queue: VecDeque<Event>,
    directory: watch::Receiver<u64>,
    sessions: watch::Receiver<u64>,
    _slot: Slot,
}

impl Feed {
    fn new(state: AppState, scope: Scope, slot: Slot) -> Feed {
        Feed {
            directory: state.0.directory.changes(),
            sessions: state.0.sessions.changes(),
            state,
            scope,
            last: None,
            queue: VecDeque::new(),
            _slot: slot,
        }
    }

    /// Looks at the streams and queues what changed. False when the stream should end (its
    /// session is over).
    fn look(&mut self) -> bool {
        let now = match &self.scope {
            Scope::All(headers) => visible_streams(&self.state, headers),
            Scope::Session { stream, id, .. } => {
                if !matches!(self.state.0.sessions.get(id),
                    Some(e) if &e.stream == stream && e.role == Role::Viewer)
                {
                    return false;
                }
                // The session is the capability: no token filter for its own stream.
                vec![
                    stream_view(&self.state, stream).unwrap_or_else(|| StreamView {
                        name: stream.clone(),
                        viewers: 0,
                        publishers: 0,
                        configured: false,
                        video: None,
                        sources: Vec::new(),
                        active: false,
                    }),
                ]
            }
        };
        let changed = changes(self.last.as_deref(), &now);
        match &self.scope {
            Scope::All(_) => {
                if self.last.as_deref() != Some(&now[..]) {
                    let list = serde_json::json!({ "streams": now });
                    self.queue
                        .push_back(Event::default().event("streams").data(list.to_string()));
                }
                for c in changed {
                    let (kind, data) = match c {
                        Change::Active(s) => ("active", serde_json::json!({ "stream": s })),
                        Change::Inactive(s) => ("inactive", serde_json::json!({ "stream": s })),
                        Change::ViewerCount(s, n) => (
                            "viewercount",
                            serde_json::json!({ "stream": s, "viewercount": n }),
                        ),
                    };
                    self.queue
                        .push_back(Event::default().event(kind).data(data.to_string()));
                }
            }
            Scope::Session { kinds, .. } => {
                for c in changed {
                    let (wanted, kind, data) = match c {
                        Change::Active(_) => (kinds.active, "active", "{}".to_string()),
                        Change::Inactive(_) => (kinds.inactive, "inactive", "{}".to_string()),
                        Change::ViewerCount(_, n) => (
                            kinds.viewercount,
                            "viewercount",
                            serde_json::json!({ "viewercount": n }).to_string(),
                        ),
                    };
                    if wanted {
                        self.queue
                            .push_back(Event::default().event(kind).data(data));
                    }
                }
            }
        }
        self.last = Some(now);
        true
    }

    /// Waits for the next change anywhere, then for the rest of its burst. False when the
    /// server is going away (a change signal's sender is gone).
    async fn wait(&mut self) -> bool {
        let alive = tokio::select! {
            r = self.directory.changed() => r.is_ok(),
            r = self.sessions.changed() => r.is_ok(),
        };
        if !alive {
            return false;
        }
        tokio::time::sleep(COALESCE).await;
        self.directory.borrow_and_update();
        self.sessions.borrow_and_update();
        true
    }
}

fn events(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.queue.pop_front() {
                return Some((Ok(e), f));
            }
            if f.last.is_some() && !f.wait().await {
                return None;
            }
            if !f.look() {
                return None;
            }
        }
    })
}

fn sse(feed: Feed) -> Response {
    let mut res = Sse::new(events(feed))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Proxies (nginx) buffer a response unless told not to; an event stream must not wait.
    res.headers_mut().insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    res
}

/// `GET /api/events`: `text/event-stream` of `streams`, `active`, `inactive` and
/// `viewercount` for every stream the request's read token opens (the filter
/// `/api/streams` applies). The first events describe the present.
pub async fn api_events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.0.event_streams.take() {
        Ok(slot) => sse(Feed::new(state.clone(), Scope::All(headers), slot)),
        Err(e) => e.into_response(),
    }
}

/// `?events=active,viewercount` on a session's event stream.
#[derive(Debug, serde::Deserialize)]
pub struct EventsQuery {
    events: Option<String>,
}

fn viewer_session(state: &AppState, stream: &str, id: &str) -> Result<(), ApiError> {
    match state.0.sessions.get(id) {
        Some(e) if e.stream == stream && e.role == Role::Viewer => Ok(()),
        _ => Err(ApiError::NotFound("no such session".into())),
    }
}

/// `GET /{stream}/whep/{id}/events[?events=…]`: the session's event stream (every kind, or
/// those named). The session URL is the capability, as for DELETE and PATCH: an
/// `EventSource` cannot send a token. Ends when the session does.
pub async fn session_events(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    viewer_session(&state, &stream, &id)?;
    let kinds = match &q.events {
        Some(list) => Kinds::from_names(list.split(',')),
        None => Kinds::ALL,
    };
    let slot = state.0.event_streams.take()?;
    Ok(sse(Feed::new(
        state.clone(),
        Scope::Session { stream, id, kinds },
        slot,
    )))
}

/// `POST /{stream}/whep/{id}/events` with a JSON array of event names (the extension's
/// subscription): 201 with the event stream's URL in `Location`, for the kinds this server
/// sends among those asked; 400 for a body that is not an array of strings, 422 when none of
/// them is one this server sends.
pub async fn subscribe(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    viewer_session(&state, &stream, &id)?;
    let names: Vec<String> = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the body must be a JSON array of event names".into()))?;
    let kinds = Kinds::from_names(names.iter().map(String::as_str));
    if !kinds.any() {
        return Err(ApiError::Unprocessable(format!(
            "none of the events asked for is sent here; these are: {}",
            SESSION_EVENT_KINDS.join(", ")
        )));
    }
    let location = format!("/{stream}/whep/{id}/events?events={}", kinds.names());
    let location = HeaderValue::from_str(&location)
        .map_err(|_| ApiError::BadRequest("stream name not valid in a URL".into()))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// `OPTIONS` on a session's event stream (a CORS preflight for the JSON POST).
pub async fn events_options() -> Response {
    let methods = "GET, POST, OPTIONS";
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, methods),
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type"),
        ],
    )
        .into_response()
}

/// The `Link` value a WHEP answer carries for session `id` of `stream`.
pub fn link_value(stream: &str, id: &str) -> String {
    format!(
        "</{stream}/whep/{id}/events>; rel=\"{SSE_REL}\"; events=\"{}\"",
        SESSION_EVENT_KINDS.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, viewers: usize, active: bool) -> StreamView {
        StreamView {
            name: name.into(),
            viewers,
            publishers: 0,
            configured: true,
            video: None,
            sources: vec![],
            active,
        }
    }

    #[test]
    fn the_first_look_describes_everything() {
        let now = [view("live", 2, true), view("quiet", 0, false)];
        assert_eq!(
            changes(None, &now),
            vec![
                Change::Active("live".into()),
                Change::ViewerCount("live".into(), 2),
                Change::Inactive("quiet".into()),
                Change::ViewerCount("quiet".into(), 0),
            ]
        );
    }

    #[test]
    fn later_looks_say_only_what_changed() {
        let a = [view("live", 2, true), view("mic", 0, true)];
        assert_eq!(changes(Some(&a), &a), vec![]);
        let b = [view("live", 3, true)];
        assert_eq!(
            changes(Some(&a), &b),
            vec![
                Change::ViewerCount("live".into(), 3),
                Change::Inactive("mic".into()),
            ],
            "a gone stream that was active is inactive now"
        );
        let c = [view("live", 3, false), view("new", 1, true)];
        assert_eq!(
            changes(Some(&b), &c),
            vec![
                Change::Inactive("live".into()),
                Change::Active("new".into()),
                Change::ViewerCount("new".into(), 1),
            ]
        );
    }

    #[test]
    fn kinds_from_names_keep_only_known_ones() {
        let k = Kinds::from_names(["viewercount", "layers", " active "]);
        assert_eq!(k.names(), "active,viewercount");
        assert!(!Kinds::from_names(["scte35"]).any());
    }
}
