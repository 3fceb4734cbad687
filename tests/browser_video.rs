//! Video through mixcast with real browsers: a headless Chromium publishes its fake
//! camera (a generated moving pattern) and a fake microphone over WHIP from the page in
//! static/, with H264 and again with VP8, and another tab plays the stream from the page
//! over WHEP: frames must be decoded there, in the codec sent, at the size the publisher
//! sends, and the audio must still arrive. A viewer joining a running stream must decode
//! its first frame within [`JOIN_FIRST_FRAME`] of its POST (the server's keyframe request
//! at work: Chrome's encoder sends a keyframe at the start and then, in practice, only
//! when asked).
//!
//! Without a Chromium binary (`$CHROMIUM`, else /usr/bin/chromium) these tests print that
//! they skipped and pass, unless `MIXCAST_REQUIRE_BROWSER=1`, when they fail. Every wait is
//! bounded, and a watchdog kills Chromium if a test overruns.

#[path = "common/browser_harness.rs"]
mod browser_harness;
#[path = "common/chromium.rs"]
mod chromium;

use browser_harness::{cdp, chromium_or_skip, fake_devices, media_lock, screenshot, with_chromium};
use chromium::Chromium;
use mixcast::config::{Config, StreamConfig};
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The fake microphone's WAV: 1000 Hz on the left, 1500 Hz on the right.
const MIC_LEFT_HZ: f64 = 1000.0;
const MIC_RIGHT_HZ: f64 = 1500.0;
const MIC_AMPLITUDE: f64 = 0.3;
const TOLERANCE_HZ: f64 = 15.0;
/// How long the viewer's decoded frames are counted.
const COUNT_FOR: Duration = Duration::from_secs(3);
/// The fewest frames a viewer must decode in [`COUNT_FOR`]: 5 fps, far below the fake
/// camera's rate, so that a busy machine does not fail the test, yet a stall does.
const MIN_FRAMES: f64 = 15.0;

/// The longest a viewer joining a running stream may wait, from its POST, for its first
/// decoded frame. Measured on the loopback: see the test's output.
const JOIN_FIRST_FRAME: Duration = Duration::from_secs(1);
/// Viewers that join the running stream one after another in the join test.
const JOINS: usize = 3;

/// The server's log goes to the test output; `RUST_LOG=mixcast=debug` shows the video
/// path (keyframe requests, forwarding) when a test fails.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
    let sample = |hz: f64, i: u32| {
        let phase = 2.0 * std::f64::consts::PI * hz * f64::from(i) / f64::from(SAMPLE_RATE);
        (MIC_AMPLITUDE * phase.sin() * f64::from(i16::MAX)).round() as i16
    };
    for i in 0..2 * SAMPLE_RATE {
        wav.write_sample(sample(MIC_LEFT_HZ, i))?;
        wav.write_sample(sample(MIC_RIGHT_HZ, i))?;
    }
    wav.finalize()
}

/// The page publishes camera (H264 only) and microphone to a new stream `cam`; a second
/// tab plays `cam` and decodes its H264 video, at the publisher's frame size, and hears its
/// tones.
#[test]
fn chromium_publishes_camera_and_another_tab_watches_it() {
    publish_and_watch_with(
        "chromium_publishes_camera_and_another_tab_watches_it",
        "H264",
    );
}

/// As [`chromium_publishes_camera_and_another_tab_watches_it`], with VP8.
#[test]
fn chromium_publishes_vp8_camera_and_another_tab_watches_it() {
    publish_and_watch_with(
        "chromium_publishes_vp8_camera_and_another_tab_watches_it",
        "VP8",
    );
}

fn publish_and_watch_with(test: &str, codec: &'static str) {
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    init_tracing();
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("microphone.wav");
    write_microphone_wav(&wav).expect("the WAV is written");
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        publish_then_watch(browser, addr, codec)
    });
    server.shutdown();
}

