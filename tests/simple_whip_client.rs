//! Meetecho's simple-whip-client (Debian's `simple-whip-client`, the `whip-client` binary,
//! on GStreamer's webrtcbin) publishes a 550 Hz tone to the in-process server, and our WHEP
//! viewer hears 550 Hz on both channels.
//!
//! With audio alone whip-client sets `bundle-policy=none`: its offer has no
//! `a=group:BUNDLE` (served by `engine::unbundled`). With audio and video it sets
//! `max-bundle`: video first, the audio section `a=bundle-only` with port 0 inside the
//! group; both are served (the README, Publishing), and the audio is still heard.
//!
//! On bookworm whip-client aborts at start ("libsoup2 symbols detected": libnice pulls in
//! gupnp-igd and libsoup 3). The test builds tests/interop/gupnp_igd_standin.c into
//! `target/` and loads it with `LD_PRELOAD`; it also makes libnice gather on 127.0.0.1 only.
//! whip-client trickles its candidates with PATCH, and stops (with a DELETE) on SIGINT.
//!
//! Needs `whip-client` (apt: simple-whip-client, gstreamer1.0-plugins-{base,good,bad},
//! gstreamer1.0-nice) and `cc`. Without them the tests print SKIPPED and pass, unless `CI`
//! or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/matrix.rs"]
mod matrix;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::Config;
use mixcast::server::Server;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const TONE_HZ: f32 = 550.0;
/// From starting whip-client to its WHIP session existing (GStreamer start-up, the POST).
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// From SIGINT to whip-client's exit (its DELETE, the pipeline's teardown).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// The Debian packages whip-client needs, for the skip/fail message.
const APT_PACKAGES: &str = "simple-whip-client gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice";

/// Opus at 48 kHz stereo, the tone on both channels (whip-client's README's pipeline shape).
const AUDIO: &str = "audiotestsrc is-live=true wave=sine freq=550 volume=0.25 \
    ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! queue \
    ! opusenc bitrate=64000 ! rtpopuspay pt=100 ssrc=1 ! queue \
    ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100";
/// VP8 test video, small.
const VIDEO: &str = "videotestsrc is-live=true pattern=ball \
    ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue \
    ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue \
    ! application/x-rtp,media=video,encoding-name=VP8,payload=96";

/// Real-time media: one test at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `$MIXCAST_WHIP_CLIENT`, else whip-client on the PATH.
fn whip_client() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MIXCAST_WHIP_CLIENT") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("whip-client"))
            .find(|p| p.is_file())
    })
}

/// The stand-in for libgupnp-igd, compiled once per test binary into `target/tmp`.
fn standin() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("simple-whip-client");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let lib = dir.join("libgupnp-igd-1.0.so.4");
            let source = python::script("gupnp_igd_standin.c");
            let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args([
                    "-shared",
                    "-fPIC",
                    "-O2",
                    "-Wl,-soname,libgupnp-igd-1.0.so.4",
                ])
                .arg("-o")
                .arg(&lib)
                .arg(&source)
                .output()
                .map_err(|e| format!("cannot run cc: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cc {}: {}",
                    source.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(lib)
        })
        .clone()
}

/// whip-client and the stand-in, or None (after `python::unavailable`).
fn ready(test: &str) -> Option<(PathBuf, PathBuf)> {
    let why = match (whip_client(), standin()) {
        (Some(exe), Ok(lib)) => return Some((exe, lib)),
        (None, _) => format!("no whip-client (apt-get install {APT_PACKAGES})"),
        (_, Err(e)) => format!("the libgupnp-igd stand-in does not build: {e}"),
    };
    python::unavailable(test, &why);
    None
}

/// A running whip-client, its output collected on two threads; killed on drop.
struct WhipClient {
    child: Child,
    output: Vec<thread::JoinHandle<String>>,
}

impl WhipClient {
    fn spawn(exe: &Path, lib: &Path, url: &str, video: bool) -> WhipClient {
        let mut cmd = Command::new(exe);
        cmd.env("LD_PRELOAD", lib)
            .args(["-u", url, "-A", AUDIO, "-l", "5", "-o"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if video {
            cmd.args(["-V", VIDEO]);
        }
        let mut child = cmd.spawn().expect("whip-client starts");
        let collect = |mut pipe: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let mut output = Vec::new();
        if let Some(out) = child.stdout.take() {
            output.push(collect(Box::new(out)));
        }
        if let Some(err) = child.stderr.take() {
            output.push(collect(Box::new(err)));
        }
        WhipClient { child, output }
    }

    /// SIGINT (whip-client's way to stop: it DELETEs its session), then its exit status
    /// and everything it printed. Killed if it has not exited within [`EXIT_TIMEOUT`].
    fn stop(mut self) -> (Result<std::process::ExitStatus, String>, String) {
        // SAFETY: kill(2) on our own child's pid, which has not been waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break Err(format!("still running {EXIT_TIMEOUT:?} after SIGINT"));
                }
                Err(e) => break Err(format!("wait: {e}")),
            }
        };
        let log = std::mem::take(&mut self.output)
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
            .join("\n");
        (status, log)
    }
}

