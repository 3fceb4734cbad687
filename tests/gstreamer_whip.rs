//! GStreamer's webrtcbin publishes a tone to the in-process server over WHIP, and a WHEP
//! viewer checks the stream's mix: 1000 Hz left, 1500 Hz right come out as they went in.
//!
//! The publisher is tests/interop/gst_whip.py: webrtcbin (libnice ICE, OpenSSL DTLS with
//! GStreamer 1.22's RSA certificate, SRTP), audiotestsrc, opusenc, rtpopuspay; it does the
//! WHIP exchange the way GStreamer's whipsink does (full gathering, no trickle). Debian's
//! `simple-whip-client` cannot be used: in bookworm it aborts at start-up because it links
//! libsoup 2 while libnice pulls in libsoup 3 (see the script's doc).
//!
//! Needs Debian's python3-gi, gir1.2-gst-plugins-bad-1.0, gir1.2-nice-0.1 and the
//! GStreamer plugins (base, good, bad, nice). Without them the tests print SKIPPED and pass,
//! unless `CI` or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::server::Server;
use python::Running;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const LEFT_HZ: f32 = 1000.0;
const RIGHT_HZ: f32 = 1500.0;
/// From starting the script to its WHIP session existing (GStreamer start-up, gathering).
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack for the script beyond its publishing time (connecting, DELETE, teardown).
const SCRIPT_SLACK: Duration = Duration::from_secs(30);
/// The Debian packages the publisher needs, for the skip/fail message.
const APT_PACKAGES: &str = "python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
    gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice";

/// The tests here run real-time media; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Debian's Python (PyGObject is a Debian package, not on PyPI's wheels): `$GST_PYTHON`,
/// else /usr/bin/python3.
fn gst_python() -> PathBuf {
    std::env::var_os("GST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// Whether GStreamer, webrtcbin and the elements the publisher uses are there; else None
/// (after `python::unavailable`).
fn gstreamer_ready(test: &str) -> Option<PathBuf> {
    let exe = gst_python();
    let mut probe = Command::new(&exe);
    probe.arg("-c").arg(
        "import sys, gi\n\
         for ns in ('Gst', 'GstSdp', 'GstWebRTC'): gi.require_version(ns, '1.0')\n\
         gi.require_version('Nice', '0.1')\n\
         from gi.repository import Gst, GstWebRTC, Nice\n\
         Gst.init(None)\n\
         need = ['webrtcbin', 'nicesrc', 'dtlssrtpenc', 'audiotestsrc', 'interleave', \
         'audioconvert', 'audioresample', 'opusenc', 'rtpopuspay']\n\
         missing = [e for e in need if Gst.ElementFactory.find(e) is None]\n\
         sys.exit('missing GStreamer elements: ' + ', '.join(missing) if missing else 0)",
    );
    let why = match python::run(probe, Duration::from_secs(30)) {
        Ok(out) if out.status.success() => return Some(exe),
        Ok(out) => python::last_line(&out.stderr).to_string(),
        Err(e) => e,
    };
    python::unavailable(
        test,
        &format!(
            "no GStreamer publisher with {}: {why} (apt-get install {APT_PACKAGES})",
            exe.display()
        ),
    );
    None
}

/// webrtcbin publishes the tone for a few seconds while a viewer listens; the viewer must
/// hear both channels' tones. `pem`: a certificate for webrtcbin's DTLS instead of its own.
fn publish_and_listen(test: &str, stream: &str, pem: Option<&certs::Pem>) {
    const SECONDS: u32 = 7;
    let _serial = serial();
    let Some(exe) = gstreamer_ready(test) else {
        return;
    };
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let offer_file = tempfile::NamedTempFile::new().expect("a temp file for the offer");
    let mut cmd = Command::new(&exe);
    cmd.arg("-u")
        .arg(python::script("gst_whip.py"))
        .arg(format!("http://{}/{stream}/whip", server.http_addr()))
        .arg("--seconds")
        .arg(SECONDS.to_string())
        .arg("--left-hz")
        .arg(LEFT_HZ.to_string())
        .arg("--right-hz")
        .arg(RIGHT_HZ.to_string())
        .arg("--offer-out")
        .arg(offer_file.path());
    if let Some(pem) = pem {
        cmd.arg("--pem").arg(&pem.both);
    }
    let publisher = Running::spawn(cmd, "gst_whip.py").expect("the publisher script starts");

    let deadline = Instant::now() + SESSION_TIMEOUT;
    while server.live_sessions() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let viewer = (server.live_sessions() > 0).then(|| {
        play(&PlayOptions {
            url: format!("http://{}/{stream}/whep", server.http_addr()),
            token: None,
            duration: Duration::from_secs(4),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            decode: true,
        })
    });
    let out = publisher
        .wait(Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK)
        .expect("the publisher finishes");
    let offer = std::fs::read_to_string(offer_file.path()).unwrap_or_default();
    assert!(
        out.status.success(),
        "gst_whip.py failed ({}):\n{}\noffer:\n{offer}",
        out.status,
        python::tail(&out.stderr, 40)
    );
    let report = viewer
        .expect("the publisher made a session")
        .expect("the viewer plays the stream");
    assert!(!report.disconnected);
    match tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0) {
        Ok((left, right)) => eprintln!("{test}: left {left:?}, right {right:?}"),
        Err(e) => panic!(
            "GStreamer's tone did not come out of the mix: {e}\npublisher: {}",
            out.stdout
        ),
    }
    server.shutdown();
}

#[test]
#[ignore = "GStreamer 1.22's webrtcbin has an RSA certificate; str0m 0.25's DTLS (dimpl \
            0.9) speaks only ECDHE_ECDSA: as DTLS server its CertificateRequest allows only \
            ECDSA, webrtcbin answers with no certificate, 'no client certificate received'"]
