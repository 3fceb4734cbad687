//! WHEP viewers over real UDP on 127.0.0.1 against an in-process server playing the test
//! signal: the media itself is checked (packet rate, per-channel frequency, separation of
//! the channels, the beep's gating), and sessions are gone after each viewer's DELETE.

#[path = "common/matrix.rs"]
mod matrix;

use mixcast::client::whep::{play, ClientError, PlayOptions, PlayReport};
use mixcast::config::Config;
use mixcast::media::analysis::{deinterleave, dominant_frequency, rms};
use mixcast::media::{FRAME_SAMPLES, SAMPLE_RATE};
use mixcast::server::Server;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The tests here each measure timing; run them one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

const PACKETS_PER_SECOND: f64 = 50.0;
const LEFT_HZ: f32 = 440.0;
const RIGHT_HZ: f32 = 660.0;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> Server {
    Server::start(Config::loopback_ephemeral()).expect("server starts on loopback")
}

fn options(server: &Server, stream: &str, duration: Duration, decode: bool) -> PlayOptions {
    PlayOptions {
        url: format!("http://{}/{stream}/whep", server.http_addr()),
        token: None,
        duration,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode,
    }
}

/// Waits up to 2 s for the server to have no live session.
fn assert_sessions_drop_to_zero(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.live_sessions() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} sessions still live 2 s after the viewers' DELETE",
            server.live_sessions()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Amplitude of the `hz` component of `samples` (Goertzel, Hann window), in the same unit
/// as the samples: a full-length sine of amplitude `a` at `hz` gives about `a`.
fn amplitude_at(samples: &[f32], hz: f32) -> f32 {
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut window_sum = 0.0f64;
    for (i, &x) in samples.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
        window_sum += hann;
        let s0 = f64::from(x) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    (2.0 * power.max(0.0).sqrt() / window_sum) as f32
}

/// Checks one channel of the test signal: its own tone dominates, the other channel's tone
/// is at least 20 dB down, and the level is that of a 0.25 sine gated 800 ms of 1000 ms.
fn check_channel(name: &str, samples: &[f32], own_hz: f32, other_hz: f32) {
    let found = dominant_frequency(samples, SAMPLE_RATE);
    assert!(
        (found - own_hz).abs() <= 10.0,
        "{name}: dominant {found} Hz, expected {own_hz} Hz"
    );
    let own = amplitude_at(samples, own_hz);
    let other = amplitude_at(samples, other_hz);
    assert!(
        other < own * 0.1,
        "{name}: {other_hz} Hz at {other} against {own_hz} Hz at {own}: channels leak"
    );
    // 0.25 amplitude, sounding 80% of the time: rms = 0.25 / sqrt(2) * sqrt(0.8) ≈ 0.158.
    let level = rms(samples);
    assert!(
        (0.11..0.21).contains(&level),
        "{name}: rms {level}, expected about 0.158"
    );
}

/// The beep is silent 200 ms of every second: about a fifth of the 20 ms frames are quiet.
fn check_gating(name: &str, samples: &[f32]) {
    let frames: Vec<f32> = samples.chunks_exact(FRAME_SAMPLES).map(rms).collect();
    let quiet = frames.iter().filter(|&&r| r < 0.01).count();
    let loud = frames.iter().filter(|&&r| r > 0.1).count();
    let fraction = quiet as f64 / frames.len().max(1) as f64;
    assert!(
        (0.1..0.3).contains(&fraction),
        "{name}: {quiet} of {} frames quiet, expected about 20%",
        frames.len()
    );
    assert!(
        loud as f64 > frames.len() as f64 * 0.6,
        "{name}: {loud} loud frames"
    );
}

/// A report without its audio, for failure messages.
fn summary(report: &PlayReport) -> String {
    format!(
        "{} lost, first packet after {:?}, connected after {:?}, disconnected {}",
        report.lost_packets, report.first_packet_after, report.connected_after, report.disconnected
    )
}

