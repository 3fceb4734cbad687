//! WHIP publishers (our client) and WHEP viewers (our client) over real UDP on 127.0.0.1
//! against an in-process server: what the publishers send is checked in what the viewers
//! decode (per-channel frequencies by Goertzel), and so is what must not be there (a
//! publisher's tone after it left, a gap while another one still plays).

#[path = "common/matrix.rs"]
mod matrix;

use mixcast::client::whep::{play, FrameArrival, PlayOptions, PlayReport};
use mixcast::client::whip::{PublishOptions, PublishReport, Publisher};
use mixcast::config::Config;
use mixcast::media::analysis::{deinterleave, rms};
use mixcast::media::sources::{SilenceSource, ToneSource};
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use mixcast::signal::auth::Secret;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The tests here each measure timing; run them one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The test signal of the stream `live`.
const LEFT_HZ: f32 = 440.0;
const RIGHT_HZ: f32 = 660.0;
/// Amplitude of the publishers' sines.
const TONE: f32 = 0.2;
/// A frame quieter than this (RMS over both channels) is a gap. One 0.2 sine alone is 0.14.
const GAP_RMS: f32 = 0.05;
/// Below this, a tone counts as absent (a present one is about `TONE`).
const ABSENT: f32 = 0.01;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> Server {
    Server::start(Config::loopback_ephemeral()).expect("server starts on loopback")
}

fn whip_url(server: &Server, stream: &str) -> String {
    format!("http://{}/{stream}/whip", server.http_addr())
}

/// Starts a publisher of a continuous `hz` sine on both channels.
fn publish_tone(server: &Server, stream: &str, hz: u32, duration: Duration) -> Publisher {
    let source = Box::new(ToneSource::sine(hz, hz, TONE));
    Publisher::start(PublishOptions::new(
        whip_url(server, stream),
        source,
        duration,
    ))
    .unwrap_or_else(|e| panic!("publishing {hz} Hz to {stream}: {e}"))
}

/// A viewer of `stream` for `duration`, decoding, on a thread of its own.
fn view(server: &Server, stream: &str, duration: Duration) -> thread::JoinHandle<PlayReport> {
    let opts = PlayOptions {
        url: format!("http://{}/{stream}/whep", server.http_addr()),
        token: None,
        duration,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    };
    thread::Builder::new()
        .name(format!("viewer-{stream}"))
        .spawn(move || play(&opts).unwrap_or_else(|e| panic!("playing: {e}")))
        .expect("spawn a viewer thread")
}

fn joined(viewer: thread::JoinHandle<PlayReport>) -> PlayReport {
    viewer.join().expect("the viewer thread did not panic")
}

/// Checks what every publisher report must show: a 201 with a recvonly answer, one packet
/// per 20 ms frame, nothing refused.
fn check_publisher(name: &str, report: &PublishReport, server: &Server) {
    assert!(
        report
            .session_url
            .starts_with(&format!("http://{}/", server.http_addr())),
        "{name}: session URL {}",
        report.session_url
    );
    assert!(
        report.answer_sdp.contains("a=recvonly"),
        "{name}: the answer is not recvonly:\n{}",
        report.answer_sdp
    );
    assert_eq!(report.send_errors, 0, "{name}");
    assert!(!report.disconnected, "{name}: disconnected");
    assert_eq!(report.packets_sent, report.sent_at.len() as u64, "{name}");
    // Frame indices are consecutive from 0: the RTP timeline has no hole.
    for (i, (k, _)) in report.sent_at.iter().enumerate() {
        assert_eq!(*k, i as u64, "{name}: frame indices");
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

/// The interleaved samples of one decoded piece.
fn piece<'a>(report: &'a PlayReport, a: &FrameArrival) -> &'a [f32] {
    &report.pcm[2 * a.offset..2 * (a.offset + a.samples)]
}

/// Left and right channels of the pieces whose arrival time satisfies `keep`.
fn channels_where(report: &PlayReport, keep: impl Fn(Instant) -> bool) -> (Vec<f32>, Vec<f32>) {
    let stereo: Vec<f32> = report
        .frame_arrivals
        .iter()
        .filter(|a| keep(a.at))
        .flat_map(|a| piece(report, a).iter().copied())
        .collect();
    deinterleave(&stereo)
}

/// The first decoded piece louder than [`GAP_RMS`].
fn first_audible(report: &PlayReport) -> Option<&FrameArrival> {
    report
        .frame_arrivals
        .iter()
        .find(|a| rms(piece(report, a)) > GAP_RMS)
}

