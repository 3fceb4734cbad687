//! Hostile HTTP and SDP input against a real server on 127.0.0.1, over raw TCP: malformed
//! routes, names, queries, bodies, offers, origins and HTTP framing. Every case asserts the
//! status, the RFC 9457 problem+json shape of an error, that the body holds no internal
//! detail (str0m's text, memory addresses, panics) and echoes input only truncated, and that
//! the answer came within a bound. At the end the server still serves a real viewer who
//! hears the test signal (440 Hz left, 660 Hz right), and nothing panicked.

#[path = "common/live_signal.rs"]
mod live_signal;
#[path = "common/raw_http.rs"]
mod raw_http;

#[path = "common/offers.rs"]
mod offers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::server::Server;
use mixcast::signal::listen::HttpLimits;
use raw_http::{exchange, request, Reply};
use str0m::media::Direction;

/// Longest any one case may take (the server's timeouts are 1 s here).
const BOUND: Duration = Duration::from_secs(5);
/// What no error body may contain.
const INTERNAL: [&str; 9] = [
    "PointerOffset",
    "0x7f",
    "str0m",
    "Parse error",
    "panicked",
    "RtcError",
    "SdpError",
    "src/",
    "backtrace",
];
/// Longest error body: a stream name is echoed at most 64 characters.
const MAX_ERROR_BODY: usize = 600;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// An offer from a str0m client with one audio m-line (`send`: a publisher's).
fn offer(send: bool) -> String {
    offers::audio(if send {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    })
}

/// `sdp` with every line starting with `prefix` replaced by `with` (none: removed).
fn replace_line(sdp: &str, prefix: &str, with: Option<&str>) -> String {
    let mut out = String::new();
    for line in sdp.split_inclusive("\r\n") {
        if line.starts_with(prefix) {
            if let Some(w) = with {
                out.push_str(w);
                out.push_str("\r\n");
            }
        } else {
            out.push_str(line);
        }
    }
    assert_ne!(out, sdp, "{prefix} not in the offer");
    out
}

/// One hostile request and what must come back.
struct Case {
    name: String,
    bytes: Vec<u8>,
    /// Acceptable statuses.
    want: Vec<u16>,
    /// The answer must be problem+json (false: hyper's own answer to broken framing, which
    /// comes before any router, or a success).
    problem: bool,
}

struct Cases {
    host: String,
    list: Vec<Case>,
}

impl Cases {
    fn add(&mut self, name: &str, bytes: Vec<u8>, want: &[u16], problem: bool) {
        self.list.push(Case {
            name: name.into(),
            bytes,
            want: want.to_vec(),
            problem,
        });
    }

    /// A request through [`request`], expecting problem+json with one of `want`.
    fn http(
        &mut self,
        name: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        want: &[u16],
    ) {
        let bytes = request(method, path, &self.host, headers, body);
        self.add(name, bytes, want, true);
    }

    /// A POST of `sdp` as application/sdp.
    fn sdp(&mut self, name: &str, path: &str, sdp: &str, want: &[u16]) {
        let h = [("Content-Type", "application/sdp")];
        self.http(name, "POST", path, &h, sdp.as_bytes(), want);
    }
}

/// Checks one answer; `Err` says what is wrong.
fn check(case: &Case, reply: &Reply) -> Result<(), String> {
    if !case.want.contains(&reply.status) {
        return Err(format!(
            "status {} (wanted {:?}): {}",
            reply.status,
            case.want,
            reply.text()
        ));
    }
    if reply.elapsed > BOUND {
        return Err(format!("took {:?}", reply.elapsed));
    }
    if case.problem {
        let ct = reply.header("content-type").unwrap_or("");
        if ct != "application/problem+json" {
            return Err(format!("content-type {ct:?}: {}", reply.text()));
        }
        let v: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("not JSON ({e}): {}", reply.text()))?;
        if v["status"] != reply.status || !v["title"].is_string() || !v["detail"].is_string() {
            return Err(format!("not an RFC 9457 problem: {v}"));
        }
        if reply.body.len() > MAX_ERROR_BODY {
            return Err(format!("{} byte body: {}", reply.body.len(), reply.text()));
        }
    }
    let text = reply.text();
    // (An SDP answer names its producer, `o=str0m-…`: only error bodies are checked.)
    if reply.status < 400 {
        return Ok(());
    }
    if let Some(bad) = INTERNAL.iter().find(|w| text.contains(**w)) {
        return Err(format!("internal detail {bad:?} in {text}"));
    }
    Ok(())
}