/// The server's TX timing (tick lateness and fan-out histograms), for failure messages:
/// a starved TX thread sends fewer packets.
fn tx_timing(server: &Server) -> String {
    server
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with("mixcast_tx_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Packets a viewer should get while connected for `duration`.
fn expected_packets(duration: Duration) -> f64 {
    duration.as_secs_f64() * PACKETS_PER_SECOND
}

/// The decoded audio without its first 100 ms (the decoder's start-up and the first fade).
fn settled(report: &PlayReport) -> (Vec<f32>, Vec<f32>) {
    let (left, right) = deinterleave(&report.pcm);
    let skip = (SAMPLE_RATE / 10) as usize;
    (
        left.get(skip..).unwrap_or_default().to_vec(),
        right.get(skip..).unwrap_or_default().to_vec(),
    )
}

#[test]
fn one_viewer_hears_440_left_and_660_right() {
    let _serial = serial();
    let server = start();
    let duration = Duration::from_secs(3);
    let report = play(&options(&server, "live", duration, true)).expect("plays");

    let expected = expected_packets(duration);
    let packets = report.packets as f64;
    assert!(
        packets >= expected * 0.9 && packets <= expected * 1.1 + 2.0,
        "{packets} packets in {duration:?}, expected about {expected}: {}\nserver:\n{}",
        summary(&report),
        tx_timing(&server)
    );
    assert!(report.bytes > report.packets * 20, "{} bytes", report.bytes);
    let first = report.first_packet_after.expect("a first packet");
    assert!(
        first < Duration::from_secs(2),
        "first packet after {first:?}"
    );
    assert!(
        report.answer_has_stereo_opus(),
        "answer lacks stereo=1:\n{}",
        report.answer_sdp
    );
    assert!(!report.disconnected);
    assert_eq!(report.decode_errors, 0);
    assert!(
        report
            .session_url
            .starts_with(&format!("http://{}/", server.http_addr())),
        "session URL {}",
        report.session_url
    );

    let decoded_frames = report.pcm.len() / (2 * FRAME_SAMPLES);
    assert!(
        decoded_frames as u64 >= report.packets,
        "{decoded_frames} frames decoded from {} packets",
        report.packets
    );
    let (left, right) = settled(&report);
    check_channel("left", &left, LEFT_HZ, RIGHT_HZ);
    check_channel("right", &right, RIGHT_HZ, LEFT_HZ);
    check_gating("left", &left);
    check_gating("right", &right);
    matrix::record("mixcast", "viewer", true, "440/660 Hz heard, gating seen");

    assert_sessions_drop_to_zero(&server);
    server.shutdown();
}

#[test]
fn fifty_viewers_at_once() {
    const VIEWERS: usize = 50;
    const DECODING: usize = 3;
    let _serial = serial();
    let server = start();
    let duration = Duration::from_secs(2);
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|i| {
            let opts = options(&server, "live", duration, i < DECODING);
            thread::Builder::new()
                .name(format!("viewer-{i}"))
                .spawn(move || play(&opts))
                .expect("spawn a viewer thread")
        })
        .collect();
    let reports: Vec<PlayReport> = viewers
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.join()
                .expect("viewer thread did not panic")
                .unwrap_or_else(|e| panic!("viewer {i}: {e}"))
        })
        .collect();

    let expected = expected_packets(duration);
    for (i, report) in reports.iter().enumerate() {
        assert!(
            report.packets as f64 >= expected * 0.9,
            "viewer {i}: {} packets, expected about {expected}: {}\nserver:\n{}",
            report.packets,
            summary(report),
            tx_timing(&server)
        );
    }
    for (i, report) in reports.iter().take(DECODING).enumerate() {
        let (left, right) = settled(report);
        check_channel(&format!("viewer {i} left"), &left, LEFT_HZ, RIGHT_HZ);
        check_channel(&format!("viewer {i} right"), &right, RIGHT_HZ, LEFT_HZ);
    }
    let mut urls: Vec<&str> = reports.iter().map(|r| r.session_url.as_str()).collect();
    urls.sort_unstable();
    urls.dedup();
    assert_eq!(urls.len(), VIEWERS, "session URLs are not unique");

    assert_sessions_drop_to_zero(&server);
    server.shutdown();
}

#[test]
fn unknown_stream_is_404() {
    let _serial = serial();
    let server = start();
    let started = Instant::now();
    let err = play(&options(
        &server,
        "nosuchstream",
        Duration::from_secs(1),
        false,
    ))
    .expect_err("an unknown stream cannot be played");
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(
        matches!(err, ClientError::Status { method: "POST", .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.live_sessions(), 0);
    server.shutdown();
}

#[test]
fn goertzel_reads_the_amplitude_of_a_sine() {
    // The helper the checks above rely on must itself be right.
    let sine: Vec<f32> = (0..SAMPLE_RATE)
        .map(|i| 0.25 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / SAMPLE_RATE as f32).sin())
        .collect();
    assert!((amplitude_at(&sine, 440.0) - 0.25).abs() < 0.01);
    assert!(amplitude_at(&sine, 660.0) < 0.001);
}
