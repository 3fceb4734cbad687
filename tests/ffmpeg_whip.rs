//! FFmpeg 8's own `whip` muxer publishes to the in-process server, and a WHEP viewer checks
//! the stream's mix: 1000 Hz on the left and 1500 Hz on the right come out as they went in.
//!
//! The publisher is tests/interop/ffmpeg_whip.py (PyAV, which bundles FFmpeg 8 with the
//! whip muxer, libopus and libx264): Opus 48 kHz stereo plus H264 video, exactly FFmpeg's
//! offer, STUN, DTLS (FFmpeg is the DTLS server: `a=setup:passive`) and RTP. FFmpeg sends
//! no STUN after DTLS, so a publish longer than 20 s checks that the server keeps a
//! publisher whose media flows without consent refreshes.
//!
//! Needs `python3` that imports `av` and `numpy`; if it does not, they are pip-installed
//! into target/ (see tests/common/python.rs). Without them the tests print SKIPPED and
//! pass, unless `CI` or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/python.rs"]
mod python;
#[path = "common/sdp_proxy.rs"]
mod sdp_proxy;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions, PlayReport};
use mixcast::config::Config;
use mixcast::server::Server;
use mixcast::signal::auth::Secret;
use python::{Python, Running};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const LEFT_HZ: f32 = 1000.0;
const RIGHT_HZ: f32 = 1500.0;
/// From starting the script to its WHIP session existing (Python start-up and imports,
/// encoder set-up, the POST).
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack for the script beyond its publishing time (start-up, ICE and DTLS, DELETE).
const SCRIPT_SLACK: Duration = Duration::from_secs(30);

/// The tests here each run real-time media; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the publisher script: `seconds` of the tone and video, FFmpeg's log on stderr.
fn publish(py: &Python, url: &str, seconds: u32, cert: Option<&certs::Pem>) -> Running {
    publish_with(py, url, seconds, cert, &[])
}

/// `publish` with more arguments for the script.
fn publish_with(
    py: &Python,
    url: &str,
    seconds: u32,
    cert: Option<&certs::Pem>,
    extra: &[&str],
) -> Running {
    let mut cmd = py.command(&python::script("ffmpeg_whip.py"));
    cmd.arg(url)
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--left-hz")
        .arg(LEFT_HZ.to_string())
        .arg("--right-hz")
        .arg(RIGHT_HZ.to_string())
        .arg("--verbose");
    if let Some(pem) = cert {
        cmd.arg("--cert-file")
            .arg(&pem.cert)
            .arg("--key-file")
            .arg(&pem.key);
    }
    cmd.args(extra);
    Running::spawn(cmd, "ffmpeg_whip.py").expect("the publisher script starts")
}

