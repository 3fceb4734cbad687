//! Server-sent events (issue 15), read by curl, a real HTTP client, from a real server on
//! 127.0.0.1:
//!
//! - `GET /api/events`: the present first (`streams`, `active`/`inactive`, `viewercount`
//!   per stream), then changes as they happen: a viewer joining and leaving moves
//!   `viewercount`, a publisher creating a stream makes it appear in `streams` and go
//!   `active`; a stream behind a read token is not shown without the token.
//! - The WHEP extension: the answer's `Link` names the session's event stream; a POST of
//!   the event names gets 201 and its URL; that stream carries `viewercount` in the
//!   extension's shape and ends when the session does. Bad subscriptions get clear errors.

#[path = "common/offers.rs"]
mod offers;
#[path = "common/python.rs"]
mod python;
#[path = "common/raw_http.rs"]
mod raw_http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mixcast::client::whep::{play, PlayOptions};
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::config::{AuthConfig, Config, TokenRules};
use mixcast::media::sources::ToneSource;
use mixcast::server::Server;
use mixcast::signal::auth::Secret;
use raw_http::{exchange, request};
use serde_json::Value;
use str0m::media::Direction;

/// Whether curl runs; else `python::unavailable` (SKIPPED, or a failure under CI).
fn curl_or_skip(test: &str) -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        python::unavailable(test, "no curl");
    }
    found
}

/// One event as read off the stream.
#[derive(Debug, Clone)]
struct Sse {
    kind: String,
    data: Value,
}

/// curl reading an event stream, its events parsed on a thread.
struct Reader {
    child: Child,
    events: mpsc::Receiver<Sse>,
    seen: Vec<Sse>,
}

