//! libdatachannel, the WebRTC stack of OBS Studio's WHIP output, as a WHIP publisher and as
//! a WHEP viewer of the in-process server, through the npm package `node-datachannel`
//! (tests/interop/datachannel_peer.mjs). ICE (libjuice), DTLS and SRTP (OpenSSL), the SDP
//! and the RTP packetizer are libdatachannel's; only the Opus encoding and decoding are
//! ours, because libdatachannel has none.
//!
//! - Publisher: the test encodes a stereo tone (800 Hz left, 1200 Hz right) with our
//!   encoder into a file of frames; the script sends one every 20 ms through
//!   libdatachannel's RtpPacketizer, as OBS does; our WHEP client must hear both tones.
//! - Viewer: the script plays `live` and writes every Opus payload it receives; our
//!   decoder must find the test signal, 440 Hz left and 660 Hz right, beeping.
//!
//! Needs Node.js (`node`, `npm`). node-datachannel is npm-installed into
//! `target/interop-node` (its prebuilt binary comes from the npm registry as the optional
//! package `@node-datachannel/linux-x64-gnu`; nothing from GitHub). Without them the tests
//! print SKIPPED and pass, unless `CI` or `MIXCAST_REQUIRE_INTEROP=1` is set, when they
//! fail. Each test records its cell of the interop matrix (tests/common/matrix.rs).

#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions, PlayReport};
use mixcast::config::Config;
use mixcast::media::opus::{Decoder, Encoder, MAX_PACKET};
use mixcast::media::sources::{Source, ToneSource};
use mixcast::media::{Frame, FRAME_LEN, FRAME_SAMPLES};
use mixcast::server::Server;
use python::Running;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The npm package and the version the tests install: the newest on the registry when
/// written, whose prebuilt binary (libdatachannel 0.24.5, OpenSSL linked in) is itself an
/// npm package, so the install needs no compiler and no download from elsewhere.
const PACKAGE: &str = "node-datachannel@0.33.4";
const PACKAGE_VERSION: &str = "0.33.4";
/// The longest the npm install may take (about 10 MB).
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `node -e` to load the module may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// From starting the script to its WHIP session existing.
const SESSION_TIMEOUT: Duration = Duration::from_secs(15);
/// Slack for the script beyond its media time (start-up, ICE and DTLS, DELETE).
const SCRIPT_SLACK: Duration = Duration::from_secs(20);

/// The publisher's tone.
const PUB_LEFT_HZ: f32 = 800.0;
const PUB_RIGHT_HZ: f32 = 1200.0;
const PUB_AMPLITUDE: f32 = 0.25;
/// The test signal of `live`.
const LIVE_LEFT_HZ: f32 = 440.0;
const LIVE_RIGHT_HZ: f32 = 660.0;

/// The tests here each run real-time media; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `target/` of this crate (`CARGO_TARGET_DIR` if set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `node`, or `$MIXCAST_NODE`.
fn node() -> PathBuf {
    std::env::var_os("MIXCAST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"))
}

/// Whether node-datachannel loads from `dir`; its libdatachannel version if it does.
fn probe(dir: &Path) -> Result<String, String> {
    let manifest = dir.join("node_modules/node-datachannel/package.json");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    if !text.contains(&format!("\"version\": \"{PACKAGE_VERSION}\"")) {
        return Err(format!("{} is not {PACKAGE}", manifest.display()));
    }
    let mut cmd = Command::new(node());
    cmd.current_dir(dir).arg("-e").arg(
        "process.stdout.write(require('node-datachannel').getLibraryVersion()); process.exit(0)",
    );
    let out = python::run(cmd, PROBE_TIMEOUT)?;
    if out.status.success() && !out.stdout.trim().is_empty() {
        Ok(out.stdout.trim().to_string())
    } else {
        Err(format!(
            "node cannot load node-datachannel ({}): {}",
            out.status,
            python::last_line(&out.stderr)
        ))
    }
}