impl Drop for WhipClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SDP answer whip-client logged ("Received SDP answer"), up to the next log line.
fn logged_answer(log: &str) -> Option<String> {
    let after = log.find("Received SDP answer")?;
    let start = after + log[after..].find("\nv=0")? + 1;
    let lines: Vec<&str> = log[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.len() > 1 && l.as_bytes()[1] == b'=')
        .collect();
    let mut sdp = String::from("v=0\r\n");
    for l in lines {
        sdp.push_str(l.trim_end());
        sdp.push_str("\r\n");
    }
    Some(sdp)
}

/// The `video` of `stream` in `GET /api/streams` ("vp8" while a publisher sends VP8).
fn stream_video(server: &Server, stream: &str) -> Option<String> {
    let url = format!("http://{}/api/streams", server.http_addr());
    let body = ureq::get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    list["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == stream)?["video"]
        .as_str()
        .map(str::to_ascii_lowercase)
}

/// whip-client publishes to a fresh server while our viewer listens for 4 s; returns what
/// was measured, or what went wrong. `video`: whip-client also sends VP8.
fn publish_and_listen(exe: &Path, lib: &Path, stream: &str, video: bool) -> Result<String, String> {
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let url = format!("http://{}/{stream}/whip", server.http_addr());
    let client = WhipClient::spawn(exe, lib, &url, video);
    let deadline = Instant::now() + SESSION_TIMEOUT;
    while server.live_sessions() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let viewer = (server.live_sessions() > 0).then(|| {
        play(&PlayOptions {
            url: format!("http://{}/{stream}/whep", server.http_addr()),
            token: None,
            duration: Duration::from_secs(4),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            decode: true,
        })
    });
    // While whip-client still sends: the stream's video codec, as the server saw it.
    let stream_video = video.then(|| stream_video(&server, stream));
    let (status, log) = client.stop();
    let log_tail = python::tail(&log, 60);
    let report = match viewer {
        None => {
            return Err(format!(
                "no WHIP session within {SESSION_TIMEOUT:?}:\n{log_tail}"
            ))
        }
        Some(Err(e)) => return Err(format!("the viewer failed: {e}\n{log_tail}")),
        Some(Ok(report)) => report,
    };
    let status = status.map_err(|e| format!("whip-client {e}:\n{log_tail}"))?;
    let answer = logged_answer(&log).ok_or_else(|| format!("no answer logged:\n{log_tail}"))?;
    let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    let bundled = answer.contains("a=group:BUNDLE");
    // What the README says: audio alone, no BUNDLE group in the offer, none in the answer;
    // audio and video bundled by whip-client: both served.
    if video {
        let video_open = m_lines
            .iter()
            .any(|m| m.starts_with("m=video ") && !m.starts_with("m=video 0 "));
        if !bundled || !video_open || m_lines.len() != 2 {
            return Err(format!(
                "the answer does not take the bundled video:\n{answer}"
            ));
        }
        let codec = stream_video.flatten();
        if codec.as_deref() != Some("vp8") {
            return Err(format!(
                "the stream's video is {codec:?}, not whip-client's VP8:\n{log_tail}"
            ));
        }
    } else if bundled || m_lines.len() != 1 {
        return Err(format!("an answer to an offer without BUNDLE:\n{answer}"));
    }
    // whip-client's own view of ICE (its log), to tell an ICE failure from a DTLS one.
    if !log.contains("[WHIP] ICE connected") && !log.contains("[WHIP] ICE completed") {
        return Err(format!("whip-client's ICE did not connect:\n{log_tail}"));
    }
    let (left, right) = tone::check_stereo_tone(&report.pcm, TONE_HZ, TONE_HZ, 2.0)
        .map_err(|e| format!("{e}\nwhip-client ({status}):\n{log_tail}"))?;
    // Its DELETE on SIGINT ends the session.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.live_sessions() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left_over = server.live_sessions();
    server.shutdown();
    if left_over > 0 {
        return Err(format!(
            "{left_over} sessions left after whip-client's DELETE"
        ));
    }
    Ok(format!(
        "{TONE_HZ} Hz heard (left {:.1} Hz, right {:.1} Hz){}",
        left.dominant_hz,
        right.dominant_hz,
        if video {
            ", with VP8 bundled"
        } else {
            ", offer without BUNDLE"
        }
    ))
}

#[test]
fn simple_whip_client_publishes_audio_without_bundle() {
    let _serial = serial();
    let test = "simple_whip_client_publishes_audio_without_bundle";
    let Some((exe, lib)) = ready(test) else {
        return;
    };
    matrix::cell("simple-whip-client", "publisher", || {
        publish_and_listen(&exe, &lib, "swc", false)
    });
}

#[test]
fn simple_whip_client_publishes_audio_and_video() {
    let _serial = serial();
    let test = "simple_whip_client_publishes_audio_and_video";
    let Some((exe, lib)) = ready(test) else {
        return;
    };
    let result = publish_and_listen(&exe, &lib, "swc-video", true);
    if let Err(why) = result {
        panic!("{test}: {why}");
    }
}

#[test]
fn the_logged_answer_is_found() {
    let log = "v=0\no=offer\n[WHIP] Received SDP answer:\nv=0\no=- 1 2 IN IP4 0.0.0.0\nm=audio 9 X 111\na=mid:0\n\n[WHIP] next\n";
    assert_eq!(
        logged_answer(log).as_deref(),
        Some("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nm=audio 9 X 111\r\na=mid:0\r\n")
    );
    assert_eq!(logged_answer("nothing"), None);
}
