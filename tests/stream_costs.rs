//! What streams cost when nobody uses them, against the real binary on 127.0.0.1: streams
//! left behind by 40 publishers (real WHIP sessions, our client, POST then DELETE) cost no
//! Opus encodes and leave the directory; `--max-streams` refuses one stream too many with
//! 503 + Retry-After (problem+json) and logs it once.

#[path = "common/binary.rs"]
mod binary;

use binary::ServerBinary;
use mixcast::client::load::thread_cpu_ns;
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::engine::egress::UNWATCHED_STREAM_GRACE;
use mixcast::media::sources::ToneSource;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Encodes per second and the TX thread's share of a core over `window`.
fn encode_rate(server: &ServerBinary, window: Duration) -> (f64, f64) {
    let tx_cpu = || -> u64 {
        thread_cpu_ns(server.pid())
            .map(|t| {
                t.values()
                    .filter(|(name, _)| name.starts_with("mixcast-tx"))
                    .map(|(_, ns)| ns)
                    .sum()
            })
            .unwrap_or(0)
    };
    let (e0, c0, t0) = (
        server.metric("mixcast_mixer_encodes_total"),
        tx_cpu(),
        Instant::now(),
    );
    std::thread::sleep(window);
    let (e1, c1) = (server.metric("mixcast_mixer_encodes_total"), tx_cpu());
    let secs = t0.elapsed().as_secs_f64();
    ((e1 - e0) / secs, (c1 - c0) as f64 / 1e9 / secs)
}

fn publish(server: &ServerBinary, stream: &str) -> Publisher {
    Publisher::start(PublishOptions::new(
        format!("http://{}/{stream}/whip", server.http),
        Box::new(ToneSource::sine(1000, 1000, 0.2)),
        Duration::from_secs(30),
    ))
    .unwrap_or_else(|e| panic!("publishing to {stream}: {e}"))
}

/// 40 publishers each create a stream, send a tone for 100 ms and DELETE their session.
/// Afterwards the server encodes what the default stream `live` alone needs (before the
/// fix: every stream left behind was mixed and encoded every 20 ms for 30 s), and once
/// [`UNWATCHED_STREAM_GRACE`] has passed the directory lists `live` only.
#[test]
fn streams_left_behind_cost_no_encodes_and_go() {
    let server = ServerBinary::start(&[], &[]);
    let (before, cpu_before) = encode_rate(&server, Duration::from_secs(3));
    // `live` plays the test signal: 800 ms of tone a second, its 200 ms of silence are
    // partly sent as the kept silence packet.
    assert!(
        (30.0..=52.0).contains(&before),
        "live alone: {before:.1} encodes/s"
    );

    // Four at a time, so that most of the 40 streams exist together within the grace.
    let churn_started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..4 {
            let server = &server;
            scope.spawn(move || {
                for i in (w..40).step_by(4) {
                    let p = publish(server, &format!("churn-{i}"));
                    std::thread::sleep(Duration::from_millis(100));
                    let report = p.stop().expect("the publisher ends with a DELETE");
                    assert!(report.packets_sent >= 3, "churn-{i}: {report:?}");
                }
            });
        }
    });
    let churn = churn_started.elapsed();
    // The last publishers' fade-out and the encoder settling on silence: 5 frames.
    std::thread::sleep(Duration::from_millis(200));
    let left = server.stream_names().len() - 1;
    let (after, cpu_after) = encode_rate(&server, Duration::from_secs(3));
    println!(
        "live alone: {before:.1} encodes/s, TX thread {:.1}% of a core; with {left} streams \
         left behind ({churn:.1?} of churn): {after:.1} encodes/s, TX {:.1}%",
        cpu_before * 100.0,
        cpu_after * 100.0
    );
    assert!(left > 0, "the measurement must see streams left behind");
    assert!(
        after <= before * 1.1 + 3.0,
        "{left} streams left behind: {after:.1} encodes/s, live alone {before:.1}"
    );

    let deadline = Instant::now() + UNWATCHED_STREAM_GRACE + Duration::from_secs(3);
    loop {
        let names = server.stream_names();
        if names == ["live"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "streams still listed {:?} after the grace: {names:?}",
            UNWATCHED_STREAM_GRACE
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A raw HTTP POST of an offer; the status, headers (lower-case names) and body.
fn post_offer(server: &ServerBinary, path: &str) -> (u16, String, String) {
    let offer = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ffmpeg_offer.sdp"
    ))
    .expect("the fixture");
    let mut s = TcpStream::connect(server.http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        server.http,
        offer.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `--max-streams 2`: two publishers make two streams; a POST that would make a third gets
/// 503, `Retry-After` and a problem+json body naming the cap, while a POST to an existing
/// stream is answered; five refusals make one log line.
#[test]
fn max_streams_refuses_one_stream_too_many() {
    let server = ServerBinary::start(&["--max-streams", "2"], &[]);
    let _a = publish(&server, "a");
    let _b = publish(&server, "b");
    for _ in 0..5 {
        let (status, head, body) = post_offer(&server, "/c/whip");
        assert_eq!(status, 503, "{head}{body}");
        assert!(head.contains("\r\nretry-after: 10"), "{head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON");
        assert_eq!(problem["status"], 503, "{body}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("at most 2 streams"), "{detail}");
    }
    let (status, _, body) = post_offer(&server, "/a/whip");
    assert_eq!(
        status, 201,
        "a publisher may join an existing stream: {body}"
    );
    // The configured stream does not count, and stays open to publishers.
    let (status, _, body) = post_offer(&server, "/live/whip");
    assert_eq!(status, 201, "{body}");
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    let lines = log.lines().filter(|l| l.contains("--max-streams")).count();
    assert_eq!(lines, 1, "one line for five refusals:\n{log}");
    assert_eq!(server.stream_names(), ["a", "b", "live"]);
}
