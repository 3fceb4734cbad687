//! Chromium over HTTPS: mixcast serves its page and WHIP/WHEP on `https://127.0.0.1` with a
//! certificate the test makes, and Chromium trusts it only through
//! `--ignore-certificate-errors-spki-list` (its public key's SHA-256). The page must be a
//! secure context (what a browser demands for the microphone anywhere but localhost), play
//! `live` and hear 440 Hz left / 660 Hz right, and publish its fake microphone (a WAV tone)
//! into a stream that another tab then hears at the tone's frequency.
//!
//! Without a Chromium binary these tests print SKIPPED and pass, unless
//! `MIXCAST_REQUIRE_BROWSER=1` or `CI` is set, when they fail.

#[path = "common/browser_harness.rs"]
mod browser_harness;
#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/https_cert.rs"]
mod https_cert;

use browser_harness::{cdp, chromium_or_skip, fake_devices, media_lock, screenshot, with_chromium};
use chromium::Chromium;
use mixcast::config::{Config, TlsConfig};
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use std::path::Path;
use std::time::{Duration, Instant};

const TOLERANCE_HZ: f64 = 15.0;
/// The fake microphone's tone, the same on both channels (so the check holds whether the
/// browser sends stereo or mono).
const MIC_HZ: f64 = 880.0;

fn server_with(cert: &https_cert::ServerCert) -> Server {
    Server::start(Config {
        tls: Some(TlsConfig {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        }),
        ..Config::loopback_ephemeral()
    })
    .expect("the HTTPS server starts")
}

/// Chromium's flag that trusts exactly this certificate's key.
fn trust(cert: &https_cert::ServerCert) -> String {
    format!("--ignore-certificate-errors-spki-list={}", cert.spki_sha256)
}

/// Loads `url` and checks that the page is a secure context served over https (a page
/// whose certificate Chromium did not trust would not load, or not be secure).
fn open_secure(browser: &mut Chromium, url: &str) -> Result<(), String> {
    browser
        .navigate(url, Duration::from_secs(10))
        .map_err(cdp)?;
    let page = browser
        .evaluate("({ secure: window.isSecureContext, protocol: location.protocol, app: !!window.mixcastTest })")
        .map_err(cdp)?;
    if page["secure"] != true || page["protocol"] != "https:" || page["app"] != true {
        return Err(format!(
            "{url}: {page} (want a secure https: page with the app)"
        ));
    }
    Ok(())
}