/// The directory node-datachannel is installed in (`target/interop-node`), installing it
/// there with npm if needed, and libdatachannel's version. Cached per test binary.
fn install() -> Result<(PathBuf, String), String> {
    static FOUND: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let dir = target_dir().join("interop-node");
            if let Ok(version) = probe(&dir) {
                return Ok((dir, version));
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut cmd = Command::new(std::env::var_os("MIXCAST_NPM").unwrap_or("npm".into()));
            cmd.arg("install")
                .arg("--prefix")
                .arg(&dir)
                .args(["--no-audit", "--no-fund", "--no-save", "--loglevel=error"])
                .arg(PACKAGE);
            let out = python::run(cmd, NPM_TIMEOUT).map_err(|e| format!("npm install: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "npm install {PACKAGE} failed ({}): {}",
                    out.status,
                    python::tail(&out.stderr, 5)
                ));
            }
            probe(&dir).map(|version| (dir, version))
        })
        .clone()
}

/// node-datachannel's directory and libdatachannel's version, or None (after
/// `python::unavailable`).
fn datachannel(test: &str) -> Option<(PathBuf, String)> {
    match install() {
        Ok(found) => Some(found),
        Err(why) => {
            python::unavailable(test, &format!("no node-datachannel: {why}"));
            None
        }
    }
}

/// A command running the peer script in `mode` with the module in `module_dir`.
fn script(module_dir: &Path, mode: &str, url: &str) -> Command {
    let mut cmd = Command::new(node());
    cmd.arg(python::script("datachannel_peer.mjs"))
        .arg(mode)
        .arg("--module-dir")
        .arg(module_dir)
        .arg("--url")
        .arg(url);
    cmd
}

/// A scratch file for this test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-datachannel");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir.join(name)
}

/// `seconds` of a steady stereo tone, encoded with our encoder, written as the script reads
/// it: each frame a 2-byte big-endian length and the Opus packet.
fn write_tone_frames(path: &Path, seconds: u32) {
    let mut source = ToneSource::sine(PUB_LEFT_HZ as u32, PUB_RIGHT_HZ as u32, PUB_AMPLITUDE);
    let mut encoder = Encoder::new(0).expect("an Opus encoder");
    let mut frame: Frame = [0.0; FRAME_LEN];
    let mut packet = [0u8; MAX_PACKET];
    let mut file = Vec::new();
    for _ in 0..seconds * 50 {
        source.fill(&mut frame);
        let len = encoder.encode(&frame, &mut packet).expect("encodes");
        file.extend_from_slice(&(len as u16).to_be_bytes());
        file.extend_from_slice(&packet[..len]);
    }
    std::fs::write(path, file).expect("write the frames file");
}