/// Checks that `hz` is present (about `TONE`) or absent on both channels.
fn check_tone(what: &str, (left, right): &(Vec<f32>, Vec<f32>), hz: f32, present: bool) {
    for (side, samples) in [("left", left), ("right", right)] {
        assert!(
            samples.len() >= SAMPLE_RATE as usize / 2,
            "{what}: only {} samples to analyse",
            samples.len()
        );
        let a = amplitude_at(samples, hz);
        if present {
            assert!(
                (TONE * 0.7..TONE * 1.3).contains(&a),
                "{what}: {hz} Hz on the {side} at {a}, expected about {TONE}"
            );
        } else {
            assert!(
                a < ABSENT,
                "{what}: {hz} Hz on the {side} at {a}, expected none"
            );
        }
    }
}

#[test]
fn publisher_is_mixed_with_the_test_signal() {
    let _serial = serial();
    let server = start();
    let publisher = publish_tone(&server, "live", 1000, Duration::from_secs(10));
    let viewer = view(&server, "live", Duration::from_secs(3));
    let viewed = joined(viewer);
    let published = publisher.stop().expect("the publisher ends cleanly");
    check_publisher("publisher", &published, &server);

    assert_eq!(viewed.lost_packets, 0, "viewer lost packets");
    assert_eq!(viewed.decode_errors, 0);
    // The viewer connected after the publisher: its tone is in the mix from the start.
    // Skip the decoder's start-up.
    let start = viewed.frame_arrivals[0].at + Duration::from_millis(200);
    let (left, right) = channels_where(&viewed, |at| at >= start);
    let tone = TONE;
    let a = |s: &[f32], hz| amplitude_at(s, hz);
    // The publisher: 1 kHz on both channels, continuous.
    for (side, s) in [("left", &left), ("right", &right)] {
        let found = a(s, 1000.0);
        assert!(
            (tone * 0.7..tone * 1.3).contains(&found),
            "{side}: 1000 Hz at {found}, expected about {tone}"
        );
    }
    // The test signal: 440 Hz left, 660 Hz right, each 0.25 sounding 80% of the time; the
    // other channel's tone absent.
    let (l440, r440, l660, r660) = (
        a(&left, LEFT_HZ),
        a(&right, LEFT_HZ),
        a(&left, RIGHT_HZ),
        a(&right, RIGHT_HZ),
    );
    assert!((0.14..0.3).contains(&l440), "left 440 Hz at {l440}");
    assert!((0.14..0.3).contains(&r660), "right 660 Hz at {r660}");
    assert!(
        r440 < l440 * 0.1,
        "right 440 Hz at {r440}: the channels leak"
    );
    assert!(
        l660 < r660 * 0.1,
        "left 660 Hz at {l660}: the channels leak"
    );
    // The test signal is silent 200 ms of every second; the publisher fills those gaps.
    for a in viewed.frame_arrivals.iter().filter(|a| a.at >= start) {
        let level = rms(piece(&viewed, a));
        assert!(
            level > GAP_RMS,
            "a frame at RMS {level}: the publisher is not continuous"
        );
    }
    matrix::record(
        "mixcast",
        "publisher",
        true,
        "1000 Hz heard over 440/660 Hz",
    );
    server.shutdown();
}

#[test]
fn one_of_two_publishers_leaves_without_a_gap() {
    let _serial = serial();
    let server = start();
    let stream = "duet";
    let a = publish_tone(&server, stream, 1000, Duration::from_secs(20));
    let b = publish_tone(&server, stream, 1500, Duration::from_secs(20));
    let viewer = view(&server, stream, Duration::from_secs(3));
    thread::sleep(Duration::from_millis(1500));
    let a_report = a.stop().expect("publisher A leaves cleanly");
    let viewed = joined(viewer);
    let b_report = b.stop().expect("publisher B ends cleanly");
    check_publisher("A", &a_report, &server);
    check_publisher("B", &b_report, &server);
    let (_, a_last) = *a_report.sent_at.last().expect("A sent packets");
    // B played before the viewer came and was stopped only after it left.
    let (_, b_first) = *b_report.sent_at.first().expect("B sent packets");
    assert!(b_first < viewed.frame_arrivals[0].at);

    // No gap: no packet missing, and from the first sound to the end no quiet frame (B
    // played all along; A leaving fades A out, not the mix).
    assert_eq!(viewed.lost_packets, 0, "viewer lost packets");
    assert_eq!(viewed.decode_errors, 0);
    let first = first_audible(&viewed)
        .expect("the viewer heard something")
        .at;
    for f in viewed.frame_arrivals.iter().filter(|f| f.at >= first) {
        let level = rms(piece(&viewed, f));
        assert!(
            level > GAP_RMS,
            "a frame at RMS {level}, {:?} after A's last packet",
            f.at.checked_duration_since(a_last)
        );
    }
    let expected = 3.0 * 50.0;
    assert!(
        viewed.packets as f64 >= expected * 0.9,
        "{} packets in 3 s",
        viewed.packets
    );

    // Both while A was there; only B once A's last packet has played out.
    let both = channels_where(&viewed, |at| {
        at >= first + Duration::from_millis(200) && at + Duration::from_millis(100) <= a_last
    });
    check_tone("before A left", &both, 1000.0, true);
    check_tone("before A left", &both, 1500.0, true);
    let after = channels_where(&viewed, |at| at >= a_last + Duration::from_millis(400));
    check_tone("after A left", &after, 1000.0, false);
    check_tone("after A left", &after, 1500.0, true);
    server.shutdown();
}