fn publish_then_watch(browser: &mut Chromium, addr: SocketAddr, codec: &str) -> Result<(), String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let publisher = browser.current_page();
    let sent = publish_camera_with(browser, "cam", Some(codec))?;
    eprintln!("publisher's outbound video: {sent}");
    check_codec("the publisher sends", &sent, codec)?;
    screenshot(browser, &format!("page-publishing-camera-{codec}"))?;

    browser.open_page().map_err(cdp)?;
    browser
        .navigate(&format!("http://{addr}/?play=cam"), Duration::from_secs(10))
        .map_err(cdp)?;
    let viewer = browser.current_page();
    let video = frames_flow(browser, "cam", Duration::from_secs(15))?;
    check_codec("the viewer decodes", &video, codec)?;
    check_frame_size(browser, "cam", &video, &publisher, &viewer)?;
    hears_the_microphone(browser, "cam")?;
    screenshot(browser, &format!("page-watching-camera-{codec}"))?;
    Ok(())
}

/// `stats` (outbound or inbound video stats from the page) name `codec` (`video/<codec>`).
fn check_codec(what: &str, stats: &Value, codec: &str) -> Result<(), String> {
    let mime = stats["codec"]["mimeType"].as_str().unwrap_or("");
    if mime.eq_ignore_ascii_case(&format!("video/{codec}")) {
        Ok(())
    } else {
        Err(format!("{what} {mime:?}, want video/{codec}: {stats}"))
    }
}

/// Viewers joining a running stream, one after another, each decode their first frame
/// within [`JOIN_FIRST_FRAME`] of their POST: the keyframe request a join causes reaches
/// the publisher and its keyframe comes back at once (Chrome's encoder sends keyframes
/// rarely unless asked, so without the request a joiner would wait far longer).
#[test]
fn chromium_viewer_joining_a_running_stream_decodes_within_a_second() {
    let test = "chromium_viewer_joining_a_running_stream_decodes_within_a_second";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    init_tracing();
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("microphone.wav");
    write_microphone_wav(&wav).expect("the WAV is written");
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        join_running_stream(browser, addr)
    });
    server.shutdown();
}

fn join_running_stream(browser: &mut Chromium, addr: SocketAddr) -> Result<(), String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let sent = publish_camera_with(browser, "cam", Some("VP8"))?;
    eprintln!("publisher's outbound video: {sent}");
    // Let the stream run past its first keyframes, so joiners need new ones.
    std::thread::sleep(Duration::from_secs(3));

    browser.open_page().map_err(cdp)?;
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let mut figures = Vec::new();
    for join in 1..=JOINS {
        browser.evaluate("mixcastTest.play('cam')").map_err(cdp)?;
        let timing = browser
            .wait_for(
                "(() => { const t = mixcastTest.timing('cam'); return t && t.firstDecoded && t; })()",
                Instant::now() + Duration::from_secs(10),
                "the joining viewer's first decoded frame",
            )
            .map_err(|e| {
                let t = browser.evaluate("mixcastTest.timing('cam')");
                let v = browser.evaluate("mixcastTest.videoStats('cam')");
                format!("join {join}: {e}; timing {t:?}, video {v:?}")
            })?;
        let since_post = |k: &str| match (timing[k].as_f64(), timing["post"].as_f64()) {
            (Some(t), Some(post)) => Some(t - post),
            _ => None,
        };
        let (answer, connected, decoded) = (
            since_post("answer"),
            since_post("connected"),
            since_post("firstDecoded"),
        );
        // The picture may be painted a little after the frame is counted.
        std::thread::sleep(Duration::from_millis(300));
        let painted = browser
            .evaluate("(() => { const t = mixcastTest.timing('cam'); return t.firstPainted && t.firstPainted - t.post; })()")
            .map_err(cdp)?;
        let stats = browser
            .evaluate("mixcastTest.videoStats('cam')")
            .map_err(cdp)?;
        eprintln!(
            "join {join}: from the POST, answer {answer:?} ms, connected {connected:?} ms, \
             first frame decoded {decoded:?} ms, painted {painted} ms; {stats}"
        );
        figures.push((answer, connected, decoded));
        let decoded = decoded.ok_or("no firstDecoded")?;
        if decoded > JOIN_FIRST_FRAME.as_secs_f64() * 1000.0 {
            return Err(format!(
                "join {join}: first frame decoded {decoded:.0} ms after the POST, want at most \
                 {JOIN_FIRST_FRAME:?}; all so far {figures:?}"
            ));
        }
        browser.evaluate("mixcastTest.stop('cam')").map_err(cdp)?;
        browser
            .wait_for(
                "mixcastTest.state('cam') === 'stopped'",
                Instant::now() + Duration::from_secs(10),
                "the viewer to stop",
            )
            .map_err(cdp)?;
        // Past the server's keyframe rate limit, so each join asks anew.
        std::thread::sleep(Duration::from_millis(700));
    }
    eprintln!("joins (answer, connected, first frame decoded) ms after the POST: {figures:?}");
    Ok(())
}

