//! A real headless Chromium plays mixcast's streams through the web page in static/, and
//! publishes its (fake) microphone into a stream over WHIP.
//!
//! Without a Chromium binary (`$CHROMIUM`, else /usr/bin/chromium) these tests print that
//! they skipped and pass, unless `MIXCAST_REQUIRE_BROWSER=1`, when they fail. Every wait is
//! bounded, and a watchdog kills Chromium if a test overruns.

#[path = "common/browser_harness.rs"]
mod browser_harness;
#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/matrix.rs"]
mod matrix;

use browser_harness::{cdp, chromium_or_skip, fake_devices, media_lock, screenshot, with_chromium};
use chromium::{CdpError, Chromium};
use mixcast::client::whep::{self, PlayOptions};
use mixcast::config::Config;
use mixcast::media::analysis::{deinterleave, rms, Spectrum};
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// The test signal: 440 Hz on the left, 660 Hz on the right.
const LEFT_HZ: f64 = 440.0;
const RIGHT_HZ: f64 = 660.0;
const TOLERANCE_HZ: f64 = 15.0;
/// The fake microphone's WAV: 1000 Hz on the left, 1500 Hz on the right.
const MIC_LEFT_HZ: f32 = 1000.0;
const MIC_RIGHT_HZ: f32 = 1500.0;
const MIC_AMPLITUDE: f32 = 0.3;

/// The harness itself: Chromium starts, loads a page and evaluates JavaScript.
#[test]
fn chromium_harness_evaluates_javascript() {
    let Some(binary) = chromium_or_skip("chromium_harness_evaluates_javascript") else {
        return;
    };
    with_chromium(binary, &[], |browser| {
        browser
            .navigate(
                "data:text/html,<title>t</title><script>window.answer = 6 * 7</script>",
                Duration::from_secs(10),
            )
            .map_err(cdp)?;
        let answer = browser.evaluate("window.answer").map_err(cdp)?;
        if answer != 42 {
            return Err(format!("window.answer = {answer}, expected 42"));
        }
        let awaited = browser
            .evaluate("new Promise((resolve) => setTimeout(() => resolve('later'), 50))")
            .map_err(cdp)?;
        if awaited != "later" {
            return Err(format!("awaited promise gave {awaited}"));
        }
        match browser.evaluate("(() => { throw new Error('boom') })()") {
            Err(CdpError::Exception(text)) if text.contains("boom") => Ok(()),
            other => Err(format!("a throwing script gave {other:?}")),
        }
    });
}

/// The page against a stand-in server: it lists the streams from /api/streams, a WHEP
/// POST that is not 201 shows up on the page as a failure with the status, and a refused
/// WHIP POST shows the server's problem detail (the Bearer token reached the server).
#[test]
fn page_lists_streams_and_shows_whep_errors() {
    let Some(binary) = chromium_or_skip("page_lists_streams_and_shows_whep_errors") else {
        return;
    };
    let (runtime, addr) = stand_in::start();
    with_chromium(binary, &fake_devices(None), move |browser| {
        let deadline = Instant::now() + Duration::from_secs(20);
        browser
            .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
            .map_err(cdp)?;
        let names = browser
            .wait_for(
                "window.mixcastTest?.streams().length === 2 && mixcastTest.streams()",
                deadline,
                "two stream cards",
            )
            .map_err(cdp)?;
        if names != serde_json::json!(["live", "studio"]) {
            return Err(format!("stream cards {names}, expected live and studio"));
        }
        let info = browser
            .evaluate("document.querySelector('[data-stream=studio] .info').textContent")
            .map_err(cdp)?;
        let info = info.as_str().unwrap_or_default();
        if !info.contains("3 viewers") || !info.contains("1 publisher") || !info.contains("file") {
            return Err(format!("studio's card says {info:?}"));
        }

        browser.evaluate("mixcastTest.play('live')").map_err(cdp)?;
        browser
            .wait_for(
                "mixcastTest.state('live') === 'failed'",
                deadline,
                "the player to fail",
            )
            .map_err(cdp)?;
        let shown = browser
            .evaluate(
                "(() => { const e = document.querySelector('[data-stream=live] .error');\
                 return e.hidden ? '' : e.textContent })()",
            )
            .map_err(cdp)?;
        let shown = shown.as_str().unwrap_or_default();
        if !shown.contains("503") || !shown.contains("too many viewers") {
            return Err(format!("the page shows {shown:?} for a 503"));
        }
        screenshot(browser, "page-whep-error")?;

        let refused = browser
            .evaluate(
                "mixcastTest.publish('studio', 'wrong').then(() => 'published', (e) => e.message)",
            )
            .map_err(cdp)?;
        let state = browser
            .evaluate("mixcastTest.publishState()")
            .map_err(cdp)?;
        let shown = browser
            .evaluate(
                "(() => { const e = document.querySelector('#publish .error');\
                 return e.hidden ? '' : e.textContent })()",
            )
            .map_err(cdp)?;
        let shown = shown.as_str().unwrap_or_default();
        if state["state"] != "failed"
            || !shown.contains("401")
            || !shown.contains(stand_in::UNAUTHORIZED_DETAIL)
            || shown.contains("\"detail\"")
            || refused.as_str() != Some(shown)
        {
            return Err(format!(
                "publishing with a wrong token: state {state}, the page shows {shown:?}, \
                 publish() gave {refused}"
            ));
        }
        // The microphone is released after the failure: no meter reads anything.
        let levels = browser
            .evaluate("mixcastTest.publishLevels()")
            .map_err(cdp)?;
        if levels != serde_json::json!([]) {
            return Err(format!("after a failed publish the meters read {levels}"));
        }
        screenshot(browser, "page-whip-error")
    });
    drop(runtime);
}

