//! The WHIP endpoint through the HTTP router without a socket (`oneshot`): sessions,
//! streams on demand, and who may publish (the loopback rule and Bearer tokens, also for
//! reading over WHEP).

#[path = "common/offers.rs"]
mod offers;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use crossbeam_channel::Receiver;
use mixcast::config::{AuthConfig, TokenRules};
use mixcast::media::tx::TxCommand;
use mixcast::metrics::Metrics;
use mixcast::net::DemuxCommand;
use mixcast::sessions::Sessions;
use mixcast::signal::auth::Secret;
use mixcast::signal::{app, AppState, Shared, TxHandle, TxThreads};
use mixcast::streams::StreamDirectory;
use str0m::media::{Direction, MediaKind};
use tower::ServiceExt;

struct Harness {
    state: AppState,
    commands: Receiver<TxCommand>,
    _demux: Receiver<DemuxCommand>,
}

fn harness(auth: AuthConfig, max_publishers: usize) -> Harness {
    let (cmd_tx, commands) = crossbeam_channel::bounded(64);
    let (demux, demux_rx) = crossbeam_channel::bounded(64);
    let state = AppState(Arc::new(Shared {
        directory: Arc::new(StreamDirectory::new([(
            "live".to_string(),
            vec!["tone".to_string()],
        )])),
        auth,
        candidates: vec!["127.0.0.1:8189".parse().unwrap()],
        ice_servers: Vec::new(),
        max_viewers: 100,
        max_publishers,
        sessions: Arc::new(Sessions::default()),
        metrics: Arc::new(Metrics::default()),
        tx: TxThreads::one(TxHandle {
            commands: cmd_tx,
            thread: std::thread::current(),
        }),
        demux,
        next_key: AtomicU64::new(1),
        recordings: Default::default(),
        event_streams: Default::default(),
    }));
    Harness {
        state,
        commands,
        _demux: demux_rx,
    }
}

/// A real offer from a str0m client: audio (and optionally video) in `direction`.
fn offer(direction: Direction, video: bool) -> String {
    let mut lines = vec![(MediaKind::Audio, direction)];
    if video {
        lines.push((MediaKind::Video, direction));
    }
    offers::media(&lines)
}

const LOOPBACK: &str = "127.0.0.1:40000";
const REMOTE: &str = "192.0.2.7:40000";