fn gstreamer_webrtcbin_publishes_stereo_tone() {
    publish_and_listen(
        "gstreamer_webrtcbin_publishes_stereo_tone",
        "gstreamer",
        None,
    );
}

#[test]
fn gstreamer_with_ecdsa_certificate_publishes_stereo_tone() {
    // webrtcbin with a P-256 certificate on its DTLS decoder (and the offer's fingerprint
    // fixed to match): everything else (libnice ICE, OpenSSL DTLS, SRTP, opusenc, RTP) is
    // GStreamer's own.
    let pem = certs::ecdsa_p256("gstreamer");
    publish_and_listen(
        "gstreamer_with_ecdsa_certificate_publishes_stereo_tone",
        "gstreamer-ecdsa",
        Some(&pem),
    );
}

/// The default stream's tones (README, Configuring streams): 440 Hz left, 660 Hz right.
const LIVE_LEFT_HZ: f32 = 440.0;
const LIVE_RIGHT_HZ: f32 = 660.0;

/// webrtcbin as a WHEP viewer of `live` (gst_whip.py --viewer: recvonly Opus, decoded by
/// opusdec to float PCM) for a few seconds; Ok with what it heard per channel, or what went
/// wrong. `pem`: a certificate for webrtcbin's DTLS instead of its own; `args`: more
/// options for gst_whip.py.
fn view_live(
    test: &str,
    pem: Option<&certs::Pem>,
    args: &[&str],
) -> Option<Result<String, String>> {
    const SECONDS: u32 = 4;
    let _serial = serial();
    let exe = gstreamer_ready(test)?;
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let pcm_file = tempfile::NamedTempFile::new().expect("a temp file for the PCM");
    let mut cmd = Command::new(&exe);
    cmd.arg("-u")
        .arg(python::script("gst_whip.py"))
        .arg(format!("http://{}/live/whep", server.http_addr()))
        .arg("--viewer")
        .arg("--seconds")
        .arg(SECONDS.to_string())
        .arg("--pcm-out")
        .arg(pcm_file.path())
        .args(args);
    if let Some(pem) = pem {
        cmd.arg("--pem").arg(&pem.both);
    }
    let viewer = Running::spawn(cmd, "gst_whip.py --viewer").expect("the viewer script starts");
    let out = match viewer.wait(Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK) {
        Ok(out) => out,
        Err(e) => return Some(Err(e)),
    };
    server.shutdown();
    if !out.status.success() {
        return Some(Err(format!(
            "gst_whip.py --viewer failed ({}):\n{}",
            out.status,
            python::tail(&out.stderr, 40)
        )));
    }
    let bytes = std::fs::read(pcm_file.path()).unwrap_or_default();
    let pcm: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // `live` beeps (800 ms on, 200 ms off): its sounding 20 ms frames, end to end.
    let frame = mixcast::media::FRAME_SAMPLES;
    let sounding: Vec<f32> = pcm
        .chunks_exact(frame)
        .filter(|f| mixcast::media::analysis::rms(f) > 0.05)
        .flatten()
        .copied()
        .collect();
    Some(
        tone::check_stereo_tone(&sounding, LIVE_LEFT_HZ, LIVE_RIGHT_HZ, 2.0)
            .map(|(left, right)| {
                format!(
                    "left {:.1} Hz, right {:.1} Hz heard ({:.1} s decoded); {}",
                    left.dominant_hz,
                    right.dominant_hz,
                    pcm.len() as f32 / 2.0 / 48_000.0,
                    python::last_line(&out.stdout)
                )
            })
            .map_err(|e| format!("webrtcbin did not hear live's tones: {e}")),
    )
}

