//! The log lines a person reads, from a real server on 127.0.0.1.
//!
//! Sessions (issue 15): one line when a session is answered, one when it connects and one
//! when it ends, each naming it by the id in its URL, its stream and the client's address.
//!
//! Refusals (issue 14 item 10): a client refused in a loop cannot flood the log: 40 WHIP POSTs from a page of another origin (403, the loopback rule does
//! not cover foreign pages) and 40 WHEP POSTs without the read token (401) give one log
//! line each, naming the client and the stream; after the interval the next line counts
//! the ones left out. The answers themselves are not throttled: every request gets its
//! status.

#[path = "common/raw_http.rs"]
mod raw_http;
#[path = "common/server_log.rs"]
mod server_log;

#[path = "common/offers.rs"]
mod offers;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::{AuthConfig, Config, TokenRules};
use mixcast::server::Server;
use mixcast::signal::auth::Secret;
use mixcast::signal::refusal::REFUSAL_LOG_EVERY;
use raw_http::{exchange, request};
use server_log::ServerLog;
use str0m::media::Direction;

fn offer(direction: Direction) -> String {
    offers::audio(direction)
}

/// The capture, installed once for the tests of this binary.
fn log() -> &'static ServerLog {
    static LOG: OnceLock<ServerLog> = OnceLock::new();
    LOG.get_or_init(|| ServerLog::install().unwrap())
}

#[test]
fn a_session_is_logged_by_its_url_id_stream_and_address() {
    let log = log();
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let report = play(&PlayOptions {
        url: format!("http://{}/live/whep", server.http_addr()),
        token: None,
        duration: Duration::from_millis(500),
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        decode: false,
    })
    .expect("the viewer plays");
    assert!(report.packets > 0);
    let id = report.session_url.rsplit('/').next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mine = loop {
        let mine: Vec<String> = log
            .lines()
            .into_iter()
            .map(|l| l.message)
            .filter(|m| m.starts_with(&format!("viewer {id} ")))
            .collect();
        if mine.len() >= 3 || Instant::now() > deadline {
            break mine;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(mine.len(), 3, "{mine:#?}");
    // The end line says what was sent; the viewer got all of it but what was in flight
    // when it left. No receiver report came in 0.5 s (str0m reports every 5 s).
    let sent: u64 = mine[2]
        .split(", ")
        .find_map(|part| part.strip_suffix(" packets sent")?.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {:?}", mine[2]));
    assert!(
        sent >= report.packets && sent <= report.packets + 3,
        "the server sent {sent}, the viewer got {}",
        report.packets
    );
    assert!(mine[2].ends_with("no loss report yet"), "{:?}", mine[2]);
    let counted = server.metrics().stream_count("live");
    assert!(counted.sent_packets >= sent, "{counted:?}");
    for (line, says) in mine
        .iter()
        .zip(["answered", "connected after", "ended (closed)"])
    {
        assert!(
            line.contains("of stream \"live\" from 127.0.0.1:") && line.contains(says),
            "{line:?} should say {says:?}"
        );
    }
    server.shutdown();
}

#[test]
fn refusals_in_a_loop_log_one_line_per_interval() {
    let log = log();
    let server = Server::start(Config {
        auth: AuthConfig {
            read: TokenRules {
                default: vec![Secret::new("read-tok").unwrap()],
                ..Default::default()
            },
            ..Default::default()
        },
        ..Config::loopback_ephemeral()
    })
    .expect("server starts");
    let addr = server.http_addr();
    let host = addr.to_string();
    let publish = offer(Direction::SendOnly);
    let view = offer(Direction::RecvOnly);
    let foreign = [
        ("Content-Type", "application/sdp"),
        ("Origin", "https://evil.example"),
    ];
    let sdp = [("Content-Type", "application/sdp")];
    let refuse_all = |n: usize| {
        for _ in 0..n {
            let r = exchange(
                addr,
                &request("POST", "/mic/whip", &host, &foreign, publish.as_bytes()),
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(r.status, 403, "{}", r.text());
            let r = exchange(
                addr,
                &request("POST", "/live/whep", &host, &sdp, view.as_bytes()),
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(r.status, 401, "{}", r.text());
        }
    };
    let started = Instant::now();
    refuse_all(40);
    assert!(
        started.elapsed() < REFUSAL_LOG_EVERY,
        "the first burst must fit in one interval to be judged"
    );
    let refused = |what: &str| {
        log.lines()
            .into_iter()
            .filter(|l| l.message.starts_with(&format!("refused a {what}")))
            .map(|l| l.message)
            .collect::<Vec<_>>()
    };
    let publishers = refused("publisher");
    assert_eq!(publishers.len(), 1, "{publishers:#?}");
    assert!(
        publishers[0].contains("from 127.0.0.1:")
            && publishers[0].contains("\"mic\"")
            && publishers[0].contains("evil.example"),
        "{}",
        publishers[0]
    );
    let viewers = refused("viewer");
    assert_eq!(viewers.len(), 1, "{viewers:#?}");
    assert!(viewers[0].contains("\"live\""), "{}", viewers[0]);

    // The next interval: one more line each, saying how many were left out.
    // (the first line was written a little after `started`: wait a little longer)
    std::thread::sleep(
        (REFUSAL_LOG_EVERY + Duration::from_millis(500)).saturating_sub(started.elapsed()),
    );
    refuse_all(1);
    let publishers = refused("publisher");
    assert_eq!(publishers.len(), 2, "{publishers:#?}");
    assert!(
        publishers[1].contains("(39 more since the last such line)"),
        "{}",
        publishers[1]
    );
    let viewers = refused("viewer");
    assert_eq!(viewers.len(), 2, "{viewers:#?}");
    assert!(
        viewers[1].contains("(39 more since the last such line)"),
        "{}",
        viewers[1]
    );
    server.shutdown();
}

/// A stream a publisher creates is announced once, naming the publisher's session and
/// address (not once by signalling and again by the TX thread), and its removal names it.
#[test]
fn a_stream_created_by_a_publisher_is_logged_once() {
    use mixcast::client::whip::{PublishOptions, Publisher};
    use mixcast::media::sources::ToneSource;
    let log = log();
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let publisher = Publisher::start(PublishOptions::new(
        format!("http://{}/onelog/whip", server.http_addr()),
        Box::new(ToneSource::sine(440, 660, 0.25)),
        Duration::from_secs(30),
    ))
    .expect("the publisher connects");
    let id = publisher
        .session_url()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    publisher.stop().expect("the publisher stops");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (created, removed) = loop {
        let lines: Vec<String> = log.lines().into_iter().map(|l| l.message).collect();
        let created: Vec<String> = lines
            .iter()
            .filter(|m| m.contains("\"onelog\" created") || m.contains("stream created"))
            .cloned()
            .collect();
        let removed: Vec<String> = lines
            .iter()
            .filter(|m| m.starts_with("stream \"onelog\" removed"))
            .cloned()
            .collect();
        if !removed.is_empty() || Instant::now() > deadline {
            break (created, removed);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(created.len(), 1, "{created:#?}");
    assert!(
        created[0].starts_with(&format!(
            "stream \"onelog\" created by publisher {id} from 127.0.0.1:"
        )),
        "{created:?}"
    );
    assert_eq!(removed.len(), 1, "the stream's removal is logged by name");
    server.shutdown();
}