/// The real thing: mixcast serves the page and the `live` stream, Chromium plays it, and
/// the audio that comes out is 440 Hz on the left and 660 Hz on the right. Stopping the
/// player ends the session on the server.
#[test]
fn chromium_plays_live_440_left_660_right() {
    let Some(binary) = chromium_or_skip("chromium_plays_live_440_left_660_right") else {
        return;
    };
    // The server's log, with RUST_LOG=mixcast=debug, helps when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _media = media_lock();
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    let server = std::sync::Arc::new(server);
    let in_test = std::sync::Arc::clone(&server);
    with_chromium(binary, &[], move |browser| {
        let played = play_live(browser, addr, &in_test);
        let detail = played
            .as_ref()
            .err()
            .map_or("440/660 Hz heard (page analysers)", |e| e);
        matrix::record("chromium", "viewer", played.is_ok(), detail);
        played
    });
    if let Ok(server) = std::sync::Arc::try_unwrap(server) {
        server.shutdown();
    }
}

/// The same with the server in `--fanout direct`: Chromium decrypts and plays the audio
/// packets the engine built and protected itself (see docs/fanout.md).
#[test]
fn chromium_plays_live_from_the_direct_fanout() {
    let Some(binary) = chromium_or_skip("chromium_plays_live_from_the_direct_fanout") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _media = media_lock();
    let config = Config {
        fanout: mixcast::config::Fanout::Direct,
        ..Config::loopback_ephemeral()
    };
    let server = Server::start(config).expect("the server starts");
    let addr = server.http_addr();
    let server = std::sync::Arc::new(server);
    let in_test = std::sync::Arc::clone(&server);
    with_chromium(binary, &[], move |browser| {
        // The page always asks for video too, which keeps a viewer on str0m's path; an
        // audio-only peer connection of its own takes the direct one.
        play_audio_only(browser, addr)?;
        play_live(browser, addr, &in_test)
    });
    if let Ok(server) = std::sync::Arc::try_unwrap(server) {
        server.shutdown();
    }
}

