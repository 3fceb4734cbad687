//! The page as a person uses it (issue 15), in headless Chromium against the real server:
//!
//! - `page_urls_recipes_latency_and_video`: at 360 px wide nothing scrolls sideways; each
//!   card shows its absolute WHIP and WHEP URLs and an FFmpeg 8 recipe with that URL; FFmpeg
//!   (tests/interop/ffmpeg_whip.py, the recipe's options) publishes 1000/1500 Hz and H264 to
//!   the WHIP URL read from the page, mixcast's WHEP client at the page's WHEP URL hears the
//!   tones per channel, and the page's player of that stream gets a video box while the
//!   audio-only `live` gets none; the delay line shows numbers while playing, the meters are
//!   `role="meter"` with values, and the live region says "playing" and "stopped". Saves
//!   screenshots at 360 and 1200 px, idle and playing, under target/tmp/screenshots/.
//! - `delay_line_and_loss_follow_an_impaired_path`: through a relay that delays each
//!   datagram 25 ms each way and drops 3 %, the page's delay line reads a round trip of
//!   about 50 ms and its loss line a few per cent lost.
//! - `viewer_count_follows_events_without_polling`: the viewer count on the page follows a
//!   second (non-page) viewer joining and leaving, from `/api/events`, and the page makes no
//!   `/api/streams` request at all.
//!
//! Without Chromium (or, for the first, Python with PyAV's FFmpeg 8) these print SKIPPED and
//! pass, unless `CI`, `MIXCAST_REQUIRE_BROWSER=1` or `MIXCAST_REQUIRE_INTEROP=1` is set.

#[allow(dead_code)]
#[path = "common/browser_harness.rs"]
mod browser_harness;
#[allow(dead_code)]
#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/python.rs"]
mod python;
#[path = "common/sdp_proxy.rs"]
mod sdp_proxy;
#[path = "common/tone.rs"]
mod tone;
#[path = "common/udp_relay.rs"]
mod udp_relay;

use browser_harness::{cdp, chromium_or_skip, media_lock, screenshot, with_chromium};
use chromium::Chromium;
use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::{Config, StreamConfig};
use mixcast::server::Server;
use python::Running;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEFT_HZ: f32 = 1000.0;
const RIGHT_HZ: f32 = 1500.0;
/// How long FFmpeg publishes: long enough for the WHEP client, the page and screenshots
/// (about 10 s here); the test then waits for FFmpeg's clean end.
const PUBLISH_SECONDS: u32 = 20;

/// Makes the page `width` CSS pixels wide (a phone's at 360).
fn set_width(browser: &mut Chromium, width: u32) -> Result<(), String> {
    browser
        .command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600 }),
            Duration::from_secs(10),
        )
        .map_err(cdp)?;
    Ok(())
}

/// Fails when the page is wider than its viewport (a sideways scroll).
fn no_sideways_scroll(browser: &mut Chromium, width: u32, when: &str) -> Result<(), String> {
    let widths = browser
        .evaluate(
            "(() => { const wide = [...document.querySelectorAll('body *')]\
             .filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5)\
             .slice(0, 5).map((e) => e.className || e.tagName);\
             return { scroll: document.documentElement.scrollWidth, inner: innerWidth, wide } })()",
        )
        .map_err(cdp)?;
    if widths["inner"] != width || widths["scroll"].as_u64().unwrap_or(u64::MAX) > width.into() {
        return Err(format!("{when}: at {width} px the page is {widths}"));
    }
    Ok(())
}

/// What a card shows: its URLs, its FFmpeg recipe, whether its video box is shown.
fn card(browser: &mut Chromium, stream: &str) -> Result<Value, String> {
    browser
        .evaluate(&format!(
            "(() => {{ const c = document.querySelector('[data-stream={stream}]');\
             if (!c) return null;\
             const text = (s) => c.querySelector(s)?.textContent ?? null;\
             return {{ whip: text('.whip-url'), whep: text('.whep-url'),\
               ffmpeg: text('.recipe-ffmpeg'), obs: text('.recipe-obs'),\
               gstreamer: text('.recipe-gstreamer'),\
               screen: !c.querySelector('.screen').hidden,\
               picture: !c.querySelector('.picture').hidden,\
               delay: c.querySelector('.latency').hidden ? null : text('.delay'),\
               loss: c.querySelector('.latency').hidden ? null : text('.loss'),\
               viewers: text('.viewers'),\
               meters: [...c.querySelectorAll('[role=meter]')].map((m) => ({{\
                 label: m.getAttribute('aria-label'),\
                 min: m.getAttribute('aria-valuemin'), max: m.getAttribute('aria-valuemax'),\
                 now: m.getAttribute('aria-valuenow'), text: m.getAttribute('aria-valuetext') }})) }} }})()"
        ))
        .map_err(cdp)
}