/// A viewer of a stream that has no video yet gets it once a publisher's camera starts:
/// its video transceiver was there from the start, and the first frame it gets decodes.
#[test]
fn chromium_viewer_waiting_before_the_camera_gets_video() {
    let test = "chromium_viewer_waiting_before_the_camera_gets_video";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    init_tracing();
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("microphone.wav");
    write_microphone_wav(&wav).expect("the WAV is written");
    let mut config = Config::loopback_ephemeral();
    // A configured stream with nothing in it: a viewer can join before anyone publishes.
    config.streams.push(StreamConfig {
        name: "studio".into(),
        sources: Vec::new(),
        video: Default::default(),
    });
    let server = Server::start(config).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        watch_then_publish(browser, addr)
    });
    server.shutdown();
}

fn watch_then_publish(browser: &mut Chromium, addr: SocketAddr) -> Result<(), String> {
    browser
        .navigate(
            &format!("http://{addr}/?play=studio"),
            Duration::from_secs(10),
        )
        .map_err(cdp)?;
    let viewer = browser.current_page();
    browser
        .wait_for(
            "!['idle', 'connecting'].includes(mixcastTest.state('studio'))\
             && mixcastTest.state('studio')",
            Instant::now() + Duration::from_secs(15),
            "the viewer of studio to connect",
        )
        .map_err(cdp)?;
    let state = browser
        .evaluate("mixcastTest.state('studio')")
        .map_err(cdp)?;
    if state != "connected" {
        let error = browser
            .evaluate("mixcastTest.error('studio')")
            .map_err(cdp)?;
        return Err(format!("the viewer of studio is {state}: {error}"));
    }
    // A second with no publisher: no picture, and no video box (the stream has no video).
    std::thread::sleep(Duration::from_secs(1));
    let before = browser
        .evaluate(
            "(async () => ({ shown: mixcastTest.videoShown('studio'),\
             stats: await mixcastTest.videoStats('studio'),\
             box: !document.querySelector('[data-stream=studio] .screen').hidden }))()",
        )
        .map_err(cdp)?;
    eprintln!("before the camera: {before}");
    let decoded = before["stats"]["framesDecoded"].as_f64().unwrap_or(0.0);
    if before["shown"]["shown"] != false || decoded > 0.0 || before["box"] != false {
        return Err(format!(
            "before anyone publishes video the viewer shows {before}"
        ));
    }
    screenshot(browser, "page-waiting-for-video")?;

    browser.open_page().map_err(cdp)?;
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let publisher = browser.current_page();
    let sent = publish_camera(browser, "studio")?;
    eprintln!("publisher's outbound video: {sent}");

    browser.switch_to(&viewer);
    let video = frames_flow(browser, "studio", Duration::from_secs(15))?;
    check_frame_size(browser, "studio", &video, &publisher, &viewer)?;
    hears_the_microphone(browser, "studio")?;
    // The video box appeared with the video.
    let shown = browser
        .evaluate("!document.querySelector('[data-stream=studio] .screen').hidden")
        .map_err(cdp)?;
    if shown != true {
        return Err("studio's video plays, yet its card shows no video box".into());
    }
    screenshot(browser, "page-watching-late-camera")?;
    Ok(())
}