/// An audio-only WHEP session from the page's origin, outside the player: it receives
/// packets without loss and plays audio with energy.
fn play_audio_only(browser: &mut Chromium, addr: SocketAddr) -> Result<(), String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let status = browser
        .evaluate(
            r#"(async () => {
              const pc = new RTCPeerConnection();
              pc.addTransceiver("audio", { direction: "recvonly" });
              const track = new Promise((r) => (pc.ontrack = (e) => r(e.track)));
              await pc.setLocalDescription(await pc.createOffer());
              await new Promise((r) => {
                if (pc.iceGatheringState === "complete") return r();
                pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r();
              });
              const sdp = pc.localDescription.sdp.split("\r\n")
                .filter((l) => !l.startsWith("a=candidate") || l.includes(" 127.0.0.1 "))
                .join("\r\n");
              const res = await fetch("/live/whep", {
                method: "POST", headers: { "Content-Type": "application/sdp" }, body: sdp });
              await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
              const el = new Audio();
              el.srcObject = new MediaStream([await track]);
              el.play().catch(() => {});
              window.directPc = pc;
              window.directEl = el;
              return res.status;
            })()"#,
        )
        .map_err(cdp)?;
    if status != 201 {
        return Err(format!("audio-only WHEP POST: {status}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = browser
            .evaluate(
                r#"(async () => {
                  let r = null;
                  (await window.directPc.getStats()).forEach((x) => {
                    if (x.type === "inbound-rtp" && x.kind === "audio") r = {
                      packetsReceived: x.packetsReceived, packetsLost: x.packetsLost,
                      totalAudioEnergy: x.totalAudioEnergy };
                  });
                  return r;
                })()"#,
            )
            .map_err(cdp)?;
        let packets = stats["packetsReceived"].as_f64().unwrap_or(0.0);
        let energy = stats["totalAudioEnergy"].as_f64().unwrap_or(0.0);
        if packets > 150.0 && energy > 0.0 {
            eprintln!("audio-only inbound: {stats}");
            if stats["packetsLost"].as_f64().unwrap_or(0.0) > 0.0 {
                return Err(format!("loss on loopback: {stats}"));
            }
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("audio-only: no media after 20 s: {stats}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    browser
        .evaluate("(window.directPc.close(), true)")
        .map_err(cdp)?;
    Ok(())
}

fn play_live(browser: &mut Chromium, addr: SocketAddr, server: &Server) -> Result<(), String> {
    browser
        .navigate(
            &format!("http://{addr}/?play=live"),
            Duration::from_secs(10),
        )
        .map_err(cdp)?;

    // Media flows: enough packets and real audio energy.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let now = browser
            .evaluate(
                "(async () => ({ state: mixcastTest.state('live'), error: mixcastTest.error('live'),\
                 stats: await mixcastTest.stats('live') }))()",
            )
            .map_err(cdp)?;
        if now["state"] == "failed" {
            return Err(format!("the player failed: {}", now["error"]));
        }
        let stats = &now["stats"];
        let packets = stats["packetsReceived"].as_f64().unwrap_or(0.0);
        let energy = stats["totalAudioEnergy"].as_f64().unwrap_or(0.0);
        if packets > 50.0 && energy > 0.0 {
            break stats.clone();
        }
        if Instant::now() >= deadline {
            return Err(format!("no media after 20 s: {now}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("inbound audio: {stats}");
    let sessions = server.live_sessions();
    if sessions < 1 {
        return Err(format!(
            "playing, yet the server counts {sessions} live sessions"
        ));
    }
    // The page's stream list (refreshed every 3 s) counts this viewer.
    browser
        .wait_for(
            "document.querySelector('[data-stream=live] .viewers').textContent === '1 viewer'",
            Instant::now() + Duration::from_secs(8),
            "the stream list to show 1 viewer",
        )
        .map_err(cdp)?;

    // The media itself: the tone's frequency on each channel. Readings in the tone's
    // silent gap are null; five in tolerance pass, and all are reported on failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readings = Vec::new();
    let mut good = 0;
    while good < 5 {
        if Instant::now() >= deadline {
            return Err(format!(
                "want left {LEFT_HZ} Hz and right {RIGHT_HZ} Hz (±{TOLERANCE_HZ}); read {readings:?}"
            ));
        }
        let reading = browser
            .evaluate("mixcastTest.dominantFrequencies('live')")
            .map_err(cdp)?;
        let (left, right) = (reading["left"].as_f64(), reading["right"].as_f64());
        if let (Some(left), Some(right)) = (left, right) {
            if (left - LEFT_HZ).abs() <= TOLERANCE_HZ && (right - RIGHT_HZ).abs() <= TOLERANCE_HZ {
                good += 1;
            }
        }
        readings.push((left, right));
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("dominant frequencies (left, right): {readings:?}");
    screenshot(browser, "page-playing-live")?;

    // Stop: the page DELETEs its session and the server lets it go.
    let stopped = browser
        .evaluate(
            "mixcastTest.stop('live').then(() => ({ state: mixcastTest.state('live'),\
             error: mixcastTest.error('live'), status: mixcastTest.deleteStatus('live') }))",
        )
        .map_err(cdp)?;
    if stopped["state"] != "stopped" || !stopped["error"].is_null() || stopped["status"] != 200 {
        return Err(format!("after stop: {stopped}"));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.live_sessions() != 0 {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} live sessions 3 s after DELETE",
                server.live_sessions()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Publishing from the page: Chromium's fake microphone plays 1000 Hz left and 1500 Hz
/// right; the page publishes it over WHIP into a new stream `mic`; mixcast's own WHEP
/// client and a second tab play `mic`, and both hear those tones (per channel when the
/// WHIP answer allows stereo, both tones on each channel when the browser sends mono).
/// Stopping DELETEs the WHIP session and the tones leave the stream.
#[test]
fn chromium_publishes_microphone_over_whip() {
    let Some(binary) = chromium_or_skip("chromium_publishes_microphone_over_whip") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("microphone.wav");
    write_microphone_wav(&wav).expect("the WAV is written");
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        publish_microphone(browser, addr)
    });
    server.shutdown();
}

/// Two seconds of a 48 kHz stereo 16-bit WAV: whole periods of both tones, so Chromium's
/// loop of it has no seam.
fn write_microphone_wav(path: &Path) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec)?;
    let sample = |hz: f32, i: u32| {
        let phase = 2.0 * std::f64::consts::PI * f64::from(hz) * f64::from(i);
        let x = f64::from(MIC_AMPLITUDE) * (phase / f64::from(SAMPLE_RATE)).sin();
        (x * f64::from(i16::MAX)).round() as i16
    };
    for i in 0..2 * SAMPLE_RATE {
        wav.write_sample(sample(MIC_LEFT_HZ, i))?;
        wav.write_sample(sample(MIC_RIGHT_HZ, i))?;
    }
    wav.finalize()
}

fn publish_microphone(browser: &mut Chromium, addr: SocketAddr) -> Result<(), String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let publisher_tab = browser.current_page();
    browser
        .evaluate("mixcastTest.publish('mic')")
        .map_err(|e| format!("publishing to mic: {e}"))?;
    let state = browser
        .evaluate("mixcastTest.publishState()")
        .map_err(cdp)?;
    eprintln!("publisher: {state}");
    if state["state"] != "connected" || state["channels"] != 2 {
        return Err(format!(
            "after publish(): {state} (want connected, 2 channels)"
        ));
    }
    let stereo = state["stereo"] == true;

    // What the page sends: the WAV's tones, one per channel (else the fake microphone is
    // not doing what this test assumes).
    let wanted = format!(
        "(() => {{ const f = mixcastTest.publishFrequencies();\
         return f.length === 2 && Math.abs(f[0] - {MIC_LEFT_HZ}) < 15\
         && Math.abs(f[1] - {MIC_RIGHT_HZ}) < 15 }})()"
    );
    if let Err(e) = browser.wait_for(&wanted, Instant::now() + Duration::from_secs(5), "tones") {
        let read = browser.evaluate("mixcastTest.publishFrequencies()");
        return Err(format!(
            "the page's meters of what it sends read {read:?}: {e}"
        ));
    }
    browser
        .wait_for(
            "mixcastTest.publishStats().then((s) => s && s.packetsSent > 25)",
            Instant::now() + Duration::from_secs(5),
            "25 packets sent",
        )
        .map_err(cdp)?;
    screenshot(browser, "page-publishing")?;

    // The stream list shows the new stream with its publisher, so it can be played.
    browser
        .wait_for(
            "document.querySelector('[data-stream=mic] .publishers')?.textContent === '1 publisher'",
            Instant::now() + Duration::from_secs(8),
            "the stream list to show mic with 1 publisher",
        )
        .map_err(cdp)?;

    // mixcast's own WHEP client hears the tones in the stream's mix.
    let report = whep::play(&PlayOptions {
        url: format!("http://{addr}/mic/whep"),
        token: None,
        duration: Duration::from_secs(3),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    })
    .map_err(|e| format!("WHEP client on /mic/whep: {e}"))?;
    eprintln!(
        "WHEP client: {} packets, {} lost, {} decode errors, {} samples",
        report.packets,
        report.lost_packets,
        report.decode_errors,
        report.pcm.len() / 2
    );
    // The first half second may hold the jitter buffer filling.
    let skip = (SAMPLE_RATE as usize / 2) * 2;
    let pcm = report.pcm.get(skip..).unwrap_or_default();
    if pcm.len() < 2 * SAMPLE_RATE as usize {
        return Err(format!(
            "the WHEP client decoded {} stereo samples after the first 0.5 s, want 1 s or more",
            pcm.len() / 2
        ));
    }
    let (left, right) = deinterleave(pcm);
    check_mic_channel(
        "WHEP client, left",
        &left,
        stereo,
        MIC_LEFT_HZ,
        MIC_RIGHT_HZ,
    )?;
    check_mic_channel(
        "WHEP client, right",
        &right,
        stereo,
        MIC_RIGHT_HZ,
        MIC_LEFT_HZ,
    )?;

    // Another tab plays `mic` and hears the tones too.
    browser.open_page().map_err(cdp)?;
    browser
        .navigate(&format!("http://{addr}/?play=mic"), Duration::from_secs(10))
        .map_err(cdp)?;
    browser
        .wait_for(
            "mixcastTest.stats('mic').then((s) => s && s.packetsReceived > 50\
             && s.totalAudioEnergy > 0)",
            Instant::now() + Duration::from_secs(15),
            "the second tab to receive mic",
        )
        .map_err(cdp)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readings = Vec::new();
    let mut good = 0;
    while good < 5 {
        if Instant::now() >= deadline {
            return Err(format!(
                "the second tab: want {MIC_LEFT_HZ} Hz left and {MIC_RIGHT_HZ} Hz right \
                 (stereo: {stereo}; ±{TOLERANCE_HZ}); read {readings:?}"
            ));
        }
        let reading = browser
            .evaluate("mixcastTest.dominantFrequencies('mic')")
            .map_err(cdp)?;
        let (left, right) = (reading["left"].as_f64(), reading["right"].as_f64());
        if let (Some(left), Some(right)) = (left, right) {
            let near = |hz: f64, want: f32| (hz - f64::from(want)).abs() <= TOLERANCE_HZ;
            let either = |hz: f64| near(hz, MIC_LEFT_HZ) || near(hz, MIC_RIGHT_HZ);
            let fits = if stereo {
                near(left, MIC_LEFT_HZ) && near(right, MIC_RIGHT_HZ)
            } else {
                either(left) && either(right)
            };
            if fits {
                good += 1;
            }
        }
        readings.push((left, right));
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("second tab, dominant frequencies (left, right): {readings:?}");
    screenshot(browser, "page-playing-mic")?;
    let listener_tab = browser.current_page();

    // Stop: the page DELETEs its WHIP session, and the tones leave the stream.
    browser.switch_to(&publisher_tab);
    let stopped = browser
        .evaluate("mixcastTest.publishStop().then(() => mixcastTest.publishState())")
        .map_err(cdp)?;
    if stopped["state"] != "stopped"
        || !stopped["error"].is_null()
        || stopped["deleteStatus"] != 200
    {
        return Err(format!("after stopping the publisher: {stopped}"));
    }
    browser.switch_to(&listener_tab);
    browser
        .wait_for(
            "mixcastTest.state('mic') !== 'connected'\
             || mixcastTest.levels('mic').every((l) => l.peak < 1e-3)",
            Instant::now() + Duration::from_secs(5),
            "the tones to leave mic once the publisher stopped",
        )
        .map_err(cdp)?;
    Ok(())
}

/// One channel of `mic` as a viewer decoded it. In stereo its own tone dominates and the
/// other channel's is 20 dB down; in mono (the browser mixed the channels down) both
/// tones are there, within 6 dB of each other. Either way the two tones hold most of the
/// energy, so it is not noise or silence.
fn check_mic_channel(
    name: &str,
    samples: &[f32],
    stereo: bool,
    own_hz: f32,
    other_hz: f32,
) -> Result<(), String> {
    let level = rms(samples);
    let spectrum = Spectrum::new(samples, SAMPLE_RATE);
    let own = spectrum.band_rms(own_hz, 50.0);
    let other = spectrum.band_rms(other_hz, 50.0);
    let tones = spectrum.band_fraction(own_hz, 50.0) + spectrum.band_fraction(other_hz, 50.0);
    let dominant = spectrum.dominant_frequency();
    let db = |x: f32| 20.0 * x.max(1e-9).log10();
    let summary = format!(
        "{name}: rms {level:.4}, dominant {dominant:.1} Hz, {own_hz} Hz at {:.1} dBFS, \
         {other_hz} Hz at {:.1} dBFS, the two tones hold {:.1}% of the energy (stereo: {stereo})",
        db(own),
        db(other),
        tones * 100.0
    );
    eprintln!("{summary}");
    if level < 0.02 {
        return Err(format!("{summary}: too quiet (silence?)"));
    }
    if tones < 0.8 {
        return Err(format!("{summary}: the tones are not most of the sound"));
    }
    if stereo {
        if (dominant - own_hz).abs() > 10.0 || db(own) - db(other) < 20.0 {
            return Err(format!("{summary}: want {own_hz} Hz alone"));
        }
    } else if (db(own) - db(other)).abs() > 6.0 {
        return Err(format!(
            "{summary}: want both tones at about the same level"
        ));
    }
    Ok(())
}

/// A stand-in for mixcast's HTTP side: the same static files and stream list, and a
/// WHEP endpoint that always answers 503, to check the page's error path on its own.
mod stand_in {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{Html, IntoResponse};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use std::net::SocketAddr;

    const INDEX_HTML: &str = include_str!("../static/index.html");
    const APP_JS: &str = include_str!("../static/app.js");
    const STYLE_CSS: &str = include_str!("../static/style.css");

    pub fn start() -> (tokio::runtime::Runtime, SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime builds");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binds 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let app = Router::new()
            .route("/", get(|| async { Html(INDEX_HTML) }))
            .route(
                "/app.js",
                get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
            )
            .route(
                "/style.css",
                get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE_CSS) }),
            )
            .route("/api/streams", get(streams))
            .route("/{stream}/whep", post(overloaded))
            .route("/{stream}/whip", post(unauthorized));
        runtime.spawn(async move { axum::serve(listener, app).await });
        (runtime, addr)
    }

    async fn streams() -> Json<serde_json::Value> {
        Json(serde_json::json!({ "streams": [
            { "name": "live", "viewers": 0, "publishers": 0, "sources": ["tone"] },
            { "name": "studio", "viewers": 3, "publishers": 1, "sources": ["file", "whip"] },
        ]}))
    }

    /// What the stand-in's WHIP endpoint says to the token `wrong`.
    pub const UNAUTHORIZED_DETAIL: &str = "a valid Bearer token is required";

    /// 401 with a problem body for `Bearer wrong`; 400 naming what came otherwise, so a
    /// page that sends the token wrongly fails the test.
    async fn unauthorized(headers: HeaderMap) -> impl IntoResponse {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let (status, detail) = if authorization.as_deref() == Some("Bearer wrong")
            && content_type.as_deref() == Some("application/sdp")
        {
            (StatusCode::UNAUTHORIZED, UNAUTHORIZED_DETAIL.to_owned())
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("Authorization {authorization:?}, Content-Type {content_type:?}"),
            )
        };
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason(),
            "status": status.as_u16(),
            "detail": detail,
        });
        (
            status,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::WWW_AUTHENTICATE, "Bearer"),
            ],
            body.to_string(),
        )
    }

    async fn overloaded() -> impl IntoResponse {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many viewers",
        )
    }
}
