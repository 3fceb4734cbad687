//! pion/webrtc v3 (Go) against the in-process server, as a WHIP publisher and as a WHEP
//! viewer, with the media checked.
//!
//! The peer is tests/interop/pion_peer/main.go, built once per source version into
//! target/interop-pion/ from Debian's `golang-github-pion-webrtc.v3-dev` (GOPATH mode, no
//! network: GO111MODULE=off, GOPROXY=off; tests/common/pion.rs). Pion has no Opus encoder: as publisher it sends
//! Opus frames this test encoded with mixcast's own encoder (a stereo tone), which a WHEP
//! viewer must hear; as viewer it writes the Opus RTP packets it received, which this test
//! decodes with mixcast's decoder and checks for the `live` signal (440 Hz left, 660 Hz
//! right). Everything between is pion's own: offer, ICE (loopback only), DTLS, SRTP, RTP.
//!
//! Needs Debian's golang-go and golang-github-pion-webrtc.v3-dev. Without them the tests
//! print SKIPPED and pass, unless `CI` or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/live_signal.rs"]
mod live_signal;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/pion.rs"]
mod pion;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::media::opus::{Encoder, MAX_PACKET};
use mixcast::media::{FRAME_LEN, FRAME_SAMPLES, SAMPLE_RATE};
use mixcast::server::Server;
use pion::{decode, opus_tone_file, pion_peer, read_rtp_records, RtpRecord};
use python::Running;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The publisher's tone: distinct from every other test's and from `live`'s.
const LEFT_HZ: f32 = 900.0;
const RIGHT_HZ: f32 = 1300.0;
/// From starting the peer to its WHIP session existing.
const SESSION_TIMEOUT: Duration = Duration::from_secs(15);
/// Slack for the peer beyond its media time (gathering, ICE and DTLS, DELETE).
const PEER_SLACK: Duration = Duration::from_secs(30);