/// The script's JSON summary (its last stdout line) after a successful exit, or why not.
fn finish(running: Running, timeout: Duration) -> Result<serde_json::Value, String> {
    let out = running.wait(timeout)?;
    if !out.status.success() {
        return Err(format!(
            "datachannel_peer.mjs failed ({}):\n{}",
            out.status,
            python::tail(&out.stderr, 30)
        ));
    }
    serde_json::from_str(python::last_line(&out.stdout)).map_err(|e| {
        format!(
            "datachannel_peer.mjs summary {:?}: {e}\n{}",
            out.stdout,
            python::tail(&out.stderr, 30)
        )
    })
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

/// libdatachannel checks the peer's certificate against one fingerprint: answers with several
/// `a=fingerprint` lines made about 40% of its handshakes fail (seen on this project). A
/// second line would make these tests flaky; this makes it a clear failure.
fn check_one_fingerprint(said: &serde_json::Value) -> Result<(), String> {
    if said["fingerprints"] == 1 {
        Ok(())
    } else {
        Err(format!(
            "the answer must have one a=fingerprint line: {said}"
        ))
    }
}

/// Waits until the server has a session (the publisher's), or says what the script said.
fn wait_for_session(server: &Server, publisher: &mut Option<Running>) -> Result<(), String> {
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while server.live_sessions() == 0 {
        if Instant::now() >= deadline {
            let said = match publisher.take().map(|p| p.wait(Duration::from_millis(10))) {
                Some(Ok(out)) => {
                    format!("exited {}: {}", out.status, python::tail(&out.stderr, 30))
                }
                Some(Err(e)) => e,
                None => String::new(),
            };
            return Err(format!(
                "no WHIP session {SESSION_TIMEOUT:?} after starting the script: {said}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// libdatachannel publishes `SECONDS` of the tone while our viewer listens for 4 s.
fn publish_and_listen(
    module_dir: &Path,
    version: &str,
    stream: &str,
    extra: &[&str],
) -> Result<String, String> {
    const SECONDS: u32 = 8;
    let frames = scratch(&format!("{stream}-frames.bin"));
    write_tone_frames(&frames, SECONDS);
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let url = format!("http://{}/{stream}/whip", server.http_addr());
    let mut cmd = script(module_dir, "publisher", &url);
    cmd.arg("--frames").arg(&frames).args(extra);
    let mut publisher = Some(Running::spawn(cmd, "datachannel_peer.mjs publisher")?);
    wait_for_session(&server, &mut publisher)?;

    let viewer = PlayOptions {
        url: format!("http://{}/{stream}/whep", server.http_addr()),
        token: None,
        duration: Duration::from_secs(4),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    };
    let report = play(&viewer).map_err(|e| format!("our viewer of {stream}: {e}"));
    let sent = finish(
        publisher.take().expect("the publisher is still ours"),
        Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK,
    );
    server.shutdown();
    let (report, sent) = (report?, sent?);
    check_one_fingerprint(&sent)?;
    if sent["refused"] != 0 || sent["sent"] != sent["frames"] {
        return Err(format!("libdatachannel did not send every frame: {sent}"));
    }
    if report.disconnected || report.decode_errors != 0 {
        return Err(format!("viewer: {}", summary(&report)));
    }
    let (left, right) = tone::check_stereo_tone(&report.pcm, PUB_LEFT_HZ, PUB_RIGHT_HZ, 2.0)
        .map_err(|e| {
            format!(
                "libdatachannel's tone did not come out of the mix: {e}\nviewer: {}\npublisher: {sent}",
                summary(&report)
            )
        })?;
    eprintln!("libdatachannel {version} published: {sent}; heard left {left:?}, right {right:?}");
    // Short: the printed matrix shows a cell's first 48 characters.
    Ok(format!("{PUB_LEFT_HZ}/{PUB_RIGHT_HZ} Hz heard, v{version}"))
}

/// OBS's way (30.2 and later): the offer goes out before gathering, without a candidate,
/// so the server learns libdatachannel's address from its first STUN check (a
/// peer-reflexive candidate). This is the matrix cell.
#[test]
fn libdatachannel_publishes_stereo_tone_like_obs() {
    const TEST: &str = "libdatachannel_publishes_stereo_tone_like_obs";
    let _serial = serial();
    let Some((dir, version)) = datachannel(TEST) else {
        return;
    };
    matrix::cell("libdatachannel", "publisher", || {
        publish_and_listen(&dir, &version, "datachannel-obs", &["--no-candidates"])
            .map(|heard| format!("{heard}, OBS offer"))
    });
}

/// The same with the offer libdatachannel makes once gathering is complete: its host
/// candidate on 127.0.0.1.
#[test]
fn libdatachannel_publishes_stereo_tone_with_its_candidate() {
    const TEST: &str = "libdatachannel_publishes_stereo_tone_with_its_candidate";
    let _serial = serial();
    let Some((dir, version)) = datachannel(TEST) else {
        return;
    };
    if let Err(why) = publish_and_listen(&dir, &version, "datachannel", &[]) {
        panic!("libdatachannel with a gathered offer: {why}");
    }
}

/// One received RTP packet as the script wrote it.
#[derive(Debug, Clone)]
struct Received {
    timestamp: u32,
    seq: u16,
    payload: Vec<u8>,
}

/// Parses the viewer script's file: per packet a 4-byte timestamp, a 2-byte sequence
/// number and a 2-byte length (big-endian), then the payload.
fn read_received(path: &Path) -> Result<Vec<Received>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut packets = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let head = data
            .get(at..at + 8)
            .ok_or_else(|| format!("truncated header at byte {at}"))?;
        let timestamp = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let seq = u16::from_be_bytes([head[4], head[5]]);
        let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
        let payload = data
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| format!("truncated payload at byte {at}"))?;
        packets.push(Received {
            timestamp,
            seq,
            payload: payload.to_vec(),
        });
        at += 8 + len;
    }
    Ok(packets)
}

/// What the viewer's packets decode to.
struct Decoded {
    pcm: Vec<f32>,
    packets: usize,
    lost: u64,
    /// Steps where the timestamp did not advance 960 per sequence number.
    timestamp_jumps: u64,
}

/// Decodes `packets` in sequence order with our decoder, concealing gaps (counted lost).
fn decode(mut packets: Vec<Received>) -> Result<Decoded, String> {
    // Extend the 16-bit sequence numbers across wraps, in arrival order, then sort.
    let mut extended = Vec::with_capacity(packets.len());
    let mut last: Option<i64> = None;
    for p in packets.drain(..) {
        let seq = match last {
            None => i64::from(p.seq),
            Some(prev) => {
                let delta = i64::from(p.seq.wrapping_sub(prev as u16) as i16);
                prev + delta
            }
        };
        last = Some(last.map_or(seq, |l| l.max(seq)));
        extended.push((seq, p));
    }
    extended.sort_by_key(|(seq, _)| *seq);
    extended.dedup_by_key(|(seq, _)| *seq);

    let mut decoder = Decoder::new().map_err(|e| e.to_string())?;
    let mut frame: Frame = [0.0; FRAME_LEN];
    let mut pcm = Vec::new();
    let (mut lost, mut timestamp_jumps) = (0, 0);
    let mut previous: Option<(i64, u32)> = None;
    for (seq, p) in &extended {
        if let Some((prev_seq, prev_ts)) = previous {
            let step = (seq - prev_seq) as u64;
            if p.timestamp.wrapping_sub(prev_ts) as u64 != step * FRAME_SAMPLES as u64 {
                timestamp_jumps += 1;
            }
            for _ in 1..step {
                lost += 1;
                let n = decoder.conceal(&mut frame).map_err(|e| e.to_string())?;
                pcm.extend_from_slice(&frame[..2 * n]);
            }
        }
        let n = decoder
            .decode(&p.payload, &mut frame)
            .map_err(|e| format!("packet {seq}: {e}"))?;
        pcm.extend_from_slice(&frame[..2 * n]);
        previous = Some((*seq, p.timestamp));
    }
    Ok(Decoded {
        pcm,
        packets: extended.len(),
        lost,
        timestamp_jumps,
    })
}

/// The `live` signal beeps: silent 200 ms of every second, so about a fifth of the 20 ms
/// frames are quiet and most of the rest loud.
fn check_gating(pcm: &[f32]) -> Result<(), String> {
    let frames: Vec<f32> = pcm
        .chunks_exact(2 * FRAME_SAMPLES)
        .map(mixcast::media::analysis::rms)
        .collect();
    let quiet = frames.iter().filter(|&&r| r < 0.01).count();
    let loud = frames.iter().filter(|&&r| r > 0.1).count();
    let fraction = quiet as f64 / frames.len().max(1) as f64;
    if !(0.1..0.3).contains(&fraction) || (loud as f64) < frames.len() as f64 * 0.6 {
        return Err(format!(
            "{quiet} quiet and {loud} loud of {} frames: not the beeping test signal",
            frames.len()
        ));
    }
    Ok(())
}

/// libdatachannel plays `live` for `SECONDS`; its packets, decoded, are the test signal.
fn view_live(module_dir: &Path, version: &str) -> Result<String, String> {
    const SECONDS: u32 = 4;
    let out = scratch("live-received.bin");
    let _ = std::fs::remove_file(&out);
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let url = format!("http://{}/live/whep", server.http_addr());
    let mut cmd = script(module_dir, "viewer", &url);
    cmd.arg("--out")
        .arg(&out)
        .arg("--seconds")
        .arg(SECONDS.to_string());
    let viewer = Running::spawn(cmd, "datachannel_peer.mjs viewer")?;
    let said = finish(viewer, Duration::from_secs(SECONDS.into()) + SCRIPT_SLACK);
    // The script DELETEd its session: the server lets it go.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.live_sessions() != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let left_over = server.live_sessions();
    server.shutdown();
    let said = said?;
    check_one_fingerprint(&said)?;
    if left_over != 0 {
        return Err(format!("{left_over} sessions live 3 s after the DELETE"));
    }
    let decoded = decode(read_received(&out)?)?;
    // 50 packets a second while connected (connected within 10 ms on loopback).
    let expected = f64::from(SECONDS) * 50.0;
    if (decoded.packets as f64) < expected * 0.9 {
        return Err(format!(
            "{} packets in {SECONDS} s, expected about {expected}: {said}",
            decoded.packets
        ));
    }
    if decoded.lost != 0 || decoded.timestamp_jumps != 0 {
        return Err(format!(
            "{} packets lost, {} timestamp steps not 960 per packet",
            decoded.lost, decoded.timestamp_jumps
        ));
    }
    // The first 100 ms are the decoder's start-up and a fade.
    let settled = decoded.pcm.get(2 * 4800..).unwrap_or_default();
    check_gating(settled)?;
    // The longest beep (760 ms without its first and last frame) is the tone, per channel.
    let (left, right) = tone::check_stereo_tone(settled, LIVE_LEFT_HZ, LIVE_RIGHT_HZ, 0.6)?;
    eprintln!(
        "libdatachannel {version} received {} packets, 0 lost; left {left:?}, right {right:?}",
        decoded.packets
    );
    Ok(format!(
        "{LIVE_LEFT_HZ}/{LIVE_RIGHT_HZ} Hz, {} pkts 0 lost, v{version}",
        decoded.packets
    ))
}

#[test]
fn libdatachannel_plays_live_440_left_660_right() {
    const TEST: &str = "libdatachannel_plays_live_440_left_660_right";
    let _serial = serial();
    let Some((dir, version)) = datachannel(TEST) else {
        return;
    };
    matrix::cell("libdatachannel", "viewer", || view_live(&dir, &version));
}

#[test]
fn received_file_decodes_in_sequence_order_and_counts_gaps() {
    // The viewer check must itself see loss and reordering: three packets of a tone, the
    // middle one missing and the last two swapped in arrival.
    let mut encoder = Encoder::new(0).expect("an Opus encoder");
    let mut source = ToneSource::sine(440, 660, 0.25);
    let mut frame: Frame = [0.0; FRAME_LEN];
    let mut packet = [0u8; MAX_PACKET];
    let mut packets = Vec::new();
    for i in 0..4u16 {
        source.fill(&mut frame);
        let len = encoder.encode(&frame, &mut packet).expect("encodes");
        packets.push(Received {
            timestamp: 1000 + u32::from(i) * 960,
            seq: 65534u16.wrapping_add(i),
            payload: packet[..len].to_vec(),
        });
    }
    let arrived = vec![packets[0].clone(), packets[3].clone(), packets[2].clone()];
    let decoded = decode(arrived).expect("decodes");
    assert_eq!(decoded.packets, 3);
    assert_eq!(decoded.lost, 1);
    assert_eq!(decoded.timestamp_jumps, 0);
    assert_eq!(decoded.pcm.len(), 4 * 2 * FRAME_SAMPLES);
    let mut wrong_ts = packets.clone();
    wrong_ts[1].timestamp += 1;
    assert_eq!(decode(wrong_ts).expect("decodes").timestamp_jumps, 2);
}
