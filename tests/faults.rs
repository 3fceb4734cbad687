//! Bad luck on the path, over a path we impair ourselves (this kernel has no `netem`): a
//! userspace relay on loopback (`common/udp_relay.rs`) between the clients and the
//! in-process server, with the server's answer rewritten by an HTTP proxy
//! (`common/sdp_proxy.rs`) so that clients can reach it only through the relay.
//!
//! - 10% loss and 100 ms delay each way, from the first STUN check on: aiortc and our own
//!   client connect and hear the `live` signal (440 Hz left, 660 Hz right); FFmpeg 8
//!   connects through the delay, publishes its stereo tone through the loss, and a viewer
//!   hears it in the mix.
//! - The FFmpeg publisher killed (SIGKILL) mid-stream: its session is reaped after the
//!   media timeout, and the session counters return to 0.
//! - A DTLS stall (the relay drops every DTLS record): the session that never connects is
//!   freed after the connect timeout, the counters return to 0, and once the path is clear
//!   again the next viewer connects and hears the signal.
//!
//! The third-party peers need Python with aiortc and PyAV (pip-installed into target/ when
//! missing, tests/common/python.rs); without them these print SKIPPED and pass, unless `CI`
//! or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/live_signal.rs"]
mod live_signal;
#[path = "common/python.rs"]
mod python;
#[path = "common/sdp_proxy.rs"]
mod sdp_proxy;
#[path = "common/tone.rs"]
mod tone;
#[path = "common/udp_relay.rs"]
mod udp_relay;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mixcast::client::whep::{play, PlayOptions, PlayReport};
use mixcast::config::Config;
use mixcast::engine::egress::{CONNECT_TIMEOUT, MEDIA_TIMEOUT};
use mixcast::server::Server;
use python::{Python, Running};
use sdp_proxy::SdpProxy;
use udp_relay::{Impairment, Relay};

/// The impaired path: 10% loss and 100 ms each way.
const LOSSY: Impairment = Impairment {
    loss: 0.10,
    delay: Duration::from_millis(100),
    stall_dtls: false,
};
/// FFmpeg's tone.
const LEFT_HZ: f32 = 1000.0;
const RIGHT_HZ: f32 = 1500.0;
/// Slack for a script beyond its media time (start-up, ICE and DTLS over the lossy path).
const SCRIPT_SLACK: Duration = Duration::from_secs(40);
/// From starting FFmpeg's script to its WHIP session existing.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The tests here each run real-time media; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server, a relay in front of its UDP port and a proxy in front of its HTTP port
/// that points every answer at the relay.
struct Impaired {
    server: Server,
    relay: Relay,
    proxy: SdpProxy,
}

impl Impaired {
    fn start(impairment: Impairment, seed: u64) -> Impaired {
        let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
        let relay = udp_relay::start(server.udp_addr(), impairment, seed);
        let via = relay.addr;
        let proxy = sdp_proxy::start_with(
            server.http_addr(),
            Arc::new(udp_relay::offer_without_candidates),
            Arc::new(move |answer| udp_relay::answer_via(answer, via)),
        );
        Impaired {
            server,
            relay,
            proxy,
        }
    }

    /// The URL of `stream`'s `endpoint` (whip, whep) through the proxy.
    fn url(&self, stream: &str, endpoint: &str) -> String {
        format!("http://{}/{stream}/{endpoint}", self.proxy.addr)
    }

    fn counts(&self) -> String {
        let c = &self.relay.counts;
        format!(
            "relay: {} forwarded, {} lost, {} DTLS held back",
            c.forwarded.load(std::sync::atomic::Ordering::Relaxed),
            c.lost.load(std::sync::atomic::Ordering::Relaxed),
            c.stalled.load(std::sync::atomic::Ordering::Relaxed)
        )
    }
}

/// Sessions the server holds, and those its metrics count as viewers and publishers.
fn session_counts(server: &Server) -> (usize, usize, u64, u64) {
    let text = server.metrics().render();
    let sum = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    (
        server.live_sessions(),
        server.pending_sessions(LOCALHOST),
        sum("mixcast_viewers"),
        sum("mixcast_publishers"),
    )
}

