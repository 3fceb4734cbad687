//! Headless Chromium as a two-way talker: its fake microphone plays 440 Hz (a WAV), it
//! publishes over WHIP with the browser's default transceiver (`addTrack`: `sendrecv`) and
//! listens on the same connection; our str0m client is the other talker (1000 Hz, also
//! two-way). Chromium must hear 1000 Hz and not its own 440 Hz (WebAudio analyser on the
//! received track, at least 30 dB under), and our client must hear 440 Hz and not its own.
//!
//! Without a Chromium binary it prints SKIPPED and passes, unless `CI` or
//! `MIXCAST_REQUIRE_BROWSER=1` is set, when it fails (see `common/browser_harness.rs`).

#[path = "common/browser_harness.rs"]
mod browser_harness;
#[allow(dead_code)]
#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/matrix.rs"]
mod matrix;

use browser_harness::{cdp, chromium_or_skip, fake_devices, media_lock, screenshot, with_chromium};
use chromium::Chromium;
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::config::Config;
use mixcast::media::analysis::{deinterleave, Spectrum};
use mixcast::media::sources::ToneSource;
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const BROWSER_HZ: u32 = 440;
const CLIENT_HZ: u32 = 1000;
const AMPLITUDE: f32 = 0.25;
const STREAM: &str = "talk";

#[test]
fn chromium_sendrecv_hears_the_other_talker_and_not_itself() {
    let test = "chromium_sendrecv_hears_the_other_talker_and_not_itself";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("tone.wav");
    write_tone_wav(&wav).expect("the WAV is written");
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        let checked = talk_and_check(browser, addr);
        match &checked {
            Ok(detail) => matrix::record("chromium", "talker", true, detail),
            Err(why) => matrix::record("chromium", "talker", false, why),
        }
        checked.map(|_| ())
    });
    server.shutdown();
}

/// The page's side: publish the microphone with a default (sendrecv) transceiver, and
/// measure what comes back with an analyser.
const TALK_JS: &str = r#"
(async (url) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const pc = new RTCPeerConnection();
  pc.addTrack(stream.getAudioTracks()[0], stream);
  window.tw = { pc, ctx: new AudioContext() };
  pc.ontrack = (e) => {
    // Chromium feeds WebAudio from a remote track only while an element plays it.
    const el = new Audio(); el.muted = true; el.srcObject = e.streams[0] || new MediaStream([e.track]);
    el.play();
    const src = window.tw.ctx.createMediaStreamSource(el.srcObject);
    const an = window.tw.ctx.createAnalyser();
    an.fftSize = 8192; an.smoothingTimeConstant = 0;
    src.connect(an);
    window.tw.el = el; window.tw.an = an;
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    setTimeout(done, 2000);
  });
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' },
                               body: pc.localDescription.sdp });
  if (r.status !== 201) return { status: r.status, body: await r.text() };
  const answer = await r.text();
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  window.tw.ctx.resume();
  const dir = pc.getTransceivers()[0].currentDirection;
  return { status: 201, direction: dir, answerSendrecv: answer.includes('a=sendrecv') };
})
"#;