/// Waits for `stream`'s player to receive audio, then for five readings of its dominant
/// frequencies with `left` and `right` within tolerance.
fn hear(browser: &mut Chromium, stream: &str, left: f64, right: f64) -> Result<(), String> {
    browser
        .wait_for(
            &format!(
                "mixcastTest.stats('{stream}').then((s) => s && s.packetsReceived > 50\
                 && s.totalAudioEnergy > 0)"
            ),
            Instant::now() + Duration::from_secs(20),
            &format!("{stream}: audio received"),
        )
        .map_err(|e| {
            let state = browser.evaluate(&format!(
                "({{ state: mixcastTest.state('{stream}'), error: mixcastTest.error('{stream}') }})"
            ));
            format!("{e}; player {state:?}")
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readings = Vec::new();
    let mut good = 0;
    while good < 5 {
        if Instant::now() >= deadline {
            return Err(format!(
                "{stream}: want {left} Hz left and {right} Hz right (±{TOLERANCE_HZ}); \
                 read {readings:?}"
            ));
        }
        let reading = browser
            .evaluate(&format!("mixcastTest.dominantFrequencies('{stream}')"))
            .map_err(cdp)?;
        let (l, r) = (reading["left"].as_f64(), reading["right"].as_f64());
        if let (Some(l), Some(r)) = (l, r) {
            if (l - left).abs() <= TOLERANCE_HZ && (r - right).abs() <= TOLERANCE_HZ {
                good += 1;
            }
        }
        readings.push((l, r));
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("{stream} over https, dominant frequencies (left, right): {readings:?}");
    Ok(())
}

/// Chromium loads the page over https, trusting the test's certificate by its key, and
/// plays `live`: 440 Hz on the left, 660 Hz on the right.
#[test]
fn chromium_plays_live_over_https() {
    let Some(binary) = chromium_or_skip("chromium_plays_live_over_https") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _media = media_lock();
    let cert = https_cert::loopback();
    let server = server_with(&cert);
    let addr = server.http_addr();
    with_chromium(binary, &[trust(&cert)], move |browser| {
        open_secure(browser, &format!("https://{addr}/?play=live"))?;
        hear(browser, "live", 440.0, 660.0)?;
        screenshot(browser, "https-playing-live")
    });
    server.shutdown();
}

/// Without the pin Chromium refuses the page: the certificate really is what the other
/// tests trust, not something any browser would accept.
#[test]
fn chromium_refuses_the_page_without_the_pin() {
    let Some(binary) = chromium_or_skip("chromium_refuses_the_page_without_the_pin") else {
        return;
    };
    let cert = https_cert::loopback();
    let server = server_with(&cert);
    let addr = server.http_addr();
    with_chromium(binary, &[], move |browser| {
        match browser.navigate(&format!("https://{addr}/"), Duration::from_secs(10)) {
            Err(e) if e.to_string().contains("ERR_CERT") => Ok(()),
            Err(e) => Err(format!(
                "navigation failed, but not on the certificate: {e}"
            )),
            Ok(()) => {
                let app = browser.evaluate("!!window.mixcastTest").map_err(cdp)?;
                if app == true {
                    Err("an untrusted certificate's page loaded".into())
                } else {
                    Ok(()) // Chromium's interstitial, not our page
                }
            }
        }
    });
    server.shutdown();
}

/// The page, over https, publishes Chromium's fake microphone (an 880 Hz WAV) over WHIP into
/// `mic`; another tab plays `mic` over https and hears 880 Hz on both channels.
#[test]
fn chromium_publishes_microphone_over_https() {
    let Some(binary) = chromium_or_skip("chromium_publishes_microphone_over_https") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _media = media_lock();
    let cert = https_cert::loopback();
    let wav = cert.dir.path().join("microphone.wav");
    write_tone_wav(&wav, MIC_HZ).expect("the WAV is written");
    let server = server_with(&cert);
    let addr = server.http_addr();
    let mut flags = fake_devices(Some(&wav));
    flags.push(trust(&cert));
    with_chromium(binary, &flags, move |browser| {
        open_secure(browser, &format!("https://{addr}/"))?;
        let publisher_tab = browser.current_page();
        browser
            .evaluate("mixcastTest.publish('mic')")
            .map_err(|e| format!("publishing to mic: {e}"))?;
        let state = browser
            .evaluate("mixcastTest.publishState()")
            .map_err(cdp)?;
        eprintln!("publisher over https: {state}");
        if state["state"] != "connected" {
            return Err(format!("after publish(): {state}"));
        }
        browser
            .wait_for(
                "mixcastTest.publishStats().then((s) => s && s.packetsSent > 25)",
                Instant::now() + Duration::from_secs(5),
                "25 packets sent",
            )
            .map_err(cdp)?;
        browser.open_page().map_err(cdp)?;
        open_secure(browser, &format!("https://{addr}/?play=mic"))?;
        hear(browser, "mic", MIC_HZ, MIC_HZ)?;
        screenshot(browser, "https-playing-mic")?;
        // The WHIP session's DELETE goes over https too.
        browser.switch_to(&publisher_tab);
        let stopped = browser
            .evaluate("mixcastTest.publishStop().then(() => mixcastTest.publishState())")
            .map_err(cdp)?;
        if stopped["state"] != "stopped" || stopped["deleteStatus"] != 200 {
            return Err(format!("after stopping the publisher: {stopped}"));
        }
        Ok(())
    });
    server.shutdown();
}

/// Two seconds of a 48 kHz stereo 16-bit WAV of `hz` on both channels: whole periods, so
/// Chromium's loop of it has no seam.
fn write_tone_wav(path: &Path, hz: f64) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec)?;
    for i in 0..2 * SAMPLE_RATE {
        let phase = 2.0 * std::f64::consts::PI * hz * f64::from(i) / f64::from(SAMPLE_RATE);
        let x = (0.3 * phase.sin() * f64::from(i16::MAX)).round() as i16;
        wav.write_sample(x)?;
        wav.write_sample(x)?;
    }
    wav.finalize()
}