fn post(uri: &str, from: Option<&str>, token: Option<&str>, body: String) -> Request<Body> {
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/sdp");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let mut req = req.body(Body::from(body)).unwrap();
    if let Some(addr) = from {
        let addr: SocketAddr = addr.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    req
}

async fn send(r: &Router, req: Request<Body>) -> Response<Body> {
    r.clone().oneshot(req).await.unwrap()
}

async fn body_text(res: Response<Body>) -> String {
    let b = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

fn hdr<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

fn tokens(default: &[&str], per_stream: &[(&str, &str)]) -> TokenRules {
    let mut rules = TokenRules {
        default: default.iter().map(|t| Secret::new(t).unwrap()).collect(),
        ..Default::default()
    };
    for (stream, t) in per_stream {
        rules
            .per_stream
            .entry(stream.to_string())
            .or_default()
            .push(Secret::new(t).unwrap());
    }
    rules
}

#[tokio::test]
async fn a_publisher_creates_its_stream() {
    let h = harness(AuthConfig::default(), 8);
    let r = app(h.state.clone());
    assert_eq!(
        send(&r, Request::get("/mic/whep").body(Body::empty()).unwrap())
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "no stream before its publisher"
    );
    let res = send(
        &r,
        post(
            "/mic/whip",
            Some(LOOPBACK),
            None,
            offer(Direction::SendOnly, true),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let loc = hdr(&res, "location").unwrap().to_string();
    assert!(loc.starts_with("/mic/whip/"), "{loc}");
    let etag = hdr(&res, "etag").unwrap();
    assert!(etag.starts_with('"') && etag != "\"*\"");
    let answer = body_text(res).await;
    assert!(
        answer.contains("a=recvonly"),
        "a WHIP answer receives: {answer}"
    );
    assert!(!answer.contains("a=sendonly"), "{answer}");
    assert!(
        answer.contains("m=video 9"),
        "the video is accepted: {answer}"
    );
    assert!(answer.contains("127.0.0.1 8189 typ host"));
    // One fingerprint, sha-256 (libdatachannel fails when offered several hashes); str0m
    // repeats it in each m-section.
    let fingerprints: std::collections::BTreeSet<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=fingerprint:"))
        .collect();
    assert_eq!(fingerprints.len(), 1, "{answer}");
    assert!(fingerprints
        .iter()
        .all(|f| f.starts_with("a=fingerprint:sha-256 ")));
    match h.commands.try_recv() {
        Ok(TxCommand::AddPublisher {
            stream, options, ..
        }) => {
            assert_eq!(stream, "mic");
            assert_eq!(options.gain, 1.0);
            assert!(!options.ice_lite, "full ICE for a non-FFmpeg client");
        }
        _ => panic!("no AddPublisher"),
    }
    // Viewers may join the new stream at once.
    assert_eq!(
        send(&r, Request::get("/mic/whep").body(Body::empty()).unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    // The session lives under its own endpoint only.
    let id = loc.rsplit('/').next().unwrap();
    let res = send(
        &r,
        Request::delete(format!("/mic/whep/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = send(&r, Request::delete(&loc).body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(matches!(
        h.commands.try_recv(),
        Ok(TxCommand::RemoveViewer { .. })
    ));
}

#[tokio::test]
async fn whip_errors() {
    let h = harness(AuthConfig::default(), 1);
    let r = app(h.state.clone());
    let mut req = post(
        "/mic/whip",
        Some(LOOPBACK),
        None,
        offer(Direction::SendOnly, false),
    );
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(
        send(&r, req).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let res = send(
        &r,
        post("/mic/whip", Some(LOOPBACK), None, "v=0 nonsense".into()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // An offer that only wants to receive is not a publisher.
    let res = send(
        &r,
        post(
            "/mic/whip",
            Some(LOOPBACK),
            None,
            offer(Direction::RecvOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = send(
        &r,
        post(
            "/a%20b/whip",
            Some(LOOPBACK),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "not a stream name");
    let res = send(
        &r,
        post(
            "/mic/whip?gain=9",
            Some(LOOPBACK),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = send(
        &r,
        post(
            "/mic/whip?gain=0.5",
            Some(LOOPBACK),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(matches!(
        h.commands.try_recv(),
        Ok(TxCommand::AddPublisher { options, .. }) if options.gain == 0.5
    ));
    // max_publishers = 1
    let res = send(
        &r,
        post(
            "/mic/whip",
            Some(LOOPBACK),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(hdr(&res, "retry-after").is_some());
    // OPTIONS and GET on the endpoint.
    let res = send(
        &r,
        Request::options("/mic/whip").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(hdr(&res, "accept-post"), Some("application/sdp"));
    let res = send(&r, Request::get("/new/whip").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_only_loopback_publishes() {
    let h = harness(AuthConfig::default(), 8);
    let r = app(h.state.clone());
    for from in [Some(REMOTE), None] {
        let res = send(
            &r,
            post("/mic/whip", from, None, offer(Direction::SendOnly, false)),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "from {from:?}");
        let detail = body_text(res).await;
        assert!(detail.contains("--publish-token"), "{detail}");
    }
    let res = send(
        &r,
        post(
            "/mic/whip",
            Some("[::1]:5000"),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // The operator's explicit flag opens it.
    let open = AuthConfig {
        allow_public_publish: true,
        ..Default::default()
    };
    let h = harness(open, 8);
    let r = app(h.state.clone());
    let res = send(
        &r,
        post(
            "/mic/whip",
            Some(REMOTE),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bearer_tokens_for_publishing_and_reading() {
    let auth = AuthConfig {
        publish: tokens(&["pub-all"], &[("studio", "pub-studio")]),
        read: tokens(&[], &[("live", "read-live")]),
        allow_public_publish: false,
        ..Default::default()
    };
    let h = harness(auth, 8);
    let r = app(h.state.clone());
    let sdp = || offer(Direction::SendOnly, false);
    // A configured token is required, even from loopback.
    let res = send(&r, post("/mic/whip", Some(LOOPBACK), None, sdp())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(hdr(&res, "www-authenticate"), Some("Bearer"));
    let res = send(&r, post("/mic/whip", Some(REMOTE), Some("wrong"), sdp())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = send(&r, post("/mic/whip", Some(REMOTE), Some("pub-all"), sdp())).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "the token lets a remote client in"
    );
    // A stream's own token replaces the general one.
    let res = send(
        &r,
        post("/studio/whip", Some(REMOTE), Some("pub-all"), sdp()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = send(
        &r,
        post("/studio/whip", Some(REMOTE), Some("pub-studio"), sdp()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Reading: `live` needs its read token, `mic` (created above) is open.
    let view = || offer(Direction::RecvOnly, false);
    let res = send(&r, post("/live/whep", Some(REMOTE), None, view())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(hdr(&res, "www-authenticate"), Some("Bearer"));
    let res = send(
        &r,
        post("/live/whep", Some(REMOTE), Some("read-live"), view()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = send(&r, post("/mic/whep", Some(REMOTE), None, view())).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

fn get(uri: &str, from: &str, token: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(o) = origin {
        req = req
            .header(header::ORIGIN, o)
            .header(header::HOST, "127.0.0.1:8080");
    }
    let mut req = req.body(Body::empty()).unwrap();
    let addr: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

async fn listed(r: &Router, token: Option<&str>) -> Vec<String> {
    let res = send(r, get("/api/streams", REMOTE, token, None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 14 item 6: with a read token, nobody without it learns which streams exist: not
/// from the WHEP endpoint (GET or POST), not from the stream list.
#[tokio::test]
async fn a_read_token_hides_which_streams_exist() {
    let auth = AuthConfig {
        read: tokens(&["read-all"], &[]),
        ..Default::default()
    };
    let h = harness(auth, 8);
    let r = app(h.state.clone());
    for uri in ["/live/whep", "/nope/whep"] {
        let res = send(&r, get(uri, REMOTE, None, None)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "GET {uri}");
        assert_eq!(hdr(&res, "www-authenticate"), Some("Bearer"));
        let res = send(&r, get(uri, REMOTE, Some("wrong"), None)).await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "GET {uri}, wrong token"
        );
        let res = send(
            &r,
            post(uri, Some(REMOTE), None, offer(Direction::RecvOnly, false)),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "POST {uri}");
    }
    // With the token the answers tell again.
    let res = send(&r, get("/live/whep", REMOTE, Some("read-all"), None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(&r, get("/nope/whep", REMOTE, Some("read-all"), None)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = send(
        &r,
        post(
            "/nope/whep",
            Some(REMOTE),
            Some("read-all"),
            offer(Direction::RecvOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(listed(&r, None).await, Vec::<String>::new());
    assert_eq!(listed(&r, Some("wrong")).await, Vec::<String>::new());
    assert_eq!(listed(&r, Some("read-all")).await, vec!["live".to_string()]);

    // A token for one stream hides that stream only.
    let auth = AuthConfig {
        read: tokens(&[], &[("live", "read-live")]),
        ..Default::default()
    };
    let h = harness(auth, 8);
    let r = app(h.state.clone());
    let res = send(
        &r,
        post(
            "/mic/whip",
            Some(LOOPBACK),
            None,
            offer(Direction::SendOnly, false),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(listed(&r, None).await, vec!["mic".to_string()]);
    let mut both = listed(&r, Some("read-live")).await;
    both.sort();
    assert_eq!(both, vec!["live".to_string(), "mic".to_string()]);
}

/// Issue 14 item 6: `/metrics` names every stream, so with a read token it is for this
/// machine only, unless a metrics token is configured, which then decides from anywhere.
#[tokio::test]
async fn metrics_are_hidden_with_the_streams() {
    let status = |r: &Router, from: &str, token: Option<&str>, origin: Option<&str>| {
        let req = get("/metrics", from, token, origin);
        let r = r.clone();
        async move { r.oneshot(req).await.unwrap().status() }
    };
    // Nothing hidden: open to all (as before).
    let r = app(harness(AuthConfig::default(), 8).state);
    assert_eq!(status(&r, REMOTE, None, None).await, StatusCode::OK);

    // A read token: loopback only, and not a page of another origin.
    let r = app(harness(
        AuthConfig {
            read: tokens(&["read-all"], &[]),
            ..Default::default()
        },
        8,
    )
    .state);
    let res = send(&r, get("/metrics", REMOTE, None, None)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(hdr(&res, "content-type"), Some("application/problem+json"));
    let body = body_text(res).await;
    assert!(body.contains("--metrics-token"), "{body}");
    assert!(!body.contains("live"), "{body}");
    assert_eq!(status(&r, LOOPBACK, None, None).await, StatusCode::OK);
    assert_eq!(
        status(&r, LOOPBACK, None, Some("https://evil.example")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&r, LOOPBACK, None, Some("http://127.0.0.1:8080")).await,
        StatusCode::OK,
        "the server's own page"
    );

    // A metrics token decides, from anywhere, loopback included.
    let r = app(harness(
        AuthConfig {
            read: tokens(&["read-all"], &[]),
            metrics: vec![Secret::new("scrape").unwrap()],
            ..Default::default()
        },
        8,
    )
    .state);
    assert_eq!(
        status(&r, LOOPBACK, None, None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&r, REMOTE, Some("read-all"), None).await,
        StatusCode::UNAUTHORIZED
    );
    let res = send(&r, get("/metrics", REMOTE, Some("scrape"), None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Issue 15: a stream nobody watches still has its sample.
    let text = body_text(res).await;
    assert!(
        text.contains("mixcast_viewers{stream=\"live\"} 0\n"),
        "{text}"
    );
}