#[test]
fn a_new_publisher_is_heard_quickly() {
    // The requirement is 100 ms from the first packet to the viewers; a loaded test machine
    // gets 300 ms. The latency example measures the real figure.
    const BOUND: Duration = Duration::from_millis(300);
    let _serial = serial();
    let server = start();
    let stream = "join";
    // A silent publisher makes the stream, so the viewer can connect before the tone starts.
    let silent = Publisher::start(PublishOptions::new(
        whip_url(&server, stream),
        Box::new(SilenceSource),
        Duration::from_secs(20),
    ))
    .expect("the silent publisher starts");
    let viewer = view(&server, stream, Duration::from_millis(2500));
    thread::sleep(Duration::from_millis(800));
    let tone = publish_tone(&server, stream, 1000, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1000));
    let tone_report = tone.stop().expect("the tone publisher ends cleanly");
    let viewed = joined(viewer);
    let silent_report = silent.stop().expect("the silent publisher ends cleanly");
    check_publisher("tone", &tone_report, &server);
    check_publisher("silent", &silent_report, &server);

    let (_, first_sent) = tone_report.sent_at[0];
    assert!(
        viewed.frame_arrivals[0].at < first_sent,
        "the viewer was not there before the tone"
    );
    let heard = first_audible(&viewed).expect("the tone was heard").at;
    let delay = heard
        .checked_duration_since(first_sent)
        .expect("nothing is heard before the tone is sent");
    eprintln!("first packet sent to first frame heard: {delay:?}");
    assert!(delay < BOUND, "heard {delay:?} after its first packet");
    server.shutdown();
}

#[test]
fn a_publish_token_is_sent_as_bearer_and_video_is_offered() {
    let _serial = serial();
    let mut config = Config::loopback_ephemeral();
    config.auth.publish.default = vec![Secret::new("s3cret").expect("a valid token")];
    let server = Server::start(config).expect("server starts on loopback");
    let stream = "guarded";
    let opts = |token: Option<&str>| {
        let mut o = PublishOptions::new(
            whip_url(&server, stream),
            Box::new(ToneSource::sine(1000, 1000, TONE)),
            Duration::from_secs(20),
        );
        o.token = token.map(str::to_owned);
        // An offer like OBS's: a (silent) sendonly video m-line besides the audio.
        o.video = true;
        o
    };
    for token in [None, Some("wrong")] {
        let err = Publisher::start(opts(token)).expect_err("refused without the token");
        assert_eq!(err.status(), Some(401), "token {token:?}: {err}");
    }
    let publisher = Publisher::start(opts(Some("s3cret"))).expect("the token lets it in");
    let viewed = joined(view(&server, stream, Duration::from_millis(1500)));
    let published = publisher.stop().expect("the publisher ends cleanly");
    check_publisher("publisher", &published, &server);
    assert!(
        published
            .answer_sdp
            .lines()
            .any(|l| l.starts_with("m=video ") && !l.starts_with("m=video 0 ")),
        "the video m-line was refused:\n{}",
        published.answer_sdp
    );
    let start = viewed.frame_arrivals[0].at + Duration::from_millis(200);
    check_tone(
        "with a token",
        &channels_where(&viewed, |at| at >= start),
        1000.0,
        true,
    );
    server.shutdown();
}

#[test]
fn goertzel_reads_the_amplitude_of_a_sine() {
    // The helper the checks above rely on must itself be right.
    let sine: Vec<f32> = (0..SAMPLE_RATE)
        .map(|i| 0.2 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / SAMPLE_RATE as f32).sin())
        .collect();
    assert!((amplitude_at(&sine, 1000.0) - 0.2).abs() < 0.01);
    assert!(amplitude_at(&sine, 1500.0) < 0.001);
}
