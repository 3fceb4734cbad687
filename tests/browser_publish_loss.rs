//! A headless Chromium publishes a known tone over WHIP on loopback for 30 s: the server's
//! own counters (its "publisher left" and "publisher audio ended" log lines) must show no
//! lost and no concealed frame, and a WHEP viewer must hear the tone the whole time.
//!
//! Chromium sends padding-only packets (bandwidth probes) on its audio SSRC; str0m drops
//! them, so the audio packets around them are a few sequence numbers apart but consecutive
//! in time. The jitter buffer counts those as `skipped`, not lost (see
//! `mixcast::media::jitter`); this test is the end-to-end proof with the real sender.
//!
//! Without a Chromium binary it prints SKIPPED and passes, unless `CI` or
//! `MIXCAST_REQUIRE_BROWSER=1` is set, when it fails (see `common/browser_harness.rs`).

#[path = "common/browser_harness.rs"]
mod browser_harness;
// Tab switching is for tests with a second tab; this one listens with our own client.
#[allow(dead_code)]
#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/server_log.rs"]
mod server_log;
#[path = "common/tone.rs"]
mod tone;

use browser_harness::{cdp, chromium_or_skip, fake_devices, media_lock, screenshot, with_chromium};
use chromium::Chromium;
use mixcast::client::whep::{self, PlayOptions};
use mixcast::config::Config;
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use server_log::ServerLog;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// The fake microphone's tone, on both channels.
const TONE_HZ: f32 = 880.0;
const TONE_AMPLITUDE: f32 = 0.3;
/// How long the viewer listens while Chromium publishes.
const LISTEN: Duration = Duration::from_secs(30);
/// Of that, the continuous audible tone the viewer must hear (its first half second is
/// its own jitter buffer filling).
const MIN_AUDIBLE_SECONDS: f32 = 28.0;
const STREAM: &str = "tone";

#[test]
fn chromium_publishes_30_s_without_loss_or_concealment() {
    let test = "chromium_publishes_30_s_without_loss_or_concealment";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let log = ServerLog::install().unwrap_or_else(|e| panic!("{e}"));
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("tone.wav");
    write_tone_wav(&wav).expect("the WAV is written");
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        // Recorded here rather than through `matrix::cell`, whose panic would lose the
        // page's console and Chromium's log that `with_chromium` reports on an error.
        let checked = publish_and_check(browser, addr, &log);
        match &checked {
            Ok(detail) => matrix::record("chromium", "publisher", true, detail),
            Err(why) => matrix::record("chromium", "publisher", false, why),
        }
        checked.map(|_| ())
    });
    server.shutdown();
}