/// Publishes camera and microphone from the current page to `stream`; returns the
/// outbound video stats once frames are being sent.
fn publish_camera(browser: &mut Chromium, stream: &str) -> Result<Value, String> {
    publish_camera_with(browser, stream, None)
}

/// [`publish_camera`], offering only video codec `codec` ("H264", "VP8") if given.
fn publish_camera_with(
    browser: &mut Chromium,
    stream: &str,
    codec: Option<&str>,
) -> Result<Value, String> {
    let codec = codec.map_or("null".to_string(), |c| format!("'{c}'"));
    browser
        .evaluate(&format!(
            "mixcastTest.publish('{stream}', null, {{ video: true, videoCodec: {codec} }})"
        ))
        .map_err(|e| format!("publishing camera and microphone to {stream}: {e}"))?;
    let state = browser
        .evaluate("mixcastTest.publishState()")
        .map_err(cdp)?;
    eprintln!("publisher: {state}");
    if state["state"] != "connected" || state["camera"] != true || state["videoAccepted"] != true {
        return Err(format!(
            "after publish(): {state} (want connected, camera, video accepted)"
        ));
    }
    let sending = "mixcastTest.publishStats().then((s) => s && s.video\
                   && s.video.framesSent > 10 && s.video.frameWidth > 0 && s.video)";
    browser
        .wait_for(
            sending,
            Instant::now() + Duration::from_secs(10),
            "the publisher to send 10 frames",
        )
        .map_err(|e| {
            let stats = browser.evaluate("mixcastTest.publishStats()");
            format!("{e}; publisher stats {stats:?}")
        })
}

/// Waits up to `first` for the viewer of `stream` (the current page) to decode a frame,
/// then counts frames for [`COUNT_FOR`]; returns the last video stats.
fn frames_flow(browser: &mut Chromium, stream: &str, first: Duration) -> Result<Value, String> {
    let stats = format!("mixcastTest.videoStats('{stream}')");
    browser
        .wait_for(
            &format!("{stats}.then((v) => v && v.framesDecoded > 0)"),
            Instant::now() + first,
            "the viewer's first decoded frame",
        )
        .map_err(|e| {
            let video = browser.evaluate(&stats);
            let audio = browser.evaluate(&format!("mixcastTest.stats('{stream}')"));
            format!("{e}; viewer video {video:?}, audio {audio:?}")
        })?;
    let start = browser.evaluate(&stats).map_err(cdp)?;
    let started = Instant::now();
    std::thread::sleep(COUNT_FOR);
    let end = browser.evaluate(&stats).map_err(cdp)?;
    let seconds = started.elapsed().as_secs_f64();
    let frames = |v: &Value| v["framesDecoded"].as_f64().unwrap_or(0.0);
    let decoded = frames(&end) - frames(&start);
    eprintln!(
        "viewer of {stream}: {decoded} frames decoded in {seconds:.1} s ({:.1} fps); {end}",
        decoded / seconds
    );
    if decoded < MIN_FRAMES {
        return Err(format!(
            "the viewer of {stream} decoded {decoded} frames in {seconds:.1} s, want {MIN_FRAMES} \
             or more; video stats {start} then {end}"
        ));
    }
    Ok(end)
}