#[test]
fn gstreamer_webrtcbin_plays_live() {
    let test = "gstreamer_webrtcbin_plays_live";
    // The matrix cell once the check has run (not when GStreamer is missing).
    let Some(result) = view_live(test, None, &[]) else {
        return;
    };
    matrix::cell("gstreamer", "viewer", || result);
}

#[test]
fn gstreamer_with_ecdsa_certificate_plays_live() {
    let test = "gstreamer_with_ecdsa_certificate_plays_live";
    let pem = certs::ecdsa_p256("gstreamer-viewer");
    match view_live(test, Some(&pem), &[]) {
        Some(Ok(heard)) => eprintln!("{test}: {heard}"),
        Some(Err(why)) => panic!("{test}: {why}"),
        None => {}
    }
}

/// A viewer's offer without BUNDLE (`bundle-policy=none`): one audio section, served.
#[test]
fn gstreamer_unbundled_viewer_plays_live() {
    let test = "gstreamer_unbundled_viewer_plays_live";
    let pem = certs::ecdsa_p256("gstreamer-viewer");
    match view_live(test, Some(&pem), &["--bundle-policy", "none"]) {
        Some(Ok(heard)) => eprintln!("{test}: {heard}"),
        Some(Err(why)) => panic!("{test}: {why}"),
        None => {}
    }
}

/// webrtcbin with `bundle-policy=none`, audio and VP8 video: two transports. The answer
/// serves the audio's and rejects the video section with port 0 and no BUNDLE group
/// (README, Publishing); the audio is heard. ECDSA certificate: webrtcbin's own RSA one
/// needs the DTLS change.
#[test]
fn gstreamer_unbundled_audio_and_video_publishes_audio() {
    const SECONDS: u32 = 6;
    let test = "gstreamer_unbundled_audio_and_video_publishes_audio";
    let _serial = serial();
    let Some(exe) = gstreamer_ready(test) else {
        return;
    };
    let pem = certs::ecdsa_p256("gstreamer-unbundled");
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let stream = "gstreamer-unbundled";
    let answer_file = tempfile::NamedTempFile::new().expect("a temp file for the answer");
    let mut cmd = Command::new(&exe);
    cmd.arg("-u")
        .arg(python::script("gst_whip.py"))
        .arg(format!("http://{}/{stream}/whip", server.http_addr()))
        .args(["--bundle-policy", "none", "--video", "vp8"])
        .arg("--seconds")
        .arg(SECONDS.to_string())
        .arg("--left-hz")
        .arg(LEFT_HZ.to_string())
        .arg("--right-hz")
        .arg(RIGHT_HZ.to_string())
        .arg("--answer-out")
        .arg(answer_file.path())
        .arg("--pem")
        .arg(&pem.both);
    let publisher = Running::spawn(cmd, "gst_whip.py").expect("the publisher script starts");
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while server.live_sessions() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let viewer = (server.live_sessions() > 0).then(|| {
        play(&PlayOptions {
            url: format!("http://{}/{stream}/whep", server.http_addr()),
            token: None,
            duration: Duration::from_secs(4),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            decode: true,
        })
    });
    let out = publisher
        .wait(Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK)
        .expect("the publisher finishes");
    let answer = std::fs::read_to_string(answer_file.path()).unwrap_or_default();
    assert!(
        out.status.success(),
        "gst_whip.py failed ({}):\n{}\nanswer:\n{answer}",
        out.status,
        python::tail(&out.stderr, 40)
    );
    let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines.len(), 2, "{answer}");
    assert!(
        m_lines[0].starts_with("m=audio 9 "),
        "audio served: {answer}"
    );
    assert!(
        m_lines[1].starts_with("m=video 0 "),
        "video rejected: {answer}"
    );
    assert!(!answer.contains("a=group:"), "no BUNDLE group: {answer}");
    let report = viewer
        .expect("the publisher made a session")
        .expect("the viewer plays the stream");
    match tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0) {
        Ok((left, right)) => eprintln!("{test}: left {left:?}, right {right:?}"),
        Err(e) => panic!(
            "the unbundled publisher's tone is not heard: {e}\n{}",
            out.stdout
        ),
    }
    server.shutdown();
}