/// The tests here each run real-time media; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until the server has a session, or says what the peer printed.
fn wait_for_session(server: &Server, peer: &mut Option<Running>) -> Result<(), String> {
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while server.live_sessions() == 0 {
        if Instant::now() >= deadline {
            let why = peer
                .take()
                .map(|p| match p.wait(Duration::from_millis(10)) {
                    Ok(out) => format!("exited {}: {}", out.status, python::tail(&out.stderr, 30)),
                    Err(e) => e,
                })
                .unwrap_or_default();
            return Err(format!(
                "no WHIP session {SESSION_TIMEOUT:?} after starting pion: {why}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The peer's JSON summary (its last stdout line), after checking it exited 0.
fn peer_summary(out: python::Output) -> Result<serde_json::Value, String> {
    if !out.status.success() {
        return Err(format!(
            "pion_peer failed ({}):\n{}",
            out.status,
            python::tail(&out.stderr, 30)
        ));
    }
    serde_json::from_str(python::last_line(&out.stdout))
        .map_err(|e| format!("pion_peer's summary {:?}: {e}", out.stdout))
}

#[test]
fn pion_publishes_a_stereo_tone_a_viewer_hears() {
    const TEST: &str = "pion_publishes_a_stereo_tone_a_viewer_hears";
    const SECONDS: f32 = 7.0;
    let _serial = serial();
    let Some(peer) = pion_peer(TEST) else {
        return;
    };
    matrix::cell("pion", "publisher", || {
        let frames = opus_tone_file(LEFT_HZ, RIGHT_HZ, SECONDS);
        let server = Server::start(Config::loopback_ephemeral()).map_err(|e| e.to_string())?;
        let offer = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&peer);
        cmd.arg("-mode")
            .arg("publish")
            .arg("-url")
            .arg(format!("http://{}/pion/whip", server.http_addr()))
            .arg("-opus-in")
            .arg(frames.path())
            .arg("-offer-out")
            .arg(offer.path());
        let mut publisher = Some(Running::spawn(cmd, "pion_peer publish")?);
        wait_for_session(&server, &mut publisher)?;
        let report = play(&PlayOptions {
            url: format!("http://{}/pion/whep", server.http_addr()),
            token: None,
            duration: Duration::from_secs(4),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            decode: true,
        })
        .map_err(|e| format!("the WHEP viewer: {e}"))?;
        let out = publisher
            .take()
            .ok_or("the publisher is gone")?
            .wait(Duration::from_secs_f32(SECONDS) + PEER_SLACK)?;
        let summary = peer_summary(out)?;
        server.shutdown();
        let offer = std::fs::read_to_string(offer.path()).unwrap_or_default();
        let (left, right) = tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0)
            .map_err(|e| {
                format!("pion's tone did not come out of the mix: {e}\npion: {summary}\noffer:\n{offer}")
            })?;
        eprintln!("{TEST}: left {left:?}, right {right:?}; pion: {summary}");
        Ok(format!(
            "{LEFT_HZ}/{RIGHT_HZ} Hz heard L/R ({:.1}/{:.1}), {} frames sent",
            left.dominant_hz, right.dominant_hz, summary["frames_sent"]
        ))
    });
}

#[test]
fn pion_views_live_and_gets_440_left_660_right() {
    const TEST: &str = "pion_views_live_and_gets_440_left_660_right";
    const SECONDS: u64 = 4;
    let _serial = serial();
    let Some(peer) = pion_peer(TEST) else {
        return;
    };
    matrix::cell("pion", "viewer", || {
        let server = Server::start(Config::loopback_ephemeral()).map_err(|e| e.to_string())?;
        let rtp = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&peer);
        cmd.arg("-mode")
            .arg("view")
            .arg("-url")
            .arg(format!("http://{}/live/whep", server.http_addr()))
            .arg("-rtp-out")
            .arg(rtp.path())
            .arg("-seconds")
            .arg(SECONDS.to_string());
        let out = Running::spawn(cmd, "pion_peer view")?
            .wait(Duration::from_secs(SECONDS) + PEER_SLACK)?;
        let summary = peer_summary(out)?;
        server.shutdown();
        if summary["codec"] != "audio/opus" || summary["channels"] != 2 {
            return Err(format!(
                "pion negotiated {summary}, expected audio/opus with 2 channels"
            ));
        }
        let bytes = std::fs::read(rtp.path()).map_err(|e| e.to_string())?;
        let records = read_rtp_records(&bytes)?;
        let expected = SECONDS as usize * 50;
        if records.len() < expected * 9 / 10 {
            return Err(format!(
                "pion received {} packets in {SECONDS} s, expected about {expected}",
                records.len()
            ));
        }
        let decoded = decode(&records)?;
        let heard = live_signal::check(&decoded.pcm, 3.0)
            .map_err(|e| format!("what pion received is not the live signal: {e}"))?;
        eprintln!(
            "{TEST}: {heard}; {} packets, {} lost, {} out of order; pion: {summary}",
            records.len(),
            decoded.lost,
            decoded.reordered
        );
        Ok(format!("{} packets, decoded: {heard}", records.len()))
    });
}

#[test]
fn decode_check_rejects_wrong_timestamps_and_the_wrong_signal() {
    // The checks the viewer test relies on must themselves fail on wrong input.
    let mut encoder = Encoder::new(0).expect("an Opus encoder");
    let mut packet = [0u8; MAX_PACKET];
    let tone_packets = |left: f32, right: f32, encoder: &mut Encoder, packet: &mut [u8]| {
        let pcm = tone::synth(left, right, 0.25, 4.0);
        pcm.chunks_exact(FRAME_LEN)
            .enumerate()
            .map(|(i, chunk)| {
                let n = encoder
                    .encode(chunk.try_into().expect("a whole frame"), packet)
                    .expect("encodes");
                RtpRecord {
                    seq: i as u16,
                    timestamp: (i * FRAME_SAMPLES) as u32,
                    payload: packet[..n].to_vec(),
                }
            })
            .collect::<Vec<_>>()
    };
    // A steady 440/660 tone is not the beeping live signal; swapped channels are not either.
    let steady = tone_packets(440.0, 660.0, &mut encoder, &mut packet);
    let pcm = decode(&steady).expect("decodes").pcm;
    assert_eq!(pcm.len(), 2 * 4 * SAMPLE_RATE as usize);
    assert!(live_signal::check(&pcm, 3.0).is_err());
    let swapped = tone_packets(660.0, 440.0, &mut encoder, &mut packet);
    assert!(live_signal::check(&decode(&swapped).expect("decodes").pcm, 3.0).is_err());
    // A gap is concealed and counted; a timestamp that does not follow the sequence is an error.
    let mut gap = steady;
    gap.remove(10);
    let decoded = decode(&gap).expect("decodes");
    assert_eq!(decoded.lost, 1);
    gap[20].timestamp += 1;
    assert!(decode(&gap).is_err());
    // Record parsing: a file cut inside a payload is an error, not a panic.
    let bytes = [0, 1, 0, 0, 0, 0, 0, 9, 1, 2];
    assert!(read_rtp_records(&bytes).is_err());
}