impl Reader {
    fn open(url: &str, token: Option<&str>) -> Reader {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--no-buffer", "--max-time", "60"]);
        cmd.args(["-H", "Accept: text/event-stream"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let mut child = cmd
            .arg(url)
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        let out = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut kind, mut data) = (String::new(), String::new());
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    let parsed = serde_json::from_str(&data).unwrap_or(Value::Null);
                    let _ = tx.send(Sse {
                        kind: std::mem::take(&mut kind),
                        data: parsed,
                    });
                    data.clear();
                }
            }
        });
        Reader {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for an event of `kind` whose data satisfies `want`; fails with all it saw.
    fn until(&mut self, kind: &str, want: impl Fn(&Value) -> bool) -> Sse {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if e.kind == kind && want(&e.data) {
                        return e;
                    }
                }
                Err(_) => panic!(
                    "no {kind} event as wanted within 10 s; saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Whether the stream ended (curl exited) within `limit`.
    fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn names(streams: &Value) -> Vec<String> {
    streams["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is_stream(name: &'static str) -> impl Fn(&Value) -> bool {
    move |d| d["stream"] == name
}

fn viewers_of(name: &'static str, n: u64) -> impl Fn(&Value) -> bool {
    move |d| d["stream"] == name && d["viewercount"] == n
}

#[test]
fn curl_sees_viewers_and_publishers_come_and_go() {
    if !curl_or_skip("curl_sees_viewers_and_publishers_come_and_go") {
        return;
    }
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let addr = server.http_addr();
    let mut events = Reader::open(&format!("http://{addr}/api/events"), None);

    // The present first.
    let first = events.until("streams", |_| true);
    assert_eq!(names(&first.data), ["live"], "{first:?}");
    events.until("active", is_stream("live"));
    events.until("viewercount", viewers_of("live", 0));

    // A viewer joins and leaves.
    let viewer = std::thread::spawn(move || {
        play(&PlayOptions {
            url: format!("http://{addr}/live/whep"),
            token: None,
            duration: Duration::from_secs(2),
            bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            decode: false,
        })
    });
    events.until("viewercount", viewers_of("live", 1));
    let report = viewer.join().unwrap().expect("the viewer plays");
    assert!(report.packets > 0);
    events.until("viewercount", viewers_of("live", 0));

    // A publisher creates a stream: it is listed, and active.
    let publisher = Publisher::start(PublishOptions::new(
        format!("http://{addr}/mic/whip"),
        Box::new(ToneSource::sine(440, 660, 0.25)),
        Duration::from_secs(30),
    ))
    .expect("the publisher connects");
    let listed = events.until("streams", |d| names(d).contains(&"mic".to_string()));
    assert_eq!(names(&listed.data), ["live", "mic"]);
    events.until("active", is_stream("mic"));
    publisher.stop().expect("the publisher stops");
    events.until("inactive", is_stream("mic"));
    drop(events);
    server.shutdown();
}

#[test]
fn a_stream_behind_a_read_token_is_shown_only_with_it() {
    if !curl_or_skip("a_stream_behind_a_read_token_is_shown_only_with_it") {
        return;
    }
    let server = Server::start(Config {
        auth: AuthConfig {
            read: TokenRules {
                default: vec![Secret::new("see-it").unwrap()],
                ..Default::default()
            },
            ..Default::default()
        },
        ..Config::loopback_ephemeral()
    })
    .expect("server starts");
    let url = format!("http://{}/api/events", server.http_addr());
    let mut without = Reader::open(&url, None);
    let first = without.until("streams", |_| true);
    assert!(names(&first.data).is_empty(), "{first:?}");
    let mut wrong = Reader::open(&url, Some("guess"));
    assert!(names(&wrong.until("streams", |_| true).data).is_empty());
    let mut with = Reader::open(&url, Some("see-it"));
    assert_eq!(names(&with.until("streams", |_| true).data), ["live"]);
    with.until("viewercount", viewers_of("live", 0));
    // Nothing about `live` reached the reader without the token.
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(e) = without.events.try_recv() {
        without.seen.push(e);
    }
    assert!(
        without.seen.iter().all(|e| e.data.get("stream").is_none()),
        "{:#?}",
        without.seen
    );
    server.shutdown();
}

/// POSTs a recvonly offer to `live`; the session URL and the answer's `Link` values.
fn new_viewer(addr: SocketAddr) -> (String, Vec<String>) {
    let offer = offers::audio(Direction::RecvOnly);
    let reply = exchange(
        addr,
        &request(
            "POST",
            "/live/whep",
            &addr.to_string(),
            &[("Content-Type", "application/sdp")],
            offer.as_bytes(),
        ),
        Duration::from_secs(5),
    )
    .expect("answered");
    assert_eq!(reply.status, 201, "{}", reply.text());
    let links = reply
        .headers
        .iter()
        .filter(|(n, _)| n == "link")
        .map(|(_, v)| v.clone())
        .collect();
    (reply.header("location").unwrap().to_string(), links)
}

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> raw_http::Reply {
    exchange(
        addr,
        &request(
            "POST",
            path,
            &addr.to_string(),
            &[("Content-Type", content_type)],
            body.as_bytes(),
        ),
        Duration::from_secs(5),
    )
    .expect("answered")
}

#[test]
fn a_whep_session_subscribes_to_its_events_as_the_extension_says() {
    if !curl_or_skip("a_whep_session_subscribes_to_its_events_as_the_extension_says") {
        return;
    }
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let addr = server.http_addr();
    let (session, links) = new_viewer(addr);
    let events_url = format!("{session}/events");
    let want = format!(
        "<{events_url}>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; \
         events=\"active,inactive,viewercount\""
    );
    assert!(links.contains(&want), "{links:#?} should hold {want}");

    // The subscription: the kinds this server sends among those asked.
    let sub = post(
        addr,
        &events_url,
        "application/json",
        r#"["viewercount","layers"]"#,
    );
    assert_eq!(sub.status, 201, "{}", sub.text());
    let location = sub.header("location").unwrap().to_string();
    assert_eq!(location, format!("{events_url}?events=viewercount"));

    let mut stream = Reader::open(&format!("http://{addr}{location}"), None);
    let first = stream.until("viewercount", |_| true);
    assert_eq!(first.data, serde_json::json!({ "viewercount": 1 }));
    // A second viewer, then it leaves.
    let (other, _) = new_viewer(addr);
    stream.until("viewercount", |d| d["viewercount"] == 2);
    let del = |path: &str| {
        exchange(
            addr,
            &request("DELETE", path, &addr.to_string(), &[], b""),
            Duration::from_secs(5),
        )
        .expect("answered")
        .status
    };
    assert_eq!(del(&other), 200);
    stream.until("viewercount", |d| d["viewercount"] == 1);
    assert!(
        stream.seen.iter().all(|e| e.kind == "viewercount"),
        "only the kind asked for: {:#?}",
        stream.seen
    );
    // The session ends: so does its event stream.
    assert_eq!(del(&session), 200);
    assert!(
        stream.ends_within(Duration::from_secs(5)),
        "the event stream outlived its session"
    );

    // Bad subscriptions.
    let (live, _) = new_viewer(addr);
    let url = format!("{live}/events");
    assert_eq!(
        post(addr, &url, "application/json", "{\"a\":1}").status,
        400
    );
    assert_eq!(
        post(addr, &url, "application/json", r#"["scte35"]"#).status,
        422
    );
    let nosuch = "/live/whep/0123456789abcdef/events";
    assert_eq!(
        post(addr, nosuch, "application/json", r#"["active"]"#).status,
        404
    );
    server.shutdown();
}
