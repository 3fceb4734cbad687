//! `mixcast push` and `mixcast pull` run as a user runs them: the binary as a client
//! against the binary as a server, real sockets on 127.0.0.1, the media checked.
//!
//! - pull of `live` into a WAV (440 Hz left, 660 Hz right, 3 s ± 0.2 s, the progress
//!   line's levels), and into raw s16le on stdout;
//! - push of a generated WAV (700 Hz left, 1100 Hz right) into `mic`, pulled into an Ogg
//!   Opus file that FFmpeg (PyAV, tests/interop/decode_recording.py) decodes to that tone;
//!   the same file decoded by the `ogg` crate and our decoder when PyAV is missing;
//! - the server stopped mid-push (SIGTERM) and started again on the same ports: the push
//!   comes back by itself and a viewer hears it;
//! - Ctrl-C on push DELETEs the session (the server logs it ended "closed") and exits 0;
//!   bad arguments exit 2 with one line;
//! - another WHIP/WHEP server: pion v3 (tests/interop/pion_peer in `-mode serve`, built
//!   from Debian's Go packages by tests/common/pion.rs) receives our push, whose Opus RTP
//!   packets it writes out for us to decode, and serves its own tone to our pull.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/live_signal.rs"]
mod live_signal;
#[path = "common/pion.rs"]
mod pion;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use binary::ServerBinary;
use mixcast::media::opus::Decoder;
use mixcast::media::{FRAME_LEN, SAMPLE_RATE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The pushed tone: apart from `live`'s 440/660 Hz.
const PUSH_LEFT_HZ: u32 = 700;
const PUSH_RIGHT_HZ: u32 = 1100;

/// Each test runs real-time media and a few processes; one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `mixcast pull URL --seconds N --out OUT` to its end; fails the test, saying `what`,
/// its exit status and its stderr, unless it exits 0.
fn pull_ok(url: &str, seconds: &str, out: &Path, dir: &Path, what: &str) {
    let mut pull = Client::start(
        &[
            "pull",
            url,
            "--seconds",
            seconds,
            "--out",
            out.to_str().unwrap(),
        ],
        dir,
        "pull",
    );
    let status = pull.wait(Duration::from_secs(20));
    assert!(status.success(), "{what}: {status}\n{}", pull.stderr());
}

/// A `mixcast push` or `mixcast pull` child, its stderr in a file (killed when dropped).
struct Client {
    child: Child,
    stderr: PathBuf,
}

impl Client {
    fn start(args: &[&str], dir: &Path, name: &str) -> Client {
        Client::start_with_stdout(args, dir, name, Stdio::null())
    }

    fn start_with_stdout(args: &[&str], dir: &Path, name: &str, stdout: Stdio) -> Client {
        let stderr = dir.join(format!("{name}.stderr"));
        let file = std::fs::File::create(&stderr).expect("the stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_mixcast"))
            .args(args)
            .env_remove("MIXCAST_PUSH_TOKEN")
            .env_remove("MIXCAST_PULL_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(stdout)
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start mixcast");
        Client { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Its exit status within `timeout`, or a panic saying what it printed.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mixcast did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `ok`, polling every 100 ms.
fn eventually(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// A WAV file's format and samples as floats, interleaved.
fn read_wav(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).expect("a readable WAV");
    let spec = r.spec();
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    let pcm = r
        .samples::<i16>()
        .map(|s| f32::from(s.expect("a sample")) / 32768.0)
        .collect();
    (spec, pcm)
}

/// Writes `seconds` of a steady stereo tone as a 16-bit WAV (the file source loops it;
/// whole seconds of whole-hertz tones loop without a click).
fn write_tone_wav(path: &Path, left_hz: u32, right_hz: u32, seconds: u32) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..SAMPLE_RATE * seconds {
        let t = f64::from(i) / f64::from(SAMPLE_RATE);
        for hz in [left_hz, right_hz] {
            let x = 0.3 * (2.0 * std::f64::consts::PI * f64::from(hz) * t).sin();
            w.write_sample((x * 32767.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// The Opus packets of an Ogg Opus file decoded by our decoder, interleaved stereo.
fn decode_ogg_ourselves(path: &Path) -> Vec<f32> {
    let file = std::fs::File::open(path).unwrap();
    let mut r = ogg::reading::PacketReader::new(std::io::BufReader::new(file));
    let head = r.read_packet_expected().expect("the ID header");
    assert!(head.data.starts_with(b"OpusHead"), "not Ogg Opus");
    let tags = r.read_packet_expected().expect("the comment header");
    assert!(tags.data.starts_with(b"OpusTags"));
    let mut decoder = Decoder::new().unwrap();
    let mut frame = Box::new([0.0f32; FRAME_LEN]);
    let mut pcm = Vec::new();
    while let Some(p) = r.read_packet().expect("a readable Ogg stream") {
        let n = decoder
            .decode(&p.data, &mut frame)
            .expect("a decodable packet");
        pcm.extend_from_slice(&frame[..n * 2]);
    }
    pcm
}

/// The progress lines' levels: every (left, right) dBFS pair in `stderr`.
fn levels(stderr: &str) -> Vec<(f32, f32)> {
    let db = |line: &str, tag: &str| -> Option<f32> {
        let rest = line.split(tag).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    stderr
        .lines()
        .filter(|l| l.starts_with("pull: ") && l.contains("dBFS"))
        .filter_map(|l| Some((db(l, " L ")?, db(l, " R ")?)))
        .collect()
}

#[test]
fn pull_live_into_a_wav_file_and_stdout() {
    let _serial = serial();
    let server = ServerBinary::start(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("live.wav");
    let url = format!("http://{}/live/whep", server.http);
    let wav_arg = wav.to_str().unwrap();
    let mut pull = Client::start(
        &["pull", &url, "--seconds", "3", "--out", wav_arg],
        dir.path(),
        "pull",
    );
    let status = pull.wait(Duration::from_secs(20));
    let stderr = pull.stderr();
    assert!(status.success(), "pull failed: {status}\n{stderr}");

    let (spec, pcm) = read_wav(&wav);
    assert_eq!((spec.channels, spec.sample_rate), (2, SAMPLE_RATE));
    let seconds = pcm.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    assert!(
        (seconds - 3.0).abs() <= 0.2,
        "{seconds:.3} s in the WAV, expected 3 ± 0.2 s"
    );
    let heard = live_signal::check(&pcm, 2.5).unwrap_or_else(|e| panic!("{e}\n{stderr}"));
    // The test signal: 0.25 peak, sounding 80% of the time: about -16 dBFS RMS a channel.
    let lv = levels(&stderr);
    assert!(!lv.is_empty(), "no progress line with levels:\n{stderr}");
    for (l, r) in &lv {
        assert!(
            (-19.0..-13.0).contains(l) && (-19.0..-13.0).contains(r),
            "levels {l} / {r} dBFS, expected about -16:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("kbit/s") && stderr.contains("RTT"),
        "{stderr}"
    );
    eprintln!("WAV: {seconds:.3} s, {heard}; levels {lv:?}");

    // `--out -`: raw s16le stereo on stdout, exactly --seconds of it.
    let raw = dir.path().join("live.raw");
    let file = std::fs::File::create(&raw).unwrap();
    let mut pull = Client::start_with_stdout(
        &["pull", &url, "--seconds", "2", "--out", "-"],
        dir.path(),
        "pull-raw",
        Stdio::from(file),
    );
    let status = pull.wait(Duration::from_secs(20));
    assert!(
        status.success(),
        "pull to stdout: {status}\n{}",
        pull.stderr()
    );
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(
        bytes.len(),
        2 * 48_000 * 2 * 2,
        "2 s of s16le stereo at 48 kHz"
    );
    let pcm: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    live_signal::check(&pcm, 1.5).unwrap_or_else(|e| panic!("stdout: {e}"));
}

#[test]
fn push_a_file_into_mic_and_pull_it_into_ogg_opus() {
    let _serial = serial();
    let server = ServerBinary::start(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("tone.wav");
    write_tone_wav(&source, PUSH_LEFT_HZ, PUSH_RIGHT_HZ, 2);
    let push_url = format!("http://{}/mic/whip", server.http);
    let spec = format!("file:{}", source.display());
    let mut push = Client::start(
        &["push", &push_url, "--source", &spec, "--seconds", "30"],
        dir.path(),
        "push",
    );
    assert!(
        eventually(Duration::from_secs(10), || server
            .stream_names()
            .contains(&"mic".to_string())),
        "the pushed stream never appeared; push said:\n{}",
        push.stderr()
    );

    let ogg = dir.path().join("mic.ogg");
    pull_ok(
        &format!("http://{}/mic/whep", server.http),
        "3",
        &ogg,
        dir.path(),
        "pull",
    );

    // Our own reading first: the packets as the server sent them, decoded.
    let ours = decode_ogg_ourselves(&ogg);
    let secs = ours.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    assert!(
        (secs - 3.0).abs() <= 0.2,
        "{secs:.3} s of packets in the Ogg file"
    );
    tone::check_stereo_tone(&ours, PUSH_LEFT_HZ as f32, PUSH_RIGHT_HZ as f32, 2.0)
        .unwrap_or_else(|e| panic!("our decoder: {e}"));

    // Then FFmpeg's, a decoder that is not ours.
    match python::with_packages(&["av", "numpy"], &["av", "numpy"]) {
        Err(why) => python::unavailable(
            "push_a_file_into_mic_and_pull_it_into_ogg_opus",
            &format!("no Python with PyAV and numpy: {why}"),
        ),
        Ok(py) => {
            let decoded = dir.path().join("decoded.f32");
            let mut cmd = py.command(&python::script("decode_recording.py"));
            cmd.arg(&ogg).arg("--pcm").arg(&decoded);
            let out = python::run(cmd, Duration::from_secs(60)).expect("run the decoder");
            let summary = python::script_summary(out, "decode_recording.py").unwrap();
            let file = &summary["files"][0];
            assert_eq!(file["format"], "ogg", "{summary}");
            assert_eq!(file["codec"], "opus", "{summary}");
            assert_eq!(file["channels"], 2, "{summary}");
            let pcm: Vec<f32> = std::fs::read(&decoded)
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let secs = pcm.len() as f32 / 2.0 / SAMPLE_RATE as f32;
            assert!((secs - 3.0).abs() <= 0.2, "FFmpeg decoded {secs:.3} s");
            let (l, r) =
                tone::check_stereo_tone(&pcm, PUSH_LEFT_HZ as f32, PUSH_RIGHT_HZ as f32, 2.0)
                    .unwrap_or_else(|e| panic!("FFmpeg: {e}"));
            eprintln!(
                "FFmpeg: {secs:.3} s, left {:.1} Hz, right {:.1} Hz",
                l.dominant_hz, r.dominant_hz
            );
        }
    }

    let stderr = push.stderr();
    assert!(stderr.contains("push: connected to"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" sent, ") && l.contains("kbit/s")),
        "no progress line:\n{stderr}"
    );
    push.signal(libc::SIGINT);
    let status = push.wait(Duration::from_secs(10));
    assert!(status.success(), "push after Ctrl-C: {status}\n{stderr}");
}

#[test]
fn push_comes_back_after_the_server_restarts() {
    let _serial = serial();
    let mut first = ServerBinary::start(&[], &[]);
    let (http_port, udp_port) = (first.http.port(), first.udp_port);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("tone.wav");
    write_tone_wav(&source, PUSH_LEFT_HZ, PUSH_RIGHT_HZ, 2);
    let push_url = format!("http://{}/mic/whip", first.http);
    let mut push = Client::start(
        &["push", &push_url, "--source", source.to_str().unwrap()],
        dir.path(),
        "push",
    );
    let has_mic = |s: &ServerBinary| s.stream_names().contains(&"mic".to_string());
    // Connected and sending (the stream exists from the POST on, before ICE and DTLS).
    assert!(
        eventually(Duration::from_secs(10), || has_mic(&first)
            && push.stderr().contains("push: connected to")
            && first.metric("mixcast_publishers{stream=\"mic\"}") >= 1.0),
        "no publisher on the first server's mic:\n{}",
        push.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));

    let status = first.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the server's SIGTERM exit: {status:?}"
    );
    drop(first);
    // Down for a moment: the push's attempts fail and it backs off (1 s, then 2 s).
    std::thread::sleep(Duration::from_secs(2));
    let stopped_at = Instant::now();
    let second = ServerBinary::start_on(http_port, udp_port, &[], &[]);
    // Backoff after 2 s down is at most 4 s, plus connecting.
    assert!(
        eventually(Duration::from_secs(15), || has_mic(&second)),
        "the push did not come back to the restarted server:\n{}",
        push.stderr()
    );
    let back_after = stopped_at.elapsed();

    let wav = dir.path().join("back.wav");
    pull_ok(
        &format!("http://{}/mic/whep", second.http),
        "2",
        &wav,
        dir.path(),
        "pull",
    );
    let (_, pcm) = read_wav(&wav);
    tone::check_stereo_tone(&pcm, PUSH_LEFT_HZ as f32, PUSH_RIGHT_HZ as f32, 1.5)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));

    let stderr = push.stderr();
    assert_eq!(
        stderr.matches("push: connected to").count(),
        2,
        "one connection per server:\n{stderr}"
    );
    assert!(
        stderr.contains("reconnecting") || stderr.contains("retrying"),
        "{stderr}"
    );
    eprintln!("the push was back {back_after:?} after the new server started:\n{stderr}");
    push.signal(libc::SIGTERM);
    let status = push.wait(Duration::from_secs(10));
    assert!(status.success(), "push after SIGTERM: {status}");
}

#[test]
fn ctrl_c_on_push_deletes_the_session() {
    let _serial = serial();
    let server = ServerBinary::start(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut push = Client::start(
        &[
            "push",
            &format!("http://{}/mic/whip", server.http),
            "--source",
            "tone",
        ],
        dir.path(),
        "push",
    );
    let publishing = || server.metric("mixcast_publishers{stream=\"mic\"}") >= 1.0;
    assert!(
        eventually(Duration::from_secs(10), || server
            .stream_names()
            .contains(&"mic".into())
            && publishing()),
        "no publisher on mic:\n{}",
        push.stderr()
    );
    let stopped = Instant::now();
    push.signal(libc::SIGINT);
    let status = push.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "push after Ctrl-C: {status}\n{}",
        push.stderr()
    );
    assert!(push.stderr().contains("deleted"), "{}", push.stderr());
    let left_closed = |log: &str| {
        log.lines().any(|l| {
            l.contains("publisher left") && l.contains("stream=mic") && l.contains("\"closed\"")
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || left_closed(&server.log())),
        "the server did not end the session as closed (a DELETE):\n{}",
        server.log()
    );
    eprintln!("exit and DELETE within {:?}", stopped.elapsed());
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no/such/dir/out.wav");
    let cases: Vec<Vec<String>> = vec![
        vec!["push".into(), "ftp://127.0.0.1/mic/whip".into()],
        vec!["push".into(), "127.0.0.1:8889/mic/whip".into()],
        vec![
            "push".into(),
            "http://127.0.0.1:9/mic/whip".into(),
            "--source".into(),
            "noise".into(),
        ],
        vec![
            "push".into(),
            "http://127.0.0.1:9/mic/whip".into(),
            "--source".into(),
            "/nonexistent/mixcast-test.flac".into(),
        ],
        vec![
            "push".into(),
            "http://127.0.0.1:9/mic/whip".into(),
            "--seconds=0".into(),
        ],
        vec![
            "push".into(),
            "http://127.0.0.1:9/mic/whip".into(),
            "--bitrate".into(),
            "1000".into(),
        ],
        vec![
            "pull".into(),
            "http://127.0.0.1:9/live/whep".into(),
            "--out".into(),
            "x.mp3".into(),
        ],
        vec![
            "pull".into(),
            "not a url".into(),
            "--out".into(),
            "x.wav".into(),
        ],
        vec![
            "pull".into(),
            "http://127.0.0.1:9/live/whep".into(),
            "--out".into(),
            missing_dir.to_str().unwrap().into(),
        ],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_mixcast"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("mixcast: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_explains_push_and_pull() {
    for (cmd, words) in [
        (
            "push",
            &[
                "--source",
                "--token",
                "--seconds",
                "reconnects",
                "DELETEs",
                "exits 2",
            ][..],
        ),
        (
            "pull",
            &["--out", "Ogg Opus", "WAV", "s16le", "dBFS", "--seconds"][..],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mixcast"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for w in words {
            assert!(text.contains(w), "{cmd} --help lacks {w:?}:\n{text}");
        }
    }
}

#[test]
fn tokens_bind_and_bitrate() {
    let _serial = serial();
    let server = ServerBinary::start(
        &[
            "--publish-token",
            "pub-secret",
            "--read-token",
            "read-secret",
        ],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let push_url = format!("http://{}/mic/whip", server.http);

    // A refusal that would repeat ends the push: status 1, one line naming it.
    let mut refused = Client::start(
        &["push", &push_url, "--token", "wrong", "--seconds", "5"],
        dir.path(),
        "refused",
    );
    let status = refused.wait(Duration::from_secs(15));
    let said = refused.stderr();
    assert_eq!(status.code(), Some(1), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(said.contains("401"), "{said}");

    // The right token, a lower bitrate, an explicit local address.
    let mut push = Client::start(
        &[
            "push",
            &push_url,
            "--token",
            "pub-secret",
            "--bitrate",
            "48",
            "--bind",
            "127.0.0.1",
            "--seconds",
            "8",
        ],
        dir.path(),
        "push",
    );
    assert!(
        eventually(Duration::from_secs(10), || push
            .stderr()
            .contains("push: connected to")),
        "{}",
        push.stderr()
    );
    let wav = dir.path().join("mic.wav");
    let pull_url = format!("http://{}/mic/whep", server.http);
    let wav_arg = wav.to_str().unwrap();
    let mut pull = Client::start(
        &[
            "pull",
            &pull_url,
            "--seconds",
            "2",
            "--out",
            wav_arg,
            "--token",
            "wrong",
        ],
        dir.path(),
        "pull-refused",
    );
    let status = pull.wait(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(1),
        "a wrong read token: {}",
        pull.stderr()
    );
    let mut pull = Client::start(
        &[
            "pull",
            &pull_url,
            "--seconds",
            "2",
            "--out",
            wav_arg,
            "--token",
            "read-secret",
            "--bind",
            "127.0.0.1",
        ],
        dir.path(),
        "pull",
    );
    let status = pull.wait(Duration::from_secs(20));
    assert!(status.success(), "{}", pull.stderr());
    let (_, pcm) = read_wav(&wav);
    // The pushed `tone`: the test signal, beeping.
    live_signal::check(&pcm, 1.5).unwrap_or_else(|e| panic!("{e}"));

    let status = push.wait(Duration::from_secs(20));
    let said = push.stderr();
    assert!(status.success(), "{said}");
    assert!(said.contains("done"), "{said}");
    // Opus at 48 kbit/s: the payload rate the progress lines show stays well under the
    // default 128 kbit/s (which reads about 118 on this beeping signal).
    let rates: Vec<f32> = said
        .lines()
        .filter(|l| l.contains(" sent, ") && l.contains("kbit/s"))
        .filter_map(|l| {
            l.split(" sent, ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(rates.len() >= 2, "{said}");
    // The first interval began before the connection; the later ones are whole.
    for r in &rates[1..] {
        assert!(
            (30.0..60.0).contains(r),
            "{r} kbit/s at --bitrate 48:\n{said}"
        );
    }
}

#[test]
fn push_into_and_pull_from_a_pion_server() {
    const TEST: &str = "push_into_and_pull_from_a_pion_server";
    let _serial = serial();
    let Some(peer) = pion::pion_peer(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    // What pion serves to viewers: our encoder's 900/1300 Hz, looped every 2 s.
    let (serve_left, serve_right) = (900.0, 1300.0);
    let frames = pion::opus_tone_file(serve_left, serve_right, 2.0);
    let rtp = dir.path().join("pushed.rtp");
    let mut cmd = Command::new(&peer);
    cmd.args([
        "-mode",
        "serve",
        "-listen",
        &format!("127.0.0.1:{port}"),
        "-seconds",
        "12",
    ])
    .arg("-rtp-out")
    .arg(&rtp)
    .arg("-opus-in")
    .arg(frames.path());
    let server = python::Running::spawn(cmd, "the pion server").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the pion server did not listen"
    );

    // Push 4 s of the generated 700/1100 Hz WAV into pion.
    let source = dir.path().join("tone.wav");
    write_tone_wav(&source, PUSH_LEFT_HZ, PUSH_RIGHT_HZ, 2);
    let mut push = Client::start(
        &[
            "push",
            &format!("http://127.0.0.1:{port}/whip"),
            "--source",
            source.to_str().unwrap(),
            "--seconds",
            "4",
        ],
        dir.path(),
        "push",
    );
    let status = push.wait(Duration::from_secs(20));
    assert!(
        status.success(),
        "push to pion: {status}\n{}",
        push.stderr()
    );

    // Pull 3 s of pion's tone into a WAV.
    let wav = dir.path().join("pion.wav");
    pull_ok(
        &format!("http://127.0.0.1:{port}/whep"),
        "3",
        &wav,
        dir.path(),
        "pull from pion",
    );

    let out = server.wait(Duration::from_secs(30)).unwrap();
    let summary: serde_json::Value = serde_json::from_str(python::last_line(&out.stdout))
        .unwrap_or_else(|e| panic!("pion's summary ({e}): {}\n{}", out.stdout, out.stderr));
    assert!(out.status.success(), "pion: {}\n{}", out.status, out.stderr);
    // Both our sessions ended with a DELETE.
    assert_eq!(summary["sessions"], 2, "{summary}");
    assert_eq!(summary["deleted"], 2, "{summary}");

    let records = pion::read_rtp_records(&std::fs::read(&rtp).unwrap()).unwrap();
    let decoded = pion::decode(&records).unwrap();
    let secs = decoded.pcm.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    assert!((secs - 4.0).abs() <= 0.2, "pion received {secs:.3} s");
    let (l, r) =
        tone::check_stereo_tone(&decoded.pcm, PUSH_LEFT_HZ as f32, PUSH_RIGHT_HZ as f32, 3.0)
            .unwrap_or_else(|e| panic!("what pion received: {e}"));
    let (_, pcm) = read_wav(&wav);
    let secs_pulled = pcm.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    assert!(
        (secs_pulled - 3.0).abs() <= 0.2,
        "{secs_pulled:.3} s pulled"
    );
    let (pl, pr) = tone::check_stereo_tone(&pcm, serve_left, serve_right, 1.5)
        .unwrap_or_else(|e| panic!("what we pulled from pion: {e}"));
    eprintln!(
        "pion heard {secs:.2} s, {:.1}/{:.1} Hz ({} lost); we pulled {secs_pulled:.2} s, {:.1}/{:.1} Hz",
        l.dominant_hz, r.dominant_hz, decoded.lost, pl.dominant_hz, pr.dominant_hz
    );
}
