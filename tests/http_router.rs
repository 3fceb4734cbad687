//! The HTTP router without a socket (`oneshot`): every status code the WHEP endpoint and
//! the session URL can answer.

#[path = "common/offers.rs"]
mod offers;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use crossbeam_channel::Receiver;
use mixcast::config::IceServer;
use mixcast::media::tx::TxCommand;
use mixcast::metrics::Metrics;
use mixcast::net::DemuxCommand;
use mixcast::sessions::Sessions;
use mixcast::signal::{app, AppState, Shared, TxHandle, TxThreads};
use mixcast::streams::StreamDirectory;
use str0m::media::{Direction, MediaKind};
use str0m::IceCreds;
use tower::ServiceExt;

struct Harness {
    state: AppState,
    commands: Receiver<TxCommand>,
    _demux: Receiver<DemuxCommand>,
}

fn harness(max_viewers: usize) -> Harness {
    let (cmd_tx, commands) = crossbeam_channel::bounded(64);
    let (demux, demux_rx) = crossbeam_channel::bounded(64);
    let state = AppState(Arc::new(Shared {
        directory: Arc::new(StreamDirectory::new([(
            "live".to_string(),
            vec!["tone".to_string()],
        )])),
        auth: Default::default(),
        max_publishers: 8,
        candidates: vec!["127.0.0.1:8189".parse().unwrap()],
        ice_servers: vec![
            "stun:stun.example.org:3478".parse::<IceServer>().unwrap(),
            "turn:turn.example.org:3478?transport=udp,user,secret"
                .parse::<IceServer>()
                .unwrap(),
        ],
        max_viewers,
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

fn router(h: &Harness) -> Router {
    app(h.state.clone())
}

/// A real offer from a str0m client: one recvonly audio m-line.
fn offer(with_audio: bool) -> String {
    let kind = if with_audio {
        MediaKind::Audio
    } else {
        MediaKind::Video
    };
    offers::media(&[(kind, Direction::RecvOnly)])
}

async fn send(r: &Router, req: Request<Body>) -> Response<Body> {
    r.clone().oneshot(req).await.unwrap()
}

fn post(uri: &str, ct: &str, body: String) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .unwrap()
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

/// POSTs a valid offer, returns (location, etag, answer).
async fn create(r: &Router) -> (String, String, String) {
    let res = send(r, post("/live/whep", "application/sdp", offer(true))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let loc = hdr(&res, "location").unwrap().to_string();
    let etag = hdr(&res, "etag").unwrap().to_string();
    (loc, etag, body_text(res).await)
}

#[tokio::test]
async fn post_creates_a_session() {
    let h = harness(10);
    let r = router(&h);
    let res = send(&r, post("/live/whep", "application/sdp", offer(true))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(hdr(&res, "content-type"), Some("application/sdp"));
    let loc = hdr(&res, "location").unwrap().to_string();
    let id = loc
        .strip_prefix("/live/whep/")
        .expect("session under the endpoint");
    assert_eq!(id.len(), 32, "128-bit id");
    let etag = hdr(&res, "etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag != "\"*\"",
        "{etag}"
    );
    let links: Vec<_> = res.headers().get_all("link").iter().collect();
    assert_eq!(
        links.len(),
        3,
        "two ICE servers and the event stream: {links:?}"
    );
    assert_eq!(
        links[2].to_str().unwrap(),
        format!(
            "<{loc}/events>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; \
             events=\"active,inactive,viewercount\""
        )
    );
    assert!(links[1]
        .to_str()
        .unwrap()
        .contains("username=\"user\"; credential=\"secret\"; credential-type=\"password\""));
    let answer = body_text(res).await;
    assert!(answer.contains("stereo=1"), "{answer}");
    assert!(answer.contains("sprop-stereo=1"), "{answer}");
    assert!(answer.contains("a=candidate:") && answer.contains("127.0.0.1 8189 typ host"));
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(matches!(
        h.commands.try_recv(),
        Ok(TxCommand::AddViewer { .. })
    ));
    // Two sessions get two different ids.
    let (loc2, _, _) = create(&r).await;
    assert_ne!(loc, loc2);
}

#[tokio::test]
async fn post_errors() {
    let h = harness(1);
    let r = router(&h);
    let res = send(&r, post("/live/whep", "text/plain", offer(true))).await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = send(&r, post("/live/whep", "application/sdp", "hello".into())).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(hdr(&res, "content-type"), Some("application/problem+json"));
    let res = send(&r, post("/live/whep", "application/sdp", offer(false))).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = send(&r, post("/nope/whep", "application/sdp", offer(true))).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // max_viewers = 1: the second viewer is refused with Retry-After.
    create(&r).await;
    let res = send(&r, post("/live/whep", "application/sdp", offer(true))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(hdr(&res, "retry-after").is_some());
}

#[tokio::test]
async fn options_get_head() {
    let h = harness(10);
    let r = router(&h);
    let res = send(
        &r,
        Request::options("/live/whep").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(res.status().is_success());
    assert_eq!(hdr(&res, "accept-post"), Some("application/sdp"));
    let methods = hdr(&res, "access-control-allow-methods").unwrap();
    for m in ["POST", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{m} in {methods}");
    }
    assert_eq!(hdr(&res, "access-control-allow-origin"), Some("*"));
    assert!(hdr(&res, "access-control-expose-headers")
        .unwrap()
        .contains("Location"));
    assert!(
        hdr(&res, "link").is_some(),
        "plain OPTIONS carries ice servers"
    );
    let preflight = Request::options("/live/whep")
        .header("access-control-request-method", "POST")
        .header("origin", "http://example.org")
        .body(Body::empty())
        .unwrap();
    let res = send(&r, preflight).await;
    assert!(res.status().is_success());
    assert!(hdr(&res, "link").is_none(), "no ice servers on a preflight");
    for m in ["GET", "HEAD"] {
        let req = Request::builder()
            .method(m)
            .uri("/live/whep")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&r, req).await.status(), StatusCode::OK, "{m}");
    }
}

#[tokio::test]
async fn delete_and_patch() {
    let h = harness(10);
    let r = router(&h);
    let (loc, etag, _) = create(&r).await;
    let _ = h.commands.try_recv();

    let frag = "a=ice-ufrag:{U}\r\na=ice-pwd:{P}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5001 typ host\r\n";
    let patch = |ct: &str, if_match: Option<&str>, body: String| {
        let mut b = Request::patch(loc.as_str()).header(header::CONTENT_TYPE, ct);
        if let Some(m) = if_match {
            b = b.header(header::IF_MATCH, m);
        }
        b.body(Body::from(body)).unwrap()
    };
    // The session's current client ufrag, from the offer the harness sent.
    let trickle = frag.replace("a=ice-ufrag:{U}\r\na=ice-pwd:{P}\r\n", "");
    let res = send(&r, patch("application/sdp", Some(&etag), trickle.clone())).await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let ct = "application/trickle-ice-sdpfrag";
    let res = send(&r, patch(ct, None, trickle.clone())).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_REQUIRED);
    let res = send(&r, patch(ct, Some("\"nope\""), trickle.clone())).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let res = send(&r, patch(ct, Some(&etag), trickle)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(matches!(
        h.commands.try_recv(),
        Ok(TxCommand::RemoteCandidate { .. })
    ));

    // ICE restart: new credentials. With the old ETag instead of "*": 412.
    let restart = frag
        .replace("{U}", "newU")
        .replace("{P}", "newpasswordnewpassword12");
    let res = send(&r, patch(ct, Some(&etag), restart.clone())).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    // With "*": the TX thread (played here by a thread) answers with new credentials.
    let commands = h.commands.clone();
    let tx_double = std::thread::spawn(move || {
        if let Ok(TxCommand::IceRestart { reply, remote, .. }) =
            commands.recv_timeout(std::time::Duration::from_secs(5))
        {
            assert_eq!(remote.ufrag, "newU");
            let _ = reply.send(Some(IceCreds::new()));
        }
    });
    let res = send(&r, patch(ct, Some("*"), restart)).await;
    tx_double.join().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let new_etag = hdr(&res, "etag").unwrap().to_string();
    assert_ne!(new_etag, etag);
    let body = body_text(res).await;
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:"),
        "{body}"
    );
    assert!(body.contains("a=candidate:"), "{body}");

    // The quoted form `If-Match: "*"`, as the WHIP/WHEP texts write it, restarts too.
    let again = frag
        .replace("{U}", "newV")
        .replace("{P}", "otherpasswordotherpass12");
    let commands = h.commands.clone();
    let tx_double = std::thread::spawn(move || {
        // Past the candidates the first restart trickled.
        while let Ok(c) = commands.recv_timeout(std::time::Duration::from_secs(5)) {
            if let TxCommand::IceRestart { reply, remote, .. } = c {
                assert_eq!(remote.ufrag, "newV");
                let _ = reply.send(Some(IceCreds::new()));
                break;
            }
        }
    });
    let res = send(&r, patch(ct, Some("\"*\""), again)).await;
    tx_double.join().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(hdr(&res, "etag").unwrap(), new_etag);

    let del = |uri: &str| Request::delete(uri).body(Body::empty()).unwrap();
    assert_eq!(send(&r, del(&loc)).await.status(), StatusCode::OK);
    assert!(h
        .commands
        .try_iter()
        .any(|c| matches!(c, TxCommand::RemoveViewer { .. })));
    assert_eq!(
        send(&r, del("/live/whep/0123456789abcdef0123456789abcdef"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