fn announced(browser: &mut Chromium) -> Result<String, String> {
    let text = browser
        .evaluate("document.getElementById('announcer').textContent")
        .map_err(cdp)?;
    Ok(text.as_str().unwrap_or_default().to_owned())
}

/// Waits until the live region says `want`.
fn wait_announced(browser: &mut Chromium, want: &str) -> Result<(), String> {
    let check = format!(
        "document.getElementById('announcer').getAttribute('aria-live') === 'polite'\
         && document.getElementById('announcer').textContent === {}",
        json!(want)
    );
    browser
        .wait_for(&check, Instant::now() + Duration::from_secs(15), want)
        .map(|_| ())
        .map_err(|e| {
            let now = announced(browser).unwrap_or_default();
            format!("the live region: want {want:?}, says {now:?} ({e})")
        })
}

#[test]
fn page_urls_recipes_latency_and_video() {
    let test = "page_urls_recipes_latency_and_video";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let Some(py) = python::ffmpeg_whip(test) else {
        return;
    };
    let _media = media_lock();
    let mut config = Config::loopback_ephemeral();
    // Empty until FFmpeg publishes to the URL the page shows.
    config.streams.push(StreamConfig {
        name: "studio".into(),
        sources: Vec::new(),
        video: Default::default(),
    });
    let server = Server::start(config).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &[], move |browser| {
        set_width(browser, 360)?;
        browser
            .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
            .map_err(cdp)?;
        browser
            .wait_for(
                "window.mixcastTest?.streams().length === 2",
                Instant::now() + Duration::from_secs(10),
                "the cards of live and studio",
            )
            .map_err(cdp)?;
        no_sideways_scroll(browser, 360, "idle")?;
        screenshot(browser, "page-360-idle")?;

        // The URLs are the real ones, absolute, and the recipes carry the WHIP URL.
        let studio = card(browser, "studio")?;
        let whip = format!("http://{addr}/studio/whip");
        let whep = format!("http://{addr}/studio/whep");
        if studio["whip"] != whip.as_str() || studio["whep"] != whep.as_str() {
            return Err(format!("studio's card shows {studio}"));
        }
        let ffmpeg = studio["ffmpeg"].as_str().unwrap_or_default().to_owned();
        // The options tests/interop/ffmpeg_whip.py gives FFmpeg's muxer and encoders.
        for option in [
            "-f whip",
            "-strict experimental",
            "-c:a libopus",
            "-ar 48000",
            "-ac 2",
            "-c:v libx264",
            "-profile:v baseline",
            "-bf 0",
            "-tune zerolatency",
        ] {
            if !ffmpeg.contains(option) {
                return Err(format!("the FFmpeg recipe lacks {option:?}: {ffmpeg}"));
            }
        }
        let recipe_url = ffmpeg.split_whitespace().last().unwrap_or_default();
        if recipe_url != whip || studio["obs"] != whip.as_str() {
            return Err(format!(
                "the recipes' URL is {recipe_url:?} / {}, want {whip}",
                studio["obs"]
            ));
        }
        if !studio["gstreamer"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("python3 tests/interop/gst_whip.py {whip} "))
        {
            return Err(format!("the GStreamer recipe is {}", studio["gstreamer"]));
        }

        // Copy: to the clipboard, or (where the browser refuses) selected for Ctrl+C.
        let copied = browser
            .evaluate(
                "(async () => { const b = document.querySelector('[data-stream=studio] .copy[data-copy=whip]');\
                 b.click(); for (let i = 0; i < 50 && !b.dataset.outcome; i++)\
                   await new Promise((r) => setTimeout(r, 20));\
                 return { outcome: b.dataset.outcome, label: b.textContent,\
                   selected: getSelection().toString(),\
                   clipboard: await navigator.clipboard.readText().catch((e) => null) } })()",
            )
            .map_err(cdp)?;
        eprintln!("copy: {copied}");
        let took = match copied["outcome"].as_str() {
            Some("copied") => copied["clipboard"].is_null() || copied["clipboard"] == whip.as_str(),
            Some("selected") => copied["selected"] == whip.as_str(),
            _ => false,
        };
        if !took {
            return Err(format!("Copy of the WHIP URL gave {copied}"));
        }

        // FFmpeg publishes to the URL the recipe shows.
        let mut cmd = py.command(&python::script("ffmpeg_whip.py"));
        cmd.arg(recipe_url)
            .arg("--seconds")
            .arg(PUBLISH_SECONDS.to_string())
            .arg("--left-hz")
            .arg(LEFT_HZ.to_string())
            .arg("--right-hz")
            .arg(RIGHT_HZ.to_string());
        let publisher = Running::spawn(cmd, "ffmpeg_whip.py")?;

        // Play the audio-only `live` with its button: the live region says so, the delay
        // line shows numbers, the meters move, and there is no video box.
        browser
            .evaluate("(document.querySelector('[data-stream=live] .play').click(), true)")
            .map_err(cdp)?;
        wait_announced(browser, "live: playing")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let latency = loop {
            let latency = browser
                .evaluate("mixcastTest.latency('live')")
                .map_err(cdp)?;
            let live = card(browser, "live")?;
            let numbers = ["roundTripMs", "jitterBufferMs", "totalMs", "lossPercent"]
                .iter()
                .all(|k| latency[*k].is_number());
            let moving = live["meters"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["text"].as_str().is_some_and(|t| t.ends_with("dBFS")))
            });
            if numbers && moving && live["delay"].as_str().is_some_and(|d| d.contains(" ms")) {
                break json!({ "numbers": latency, "card": live });
            }
            if Instant::now() >= deadline {
                return Err(format!("playing live: latency {latency}, card {live}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        eprintln!("live while playing: {latency}");
        let live = &latency["card"];
        let meters = live["meters"].as_array().cloned().unwrap_or_default();
        if meters.len() != 2
            || meters
                .iter()
                .any(|m| m["min"] != "-60" || m["max"] != "0" || m["label"].is_null())
        {
            return Err(format!("live's meters: {meters:?}"));
        }
        if live["screen"] != false || live["picture"] != false {
            return Err(format!("the audio-only live shows a video box: {live}"));
        }
        let delay = live["delay"].as_str().unwrap_or_default();
        let loss = live["loss"].as_str().unwrap_or_default();
        if !delay.contains("round trip")
            || !delay.contains("jitter buffer")
            || !loss.contains("loss") && !loss.contains("lost")
        {
            return Err(format!("live's latency line: {delay:?} / {loss:?}"));
        }

        // mixcast's WHEP client at the WHEP URL the page shows hears FFmpeg's tone.
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser
            .evaluate("(() => { const p = document.querySelector('[data-stream=studio] .publishers'); return p && p.textContent })()")
            .map_err(cdp)?
            != "1 publisher"
        {
            if Instant::now() >= deadline {
                return Err("studio never showed FFmpeg as its publisher".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = play(&PlayOptions {
            url: whep.clone(),
            token: None,
            duration: Duration::from_secs(4),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            decode: true,
        })
        .map_err(|e| format!("WHEP client at {whep}: {e}"))?;
        let heard = tone::check_stereo_tone(&report.pcm, LEFT_HZ, RIGHT_HZ, 2.0)
            .map_err(|e| format!("the WHEP client at the page's {whep}: {e}"))?;
        eprintln!(
            "WHEP client at the page's URL: {} packets; {heard:?}",
            report.packets
        );

        // The page plays studio too: it has video, so its box appears with the picture.
        browser
            .evaluate("(document.querySelector('[data-stream=studio] .play').click(), true)")
            .map_err(cdp)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let studio = loop {
            let studio = card(browser, "studio")?;
            let f = browser
                .evaluate("mixcastTest.dominantFrequencies('studio')")
                .map_err(cdp)?;
            let near =
                |v: &Value, hz: f32| v.as_f64().is_some_and(|x| (x - f64::from(hz)).abs() < 15.0);
            if studio["screen"] == true
                && studio["picture"] == true
                && near(&f["left"], LEFT_HZ)
                && near(&f["right"], RIGHT_HZ)
            {
                break studio;
            }
            if Instant::now() >= deadline {
                return Err(format!("playing studio: {studio}, hearing {f}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!("studio while playing: {studio}");
        // Its numbers too, before the screenshots.
        browser
            .wait_for(
                "(() => { const c = document.querySelector('[data-stream=studio]');\
                 return /\\d ms/.test(c.querySelector('.delay').textContent)\
                 && c.querySelector('[data-stat=bitrate]').textContent.includes('/s')\
                 && c.querySelector('[data-stat=video]').textContent.includes('×') })()",
                Instant::now() + Duration::from_secs(10),
                "studio's delay line, bitrate and video size",
            )
            .map_err(cdp)?;
        let live = card(browser, "live")?;
        if live["screen"] != false {
            return Err(format!("live shows a video box beside studio's: {live}"));
        }
        browser
            .evaluate("(document.querySelectorAll('.recipes').forEach((d) => d.open = true), true)")
            .map_err(cdp)?;
        no_sideways_scroll(browser, 360, "playing, recipes open")?;
        screenshot(browser, "page-360-playing")?;
        set_width(browser, 1200)?;
        std::thread::sleep(Duration::from_millis(300));
        no_sideways_scroll(browser, 1200, "playing")?;
        screenshot(browser, "page-1200-playing")?;

        // Stop with its button: the live region says so, the latency line goes.
        browser
            .evaluate("(document.querySelector('[data-stream=live] .stop').click(), true)")
            .map_err(cdp)?;
        wait_announced(browser, "live: stopped")?;
        let live = card(browser, "live")?;
        if !live["delay"].is_null() {
            return Err(format!("a stopped player still shows {live}"));
        }
        browser
            .evaluate("mixcastTest.stop('studio').then(() => true)")
            .map_err(cdp)?;
        browser
            .evaluate(
                "(document.querySelectorAll('.recipes').forEach((d) => d.open = false), true)",
            )
            .map_err(cdp)?;
        screenshot(browser, "page-1200-idle")?;
        // FFmpeg published to the end without an error, and DELETEd its session.
        let out = publisher
            .wait(Duration::from_secs(PUBLISH_SECONDS.into()) + Duration::from_secs(30))?;
        if !out.status.success() {
            return Err(format!(
                "ffmpeg_whip.py failed ({}): {}",
                out.status,
                python::tail(&out.stderr, 20)
            ));
        }
        Ok(())
    });
    server.shutdown();
}

#[test]
fn delay_line_and_loss_follow_an_impaired_path() {
    const ONE_WAY: Duration = Duration::from_millis(25);
    const LOSS: f64 = 0.03;
    let test = "delay_line_and_loss_follow_an_impaired_path";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let _media = media_lock();
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let impairment = udp_relay::Impairment {
        loss: LOSS,
        delay: ONE_WAY,
        stall_dtls: false,
    };
    let relay = udp_relay::start(server.udp_addr(), impairment, 15);
    let via = relay.addr;
    // The page comes through the proxy too, so its WHEP answer names the relay.
    let proxy = sdp_proxy::start_with(
        server.http_addr(),
        Arc::new(udp_relay::offer_without_candidates),
        Arc::new(move |answer| udp_relay::answer_via(answer, via)),
    );
    let addr = proxy.addr;
    with_chromium(binary, &[], move |browser| {
        browser
            .navigate(
                &format!("http://{addr}/?play=live"),
                Duration::from_secs(10),
            )
            .map_err(cdp)?;
        let deadline = Instant::now() + Duration::from_secs(40);
        let (latency, shown) = loop {
            let latency = browser
                .evaluate("mixcastTest.latency('live')")
                .map_err(cdp)?;
            let shown = card(browser, "live")?;
            let rtt = latency["roundTripMs"].as_f64().unwrap_or(0.0);
            let lost = latency["lossPercent"].as_f64().unwrap_or(0.0);
            let window = latency["lossWindowMs"].as_f64().unwrap_or(0.0);
            if rtt > 0.0 && lost > 0.0 && window >= 8000.0 {
                break (latency, shown);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "through the relay: latency {latency}, card {shown}, state {}",
                    browser.evaluate("mixcastTest.state('live')").map_err(cdp)?
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!("through the relay: {latency}\n  {shown}");
        screenshot(browser, "page-lossy-path")?;
        let rtt = latency["roundTripMs"].as_f64().unwrap_or(0.0);
        let want = 2.0 * ONE_WAY.as_secs_f64() * 1000.0;
        let lost = latency["lossPercent"].as_f64().unwrap_or(0.0);
        let delay = shown["delay"].as_str().unwrap_or_default();
        let loss = shown["loss"].as_str().unwrap_or_default();
        // The round trip is the relay's two delays and a little; the loss near its 3 %
        // (500 packets in 10 s: a few tenths either way).
        if !(want..want + 40.0).contains(&rtt)
            || !(0.5..8.0).contains(&lost)
            || !delay.contains(&format!("{} ms round trip", rtt.round()))
            || !loss.ends_with(" s")
            || !loss
                .split_once(" % lost in the last ")
                .is_some_and(|(n, _)| n.parse::<f64>().is_ok_and(|n| (n - lost).abs() < 0.06))
        {
            return Err(format!(
                "want a round trip of about {want} ms and about {} % lost: {latency}, shown {delay:?} / {loss:?}",
                LOSS * 100.0
            ));
        }
        Ok(())
    });
    drop(proxy);
    drop(relay);
    server.shutdown();
}

#[test]
fn viewer_count_follows_events_without_polling() {
    let test = "viewer_count_follows_events_without_polling";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let _media = media_lock();
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &[], move |browser| {
        browser
            .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
            .map_err(cdp)?;
        let viewers = |n: u32| {
            format!(
                "document.querySelector('[data-stream=live] .viewers')?.textContent === '{n} viewer{}'",
                if n == 1 { "" } else { "s" }
            )
        };
        browser
            .wait_for(
                &viewers(0),
                Instant::now() + Duration::from_secs(10),
                "0 viewers",
            )
            .map_err(cdp)?;
        // A second viewer, not the page: mixcast's WHEP client, for a few seconds.
        let url = format!("http://{addr}/live/whep");
        let viewer = std::thread::spawn(move || {
            play(&PlayOptions {
                url,
                token: None,
                duration: Duration::from_secs(4),
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                decode: false,
            })
        });
        let joined = browser.wait_for(
            &viewers(1),
            Instant::now() + Duration::from_secs(10),
            "1 viewer",
        );
        let report = viewer
            .join()
            .map_err(|_| "the WHEP client thread panicked")?
            .map_err(|e| format!("the WHEP client: {e}"))?;
        joined.map_err(cdp)?;
        if report.packets < 50 {
            return Err(format!("the second viewer got {} packets", report.packets));
        }
        browser
            .wait_for(
                &viewers(0),
                Instant::now() + Duration::from_secs(10),
                "0 viewers again",
            )
            .map_err(cdp)?;
        // Without polling: the page never asked /api/streams, the events said it all.
        let feed = browser
            .evaluate(
                "({ feed: mixcastTest.feed(), requested: performance.getEntriesByType('resource')\
                 .filter((e) => new URL(e.name).pathname === '/api/streams').length })",
            )
            .map_err(cdp)?;
        eprintln!("the page's event feed: {feed}");
        if feed["requested"] != 0
            || feed["feed"]["listRequests"] != 0
            || feed["feed"]["state"] != "open"
            || feed["feed"]["counts"]["streams"].as_u64().unwrap_or(0) < 1
        {
            return Err(format!("the page polled, or had no events: {feed}"));
        }
        Ok(())
    });
    server.shutdown();
}

/// The page's event reader against a stand-in server that does what a real one may: an
/// event split across writes (mid-line, mid-character), CRLF and LF line ends, a comment,
/// a stream that ends (the page reconnects and keeps the list without polling), then
/// `/api/events` failing (after three failures in a row the page polls `/api/streams`).
#[test]
fn page_reads_split_events_reconnects_and_falls_back_to_polling() {
    let test = "page_reads_split_events_reconnects_and_falls_back_to_polling";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let stand_in = sse_stand_in::start();
    let addr = stand_in.addr;
    with_chromium(binary, &[], move |browser| {
        browser
            .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
            .map_err(cdp)?;
        // The first connection ends after its events; the second one says 7 viewers.
        browser
            .wait_for(
                "document.querySelector('[data-stream=live] .viewers')?.textContent === '7 viewers'",
                Instant::now() + Duration::from_secs(15),
                "7 viewers from the second connection",
            )
            .map_err(cdp)?;
        let seen = browser
            .evaluate(
                "({ feed: mixcastTest.feed(),\
                 sources: document.querySelector('[data-stream=live] .sources').textContent })",
            )
            .map_err(cdp)?;
        eprintln!(
            "after the reconnect: {seen}, stand-in: {:?}",
            stand_in.counts()
        );
        let (events, polls) = stand_in.counts();
        if seen["sources"] != "tone ♪"
            || seen["feed"]["counts"]["streams"] != 2
            || seen["feed"]["counts"]["viewercount"] != 1
            || seen["feed"]["listRequests"] != 0
            || events != 2
            || polls != 0
        {
            return Err(format!("after a split event and a reconnect: {seen}, {events} event connections, {polls} polls"));
        }
        // /api/events fails from now on: the page polls, and shows what the poll says.
        stand_in.fail_events();
        browser
            .wait_for(
                "document.querySelector('[data-stream=live] .viewers')?.textContent === '9 viewers'",
                Instant::now() + Duration::from_secs(20),
                "9 viewers from /api/streams",
            )
            .map_err(cdp)?;
        let feed = browser.evaluate("mixcastTest.feed()").map_err(cdp)?;
        let (events, polls) = stand_in.counts();
        eprintln!("falling back: {feed}, {events} event connections, {polls} polls");
        if feed["state"] != "polling" || events < 2 + 3 || polls < 1 {
            return Err(format!(
                "the fallback: {feed}, {events} event connections, {polls} polls"
            ));
        }
        Ok(())
    });
}

/// A hand-written HTTP/1.1 server for the page and a scripted `/api/events` (std threads,
/// one per connection; each response ends by closing the connection).
mod sse_stand_in {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const INDEX_HTML: &str = include_str!("../static/index.html");
    const APP_JS: &str = include_str!("../static/app.js");
    const STYLE_CSS: &str = include_str!("../static/style.css");

    #[derive(Default)]
    struct Shared {
        events: AtomicUsize,
        polls: AtomicUsize,
        failing: AtomicBool,
        /// The held-open second event stream, closed by `fail_events`.
        open: Mutex<Option<TcpStream>>,
    }

    pub struct StandIn {
        pub addr: SocketAddr,
        shared: Arc<Shared>,
    }

    impl StandIn {
        /// (connections to /api/events, requests of /api/streams)
        pub fn counts(&self) -> (usize, usize) {
            (
                self.shared.events.load(Ordering::SeqCst),
                self.shared.polls.load(Ordering::SeqCst),
            )
        }

        /// Ends the open event stream; every later /api/events gets a 500.
        pub fn fail_events(&self) {
            self.shared.failing.store(true, Ordering::SeqCst);
            if let Some(s) = self.shared.open.lock().unwrap().take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds 127.0.0.1:0");
        let addr = listener.local_addr().expect("an address");
        let shared = Arc::new(Shared::default());
        let in_thread = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&in_thread);
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        StandIn { addr, shared }
    }

    fn list(viewers: u32) -> String {
        format!(
            r#"{{"streams":[{{"name":"live","viewers":{viewers},"publishers":0,"configured":true,"video":null,"sources":["tone ♪"]}}]}}"#
        )
    }

    fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request = String::new();
        reader.read_line(&mut request)?;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let plain = |stream: &mut TcpStream, status: &str, kind: &str, body: &str| {
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        match path.as_str() {
            "/" => plain(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                INDEX_HTML,
            ),
            "/app.js" => plain(&mut stream, "200 OK", "text/javascript", APP_JS),
            "/style.css" => plain(&mut stream, "200 OK", "text/css", STYLE_CSS),
            "/api/streams" => {
                shared.polls.fetch_add(1, Ordering::SeqCst);
                plain(&mut stream, "200 OK", "application/json", &list(9))
            }
            "/api/events" => {
                let n = shared.events.fetch_add(1, Ordering::SeqCst) + 1;
                if shared.failing.load(Ordering::SeqCst) {
                    return plain(
                        &mut stream,
                        "500 Internal Server Error",
                        "text/plain",
                        "down",
                    );
                }
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                )?;
                let pause = || std::thread::sleep(Duration::from_millis(60));
                if n == 1 {
                    // One event in pieces: mid-line, and mid-"♪" (three bytes in UTF-8).
                    let event = format!("event: streams\r\ndata: {}\r\n\r\n", list(2));
                    let bytes = event.as_bytes();
                    let note = event.find('♪').expect("the note is in the list") + 1;
                    stream.write_all(b": keep-alive\r\n\r\n")?;
                    for piece in [&bytes[..9], &bytes[9..note], &bytes[note..]] {
                        pause();
                        stream.write_all(piece)?;
                        stream.flush()?;
                    }
                    pause();
                    stream.write_all(
                        b"event: viewercount\ndata: {\"stream\":\"live\",\"viewercount\":5}\n\n",
                    )?;
                    pause();
                    // Ends here: the page must come back.
                    Ok(())
                } else {
                    stream
                        .write_all(format!("event: streams\ndata: {}\n\n", list(7)).as_bytes())?;
                    stream.flush()?;
                    *shared.open.lock().unwrap() = Some(stream.try_clone()?);
                    Ok(())
                }
            }
            _ => plain(&mut stream, "404 Not Found", "text/plain", "no"),
        }
    }
}