/// Waits up to `limit` for every session counter to be 0; how long it took.
fn counters_return_to_zero(server: &Server, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let counts = session_counts(server);
        if counts == (0, 0, 0, 0) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "after {limit:?}: {} sessions, {} pending, {} viewers, {} publishers",
                counts.0, counts.1, counts.2, counts.3
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn viewer(url: String, seconds: u64) -> PlayOptions {
    PlayOptions {
        url,
        token: None,
        duration: Duration::from_secs(seconds),
        bind: LOCALHOST,
        decode: true,
    }
}

fn summary(r: &PlayReport) -> String {
    format!(
        "{} packets, {} lost, {} decode errors, connected after {:?}, disconnected {}",
        r.packets, r.lost_packets, r.decode_errors, r.connected_after, r.disconnected
    )
}

fn python_with(test: &str, packages: &[&str]) -> Option<Python> {
    match python::with_packages(packages, packages) {
        Ok(py) => Some(py),
        Err(why) => {
            python::unavailable(test, &format!("no Python with {packages:?}: {why}"));
            None
        }
    }
}

#[test]
fn viewers_hear_the_signal_through_loss_and_delay() {
    const TEST: &str = "viewers_hear_the_signal_through_loss_and_delay";
    const SECONDS: u64 = 6;
    let _serial = serial();
    let Some(py) = python_with(TEST, &["aiortc", "av", "numpy"]) else {
        return;
    };
    let path = Impaired::start(LOSSY, 0x5eed_0001);
    let pcm_file = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = py.command(&python::script("aiortc_peer.py"));
    cmd.arg("view")
        .arg(path.url("live", "whep"))
        .arg("--seconds")
        .arg(SECONDS.to_string())
        .arg("--pcm-out")
        .arg(pcm_file.path());
    let aiortc = Running::spawn(cmd, "aiortc_peer.py view").unwrap();
    let ours = play(&viewer(path.url("live", "whep"), SECONDS)).expect("our viewer plays");
    let out = aiortc
        .wait(Duration::from_secs(SECONDS) + SCRIPT_SLACK)
        .unwrap();
    let aiortc_summary = python::script_summary(out, "aiortc_peer.py").unwrap();
    eprintln!("{TEST}: ours: {}; {}", summary(&ours), path.counts());

    // The path really was lossy for our viewer: about a tenth of its packets missing.
    let expected = ours.packets + ours.lost_packets;
    let share = ours.lost_packets as f64 / expected.max(1) as f64;
    assert!(
        (0.04..0.2).contains(&share),
        "our viewer lost {:.1}% of {expected} packets through a 10% lossy path",
        100.0 * share
    );
    let heard = live_signal::check(&ours.pcm, 4.0).unwrap_or_else(|e| {
        panic!(
            "our viewer, through loss: {e}\n{}\n{}",
            summary(&ours),
            path.counts()
        )
    });
    eprintln!("{TEST}: ours heard {heard}");
    let bytes = std::fs::read(pcm_file.path()).unwrap();
    let pcm: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    let heard = live_signal::check_with_gaps(&pcm, 2.5, 0.03..0.3).unwrap_or_else(|e| {
        panic!(
            "aiortc, through loss: {e}\naiortc: {aiortc_summary}\n{}",
            path.counts()
        )
    });
    eprintln!("{TEST}: aiortc heard {heard}; aiortc: {aiortc_summary}");
    // The viewers' receiver reports carried the loss to the stream's counter (issue 15):
    // str0m reports an audio-only viewer's stats every 5 s, so within the 6 s each viewer
    // reported once, at most its whole loss so far.
    let counted = path.server.metrics().stream_count("live");
    eprintln!("{TEST}: stream counts {counted:?}");
    assert!(
        counted.viewer_lost > 0 && counted.viewer_lost <= 2 * expected,
        "viewers lost about a tenth of their packets; the stream counted {} reported lost",
        counted.viewer_lost
    );
    assert!(counted.sent_packets >= expected, "{counted:?}");
    // Both said goodbye (DELETE) or went silent: every counter back to 0.
    let took = counters_return_to_zero(&path.server, Duration::from_secs(8))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{TEST}: counters at 0 {took:?} after the viewers ended");
    path.server.shutdown();
}

#[test]
fn ffmpeg_publishes_through_loss_then_is_killed_and_reaped() {
    const TEST: &str = "ffmpeg_publishes_through_loss_then_is_killed_and_reaped";
    let _serial = serial();
    let Some(py) = python_with(TEST, &["av", "numpy"]) else {
        return;
    };
    // FFmpeg gives its whole handshake 5 s: through 10% loss that budget runs out now and
    // then (one seed of the loss in seven here, see the README). So its handshake crosses
    // the delay only, and the loss starts once its media flows.
    let path = Impaired::start(Impairment { loss: 0.0, ..LOSSY }, 0x5eed_0002);
    let mut cmd = py.command(&python::script("ffmpeg_whip.py"));
    cmd.arg(path.url("faulty", "whip"))
        .arg("--seconds")
        .arg("120")
        .arg("--left-hz")
        .arg(LEFT_HZ.to_string())
        .arg("--right-hz")
        .arg(RIGHT_HZ.to_string())
        .arg("--no-video")
        .arg("--verbose"); // its log, shown if its media does not flow
    let ffmpeg = Running::spawn(cmd, "ffmpeg_whip.py").unwrap();
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while session_counts(&path.server).3 == 0 {
        assert!(
            Instant::now() < deadline,
            "no publisher {SESSION_TIMEOUT:?} after starting FFmpeg: {}",
            path.counts()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Its media flows (about 50 packets a second once ICE and DTLS are through).
    let flowing = |p: &Impaired| {
        p.relay
            .counts
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while flowing(&path) < 100 {
        if Instant::now() > deadline + Duration::from_secs(15) {
            let log = ffmpeg
                .wait(Duration::from_millis(10))
                .err()
                .unwrap_or_default();
            panic!(
                "FFmpeg's media does not flow: {}\nFFmpeg: {log}",
                path.counts()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    path.relay.impairment.lock().unwrap().loss = LOSSY.loss;
    thread::sleep(Duration::from_millis(500));
    // A viewer on a clear path hears FFmpeg's tone, which crossed the lossy one.
    let direct = format!("http://{}/faulty/whep", path.server.http_addr());
    let report = play(&viewer(direct, 5)).expect("the viewer plays");
    let (left, right) = match tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0) {
        Ok(found) => found,
        Err(e) => {
            let log = ffmpeg
                .wait(Duration::from_millis(10))
                .err()
                .unwrap_or_default();
            panic!(
                "FFmpeg's tone through 10% loss: {e}\nviewer: {}\n{}\nFFmpeg: {log}",
                summary(&report),
                path.counts()
            )
        }
    };
    eprintln!(
        "{TEST}: heard {:.1}/{:.1} Hz; {}",
        left.dominant_hz,
        right.dominant_hz,
        path.counts()
    );
    assert!(
        path.relay
            .counts
            .lost
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // SIGKILL: no DELETE, no goodbye; the media stops.
    let killed = Instant::now();
    drop(ffmpeg);
    let took = counters_return_to_zero(&path.server, MEDIA_TIMEOUT + Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the killed publisher: {e}"));
    let since_kill = killed.elapsed();
    eprintln!("{TEST}: killed publisher reaped, counters at 0, {since_kill:?} after the kill");
    assert!(
        took >= MEDIA_TIMEOUT - Duration::from_secs(1),
        "reaped {took:?} after the kill: before the media timeout, so not by it"
    );
    path.server.shutdown();
}

#[test]
fn a_dtls_stall_is_reaped_and_the_next_viewer_connects() {
    const TEST: &str = "a_dtls_stall_is_reaped_and_the_next_viewer_connects";
    let _serial = serial();
    let stalled = Impairment {
        stall_dtls: true,
        ..Impairment::default()
    };
    let path = Impaired::start(stalled, 0x5eed_0003);
    // The stuck client gives up and says goodbye; its DELETE is lost, as its DTLS was.
    path.proxy
        .swallow_deletes
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let url = path.url("live", "whep");
    let started = Instant::now();
    let stuck = thread::spawn(move || play(&viewer(url, 3)));
    // ICE completes (STUN passes), DTLS never does: the session stays pending.
    let deadline = Instant::now() + Duration::from_secs(5);
    while session_counts(&path.server).1 == 0 {
        assert!(Instant::now() < deadline, "no pending session");
        thread::sleep(Duration::from_millis(20));
    }
    let took = counters_return_to_zero(&path.server, CONNECT_TIMEOUT + Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the stalled session: {e}; {}", path.counts()));
    let freed_after = started.elapsed();
    eprintln!(
        "{TEST}: stalled session freed {freed_after:?} after its POST ({took:?} of waiting); {}",
        path.counts()
    );
    assert!(
        freed_after >= CONNECT_TIMEOUT - Duration::from_secs(1),
        "freed after {freed_after:?}: before the connect timeout"
    );
    assert!(
        path.relay
            .counts
            .stalled
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let stuck = stuck.join().unwrap();
    assert!(
        stuck.as_ref().map_or(true, |r| r.packets == 0),
        "a viewer whose DTLS never passed got media: {:?}",
        stuck.map(|r| summary(&r))
    );

    // The path clears: the next viewer connects through the same relay and hears it.
    path.relay.impairment.lock().unwrap().stall_dtls = false;
    path.proxy
        .swallow_deletes
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let report = play(&viewer(path.url("live", "whep"), 4)).expect("the next viewer plays");
    let heard = live_signal::check(&report.pcm, 3.0)
        .unwrap_or_else(|e| panic!("the next viewer: {e}; {}", summary(&report)));
    eprintln!("{TEST}: next viewer heard {heard}");
    counters_return_to_zero(&path.server, Duration::from_secs(5)).unwrap();
    path.server.shutdown();
}
