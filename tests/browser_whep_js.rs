//! The WHEP server-sent events extension with the reference client (issue 15): the
//! `WHEPClient` of `whip-whep` (the npm package by the WHEP draft's author, installed from
//! the npm registry into `target/interop-whep-js`) plays `live` in headless Chromium,
//! finds the event stream in the answer's `Link`, POSTs the event names, opens an
//! `EventSource` on the `Location` it gets back, and receives `viewercount` as a second
//! viewer (mixcast's own client) joins and leaves. The audio it plays is checked too: the
//! player's analyser hears the 440 Hz left / 660 Hz right test signal.
//!
//! Without Chromium or npm this test prints SKIPPED and passes, unless
//! `MIXCAST_REQUIRE_BROWSER=1`, `MIXCAST_REQUIRE_INTEROP=1` or `CI` is set, when it fails.

#[allow(dead_code)]
#[path = "common/browser_harness.rs"]
mod browser_harness;
#[allow(dead_code)]
#[path = "common/chromium.rs"]
mod chromium;
#[path = "common/python.rs"]
mod python;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use browser_harness::{cdp, chromium_or_skip, media_lock, with_chromium};
use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::server::Server;

/// The package and version installed: the newest on the registry when written.
const PACKAGE: &str = "whip-whep@1.2.0";
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `whep.js` of the package, installing it with npm first if needed.
fn whep_js() -> Result<String, String> {
    let dir = target_dir().join("interop-whep-js");
    let file = dir.join("node_modules/whip-whep/whep.js");
    if !file.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new(std::env::var_os("MIXCAST_NPM").unwrap_or("npm".into()));
        cmd.arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args(["--no-audit", "--no-fund", "--no-save", "--ignore-scripts"])
            .args(["--loglevel=error", PACKAGE]);
        let out = python::run(cmd, NPM_TIMEOUT).map_err(|e| format!("npm install: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install {PACKAGE} failed ({}): {}",
                out.status,
                python::tail(&out.stderr, 5)
            ));
        }
    }
    std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
}

/// Plays `live` with the package's client. Its trickled candidates pass through a filter
/// that keeps loopback ones only (the tests never reach another address); the offer itself
/// carries none. Events of each kind are collected in `window.got`.
const PLAY: &str = r#"
(async () => {
  const loopback = (c) => /^(127\.|::1$)/.test(c.address || "");
  const pc = new RTCPeerConnection();
  let handler = null;
  Object.defineProperty(pc, "onicecandidate", {
    set(h) { handler = h; },
    get() { return handler; },
  });
  pc.addEventListener("icecandidate", (e) => {
    if (handler && (!e.candidate || loopback(e.candidate))) handler(e);
  });
  pc.addTransceiver("audio", { direction: "recvonly" });
  window.got = { viewercount: [], active: [], inactive: [] };
  window.heard = null;
  pc.ontrack = (e) => {
    const ctx = new AudioContext();
    const src = ctx.createMediaStreamSource(new MediaStream([e.track]));
    const split = ctx.createChannelSplitter(2);
    src.connect(split);
    const an = [0, 1].map((i) => {
      const a = ctx.createAnalyser();
      a.fftSize = 8192;
      split.connect(a, i);
      return a;
    });
    // Chromium plays a remote track only while it is attached to a media element.
    const el = new Audio();
    el.srcObject = new MediaStream([e.track]);
    el.muted = true;
    el.play();
    window.heard = () => an.map((a) => {
      const bins = new Float32Array(a.frequencyBinCount);
      a.getFloatFrequencyData(bins);
      let best = 0;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      return best * ctx.sampleRate / a.fftSize;
    });
  };
  const client = new WHEPClient();
  window.client = client;
  // Chromium decodes Opus as mono unless its own offer asks for stereo: the client's hook
  // for editing the offer is where a page using it says so.
  client.onOffer = (sdp) => sdp.replace(/a=fmtp:(\d+) (.*minptime.*)\r\n/g,
    (line, pt, params) => `a=fmtp:${pt} ${params};stereo=1;sprop-stereo=1\r\n`);
  await client.view(pc, location.origin + "/live/whep");
  const deadline = Date.now() + 10000;
  while (!client.eventSource && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  if (!client.eventSource) return "the client opened no EventSource";
  window.sseUrl = client.eventSource.url;
  for (const kind of Object.keys(window.got)) {
    client.eventSource.addEventListener(kind, (e) => window.got[kind].push(JSON.parse(e.data)));
  }
  return "ok";
})()
"#;

#[test]
fn the_reference_whep_client_subscribes_and_hears_viewercount() {
    let test = "the_reference_whep_client_subscribes_and_hears_viewercount";
    let Some(binary) = chromium_or_skip(test) else {
        return;
    };
    let source = match whep_js() {
        Ok(s) => s,
        Err(why) => return python::unavailable(test, &why),
    };
    let _media = media_lock();
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let addr = server.http_addr();
    // A classic script: the module's one `export` dropped, so the class is a global.
    let script = source.replace("export class WHEPClient", "class WHEPClient");
    with_chromium(binary, &[], move |browser| {
        // Any page of the server's origin: the client's requests are then same-origin.
        browser
            .navigate(
                &format!("http://{addr}/api/streams"),
                Duration::from_secs(10),
            )
            .map_err(cdp)?;
        browser
            .evaluate(&format!("{script}\n;window.WHEPClient = WHEPClient; true"))
            .map_err(cdp)?;
        let started = browser.evaluate(PLAY).map_err(cdp)?;
        if started != "ok" {
            return Err(format!("playing with whep.js: {started}"));
        }
        let sse_url = browser.evaluate("window.sseUrl").map_err(cdp)?;
        let want = format!("http://{addr}/live/whep/");
        let sse = sse_url.as_str().unwrap_or_default();
        if !(sse.starts_with(&want) && sse.ends_with("/events?events=active,inactive,viewercount"))
        {
            return Err(format!("the EventSource is on {sse_url}"));
        }

        // It hears the test signal.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let f = browser
                .evaluate("window.heard ? window.heard() : null")
                .map_err(cdp)?;
            let near = |i: usize, hz: f64| f[i].as_f64().is_some_and(|x| (x - hz).abs() < 15.0);
            if near(0, 440.0) && near(1, 660.0) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("not hearing 440/660 Hz after 20 s: {f}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }

        // A second viewer joins for 2 s: the count goes to 2, then back to 1.
        let other = std::thread::spawn(move || {
            play(&PlayOptions {
                url: format!("http://{addr}/live/whep"),
                token: None,
                duration: Duration::from_secs(2),
                bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                decode: false,
            })
        });
        let counts = |browser: &mut chromium::Chromium| -> Result<Vec<u64>, String> {
            let v = browser
                .evaluate("window.got.viewercount.map((d) => d.viewercount)")
                .map_err(cdp)?;
            Ok(v.as_array()
                .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default())
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = counts(browser)?;
            if let Some(two) = seen.iter().position(|&n| n == 2) {
                if seen[two..].contains(&1) {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("viewercount events: {seen:?}, wanted 2 then 1"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = other
            .join()
            .map_err(|_| "the second viewer panicked".to_string())?
            .map_err(|e| format!("the second viewer: {e}"))?;
        if report.packets == 0 {
            return Err("the second viewer got no packets".into());
        }
        browser
            .evaluate("window.client.stop().then(() => true)")
            .map_err(cdp)?;
        Ok(())
    });
    server.shutdown();
}
