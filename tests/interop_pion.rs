//! pion/webrtc v3 (Go) against the in-process server, as a WHIP publisher and as a WHEP
//! viewer, with the media checked.
//!
//! The peer is tests/interop/pion_peer/main.go, built once per source version into
//! target/interop-pion/ from Debian's `golang-github-pion-webrtc.v3-dev` (GOPATH mode, no
//! network: GO111MODULE=off, GOPROXY=off). Pion has no Opus encoder: as publisher it sends
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
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::media::opus::{Decoder, Encoder, MAX_PACKET};
use mixcast::media::{Frame, FRAME_LEN, FRAME_SAMPLES, SAMPLE_RATE};
use mixcast::server::Server;
use python::Running;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The publisher's tone: distinct from every other test's and from `live`'s.
const LEFT_HZ: f32 = 900.0;
const RIGHT_HZ: f32 = 1300.0;
/// Where Debian puts Go library sources, and the pion package the peer needs.
const GOCODE: &str = "/usr/share/gocode";
const PION_SOURCE: &str = "/usr/share/gocode/src/github.com/pion/webrtc";
const APT_PACKAGES: &str = "golang-go golang-github-pion-webrtc.v3-dev";
/// The longest the Go build may take (pion and its dependencies from source, cold cache).
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
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

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The peer's source directory.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pion_peer")
}

/// The built peer, or None (after `python::unavailable`) when Go or pion is missing. A
/// build failure with both present panics: that is a broken peer, not a missing tool.
fn pion_peer(test: &str) -> Option<PathBuf> {
    let go = Command::new("go").arg("version").output();
    if !matches!(&go, Ok(out) if out.status.success()) || !Path::new(PION_SOURCE).is_dir() {
        python::unavailable(
            test,
            &format!(
                "no Go toolchain with pion v3 in {PION_SOURCE} (apt-get install {APT_PACKAGES})"
            ),
        );
        return None;
    }
    Some(build().unwrap_or_else(|e| panic!("{test}: building the pion peer: {e}")))
}

/// Builds tests/interop/pion_peer into target/interop-pion/pion_peer-HASH, HASH of its
/// sources, unless that binary is already there. Offline, in GOPATH mode against Debian's
/// packaged sources.
fn build() -> Result<PathBuf, String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(source_dir())
        .map_err(|e| format!("{}: {e}", source_dir().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "go"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        file.file_name().hash(&mut hasher);
        text.hash(&mut hasher);
    }
    let dir = target_dir().join("interop-pion");
    let binary = dir.join(format!("pion_peer-{:016x}", hasher.finish()));
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Built under a temporary name and renamed: a killed build leaves no half binary.
    let partial = dir.join(format!("pion_peer-partial-{}", std::process::id()));
    let gopath = format!("{}:{GOCODE}", dir.join("gopath").display());
    let mut cmd = Command::new("go");
    cmd.current_dir(source_dir())
        .args(["build", "-o"])
        .arg(&partial)
        .arg(".")
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("gocache"));
    let started = Instant::now();
    let out = python::run(cmd, BUILD_TIMEOUT)?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("go build: {}:\n{}", out.status, out.stderr));
    }
    std::fs::rename(&partial, &binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    eprintln!("built {} in {:?}", binary.display(), started.elapsed());
    Ok(binary)
}

/// `seconds` of the stereo tone, encoded by mixcast's Opus encoder, in the peer's frame
/// file format: per 20 ms frame a 2-byte big-endian length, then the packet.
fn opus_tone_file(seconds: f32) -> tempfile::NamedTempFile {
    let pcm = tone::synth(LEFT_HZ, RIGHT_HZ, 0.25, seconds);
    let mut encoder = Encoder::new(0).expect("an Opus encoder");
    let mut bytes = Vec::new();
    let mut packet = [0u8; MAX_PACKET];
    for chunk in pcm.chunks_exact(FRAME_LEN) {
        let frame: &Frame = chunk.try_into().expect("a whole frame");
        let n = encoder.encode(frame, &mut packet).expect("encodes");
        bytes.extend_from_slice(&(n as u16).to_be_bytes());
        bytes.extend_from_slice(&packet[..n]);
    }
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), bytes).expect("writes the Opus frames");
    file
}

/// One Opus RTP packet as the viewer peer wrote it.
struct RtpRecord {
    seq: u16,
    timestamp: u32,
    payload: Vec<u8>,
}

/// Parses the viewer peer's file: 2-byte sequence number, 4-byte timestamp, 2-byte
/// length, payload (big-endian).
fn read_rtp_records(bytes: &[u8]) -> Result<Vec<RtpRecord>, String> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(format!(
                "a record header cut short after {} records",
                records.len()
            ));
        }
        let seq = u16::from_be_bytes([rest[0], rest[1]]);
        let timestamp = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let len = usize::from(u16::from_be_bytes([rest[6], rest[7]]));
        let payload = rest
            .get(8..8 + len)
            .ok_or_else(|| format!("record {} cut short", records.len()))?
            .to_vec();
        records.push(RtpRecord {
            seq,
            timestamp,
            payload,
        });
        rest = &rest[8 + len..];
    }
    Ok(records)
}

/// What decoding the received packets gave.
struct Decoded {
    pcm: Vec<f32>,
    lost: u64,
    reordered: u64,
}

/// Decodes the packets in arrival order with mixcast's decoder, concealing gaps; checks
/// that sequence numbers and timestamps advance together (960 per 20 ms packet).
fn decode(records: &[RtpRecord]) -> Result<Decoded, String> {
    let mut decoder = Decoder::new().map_err(|e| e.to_string())?;
    let mut frame: Frame = [0.0; FRAME_LEN];
    let mut out = Decoded {
        pcm: Vec::new(),
        lost: 0,
        reordered: 0,
    };
    let mut last: Option<&RtpRecord> = None;
    for (i, r) in records.iter().enumerate() {
        if let Some(prev) = last {
            let step = r.seq.wrapping_sub(prev.seq);
            if step == 0 || step > 0x8000 {
                out.reordered += 1;
                continue;
            }
            let ts_step = r.timestamp.wrapping_sub(prev.timestamp);
            if ts_step != u32::from(step) * FRAME_SAMPLES as u32 {
                return Err(format!(
                    "packet {i}: sequence +{step} but timestamp +{ts_step} (expected {})",
                    u32::from(step) * FRAME_SAMPLES as u32
                ));
            }
            for _ in 1..step.min(50) {
                out.lost += 1;
                let n = decoder.conceal(&mut frame).map_err(|e| e.to_string())?;
                out.pcm.extend_from_slice(&frame[..2 * n]);
            }
        }
        let n = decoder
            .decode(&r.payload, &mut frame)
            .map_err(|e| format!("packet {i} ({} bytes): {e}", r.payload.len()))?;
        out.pcm.extend_from_slice(&frame[..2 * n]);
        last = Some(r);
    }
    Ok(out)
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
        let frames = opus_tone_file(SECONDS);
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