/// Waits until the server has at least one session (the publisher's), or panics.
fn wait_for_session(server: &Server, publisher: &mut Option<Running>) {
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while server.live_sessions() == 0 {
        if Instant::now() >= deadline {
            let stderr = publisher
                .take()
                .map(|p| match p.wait(Duration::from_millis(10)) {
                    Ok(out) => format!("exited {}: {}", out.status, python::tail(&out.stderr, 40)),
                    Err(e) => e,
                })
                .unwrap_or_default();
            panic!("no WHIP session {SESSION_TIMEOUT:?} after starting FFmpeg: {stderr}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn viewer(server: &Server, stream: &str, seconds: u64) -> PlayOptions {
    PlayOptions {
        url: format!("http://{}/{stream}/whep", server.http_addr()),
        token: None,
        duration: Duration::from_secs(seconds),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    }
}

/// Waits for the publisher and checks it published to the end without an FFmpeg error.
fn finish(publisher: Running, seconds: u32) -> String {
    let out = publisher
        .wait(Duration::from_secs(seconds.into()) + SCRIPT_SLACK)
        .expect("the publisher finishes");
    assert!(
        out.status.success(),
        "ffmpeg_whip.py failed ({}):\n{}",
        out.status,
        python::tail(&out.stderr, 40)
    );
    out.stdout
}

fn summary(report: &PlayReport) -> String {
    format!(
        "{} packets, {} lost, {} decode errors, connected after {:?}, disconnected {}",
        report.packets,
        report.lost_packets,
        report.decode_errors,
        report.connected_after,
        report.disconnected
    )
}

/// FFmpeg publishes the tone and H264 for a few seconds while a viewer listens; the
/// viewer must hear both channels' tones. `cert`: FFmpeg's `cert_file`/`key_file`, else
/// the certificate FFmpeg makes itself.
fn publish_and_listen(test: &str, stream: &str, cert: Option<&certs::Pem>) {
    const SECONDS: u32 = 8;
    let _serial = serial();
    let Some(py) = python::ffmpeg_whip(test) else {
        return;
    };
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let url = format!("http://{}/{stream}/whip", server.http_addr());
    let mut publisher = Some(publish(&py, &url, SECONDS, cert));
    wait_for_session(&server, &mut publisher);

    let report = play(&viewer(&server, stream, 4)).expect("the viewer plays the stream");
    let stdout = finish(
        publisher.take().expect("the publisher is still ours"),
        SECONDS,
    );
    assert!(!report.disconnected, "viewer: {}", summary(&report));
    assert_eq!(report.decode_errors, 0, "viewer: {}", summary(&report));
    let heard = tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0)
        .map(|(left, right)| {
            eprintln!("{test}: left {left:?}, right {right:?}");
            format!("{LEFT_HZ}/{RIGHT_HZ} Hz heard by a viewer, H264 sent")
        })
        .map_err(|e| {
            format!(
                "FFmpeg's tone did not come out of the mix: {e}\nviewer: {}\npublisher: {stdout}",
                summary(&report)
            )
        });
    server.shutdown();
    // The matrix cell is FFmpeg with the certificate it makes itself.
    if cert.is_none() {
        matrix::cell("ffmpeg", "publisher", || heard);
    } else if let Err(why) = heard {
        panic!("{why}");
    }
}

/// FFmpeg with its own certificate: built with GnuTLS (PyAV's wheels, Debian's ffmpeg) it
/// makes an ECDSA P-224 one, which dimpl alone refuses ("unsupported EC curve");
/// `net::dtls` verifies it.
#[test]
fn ffmpeg_publishes_stereo_tone_and_h264() {
    publish_and_listen("ffmpeg_publishes_stereo_tone_and_h264", "ffmpeg", None);
}

#[test]
fn ffmpeg_with_p256_certificate_publishes_stereo_tone_and_h264() {
    // What an FFmpeg user can do today: `-cert_file cert.pem -key_file key.pem` with a
    // P-256 certificate. Everything else (offer, FFmpeg's STUN, DTLS as client, SRTP, Opus,
    // the mix) is FFmpeg's own.
    let pem = certs::ecdsa_p256("ffmpeg");
    publish_and_listen(
        "ffmpeg_with_p256_certificate_publishes_stereo_tone_and_h264",
        "ffmpeg-p256",
        Some(&pem),
    );
}

#[test]
fn ffmpeg_publish_stays_up_past_consent_timeout() {
    // RFC 7675 consent expires 30 s after the last response; str0m's ICE agent gives up on
    // a pair with no STUN traffic sooner. FFmpeg sends STUN only before DTLS, so a server
    // that times out on missing STUN drops FFmpeg within this window. (P-256 certificate:
    // see ffmpeg_publishes_stereo_tone_and_h264.)
    const TEST: &str = "ffmpeg_publish_stays_up_past_consent_timeout";
    const SECONDS: u32 = 25;
    const LISTEN_FROM: Duration = Duration::from_secs(21);
    let _serial = serial();
    let Some(py) = python::ffmpeg_whip(TEST) else {
        return;
    };
    let pem = certs::ecdsa_p256("ffmpeg");
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let url = format!("http://{}/ffmpeg-long/whip", server.http_addr());
    let mut publisher = Some(publish(&py, &url, SECONDS, Some(&pem)));
    wait_for_session(&server, &mut publisher);
    let session_at = Instant::now();

    thread::sleep(LISTEN_FROM);
    let sessions = server.live_sessions();
    let report = play(&viewer(&server, "ffmpeg-long", 3));
    let stdout = finish(
        publisher.take().expect("the publisher is still ours"),
        SECONDS,
    );
    let report = report.unwrap_or_else(|e| {
        panic!(
            "no viewer {:?} into FFmpeg's publish ({sessions} sessions live): {e}",
            session_at.elapsed()
        )
    });
    if let Err(e) = tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0) {
        panic!(
            "{:?} into FFmpeg's publish its tone is gone: {e}\nviewer: {}\npublisher: {stdout}",
            LISTEN_FROM,
            summary(&report)
        );
    }
    server.shutdown();
}

#[test]
fn ffmpeg_sends_its_bearer_token() {
    // FFmpeg's `authorization` option becomes `Authorization: Bearer <token>`; with a
    // publish token configured, a wrong one is refused before any media.
    const TEST: &str = "ffmpeg_sends_its_bearer_token";
    const SECONDS: u32 = 2;
    let _serial = serial();
    let Some(py) = python::ffmpeg_whip(TEST) else {
        return;
    };
    let pem = certs::ecdsa_p256("ffmpeg");
    let mut config = Config::loopback_ephemeral();
    config
        .auth
        .publish
        .default
        .push(Secret::new("s3cret-token").expect("a valid token"));
    let server = Server::start(config).expect("server starts");
    let url = format!("http://{}/ffmpeg-token/whip", server.http_addr());

    let wrong = publish_with(&py, &url, SECONDS, Some(&pem), &["--token", "not-it"])
        .wait(Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK)
        .expect("the publisher finishes");
    assert!(
        !wrong.status.success() && wrong.stderr.contains("401"),
        "a wrong token must get 401 ({}):\n{}",
        wrong.status,
        python::tail(&wrong.stderr, 20)
    );

    let right = publish_with(&py, &url, SECONDS, Some(&pem), &["--token", "s3cret-token"]);
    let stdout = finish(right, SECONDS);
    let sent: serde_json::Value = serde_json::from_str(python::last_line(&stdout))
        .unwrap_or_else(|e| panic!("publisher summary {stdout:?}: {e}"));
    assert!(
        sent["audio_packets"].as_u64().unwrap_or(0) >= u64::from(SECONDS) * 45,
        "with the right token FFmpeg sent {sent}"
    );
    server.shutdown();
}

#[test]
fn ffmpeg_exits_when_the_server_fails_its_handshake() {
    // A proxy flips the offer's fingerprint, so the certificate FFmpeg shows in the DTLS
    // handshake is not the one its offer named: the server (DTLS client here: FFmpeg
    // offers setup:passive) refuses it with a fatal alert. FFmpeg must give up with an
    // error on that alert, not wait for a handshake that will never finish.
    const TEST: &str = "ffmpeg_exits_when_the_server_fails_its_handshake";
    const GIVES_UP_WITHIN: Duration = Duration::from_secs(5);
    let _serial = serial();
    let Some(py) = python::ffmpeg_whip(TEST) else {
        return;
    };
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let proxy = sdp_proxy::start(server.http_addr(), sdp_proxy::wrong_fingerprint);
    let url = format!("http://{}/ffmpeg-refused/whip", proxy.addr);
    let started = Instant::now();
    let out = publish(&py, &url, 5, None)
        .wait(SESSION_TIMEOUT + GIVES_UP_WITHIN)
        .unwrap_or_else(|e| panic!("FFmpeg did not give up: {e}"));
    let exited = Instant::now();
    let answered = proxy.answered.lock().unwrap().unwrap_or_else(|| {
        panic!(
            "no answer reached FFmpeg:\n{}",
            python::tail(&out.stderr, 30)
        )
    });
    let took = exited - answered;
    eprintln!(
        "{TEST}: FFmpeg exited {} {took:?} after the answer ({:?} after its start)",
        out.status,
        exited - started
    );
    assert!(
        !out.status.success(),
        "FFmpeg published through a failed handshake:\n{}",
        python::tail(&out.stderr, 30)
    );
    assert!(
        took <= GIVES_UP_WITHIN,
        "FFmpeg took {took:?} to give up:\n{}",
        python::tail(&out.stderr, 30)
    );
    assert_eq!(
        server.live_sessions(),
        0,
        "the failed session is still live"
    );
    server.shutdown();
}

#[test]
fn tone_check_rejects_swapped_and_mono() {
    // The check the tests above rely on must itself fail on wrong audio.
    let right_way = tone::synth(LEFT_HZ, RIGHT_HZ, 0.25, 3.0);
    assert!(tone::check_stereo_tone(&right_way, LEFT_HZ, RIGHT_HZ, 2.0).is_ok());
    let swapped = tone::synth(RIGHT_HZ, LEFT_HZ, 0.25, 3.0);
    assert!(tone::check_stereo_tone(&swapped, LEFT_HZ, RIGHT_HZ, 2.0).is_err());
    let mono = tone::synth(LEFT_HZ, LEFT_HZ, 0.25, 3.0);
    assert!(tone::check_stereo_tone(&mono, LEFT_HZ, RIGHT_HZ, 2.0).is_err());
    let short = tone::synth(LEFT_HZ, RIGHT_HZ, 0.25, 1.0);
    assert!(tone::check_stereo_tone(&short, LEFT_HZ, RIGHT_HZ, 2.0).is_err());
    let silent = vec![0.0; 2 * 48_000 * 3];
    assert!(tone::check_stereo_tone(&silent, LEFT_HZ, RIGHT_HZ, 2.0).is_err());
}