/// The viewer's decoded frames have a size, the page's <video> shows that size, and it is
/// the size the publisher sends (read again a few times: the sender may scale under load).
fn check_frame_size(
    browser: &mut Chromium,
    stream: &str,
    video: &Value,
    publisher: &chromium::Page,
    viewer: &chromium::Page,
) -> Result<(), String> {
    let size = |v: &Value| {
        (
            v["frameWidth"].as_u64().unwrap_or(0),
            v["frameHeight"].as_u64().unwrap_or(0),
        )
    };
    let decoded = size(video);
    if decoded.0 == 0 || decoded.1 == 0 {
        return Err(format!(
            "the viewer of {stream} decodes frames of {decoded:?}"
        ));
    }
    let mut readings = Vec::new();
    for _ in 0..5 {
        browser.switch_to(viewer);
        let shown = browser
            .evaluate(&format!("mixcastTest.videoShown('{stream}')"))
            .map_err(cdp)?;
        let received = browser
            .evaluate(&format!("mixcastTest.videoStats('{stream}')"))
            .map_err(cdp)?;
        browser.switch_to(publisher);
        let sent = browser
            .evaluate("mixcastTest.publishStats().then((s) => s && s.video)")
            .map_err(cdp)?;
        browser.switch_to(viewer);
        let shown_size = (
            shown["width"].as_u64().unwrap_or(0),
            shown["height"].as_u64().unwrap_or(0),
        );
        let reading = (size(&sent), size(&received), shown_size);
        eprintln!(
            "{stream}: sent {:?}, decoded {:?}, shown {:?} ({shown})",
            reading.0, reading.1, reading.2
        );
        if shown["shown"] == true && reading.0 == reading.1 && reading.1 == reading.2 {
            return Ok(());
        }
        readings.push(reading);
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "{stream}: (sent, decoded, shown) frame sizes never agreed, with the picture shown: \
         {readings:?}"
    ))
}

