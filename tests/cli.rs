//! The `mixcast` binary's command line: `--help`, and `--check-config` catching what start-up
//! would refuse (exit status 2 and a message, never a panic).

use std::process::Command;

fn mixcast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .args(args)
        .env_remove("MIXCAST_TX_THREADS")
        .env_remove("MIXCAST_FANOUT")
        .env_remove("MIXCAST_TLS_CERT")
        .env_remove("MIXCAST_TLS_KEY")
        .env_remove("MIXCAST_MAX_PENDING_PER_IP")
        .env_remove("MIXCAST_MAX_STREAMS")
        .env_remove("MIXCAST_METRICS_TOKEN")
        // --check-config binds the ports to see they are free: not the defaults, which a
        // server on this machine may hold.
        .env("MIXCAST_HTTP_PORT", "0")
        .env("MIXCAST_UDP_PORT", "0")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_the_options() {
    let (code, out, _) = mixcast(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--source",
        "--bind",
        "--fanout",
        "--tx-threads",
        "--config",
        "--header-timeout",
        "--body-timeout",
        "--max-connections-per-ip",
        "--log-format",
        "--read-token",
        "--publish-token",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    // The summary describes the whole server, publishers first.
    for words in ["WHIP", "WHEP", "publishers", "every interface", "M4A/AAC"] {
        assert!(out.contains(words), "--help lacks {words:?}:\n{out}");
    }
}

#[test]
fn check_config_opens_the_sources() {
    let (code, out, _) = mixcast(&["--check-config", "--bind", "127.0.0.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration OK"));

    let (code, out, err) = mixcast(&[
        "--check-config",
        "--source",
        "live=file:/nonexistent/mixcast-test.mp3",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(err.contains("nonexistent"), "{err}");

    // A file that is not audio: one line naming it, no decoder library's own log line.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("notes.mp3");
    std::fs::write(&junk, "these are not MPEG frames\n".repeat(100)).unwrap();
    let (code, out, err) = mixcast(&[
        "--check-config",
        "--source",
        &format!("live=file:{}", junk.display()),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("symphonia"), "{out}");
    assert!(!err.contains("symphonia"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("notes.mp3"), "{err}");
}

#[test]
fn tx_threads_out_of_range_is_refused() {
    let (code, _, err) = mixcast(&["--check-config", "--tx-threads", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("tx_threads"), "{err}");
    let (code, out, _) = mixcast(&["--check-config", "--tx-threads", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("\ntx_threads = 2\n"), "{out}");
}

/// Missing TLS files: `--check-config` says which (exit 2, no "configuration OK"), and a
/// start with them exits 2 with the same message, never a panic (exit 101).
#[test]
fn missing_tls_files_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("no-such-cert.pem");
    let key = dir.path().join("no-such-key.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (code, out, err) = mixcast(&["--check-config", "--tls-cert", cert, "--tls-key", key]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(err.contains("no-such-cert.pem"), "{err}");

    let (code, out, err) = mixcast(&[
        "--bind",
        "127.0.0.1",
        "--http-port",
        "0",
        "--udp-port",
        "0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("TLS") && err.contains("no-such-cert.pem"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A certificate file that is not PEM, and a key that is not the certificate's: named by
/// `--check-config`, exit 2.
#[test]
fn check_config_reads_the_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = dir.path().join(format!("{name}-cert.pem"));
        let key = dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (
            cert.to_str().unwrap().to_owned(),
            key.to_str().unwrap().to_owned(),
        )
    };
    let (cert, key) = make("a");
    let (_, other_key) = make("b");
    let (code, out, err) = mixcast(&["--check-config", "--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");

    let (code, _, err) = mixcast(&[
        "--check-config",
        "--tls-cert",
        &cert,
        "--tls-key",
        &other_key,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not the certificate's"), "{err}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM").unwrap();
    let (code, _, err) = mixcast(&[
        "--check-config",
        "--tls-cert",
        junk.to_str().unwrap(),
        "--tls-key",
        &key,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("junk.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
}

/// `--max-pending-per-ip` (and the `max_pending_per_ip` config key): default 8, a value
/// from the flag or the file, 0 refused. What the cap does: tests/hostile_udp.rs.
#[test]
fn max_pending_per_ip_flag_and_key() {
    let (code, out, _) = mixcast(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--max-pending-per-ip"), "{out}");
    let (code, out, _) = mixcast(&["--check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\nmax_pending_per_ip = 8\n"), "{out}");
    let (code, out, _) = mixcast(&["--check-config", "--max-pending-per-ip", "3"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\nmax_pending_per_ip = 3\n"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixcast.toml");
    std::fs::write(&file, "max_pending_per_ip = 5\n").unwrap();
    let (code, out, err) = mixcast(&["--check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\nmax_pending_per_ip = 5\n"), "{out}");
    let (code, _, err) = mixcast(&["--check-config", "--max-pending-per-ip", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("max_pending_per_ip"), "{err}");
}

/// `--max-streams` (config key `max_streams`, `MIXCAST_MAX_STREAMS`): default 64, a value
/// from the flag, the file or the environment. What the cap does: tests/stream_costs.rs.
#[test]
fn max_streams_flag_key_and_env() {
    let (code, out, _) = mixcast(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--max-streams"), "{out}");
    let (code, out, _) = mixcast(&["--check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\nmax_streams = 64\n"), "{out}");
    let (code, out, _) = mixcast(&["--check-config", "--max-streams", "3"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\nmax_streams = 3\n"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixcast.toml");
    std::fs::write(&file, "max_streams = 5\n").unwrap();
    let (code, out, err) = mixcast(&["--check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\nmax_streams = 5\n"), "{out}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .arg("--check-config")
        .env("MIXCAST_MAX_STREAMS", "7")
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nmax_streams = 7\n"), "{text}");
}

/// `--metrics-token` (env `MIXCAST_METRICS_TOKEN`, config key `metrics_tokens`) reaches the
/// configuration (`--check-config` says it is set, never what it is) and a token a client could not
/// send is refused. What it does: tests/whip_router.rs `metrics_are_hidden_with_the_streams`.
#[test]
fn metrics_token_flag_env_and_key() {
    let (code, out, _) = mixcast(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--metrics-token"), "{out}");
    let (code, out, _) = mixcast(&["--check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("# No secrets are set."), "{out}");
    let (code, out, _) = mixcast(&["--check-config", "--metrics-token", "scrape-1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("not shown here: metrics_tokens (1 set)."),
        "{out}"
    );
    assert!(
        !out.contains("scrape-1"),
        "the token is never printed: {out}"
    );
    let env = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .arg("--check-config")
        .env("MIXCAST_METRICS_TOKEN", "scrape-2")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&env.stdout);
    assert!(
        out.contains("not shown here: metrics_tokens (1 set)."),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixcast.toml");
    std::fs::write(&file, "metrics_tokens = [\"a\", \"b\"]\n").unwrap();
    let (code, out, err) = mixcast(&["--check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("not shown here: metrics_tokens (2 set)."),
        "{out}"
    );
    let (code, _, err) = mixcast(&["--check-config", "--metrics-token", "two words"]);
    assert_eq!(code, 2);
    assert!(err.contains("--metrics-token"), "{err}");
}

/// Runs the server binary on loopback until it has said it is ready, then stops it
/// with SIGINT; everything it wrote to stdout (where the log goes), line by line.
fn served_log(extra: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .args(["--bind", "127.0.0.1", "--http-port", "0", "--udp-port", "0"])
        .args(extra)
        .env_remove("MIXCAST_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Start-up ends with "ready", once SIGINT is caught.
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        let done = line.contains("ready; Ctrl-C or SIGTERM stops");
        lines.push(std::mem::take(&mut line));
        if done {
            break;
        }
    }
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        lines.push(std::mem::take(&mut line));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {lines:?}");
    lines
}

/// Issue 15: logs into a pipe or file carry no colour codes; `--log-format json` (env
/// `MIXCAST_LOG_FORMAT`) writes one JSON object per line with level, target and message.
#[test]
fn logs_are_plain_in_pipes_and_json_on_request() {
    let text = served_log(&[]);
    assert!(
        text.iter()
            .any(|l| l.contains("signalling on http://127.0.0.1:")),
        "{text:?}"
    );
    for l in &text {
        assert!(!l.contains('\x1b'), "a colour code in a pipe: {l:?}");
    }
    let json = served_log(&["--log-format", "json"]);
    assert!(json.len() >= 5, "{json:?}");
    for l in &json {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l:?}"));
        assert!(v["level"].is_string() && v["target"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    assert!(json.iter().any(|l| l.contains("stopped in")), "{json:?}");
    let (code, _, err) = mixcast(&["--log-format", "xml", "--check-config"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("text") && err.contains("json"), "{err}");
}

/// Issue 15: `--check-config` checks the ports as start-up would (one line, exit 2, and no
/// configuration dump before it), and its dump shows no TURN credential.
#[test]
fn check_config_finds_a_busy_port_and_hides_the_turn_credential() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let (code, out, err) = mixcast(&[
        "--check-config",
        "--bind",
        "127.0.0.1",
        "--http-port",
        &port,
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out, "", "nothing printed before the error");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("HTTP port"),
        "{err}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port().to_string();
    let (code, _, err) = mixcast(&["--check-config", "--bind", "127.0.0.1", "--udp-port", &port]);
    assert_eq!(code, 2);
    assert!(err.contains("UDP port"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixcast.toml");
    std::fs::write(
        &file,
        "[[ice_servers]]\nurl = \"turn:turn.example.org:3478?transport=udp\"\n\
         username = \"user\"\ncredential = \"hunter2-secret\"\n",
    )
    .unwrap();
    let (code, out, err) = mixcast(&["--check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("turn.example.org")
            && out.contains("not shown here: ice_servers[0].credential."),
        "{out}"
    );
    assert!(!out.contains("hunter2-secret"), "{out}");
}

/// Issue 15: `--check-config` prints the effective configuration as TOML in the config
/// file's keys: it parses, it holds what the flags said, no secret is in it (a comment
/// names the ones set), and saved as a config file it gives the same configuration back.
#[test]
fn check_config_prints_a_config_file_that_reads_back() {
    let (code, out, err) = mixcast(&[
        "--check-config",
        "--bind",
        "127.0.0.1",
        "--source",
        "live=tone",
        "--source",
        "quiet=silence",
        "--video",
        "quiet=none",
        "--max-viewers",
        "123",
        "--read-token",
        "sekrit-read",
        "--ice-server",
        "stun:stun.example.org:3478",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let text = out
        .strip_suffix("configuration OK\n")
        .unwrap_or_else(|| panic!("ends with configuration OK: {out}"));
    assert!(!text.contains("sekrit-read"), "{text}");
    assert!(
        text.contains("# Secrets set and not shown here: read_tokens (1 set)."),
        "{text}"
    );
    let parsed: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed["bind"].as_str(), Some("127.0.0.1"));
    assert_eq!(parsed["max_viewers"].as_integer(), Some(123));
    assert_eq!(parsed["fanout"].as_str(), Some("direct"));
    assert_eq!(parsed["streams"]["quiet"]["video"].as_str(), Some("none"));
    assert_eq!(
        parsed["streams"]["live"]["sources"][0]["source"].as_str(),
        Some("tone")
    );
    assert_eq!(
        parsed["ice_servers"][0]["url"].as_str(),
        Some("stun:stun.example.org:3478")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effective.toml");
    std::fs::write(&file, text).unwrap();
    let (code, again, err) = mixcast(&["--check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{again}{err}");
    let body = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        body(&again),
        body(&out),
        "the saved configuration reads back the same (secrets aside)"
    );
}
