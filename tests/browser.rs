//! A real headless Chromium plays mixcast's streams through the web page in static/.
//!
//! Without a Chromium binary (`$CHROMIUM`, else /usr/bin/chromium) these tests print that
//! they skipped and pass, unless `MIXCAST_REQUIRE_BROWSER=1`, when they fail. Every wait is
//! bounded, and a watchdog kills Chromium if a test overruns.

#[path = "common/chromium.rs"]
mod chromium;

use chromium::{CdpError, Chromium};
use mixcast::config::Config;
use mixcast::server::Server;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest any one browser test may take before its watchdog fails it.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// The test signal: 440 Hz on the left, 660 Hz on the right.
const LEFT_HZ: f64 = 440.0;
const RIGHT_HZ: f64 = 660.0;
const TOLERANCE_HZ: f64 = 15.0;

/// The Chromium binary, or None when the test should skip.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(binary) = chromium::find_binary() {
        return Some(binary);
    }
    if std::env::var("MIXCAST_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "{test}: MIXCAST_REQUIRE_BROWSER=1 but no Chromium found \
             (set CHROMIUM or install /usr/bin/chromium)"
        );
    }
    eprintln!("{test}: SKIPPED, no Chromium (set CHROMIUM or install /usr/bin/chromium)");
    None
}

/// Launches Chromium and runs `body` with it on its own thread; fails the test with the
/// page's console and Chromium's log if `body` fails, and kills Chromium if it overruns.
fn with_chromium(
    binary: PathBuf,
    body: impl FnOnce(&mut Chromium) -> Result<(), String> + Send + 'static,
) {
    let mut browser = Chromium::launch(&binary, &[]).unwrap_or_else(|e| panic!("{e}"));
    let killer = browser.killer();
    let (done, finished) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let result = body(&mut browser).map_err(|error| {
            format!(
                "{error}\n--- page console ---\n{}\n--- chromium log (tail) ---\n{}",
                browser.console().join("\n"),
                tail(&browser.process_log(), 40),
            )
        });
        drop(browser);
        // The receiver is gone only if the watchdog already failed the test.
        let _ = done.send(result);
    });
    match finished.recv_timeout(TEST_LIMIT) {
        Ok(Ok(())) => {
            let _ = runner.join();
        }
        Ok(Err(report)) => panic!("{report}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            killer.kill();
            panic!("browser test overran {TEST_LIMIT:?}; chromium killed");
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            killer.kill();
            // The runner panicked: re-raise its panic here.
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
            panic!("browser test thread ended without a result");
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn cdp(error: CdpError) -> String {
    error.to_string()
}

/// Saves a screenshot as `$MIXCAST_SCREENSHOTS/<name>.png` when that variable is set.
fn screenshot(browser: &mut Chromium, name: &str) -> Result<(), String> {
    let Some(dir) = std::env::var_os("MIXCAST_SCREENSHOTS") else {
        return Ok(());
    };
    browser
        .screenshot(&PathBuf::from(dir).join(format!("{name}.png")))
        .map_err(cdp)
}

/// The harness itself: Chromium starts, loads a page and evaluates JavaScript.
#[test]
fn chromium_harness_evaluates_javascript() {
    let Some(binary) = chromium_or_skip("chromium_harness_evaluates_javascript") else {
        return;
    };
    with_chromium(binary, |browser| {
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

/// The page against a stand-in server: it lists the streams from /api/streams, and a
/// WHEP POST that is not 201 shows up on the page as a failure with the status.
#[test]
fn page_lists_streams_and_shows_whep_errors() {
    let Some(binary) = chromium_or_skip("page_lists_streams_and_shows_whep_errors") else {
        return;
    };
    let (runtime, addr) = stand_in::start();
    with_chromium(binary, move |browser| {
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
        screenshot(browser, "page-whep-error")
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
    let server = Server::start(Config::loopback_ephemeral()).expect("the server starts");
    let addr = server.http_addr();
    let server = std::sync::Arc::new(server);
    let in_test = std::sync::Arc::clone(&server);
    with_chromium(binary, move |browser| play_live(browser, addr, &in_test));
    if let Ok(server) = std::sync::Arc::try_unwrap(server) {
        server.shutdown();
    }
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

/// A stand-in for mixcast's HTTP side: the same static files and stream list, and a
/// WHEP endpoint that always answers 503, to check the page's error path on its own.
mod stand_in {
    use axum::http::{header, StatusCode};
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
            .route("/{stream}/whep", post(overloaded));
        runtime.spawn(async move { axum::serve(listener, app).await });
        (runtime, addr)
    }

    async fn streams() -> Json<serde_json::Value> {
        Json(serde_json::json!({ "streams": [
            { "name": "live", "viewers": 0, "publishers": 0, "sources": ["tone"] },
            { "name": "studio", "viewers": 3, "publishers": 1, "sources": ["file", "whip"] },
        ]}))
    }

    async fn overloaded() -> impl IntoResponse {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many viewers",
        )
    }
}
