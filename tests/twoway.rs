//! Two-way audio over real UDP on 127.0.0.1 against an in-process server, our str0m client
//! on both sides: talkers (WHIP with `sendrecv` audio) hear the mix minus themselves, a
//! silent talker gets the shared frames with its RTP stream continuous, and a WHEP session
//! naming its WHIP session (`?minus=`) hears the others only. Checked in the decoded audio,
//! per channel, by frequency.

#[path = "common/raw_http.rs"]
mod raw_http;

use mixcast::client::whep::{play, ClientError, PlayOptions, PlayReport};
use mixcast::client::whip::{PublishOptions, PublishReport, Publisher};
use mixcast::config::Config;
use mixcast::media::analysis::{deinterleave, rms, Spectrum};
use mixcast::media::sources::{Source, ToneSource};
use mixcast::media::{Frame, FRAME_LEN, SAMPLE_RATE};
use mixcast::server::Server;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

/// The tests here each run several real-time sessions; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Amplitude of the talkers' sines.
const TONE: f32 = 0.25;
/// Talker A's and B's tones (both channels).
const A_HZ: u32 = 440;
const B_HZ: u32 = 1000;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> Server {
    Server::start(Config::loopback_ephemeral()).expect("server starts on loopback")
}

fn url(server: &Server, stream: &str, endpoint: &str) -> String {
    format!("http://{}/{stream}/{endpoint}", server.http_addr())
}

/// A publisher of `source` to `stream`, two-way when `listen`.
fn publish(
    server: &Server,
    stream: &str,
    source: Box<dyn Source + Send>,
    seconds: f32,
    listen: bool,
) -> Publisher {
    let mut opts = PublishOptions::new(
        url(server, stream, "whip"),
        source,
        Duration::from_secs_f32(seconds),
    );
    opts.listen = listen;
    Publisher::start(opts).unwrap_or_else(|e| panic!("publishing to {stream}: {e}"))
}

fn tone(hz: u32) -> Box<dyn Source + Send> {
    Box::new(ToneSource::sine(hz, hz, TONE))
}

fn play_opts(url: String, seconds: f32) -> PlayOptions {
    PlayOptions {
        url,
        token: None,
        duration: Duration::from_secs_f32(seconds),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    }
}

fn view(url: String, seconds: f32) -> thread::JoinHandle<Result<PlayReport, ClientError>> {
    let opts = play_opts(url, seconds);
    thread::spawn(move || play(&opts))
}

/// Seconds `from..to` of interleaved stereo `pcm`.
fn span(pcm: &[f32], from: f32, to: f32) -> &[f32] {
    let at = |s: f32| ((s * SAMPLE_RATE as f32) as usize * 2).min(pcm.len());
    &pcm[at(from)..at(to)]
}

/// Per channel: the RMS in the bands of `hear` and of `not`, and their ratio in dB.
fn levels(pcm: &[f32], hear: u32, not: u32) -> [(f32, f32, f32); 2] {
    let (l, r) = deinterleave(pcm);
    [l, r].map(|ch| {
        let s = Spectrum::new(&ch, SAMPLE_RATE);
        let (h, n) = (s.band_rms(hear as f32, 30.0), s.band_rms(not as f32, 30.0));
        (h, n, 20.0 * (n.max(1e-9) / h.max(1e-9)).log10())
    })
}

/// Checks that `pcm` holds `hear` at about the talkers' level and `not` at least `db`
/// under it, on both channels.
fn hears_only(what: &str, pcm: &[f32], hear: u32, not: u32, db: f32) {
    assert!(
        pcm.len() > SAMPLE_RATE as usize,
        "{what}: only {} samples",
        pcm.len()
    );
    for (ch, (h, n, ratio)) in levels(pcm, hear, not).into_iter().enumerate() {
        eprintln!("{what} ch{ch}: {hear} Hz rms {h:.4}, {not} Hz rms {n:.6} ({ratio:.1} dB)");
        assert!(
            h > TONE / 2f32.sqrt() * 0.5,
            "{what} ch{ch}: {hear} Hz is too weak ({h})"
        );
        assert!(
            ratio < -db,
            "{what} ch{ch}: {not} Hz only {ratio:.1} dB under {hear} Hz"
        );
    }
}