/// Publishes, listens for [`LISTEN`], stops, and reads the server's counters. `Ok` is the
/// matrix cell's detail.
fn publish_and_check(
    browser: &mut Chromium,
    addr: SocketAddr,
    log: &ServerLog,
) -> Result<String, String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    browser
        .evaluate(&format!("mixcastTest.publish('{STREAM}')"))
        .map_err(|e| format!("publishing to {STREAM}: {e}"))?;
    let state = browser
        .evaluate("mixcastTest.publishState()")
        .map_err(cdp)?;
    if state["state"] != "connected" {
        return Err(format!("after publish(): {state} (want connected)"));
    }
    // The page measures what it sends: the WAV's tone (else the fake microphone is not
    // doing what this test assumes).
    let sending = format!(
        "(() => {{ const f = mixcastTest.publishFrequencies();\
         return f.length > 0 && f.every((hz) => Math.abs(hz - {TONE_HZ}) < 15) }})()"
    );
    if let Err(e) = browser.wait_for(&sending, Instant::now() + Duration::from_secs(5), "tone") {
        let read = browser.evaluate("mixcastTest.publishFrequencies()");
        return Err(format!(
            "the page's meters of what it sends read {read:?}: {e}"
        ));
    }
    let published = Instant::now();
    screenshot(browser, "publish-loss-publishing")?;

    // Our own WHEP client listens to the stream (the publisher alone in its mix) for the
    // whole 30 s, decoding every packet.
    let report = whep::play(&PlayOptions {
        url: format!("http://{addr}/{STREAM}/whep"),
        token: None,
        duration: LISTEN,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    })
    .map_err(|e| format!("WHEP client on /{STREAM}/whep: {e}"))?;
    let sent = browser
        .evaluate("mixcastTest.publishStats()")
        .map_err(cdp)?;
    let stopped = browser
        .evaluate("mixcastTest.publishStop().then(() => mixcastTest.publishState())")
        .map_err(cdp)?;
    let seconds = published.elapsed().as_secs_f32();
    if stopped["state"] != "stopped" || stopped["deleteStatus"] != 200 {
        return Err(format!("after stopping the publisher: {stopped}"));
    }

    // The server's own account of the publisher, logged when its session ends (DELETE)
    // and when its audio has faded out of the mix.
    let left = log.wait_for("publisher left", "stream", STREAM, Duration::from_secs(5))?;
    let ended = log.wait_for(
        "publisher audio ended",
        "publisher",
        &format!("publisher {}", left.u64("key")?),
        Duration::from_secs(5),
    )?;
    let packets = left.u64("packets")?;
    let lost = left.u64("lost")?;
    let concealed = left.u64("concealed")?;
    let drift_fixes = left.u64("drift_fixes")?;
    let skipped = ended.u64("skipped")?;
    let at_end = ended.u64("concealed_at_end")?;
    let counters = format!(
        "server: {packets} packets in {seconds:.1} s, lost {lost}, concealed {concealed}, \
         skipped (padding) {skipped}, concealed after the last packet {at_end}, drift fixes \
         {drift_fixes}; Chromium: {} packets sent, {} lost by our receiver reports",
        sent["packetsSent"], sent["packetsLost"]
    );
    eprintln!("{counters}");
    eprintln!(
        "WHEP viewer: {} packets, {} lost, {} decode errors",
        report.packets, report.lost_packets, report.decode_errors
    );
    // 30 s of 20 ms packets is 1,500: the publisher really was sending all along.
    if packets < 1400 {
        return Err(format!("{counters}: too few packets for {seconds:.1} s"));
    }
    if lost != 0 || concealed != 0 {
        return Err(format!(
            "{counters}: want 0 lost and 0 concealed on loopback"
        ));
    }
    if ended.u64("lost")? != lost || ended.u64("concealed")? != concealed {
        return Err(format!("the two log lines disagree: {left:?} / {ended:?}"));
    }

    // What the viewer heard: the tone, on both channels, continuously.
    let skip = (SAMPLE_RATE as usize / 2) * 2;
    let pcm = report.pcm.get(skip..).unwrap_or_default();
    let (l, r) = tone::check_stereo_tone(pcm, TONE_HZ, TONE_HZ, MIN_AUDIBLE_SECONDS)
        .map_err(|e| format!("the WHEP viewer: {e}"))?;
    eprintln!(
        "WHEP viewer heard {:.1} Hz left, {:.1} Hz right",
        l.dominant_hz, r.dominant_hz
    );
    Ok(format!(
        "{:.1}/{:.1} Hz heard for 30 s, 0 lost, 0 concealed, {skipped} padding seqs skipped",
        l.dominant_hz, r.dominant_hz
    ))
}

/// Two seconds of a 48 kHz stereo 16-bit WAV of [`TONE_HZ`] on both channels: whole
/// periods, so Chromium's loop of it has no seam.
fn write_tone_wav(path: &Path) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec)?;
    for i in 0..2 * SAMPLE_RATE {
        let phase = 2.0 * std::f64::consts::PI * f64::from(TONE_HZ) * f64::from(i);
        let x = f64::from(TONE_AMPLITUDE) * (phase / f64::from(SAMPLE_RATE)).sin();
        let sample = (x * f64::from(i16::MAX)).round() as i16;
        wav.write_sample(sample)?;
        wav.write_sample(sample)?;
    }
    wav.finalize()
}
