//! aiortc (Python, PyPI) against the in-process server, as a WHIP publisher and as a WHEP
//! viewer, with the media checked.
//!
//! The peer is tests/interop/aiortc_peer.py: aiortc's own offer, aioice ICE (restricted to
//! 127.0.0.1, no STUN server), DTLS, SRTP and Opus codec (PyAV's libopus). As publisher it
//! encodes a stereo tone, 700 Hz left and 1100 Hz right, which a WHEP viewer must hear on
//! the right channels (aiortc's encoder is stereo, although its offer carries no
//! `stereo=1`); as viewer it decodes the `live` stream with aiortc's decoder and hands the
//! PCM back, which must be 440 Hz left and 660 Hz right.
//!
//! Needs `python3` that imports `aiortc`, `av` and `numpy`; if it does not, they are
//! pip-installed into target/ (see tests/common/python.rs). Without them the tests print
//! SKIPPED and pass, unless `CI` or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/live_signal.rs"]
mod live_signal;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::server::Server;
use python::{Python, Running};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const LEFT_HZ: f32 = 700.0;
const RIGHT_HZ: f32 = 1100.0;
/// From starting the script to its WHIP session existing (Python start-up, imports).
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack for the script beyond its media time (start-up, ICE and DTLS, DELETE).
const SCRIPT_SLACK: Duration = Duration::from_secs(30);

/// The tests here each run real-time media; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Python with aiortc, or None (after `python::unavailable`).
fn aiortc_python(test: &str) -> Option<Python> {
    match python::with_packages(&["aiortc", "av", "numpy"], &["aiortc", "av", "numpy"]) {
        Ok(py) => Some(py),
        Err(why) => {
            python::unavailable(test, &format!("no Python with aiortc: {why}"));
            None
        }
    }
}

#[test]
fn aiortc_publishes_a_stereo_tone_a_viewer_hears() {
    const TEST: &str = "aiortc_publishes_a_stereo_tone_a_viewer_hears";
    const SECONDS: u32 = 7;
    let _serial = serial();
    let Some(py) = aiortc_python(TEST) else {
        return;
    };
    matrix::cell("aiortc", "publisher", || {
        let server = Server::start(Config::loopback_ephemeral()).map_err(|e| e.to_string())?;
        let offer = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut cmd = py.command(&python::script("aiortc_peer.py"));
        cmd.arg("publish")
            .arg(format!("http://{}/aiortc/whip", server.http_addr()))
            .arg("--seconds")
            .arg(SECONDS.to_string())
            .arg("--left-hz")
            .arg(LEFT_HZ.to_string())
            .arg("--right-hz")
            .arg(RIGHT_HZ.to_string())
            .arg("--offer-out")
            .arg(offer.path());
        let publisher = Running::spawn(cmd, "aiortc_peer.py publish")?;
        let deadline = Instant::now() + SESSION_TIMEOUT;
        while server.live_sessions() == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let report = (server.live_sessions() > 0).then(|| {
            play(&PlayOptions {
                url: format!("http://{}/aiortc/whep", server.http_addr()),
                token: None,
                duration: Duration::from_secs(4),
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                decode: true,
            })
        });
        let out = publisher.wait(Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK)?;
        let summary = python::script_summary(out, "aiortc_peer.py")?;
        server.shutdown();
        let report = report
            .ok_or_else(|| format!("no WHIP session {SESSION_TIMEOUT:?} after starting aiortc"))?
            .map_err(|e| format!("the WHEP viewer: {e}"))?;
        let offer = std::fs::read_to_string(offer.path()).unwrap_or_default();
        let (left, right) = tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0)
            .map_err(|e| {
                format!(
                    "aiortc's tone did not come out of the mix: {e}\naiortc: {summary}\noffer:\n{offer}"
                )
            })?;
        eprintln!("{TEST}: left {left:?}, right {right:?}; aiortc: {summary}");
        Ok(format!(
            "{LEFT_HZ}/{RIGHT_HZ} Hz heard L/R ({:.1}/{:.1}), {} packets sent",
            left.dominant_hz, right.dominant_hz, summary["packets_sent"]
        ))
    });
}

#[test]
fn aiortc_views_live_and_decodes_440_left_660_right() {
    const TEST: &str = "aiortc_views_live_and_decodes_440_left_660_right";
    const SECONDS: u32 = 4;
    let _serial = serial();
    let Some(py) = aiortc_python(TEST) else {
        return;
    };
    matrix::cell("aiortc", "viewer", || {
        let server = Server::start(Config::loopback_ephemeral()).map_err(|e| e.to_string())?;
        let pcm_file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut cmd = py.command(&python::script("aiortc_peer.py"));
        cmd.arg("view")
            .arg(format!("http://{}/live/whep", server.http_addr()))
            .arg("--seconds")
            .arg(SECONDS.to_string())
            .arg("--pcm-out")
            .arg(pcm_file.path());
        let out = Running::spawn(cmd, "aiortc_peer.py view")?
            .wait(Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK)?;
        let summary = python::script_summary(out, "aiortc_peer.py")?;
        server.shutdown();
        // aiortc's decoder output: interleaved stereo s16le at 48 kHz.
        let bytes = std::fs::read(pcm_file.path()).map_err(|e| e.to_string())?;
        let pcm: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect();
        let heard = live_signal::check(&pcm, 3.0).map_err(|e| {
            format!("what aiortc decoded is not the live signal: {e}\naiortc: {summary}")
        })?;
        // The script's own FFT must agree with ours.
        for (key, hz) in [
            ("left_dominant_hz", live_signal::LEFT_HZ),
            ("right_dominant_hz", live_signal::RIGHT_HZ),
        ] {
            let found = summary[key].as_f64().unwrap_or(0.0);
            if (found - f64::from(hz)).abs() > 5.0 {
                return Err(format!(
                    "aiortc's own analysis: {key} {found}, expected {hz}"
                ));
            }
        }
        eprintln!("{TEST}: {heard}; aiortc: {summary}");
        Ok(format!(
            "{} frames decoded by aiortc: {heard}",
            summary["frames"]
        ))
    });
}
