//! HTTPS signalling: the server started with a certificate the test makes serves WHEP over
//! `https://127.0.0.1`, to curl trusting that certificate (`--cacert`), from flags (the
//! library's `Config`) and from a config file's `[tls]` block (the binary); bad certificate
//! or key files stop start-up with an error naming the file, never a panic.
//!
//! Without curl these tests print SKIPPED and pass, unless `CI` or
//! `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/https_cert.rs"]
mod https_cert;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mixcast::config::{Config, TlsConfig};
use mixcast::server::{Server, StartError};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// What curl got: status, response headers (lower-cased names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn interop_required() -> bool {
    let ci = std::env::var("CI").unwrap_or_default();
    let ci = !ci.is_empty() && ci != "false" && ci != "0";
    ci || std::env::var("MIXCAST_REQUIRE_INTEROP").as_deref() == Ok("1")
}

/// True if curl runs; else prints SKIPPED (or panics when interop is required).
fn curl_or_skip(test: &str) -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if interop_required() {
        panic!("{test}: interop required (CI or MIXCAST_REQUIRE_INTEROP=1) but curl is missing");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED, no curl (set MIXCAST_REQUIRE_INTEROP=1 to make this a failure)"
    );
    false
}

/// Runs curl against `url` trusting only `ca` (no `-k`: the certificate must verify),
/// with a 10 s bound, and parses what came back.
fn curl(ca: &Path, method: &str, url: &str, body: Option<(&str, &str)>) -> Result<Reply, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let headers = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--request", method, "--dump-header"])
        .arg(&headers)
        .args(["--write-out", "\n%{http_code}"]);
    if let Some((content_type, text)) = body {
        let file = dir.path().join("body");
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        cmd.args(["--header", &format!("Content-Type: {content_type}")])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
    }
    let out = cmd.arg(url).output().map_err(|e| format!("curl: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "curl {method} {url}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            stdout
        ));
    }
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let status = status
        .trim()
        .parse()
        .map_err(|_| format!("curl's status {status:?}"))?;
    let headers = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A str0m client's offer (recvonly audio) and the `Rtc` that must accept the answer.
fn offer() -> (Rtc, str0m::change::SdpPendingOffer, String) {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:5000".parse().expect("an address"), "udp")
            .expect("a host candidate"),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    (rtc, pending, offer.to_sdp_string())
}

/// POSTs a str0m offer to `base`/live/whep with curl: 201, an `application/sdp` answer the
/// offering `Rtc` accepts, with our candidate and stereo Opus; then DELETEs the session.
/// Returns the answer.
fn whep_round_trip(ca: &Path, base: &str) -> Result<String, String> {
    let (mut rtc, pending, sdp) = offer();
    let reply = curl(
        ca,
        "POST",
        &format!("{base}/live/whep"),
        Some(("application/sdp", &sdp)),
    )?;
    if reply.status != 201 {
        return Err(format!("POST: {} {}", reply.status, reply.body));
    }
    if reply.header("content-type") != Some("application/sdp") {
        return Err(format!(
            "POST: Content-Type {:?}",
            reply.header("content-type")
        ));
    }
    let answer = SdpAnswer::from_sdp_string(&reply.body)
        .map_err(|e| format!("the answer is not SDP ({e}): {}", reply.body))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("str0m refuses the answer ({e}): {}", reply.body))?;
    if !reply.body.contains("a=candidate:") || !reply.body.contains("stereo=1") {
        return Err(format!(
            "the answer lacks a candidate or stereo: {}",
            reply.body
        ));
    }
    let location = reply
        .header("location")
        .ok_or("POST: no Location header")?
        .to_string();
    let deleted = curl(ca, "DELETE", &format!("{base}{location}"), None)?;
    if deleted.status != 200 {
        return Err(format!("DELETE {location}: {}", deleted.status));
    }
    Ok(reply.body)
}