fn heard(report: &PublishReport) -> &PlayReport {
    report
        .heard
        .as_ref()
        .expect("a two-way publisher reports what it heard")
}

/// A talker's received RTP stream has no gap and no jump of RTP time.
fn continuous(what: &str, r: &PlayReport) {
    assert!(r.packets > 50, "{what}: {} packets", r.packets);
    assert_eq!(
        r.lost_packets, 0,
        "{what}: packets missing from the sequence"
    );
    assert_eq!(r.rtp_time_jumps, 0, "{what}: RTP time not +960 per packet");
    assert_eq!(r.decode_errors, 0, "{what}");
}

/// The value of counter `name` in a scrape of `/metrics`.
fn counter(server: &Server, name: &str) -> u64 {
    let addr = server.http_addr();
    let reply = raw_http::exchange(
        addr,
        &raw_http::request("GET", "/metrics", &addr.to_string(), &[], b""),
        Duration::from_secs(5),
    )
    .expect("/metrics answers");
    assert_eq!(reply.status, 200);
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn two_talkers_hear_each_other_and_not_themselves() {
    let _serial = serial();
    let server = start();
    let a = publish(&server, "talk", tone(A_HZ), 5.0, true);
    let b = publish(&server, "talk", tone(B_HZ), 4.0, true);
    let viewer = view(url(&server, "talk", "whep"), 3.0);
    let viewer = viewer.join().unwrap().expect("the viewer plays");
    let (a, b) = (
        a.wait().expect("A publishes"),
        b.wait().expect("B publishes"),
    );
    server.shutdown();

    for (what, r) in [("A", &a), ("B", &b)] {
        assert!(
            r.answer_sdp.contains("a=sendrecv") && !r.answer_sdp.contains("a=recvonly"),
            "{what}: the answer to a sendrecv offer is not sendrecv:\n{}",
            r.answer_sdp
        );
        continuous(what, heard(r));
    }
    // A hears B (B runs from about 0.1 s to 4.1 s of A's session) and not itself.
    hears_only("A", span(&heard(&a).pcm, 1.0, 3.5), B_HZ, A_HZ, 30.0);
    // B hears A all along.
    hears_only("B", span(&heard(&b).pcm, 0.5, 3.5), A_HZ, B_HZ, 30.0);
    // A listen-only viewer hears both, at about the same level.
    let pcm = span(&viewer.pcm, 0.5, 2.5);
    for (ch, (a_rms, b_rms, db)) in levels(pcm, A_HZ, B_HZ).into_iter().enumerate() {
        eprintln!("viewer ch{ch}: {A_HZ} Hz {a_rms:.4}, {B_HZ} Hz {b_rms:.4} ({db:.1} dB)");
        assert!(
            db.abs() < 3.0,
            "viewer ch{ch}: the two talkers at {db:.1} dB apart"
        );
        assert!(a_rms > TONE / 2f32.sqrt() * 0.5, "viewer ch{ch}: {a_rms}");
    }
}

/// A sine that is on for `on` frames, off for `off`, and so on (starts on).
struct Bursts {
    tone: ToneSource,
    on: u64,
    off: u64,
    frame: u64,
}

impl Source for Bursts {
    fn fill(&mut self, out: &mut Frame) {
        self.tone.fill(out);
        if self.frame % (self.on + self.off) >= self.on {
            out.fill(0.0);
        }
        self.frame += 1;
    }
    fn describe(&self) -> String {
        "bursts".into()
    }
}

#[test]
fn a_silent_talker_gets_the_shared_frames_and_its_stream_stays_continuous() {
    let _serial = serial();
    let server = start();
    let (own0, shared0, switches0) = (
        counter(&server, "mixcast_mixminus_encodes_total"),
        counter(&server, "mixcast_mixminus_shared_total"),
        counter(&server, "mixcast_mixminus_switches_total"),
    );
    // B plays a steady tone (one way); A talks in bursts of 0.6 s with 0.6 s pauses.
    let b = publish(&server, "bursts", tone(B_HZ), 6.0, false);
    let bursts = Bursts {
        tone: ToneSource::sine(A_HZ, A_HZ, TONE),
        on: 30,
        off: 30,
        frame: 0,
    };
    let a = publish(&server, "bursts", Box::new(bursts), 5.0, true);
    let a = a.wait().expect("A publishes");
    let (own, shared, switches) = (
        counter(&server, "mixcast_mixminus_encodes_total") - own0,
        counter(&server, "mixcast_mixminus_shared_total") - shared0,
        counter(&server, "mixcast_mixminus_switches_total") - switches0,
    );
    b.stop().expect("B publishes");
    server.shutdown();

    eprintln!("A: {own} own frames, {shared} shared, {switches} switches to own");
    // 5 s = 250 frames, about half of them audible (plus the hangover): both kinds, and a
    // switch per burst (4 or 5 bursts).
    assert!(own >= 80 && shared >= 60, "own {own}, shared {shared}");
    assert!((3..=6).contains(&switches), "{switches} switches");
    let r = heard(&a);
    continuous("A", r);
    // Across the switches A hears B's tone steadily, never its own: frame by frame B's tone
    // keeps its level, without a gap or a click. Measured: within -0.8 / +0.9 dB (0.161 to
    // 0.195 around 0.177), the steps lasting about three frames after each switch (the
    // two encoders' energy prediction differing, see `media::mix_minus`).
    let pcm = span(&r.pcm, 0.5, 4.5);
    hears_only("A", pcm, B_HZ, A_HZ, 30.0);
    let levels: Vec<f32> = pcm.chunks_exact(FRAME_LEN).map(rms).collect();
    let (lo, hi) = levels
        .iter()
        .fold((f32::MAX, 0.0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    eprintln!("A's frames: RMS {lo:.4} to {hi:.4}");
    let steady = TONE / 2f32.sqrt();
    assert!(
        lo > steady * 0.85 && hi < steady * 1.15,
        "{lo}..{hi} around {steady}"
    );
}

#[test]
fn a_whep_session_naming_its_whip_session_hears_the_others_only() {
    let _serial = serial();
    let server = start();
    let a = publish(&server, "pair", tone(A_HZ), 4.0, false);
    let b = publish(&server, "pair", tone(B_HZ), 4.0, false);
    let elsewhere = publish(&server, "other", tone(700), 4.0, false);
    let id = |p: &Publisher| p.session_url().rsplit('/').next().unwrap().to_string();
    let whep = url(&server, "pair", "whep");
    let minus = view(format!("{whep}?minus={}", id(&a)), 2.5);
    let full = view(whep.clone(), 2.5);

    // Refusals: an id that names no session, a session of another stream, not an id.
    let refused = |query: &str| {
        let e = play(&play_opts(format!("{whep}?{query}"), 0.5)).expect_err(query);
        (e.status(), e.to_string())
    };
    let (status, body) = refused("minus=0123456789abcdef0123456789abcdef");
    assert_eq!(status, Some(404), "{body}");
    assert!(body.contains("no live WHIP session"), "{body}");
    let (status, body) = refused(&format!("minus={}", id(&elsewhere)));
    assert_eq!(status, Some(403), "{body}");
    assert!(body.contains("another stream"), "{body}");
    let (status, body) = refused("minus=nope");
    assert_eq!(status, Some(400), "{body}");

    let minus = minus.join().unwrap().expect("the ?minus= viewer plays");
    let full = full.join().unwrap().expect("the viewer plays");
    for p in [a, b, elsewhere] {
        p.stop().expect("publishes");
    }
    server.shutdown();
    hears_only("?minus=A", span(&minus.pcm, 0.3, 2.3), B_HZ, A_HZ, 30.0);
    let (_, _, db) = levels(span(&full.pcm, 0.3, 2.3), A_HZ, B_HZ)[0];
    assert!(db.abs() < 3.0, "the full mix holds both: {db:.1} dB");
    assert_eq!(minus.lost_packets, 0);
}
