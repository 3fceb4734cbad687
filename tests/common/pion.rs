//! The pion/webrtc v3 test peer (tests/interop/pion_peer: a WHIP publisher, a WHEP viewer,
//! or a small WHIP and WHEP server), built once per source version into
//! target/interop-pion/ from Debian's `golang-github-pion-webrtc.v3-dev` (GOPATH mode, no
//! network: GO111MODULE=off, GOPROXY=off), and the files it reads and writes: Opus frames
//! in, Opus RTP records out.
//!
//! Shared by tests/interop_pion.rs and tests/push_pull.rs. Needs `python` (bounded child
//! processes, skip-or-fail) and `tone` next to it.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use super::python;
use super::tone;
use mixcast::media::opus::{Decoder, Encoder, MAX_PACKET};
use mixcast::media::{Frame, FRAME_LEN, FRAME_SAMPLES};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where Debian puts Go library sources, and the pion package the peer needs.
pub const GOCODE: &str = "/usr/share/gocode";
pub const PION_SOURCE: &str = "/usr/share/gocode/src/github.com/pion/webrtc";
pub const APT_PACKAGES: &str = "golang-go golang-github-pion-webrtc.v3-dev";
/// The longest the Go build may take (pion and its dependencies from source, cold cache).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The peer's source directory.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pion_peer")
}

/// The built peer, or None (after `python::unavailable`) when Go or pion is missing. A
/// build failure with both present panics: that is a broken peer, not a missing tool.
pub fn pion_peer(test: &str) -> Option<PathBuf> {
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
pub fn build() -> Result<PathBuf, String> {
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

/// `seconds` of a stereo tone, encoded by mixcast's Opus encoder, in the peer's frame
/// file format: per 20 ms frame a 2-byte big-endian length, then the packet.
pub fn opus_tone_file(left_hz: f32, right_hz: f32, seconds: f32) -> tempfile::NamedTempFile {
    let pcm = tone::synth(left_hz, right_hz, 0.25, seconds);
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
pub struct RtpRecord {
    pub seq: u16,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

/// Parses the viewer peer's file: 2-byte sequence number, 4-byte timestamp, 2-byte
/// length, payload (big-endian).
pub fn read_rtp_records(bytes: &[u8]) -> Result<Vec<RtpRecord>, String> {
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
pub struct Decoded {
    pub pcm: Vec<f32>,
    pub lost: u64,
    pub reordered: u64,
}

/// Decodes the packets in arrival order with mixcast's decoder, concealing gaps; checks
/// that sequence numbers and timestamps advance together (960 per 20 ms packet).
pub fn decode(records: &[RtpRecord]) -> Result<Decoded, String> {
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