/// The viewer of `stream` (the current page) receives the publisher's audio too: packets
/// with energy, and the WAV's tones (per channel in stereo, either tone on each channel
/// when the browser sent mono).
fn hears_the_microphone(browser: &mut Chromium, stream: &str) -> Result<(), String> {
    browser
        .wait_for(
            &format!(
                "mixcastTest.stats('{stream}').then((s) => s && s.packetsReceived > 50\
                 && s.totalAudioEnergy > 0)"
            ),
            Instant::now() + Duration::from_secs(10),
            "audio with energy",
        )
        .map_err(cdp)?;
    let near = |hz: Option<f64>| {
        hz.is_some_and(|hz| {
            (hz - MIC_LEFT_HZ).abs() <= TOLERANCE_HZ || (hz - MIC_RIGHT_HZ).abs() <= TOLERANCE_HZ
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readings = Vec::new();
    let mut good = 0;
    while good < 3 {
        if Instant::now() >= deadline {
            return Err(format!(
                "the viewer of {stream}: want {MIC_LEFT_HZ} or {MIC_RIGHT_HZ} Hz on each channel \
                 (±{TOLERANCE_HZ}); read {readings:?}"
            ));
        }
        let reading = browser
            .evaluate(&format!("mixcastTest.dominantFrequencies('{stream}')"))
            .map_err(cdp)?;
        let (left, right) = (reading["left"].as_f64(), reading["right"].as_f64());
        if near(left) && near(right) {
            good += 1;
        }
        readings.push((left, right));
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("viewer of {stream}, dominant frequencies (left, right): {readings:?}");
    Ok(())
}

/// The page publishes its camera as simulcast (VP8, three encodings with rids f, h, q, the
/// full size listed first): the answer receives all three, and a viewer decodes the top
/// layer, at the full size, while a smaller layer is sent too.
#[test]
fn chromium_publishes_simulcast_and_the_viewer_gets_the_top_layer() {
    let test = "chromium_publishes_simulcast_and_the_viewer_gets_the_top_layer";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    init_tracing();
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("microphone.wav");
    write_microphone_wav(&wav).expect("the WAV is written");
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        simulcast_then_watch(browser, addr)
    });
    server.shutdown();
}

fn simulcast_then_watch(browser: &mut Chromium, addr: SocketAddr) -> Result<(), String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    browser
        .evaluate(
            "mixcastTest.publish('sim', null, { video: true, videoCodec: 'VP8', simulcast: true })",
        )
        .map_err(|e| format!("publishing simulcast: {e}"))?;
    let state = browser
        .evaluate("mixcastTest.publishState()")
        .map_err(cdp)?;
    eprintln!("publisher: {state}");
    if state["state"] != "connected" || state["simulcastAnswer"] != "recv f;h;q" {
        return Err(format!(
            "after publish(): {state} (want connected, a=simulcast:recv f;h;q)"
        ));
    }
    // At least two layers sending: Chrome drops the smallest ones for small captures (at
    // the fake camera's 640 × 480 it sends f and h, not q).
    let sent = browser
        .wait_for(
            "mixcastTest.publishStats().then((s) => s && s.video\
             && s.video.layers.filter((l) => l.framesSent > 10).length >= 2 && s.video)",
            Instant::now() + Duration::from_secs(10),
            "the publisher to send every layer",
        )
        .map_err(|e| {
            let stats = browser.evaluate("mixcastTest.publishStats()");
            format!("{e}; publisher stats {stats:?}")
        })?;
    eprintln!("publisher's layers: {}", sent["layers"]);
    let top = sent["layers"]
        .as_array()
        .and_then(|layers| layers.iter().find(|l| l["rid"] == "f"))
        .cloned()
        .ok_or_else(|| format!("no layer f among {}", sent["layers"]))?;

    browser.open_page().map_err(cdp)?;
    browser
        .navigate(&format!("http://{addr}/?play=sim"), Duration::from_secs(10))
        .map_err(cdp)?;
    let video = frames_flow(browser, "sim", Duration::from_secs(15))?;
    let size = |v: &Value| (v["frameWidth"].as_u64(), v["frameHeight"].as_u64());
    eprintln!(
        "viewer decodes {:?}; top layer f sends {:?}",
        size(&video),
        size(&top)
    );
    // The sender may scale a layer under load: compare with the top layer as it is now,
    // and tell it from the next one down (half its size).
    let (w, _) = size(&video);
    let (top_w, _) = size(&top);
    match (w, top_w) {
        (Some(w), Some(top_w)) if w > top_w * 3 / 4 => Ok(()),
        _ => Err(format!(
            "the viewer decodes {:?}, not the top layer's {:?} (layers {})",
            size(&video),
            size(&top),
            sent["layers"]
        )),
    }
}

/// A stream configured `video = "none"`: the camera's publisher is accepted, but the
/// viewer's video m-section is rejected and the page shows no video box while the
/// microphone is heard.
#[test]
fn chromium_audio_only_stream_shows_no_video() {
    let test = "chromium_audio_only_stream_shows_no_video";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    init_tracing();
    let _media = media_lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let wav = dir.path().join("microphone.wav");
    write_microphone_wav(&wav).expect("the WAV is written");
    let mut config = Config::loopback_ephemeral();
    config.streams.push(StreamConfig {
        name: "radio".into(),
        sources: Vec::new(),
        video: mixcast::streams::VideoSource::None,
    });
    let server = Server::start(config).expect("the server starts");
    let addr = server.http_addr();
    with_chromium(binary, &fake_devices(Some(&wav)), move |browser| {
        audio_only(browser, addr)
    });
    server.shutdown();
}

fn audio_only(browser: &mut Chromium, addr: SocketAddr) -> Result<(), String> {
    browser
        .navigate(&format!("http://{addr}/"), Duration::from_secs(10))
        .map_err(cdp)?;
    let sent = publish_camera(browser, "radio")?;
    eprintln!("publisher's outbound video: {sent}");
    browser.open_page().map_err(cdp)?;
    browser
        .navigate(
            &format!("http://{addr}/?play=radio"),
            Duration::from_secs(10),
        )
        .map_err(cdp)?;
    hears_the_microphone(browser, "radio")?;
    // The publisher has been sending video for seconds by now.
    std::thread::sleep(Duration::from_secs(1));
    let seen = browser
        .evaluate(
            "(async () => ({ shown: mixcastTest.videoShown('radio'),\
             stats: await mixcastTest.videoStats('radio'),\
             box: !document.querySelector('[data-stream=radio] .screen').hidden }))()",
        )
        .map_err(cdp)?;
    eprintln!("viewer of the audio-only stream: {seen}");
    let decoded = seen["stats"]["framesDecoded"].as_f64().unwrap_or(0.0);
    if seen["shown"]["shown"] != false || decoded > 0.0 || seen["box"] != false {
        return Err(format!("an audio-only stream's viewer shows {seen}"));
    }
    screenshot(browser, "page-audio-only-stream")?;
    Ok(())
}