/// The library's server with `tls` set (what `--tls-cert`/`--tls-key` resolve to) serves
/// WHEP to curl over HTTPS; the session it creates is live until curl DELETEs it.
#[test]
fn curl_whep_post_over_https_gets_201_and_an_answer() {
    if !curl_or_skip("curl_whep_post_over_https_gets_201_and_an_answer") {
        return;
    }
    let cert = https_cert::loopback();
    let server = Server::start(Config {
        tls: Some(TlsConfig {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        }),
        ..Config::loopback_ephemeral()
    })
    .expect("the HTTPS server starts");
    let base = format!("https://{}", server.http_addr());

    let (_rtc, _pending, sdp) = offer();
    let reply = curl(
        &cert.cert,
        "POST",
        &format!("{base}/live/whep"),
        Some(("application/sdp", &sdp)),
    )
    .expect("curl POSTs over HTTPS");
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(server.live_sessions(), 1, "the POST made a session");
    let location = reply.header("location").expect("a Location").to_string();
    let deleted = curl(&cert.cert, "DELETE", &format!("{base}{location}"), None).unwrap();
    assert_eq!(deleted.status, 200);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.live_sessions() != 0 {
        assert!(Instant::now() < deadline, "the session outlived its DELETE");
        std::thread::sleep(Duration::from_millis(20));
    }

    let answer = whep_round_trip(&cert.cert, &base).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("answer over HTTPS:\n{answer}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = curl(
        &cert.cert,
        "GET",
        &format!("http://{}/api/streams", server.http_addr()),
        None,
    );
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP was served on the HTTPS port"
    );
    server.shutdown();
}

/// The binary started from a config file whose `[tls]` block names the certificate (the
/// README's recipe) logs an https:// address and serves the stream list and WHEP there.
#[test]
fn config_file_tls_block_serves_https() {
    if !curl_or_skip("config_file_tls_block_serves_https") {
        return;
    }
    let cert = https_cert::loopback();
    let config = cert.dir.path().join("mixcast.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1\"\nhttp_port = 0\nudp_port = 0\n\n[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.cert.display().to_string(),
            cert.key.display().to_string()
        ),
    )
    .expect("write the config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "mixcast=info")
        .env_remove("MIXCAST_TLS_CERT")
        .env_remove("MIXCAST_TLS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // The address from the start-up log line "signalling on https://ADDR/".
    let (found, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("signalling on https://").nth(1) {
                let addr = rest.split('/').next().unwrap_or_default().to_string();
                let _ = found.send(addr);
            }
        }
    });
    let addr = lines.recv_timeout(Duration::from_secs(15));
    let result = (|| -> Result<(), String> {
        let addr: SocketAddr = addr
            .map_err(|_| "no \"signalling on https://\" line within 15 s".to_string())?
            .parse()
            .map_err(|e| format!("the logged address: {e}"))?;
        let base = format!("https://{addr}");
        let streams = curl(&cert.cert, "GET", &format!("{base}/api/streams"), None)?;
        if streams.status != 200 || !streams.body.contains("\"live\"") {
            return Err(format!("/api/streams: {} {}", streams.status, streams.body));
        }
        whep_round_trip(&cert.cert, &base).map(|_| ())
    })();
    let _ = child.kill();
    let status = child.wait().expect("the binary is reaped");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(
        !stderr.contains("panicked"),
        "the server panicked: {stderr}"
    );
    if let Err(e) = result {
        panic!("{e} (exit {status}; stderr: {stderr})");
    }
}

/// `Server::start` refuses a missing file, a file that is not PEM, and a key that is not
/// the certificate's, with an error naming the file; no panic, and no thread left running.
#[test]
fn bad_tls_files_stop_start_up_with_the_file_named() {
    let good = https_cert::loopback();
    let other = https_cert::loopback();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let cases = [
        (missing.clone(), good.key.clone(), "missing-cert.pem"),
        (junk.clone(), good.key.clone(), "no PEM certificate"),
        (good.cert.clone(), junk.clone(), "no PEM private key"),
        (good.key.clone(), good.key.clone(), "no PEM certificate"),
        (
            good.cert.clone(),
            other.key.clone(),
            "not the certificate's",
        ),
    ];
    for (cert, key, wanted) in cases {
        let config = Config {
            tls: Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            }),
            ..Config::loopback_ephemeral()
        };
        match Server::start(config) {
            Err(e @ StartError::Config(_)) => {
                let text = e.to_string();
                assert!(text.contains(wanted), "{cert:?}/{key:?}: {text}");
            }
            Err(e) => panic!("{cert:?}/{key:?}: the wrong error: {e}"),
            Ok(_) => panic!("{cert:?}/{key:?}: the server started"),
        }
    }
}