/// Levels (dB, the strongest bin within 15 Hz) at the two tones, averaged over `n` reads
/// 100 ms apart, and the packets received.
const MEASURE_JS: &str = r#"
(async (a, b, n) => {
  const an = window.tw.an; if (!an) return { error: 'no track' };
  const bins = new Float32Array(an.frequencyBinCount);
  const hz = window.tw.ctx.sampleRate / an.fftSize;
  const at = (f) => { let m = -Infinity; for (let k = Math.floor((f - 15) / hz); k <= Math.ceil((f + 15) / hz); k++) m = Math.max(m, bins[k]); return m; };
  let sa = 0, sb = 0;
  for (let i = 0; i < n; i++) {
    await new Promise((d) => setTimeout(d, 100));
    an.getFloatFrequencyData(bins);
    sa += at(a); sb += at(b);
  }
  let packets = 0;
  (await window.tw.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') packets = s.packetsReceived; });
  return { a: sa / n, b: sb / n, packets };
})
"#;

fn talk_and_check(browser: &mut Chromium, addr: SocketAddr) -> Result<String, String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    // The other talker: our client, two-way, 1000 Hz.
    let mut opts = PublishOptions::new(
        format!("http://{addr}/{STREAM}/whip"),
        Box::new(ToneSource::sine(CLIENT_HZ, CLIENT_HZ, AMPLITUDE)),
        Duration::from_secs(7),
    );
    opts.listen = true;
    let client = Publisher::start(opts).map_err(|e| format!("our talker: {e}"))?;
    let started = Instant::now();
    let posted = browser
        .evaluate(&format!("{TALK_JS}('http://{addr}/{STREAM}/whip')"))
        .map_err(|e| format!("the page's WHIP POST: {e}"))?;
    if posted["status"] != 201 || posted["answerSendrecv"] != true {
        return Err(format!("the page's WHIP session: {posted}"));
    }
    if posted["direction"] != "sendrecv" {
        return Err(format!("the transceiver is not sendrecv: {posted}"));
    }
    // From here (and a second for connecting) our client's ears have Chromium's tone.
    let up = started.elapsed().as_secs_f32() + 1.0;
    std::thread::sleep(Duration::from_millis(1500));
    screenshot(browser, "twoway-talking")?;
    let m = browser
        .evaluate(&format!("{MEASURE_JS}({BROWSER_HZ}, {CLIENT_HZ}, 20)"))
        .map_err(cdp)?;
    eprintln!("Chromium heard: {m}");
    let (own, other) = (
        m["a"].as_f64().unwrap_or(f64::NAN),
        m["b"].as_f64().unwrap_or(f64::NAN),
    );
    let packets = m["packets"].as_u64().unwrap_or(0);
    if packets < 50 {
        return Err(format!("Chromium received {packets} packets: {m}"));
    }
    if other.is_nan() || other < -50.0 {
        return Err(format!("Chromium does not hear the other talker: {m}"));
    }
    if own.is_nan() || own > other - 30.0 {
        return Err(format!(
            "Chromium hears itself: {own:.1} dB own vs {other:.1} dB other: {m}"
        ));
    }
    let report = client.wait().map_err(|e| format!("our talker: {e}"))?;
    let heard = report.heard.as_ref().ok_or("our talker heard nothing")?;
    let skip = (up * SAMPLE_RATE as f32) as usize * 2;
    let end = heard.pcm.len().saturating_sub(SAMPLE_RATE as usize);
    let pcm = heard.pcm.get(skip..end).unwrap_or_default();
    if pcm.len() < SAMPLE_RATE as usize {
        return Err(format!(
            "our talker decoded only {} samples",
            heard.pcm.len()
        ));
    }
    let (l, r) = deinterleave(pcm);
    let mut detail = Vec::new();
    for (ch, samples) in [l, r].iter().enumerate() {
        let s = Spectrum::new(samples, SAMPLE_RATE);
        let (b, c) = (
            s.band_rms(BROWSER_HZ as f32, 30.0),
            s.band_rms(CLIENT_HZ as f32, 30.0),
        );
        let db = 20.0 * (c.max(1e-9) / b.max(1e-9)).log10();
        eprintln!(
            "our talker ch{ch}: {BROWSER_HZ} Hz {b:.4}, own {CLIENT_HZ} Hz {c:.6} ({db:.1} dB)"
        );
        if b < 0.05 || db > -30.0 {
            return Err(format!(
                "our talker ch{ch}: Chromium's tone {b:.4}, its own at {db:.1} dB"
            ));
        }
        detail.push(format!("{db:.0}"));
    }
    Ok(format!(
        "sendrecv: hears the other at {other:.0} dB, itself {:.0} dB under; the other hears it, itself {} dB",
        other - own,
        detail.join("/")
    ))
}

/// Two seconds of a 48 kHz stereo 16-bit WAV of [`BROWSER_HZ`] (whole periods: a seamless
/// loop).
fn write_tone_wav(path: &Path) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec)?;
    for i in 0..2 * SAMPLE_RATE {
        let phase = 2.0 * std::f64::consts::PI * f64::from(BROWSER_HZ) * f64::from(i);
        let x = f64::from(AMPLITUDE) * (phase / f64::from(SAMPLE_RATE)).sin();
        let sample = (x * f64::from(i16::MAX)).round() as i16;
        wav.write_sample(sample)?;
        wav.write_sample(sample)?;
    }
    wav.finalize()
}