fn hostile_cases(host: &str, long: &str) -> Vec<Case> {
    let mut c = Cases {
        host: host.to_string(),
        list: Vec::new(),
    };
    let none: &[(&str, &str)] = &[];
    let sdp_ct = [("Content-Type", "application/sdp")];
    let view = offer(false);
    let publish = offer(true);

    // Routes and methods.
    c.http("unknown route", "GET", "/nope", none, b"", &[404]);
    c.http("deep unknown route", "GET", "/a/b/c/d/e", none, b"", &[404]);
    c.http(
        "DELETE an endpoint",
        "DELETE",
        "/live/whep",
        none,
        b"",
        &[405],
    );
    c.http("PUT an endpoint", "PUT", "/live/whip", none, b"", &[405]);
    c.http(
        "PATCH an endpoint",
        "PATCH",
        "/live/whep",
        none,
        b"",
        &[405],
    );
    c.http("POST the page", "POST", "/", none, b"", &[405]);
    c.http(
        "DELETE the list",
        "DELETE",
        "/api/streams",
        none,
        b"",
        &[405],
    );
    c.http("GET a session", "GET", "/live/whep/abc", none, b"", &[405]);
    c.http("unknown method", "BREW", "/live/whep", none, b"", &[405]);
    c.http("POST /metrics", "POST", "/metrics", none, b"x", &[405]);

    // Stream names.
    c.http("non-UTF-8 name", "GET", "/%FF/whip", none, b"", &[400]);
    c.sdp("non-UTF-8 name POST", "/%FF%FE/whip", &publish, &[400]);
    c.sdp("non-UTF-8 viewer name", "/%C3%28/whep", &view, &[400]);
    c.http(
        "10 kB name GET",
        "GET",
        &format!("/{long}/whep"),
        none,
        b"",
        &[404],
    );
    c.sdp(
        "10 kB name WHIP",
        &format!("/{long}/whip"),
        &publish,
        &[404],
    );
    c.sdp("10 kB name WHEP", &format!("/{long}/whep"), &view, &[404]);
    c.http("reserved name api", "GET", "/api/whip", none, b"", &[404]);
    c.http("dot name", "GET", "/.hidden/whip", none, b"", &[404]);
    c.http("NUL in name", "GET", "/a%00b/whip", none, b"", &[404]);
    c.http("slash in name", "GET", "/a%2Fb/whip", none, b"", &[404]);
    c.sdp("unknown stream WHEP", "/nosuch/whep", &view, &[404]);
    c.http(
        "unknown stream GET",
        "GET",
        "/nosuch/whep",
        none,
        b"",
        &[404],
    );

    // Queries.
    for (name, q) in [
        ("gain not a number", "gain=abc"),
        ("gain twice", "gain=1&gain=2"),
        ("gain NaN", "gain=NaN"),
        ("gain negative", "gain=-1"),
        ("gain too large", "gain=5"),
        ("gain infinite", "gain=inf"),
        ("gain overflows", "gain=1e40"),
        ("gain not UTF-8", "gain=%FF"),
        ("gain empty", "gain="),
    ] {
        c.sdp(name, &format!("/mic/whip?{q}"), &publish, &[400]);
    }

    // Content types and bodies.
    c.http(
        "text/plain offer",
        "POST",
        "/live/whep",
        &[("Content-Type", "text/plain")],
        view.as_bytes(),
        &[415],
    );
    c.http(
        "no content type",
        "POST",
        "/live/whep",
        none,
        view.as_bytes(),
        &[415],
    );
    c.http(
        "JSON to WHIP",
        "POST",
        "/mic/whip",
        &[("Content-Type", "application/json")],
        b"{}",
        &[415],
    );
    c.http(
        "declared 1 MB body",
        "POST",
        "/live/whep",
        &[
            ("Content-Type", "application/sdp"),
            ("Content-Length", "1000000"),
        ],
        b"v=0\r\n",
        &[413],
    );
    let mut big = b"a=x:".to_vec();
    big.resize(200 * 1024, b'y');
    c.http("200 kB body", "POST", "/live/whep", &sdp_ct, &big, &[413]);
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    c.http(
        "200 kB chunked body",
        "POST",
        "/live/whep",
        &[
            ("Content-Type", "application/sdp"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked,
        &[413],
    );
    c.http(
        "bad chunk size",
        "POST",
        "/live/whep",
        &[
            ("Content-Type", "application/sdp"),
            ("Transfer-Encoding", "chunked"),
        ],
        b"zz\r\nhello\r\n0\r\n\r\n",
        &[400],
    );
    c.http(
        "offer not UTF-8",
        "POST",
        "/live/whep",
        &sdp_ct,
        b"v=0\r\n\xff\xfe\r\n",
        &[400],
    );
    c.sdp("empty offer", "/live/whep", "", &[400]);
    c.sdp("hello", "/live/whep", "hello", &[400]);
    c.sdp("v=0 alone", "/live/whep", "v=0\r\n", &[400, 422]);
    c.sdp(
        "not SDP lines",
        "/live/whep",
        "v=0\r\nhello world\r\n",
        &[400],
    );
    c.sdp(
        "broken o= line",
        "/live/whep",
        "v=0\r\no=garbage\r\ns=-\r\nt=0 0\r\n",
        &[400, 422],
    );
    c.sdp(
        "half an offer",
        "/live/whep",
        &view[..view.len() / 2],
        &[400, 422],
    );
    c.sdp(
        "offer with NUL byte",
        "/live/whep",
        &view.replacen("s=-", "s=\0", 1),
        &[400],
    );
    let long_line = format!("{view}a=x-junk:{}\r\n", "z".repeat(100_000));
    // Under the body limit and well-formed: answered like any offer.
    let h = [("Content-Type", "application/sdp")];
    let b = request("POST", "/live/whep", host, &h, long_line.as_bytes());
    c.add("100 kB attribute", b, &[201, 400, 422], false);
    c.sdp(
        "m= port not a number",
        "/live/whep",
        &view.replacen("m=audio 9 ", "m=audio abc ", 1),
        &[400, 422],
    );

    // Offers that cannot work.
    c.sdp(
        "NUL in ice-pwd",
        "/live/whep",
        &replace_line(
            &view,
            "a=ice-pwd:",
            Some("a=ice-pwd:abcdefghij\0klmnopqrstuvwx"),
        ),
        &[400, 422],
    );
    c.sdp(
        "space in ice-ufrag",
        "/mic/whip",
        &replace_line(&publish, "a=ice-ufrag:", Some("a=ice-ufrag:ab cd")),
        &[400, 422],
    );
    c.sdp(
        "empty ice-pwd",
        "/live/whep",
        &replace_line(&view, "a=ice-pwd:", Some("a=ice-pwd:")),
        &[400, 422],
    );
    c.sdp(
        "300-char ice-ufrag",
        "/live/whep",
        &replace_line(
            &view,
            "a=ice-ufrag:",
            Some(&format!("a=ice-ufrag:{}", "a".repeat(300))),
        ),
        &[400, 422],
    );
    c.sdp(
        "m=audio 0 only (viewer)",
        "/live/whep",
        &view.replacen("m=audio 9 ", "m=audio 0 ", 1),
        &[400, 422],
    );
    c.sdp(
        "m=audio 0 only (publisher)",
        "/mic/whip",
        &publish.replacen("m=audio 9 ", "m=audio 0 ", 1),
        &[400, 422],
    );
    c.sdp(
        "fingerprint md7",
        "/live/whep",
        &view.replace("a=fingerprint:sha-256", "a=fingerprint:md7"),
        &[400, 422],
    );
    c.sdp(
        "fingerprint bad hex",
        "/live/whep",
        &replace_line(&view, "a=fingerprint:", Some("a=fingerprint:sha-256 ZZ:00")),
        &[400, 422],
    );
    c.sdp(
        "no fingerprint",
        "/mic/whip",
        &replace_line(&publish, "a=fingerprint:", None),
        &[400, 422],
    );
    c.sdp(
        "no audio (viewer)",
        "/live/whep",
        &view.replacen("m=audio ", "m=text ", 1),
        &[400, 422],
    );
    let two = view.clone() + &view[view.find("m=audio").unwrap()..];
    c.sdp("two audio sections", "/live/whep", &two, &[400, 422]);
    c.sdp(
        "no Opus",
        "/live/whep",
        &view.replace("opus/48000", "PCMU/8000"),
        &[400, 422],
    );

    // Origins: loopback trust is not for foreign pages.
    let evil = |extra: &[(&'static str, &'static str)]| {
        let mut h = vec![("Content-Type", "application/sdp")];
        h.extend_from_slice(extra);
        h
    };
    c.http(
        "foreign Origin WHIP",
        "POST",
        "/mic/whip",
        &evil(&[("Origin", "https://evil.example")]),
        publish.as_bytes(),
        &[403],
    );
    c.http(
        "Origin null WHIP",
        "POST",
        "/mic/whip",
        &evil(&[("Origin", "null")]),
        publish.as_bytes(),
        &[403],
    );
    c.http(
        "Origin garbage WHIP",
        "POST",
        "/mic/whip",
        &evil(&[("Origin", "\u{1}\u{2}")]),
        publish.as_bytes(),
        &[403, 400],
    );
    // (hyper refuses control characters in a header value itself: a bare 400.)
    c.list.last_mut().unwrap().problem = false;
    let rebind = format!("http://evil.example:{}", host.rsplit(':').next().unwrap());
    let rebind_host = format!("evil.example:{}", host.rsplit(':').next().unwrap());
    let mut bytes = request(
        "POST",
        "/mic/whip",
        &rebind_host,
        &[("Content-Type", "application/sdp"), ("Origin", &rebind)],
        publish.as_bytes(),
    );
    c.add(
        "DNS rebinding WHIP",
        std::mem::take(&mut bytes),
        &[403],
        true,
    );
    c.http(
        "foreign WHIP preflight",
        "OPTIONS",
        "/mic/whip",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
        &[403],
    );
    c.http(
        "foreign WHIP preflight asking PNA",
        "OPTIONS",
        "/mic/whip",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Private-Network", "true"),
        ],
        b"",
        &[403],
    );

    // Sessions.
    c.http(
        "PATCH unknown session",
        "PATCH",
        "/live/whep/0123456789abcdef",
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", "*"),
        ],
        b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
        &[404],
    );
    c.http(
        "PATCH wrong type",
        "PATCH",
        "/live/whep/0123456789abcdef",
        &[("Content-Type", "text/plain")],
        b"x",
        &[415],
    );
    c.http(
        "DELETE unknown session",
        "DELETE",
        "/live/whep/0123456789abcdef",
        none,
        b"",
        &[404],
    );
    c.http(
        "DELETE long id",
        "DELETE",
        &format!("/live/whep/{long}"),
        none,
        b"",
        &[404],
    );

    // Broken HTTP framing: hyper answers these itself, before any router (a bare 400 or
    // 431, or closing), and must not hang.
    let raw = |s: &str| s.as_bytes().to_vec();
    c.add(
        "garbage request line",
        raw("GARBAGE\r\n\r\n"),
        &[400],
        false,
    );
    c.add(
        "header without colon",
        raw("GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
        &[400],
        false,
    );
    c.add(
        "negative Content-Length",
        raw("POST /live/whep HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        &[400],
        false,
    );
    c.add(
        "two Content-Lengths",
        raw("POST /live/whep HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"),
        &[400],
        false,
    );
    c.add(
        "100 kB header",
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(100_000)
        )
        .into_bytes(),
        &[200, 431, 400],
        false,
    );
    c.add(
        "HTTP/9.9",
        raw("GET / HTTP/9.9\r\nHost: x\r\n\r\n"),
        &[400, 505],
        false,
    );
    c.add(
        "HTTP/1.0 without Host, unknown route",
        raw("GET /nope HTTP/1.0\r\n\r\n"),
        &[404],
        true,
    );
    c.list
}

#[test]
fn hostile_requests_get_clear_bounded_answers_and_the_server_keeps_serving() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    let server = Server::start(Config {
        http: HttpLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        },
        ..Config::loopback_ephemeral()
    })
    .expect("server starts on loopback");
    let addr: SocketAddr = server.http_addr();
    let host = addr.to_string();
    let long = "n".repeat(10_000);

    let cases = hostile_cases(&host, &long);
    let mut failures = Vec::new();
    for case in &cases {
        match exchange(addr, &case.bytes, BOUND) {
            Ok(reply) => {
                if let Err(e) = check(case, &reply) {
                    failures.push(format!("{}: {e}", case.name));
                } else if case.name.contains("10 kB") && !reply.text().contains('…') {
                    failures.push(format!(
                        "{}: name not truncated: {}",
                        case.name,
                        reply.text()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }

    // Two requests that must succeed beside them: our own page publishing from loopback,
    // and a WHEP preflight from any site with Private Network Access.
    let own = format!("http://{host}");
    let reply = exchange(
        addr,
        &request(
            "POST",
            "/mic/whip",
            &host,
            &[("Content-Type", "application/sdp"), ("Origin", &own)],
            offer(true).as_bytes(),
        ),
        BOUND,
    );
    match reply {
        Ok(r) if r.status == 201 => {}
        other => failures.push(format!("own-origin WHIP POST: {other:?}")),
    }
    let reply = exchange(
        addr,
        &request(
            "OPTIONS",
            "/live/whep",
            &host,
            &[
                ("Origin", "https://player.example"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Private-Network", "true"),
            ],
            b"",
        ),
        BOUND,
    );
    match reply {
        Ok(r)
            if r.status == 204
                && r.header("access-control-allow-origin") == Some("*")
                && r.header("access-control-allow-private-network") == Some("true") => {}
        other => failures.push(format!("WHEP preflight with PNA: {other:?}")),
    }

    // A body shorter than its Content-Length: 408 after the body timeout.
    let reply = exchange(
        addr,
        &request(
            "POST",
            "/live/whep",
            &host,
            &[
                ("Content-Type", "application/sdp"),
                ("Content-Length", "500"),
            ],
            b"v=0\r\n",
        ),
        BOUND,
    );
    match reply {
        Ok(r) => {
            let case = Case {
                name: String::new(),
                bytes: Vec::new(),
                want: vec![408],
                problem: true,
            };
            if let Err(e) = check(&case, &r) {
                failures.push(format!("short body: {e}"));
            }
        }
        Err(e) => failures.push(format!("short body: {e}")),
    }

    let total = cases.len() + 3;
    assert!(total >= 60, "only {total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The server still serves a real viewer the test signal.
    let report = play(&PlayOptions {
        url: format!("http://{addr}/live/whep"),
        token: None,
        duration: Duration::from_secs(3),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    })
    .expect("a real viewer plays after the hostile requests");
    let heard = live_signal::check(&report.pcm, 2.5).expect("the viewer hears 440/660 Hz");
    eprintln!("{total} hostile cases answered; then a viewer heard: {heard}");
    assert_eq!(PANICS.load(Ordering::Relaxed), 0, "something panicked");
    server.shutdown();
}
