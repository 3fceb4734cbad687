//! Recording, end to end: the `mixcast` binary records a stream playing the test signal
//! (440 Hz left, 660 Hz right, 800 ms of every second), is stopped with SIGINT, and FFmpeg
//! (through PyAV, tests/interop/decode_recording.py) decodes the files. Checked: FFmpeg
//! reads Ogg Opus, stereo, 48 kHz; each channel holds its own tone and not the other's;
//! the duration is the time recorded; the beeps stay one second apart across the whole
//! recording, across segment boundaries too (nothing lost or doubled where a file ends);
//! `/api/recordings` lists a recording while it is written, only to a request with the
//! stream's read token. And the flags and config keys, and a folder that cannot be made.
//!
//! Needs a `python3` that imports `av` and `numpy` (pip-installed into target/ if it
//! cannot, see tests/common/python.rs). Without them the decoding tests print SKIPPED and
//! pass, unless `CI` or `MIXCAST_REQUIRE_INTEROP=1` is set, when they fail.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/python.rs"]
mod python;
#[path = "common/tone.rs"]
mod tone;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binary::ServerBinary;
use mixcast::media::SAMPLE_RATE;
use python::Python;

/// The encoder's delay, which the first file's pre-skip removes (48 kHz samples).
const PRE_SKIP: usize = 312;

/// A Python with PyAV and numpy, or None (after `python::unavailable`).
fn decoder(test: &str) -> Option<Python> {
    match python::with_packages(&["av", "numpy"], &["av", "numpy"]) {
        Ok(py) => Some(py),
        Err(why) => {
            python::unavailable(test, &format!("no Python with PyAV and numpy: {why}"));
            None
        }
    }
}

/// What FFmpeg made of `files`: the summary per file and all their audio, interleaved
/// stereo, concatenated in order.
fn decode(py: &Python, files: &[PathBuf]) -> (Vec<serde_json::Value>, Vec<f32>) {
    let dir = tempfile::tempdir().unwrap();
    let pcm = dir.path().join("decoded.f32");
    let mut cmd = py.command(&python::script("decode_recording.py"));
    cmd.args(files).arg("--pcm").arg(&pcm);
    let out = python::run(cmd, Duration::from_secs(60)).expect("run the decoder");
    let summary = python::script_summary(out, "decode_recording.py").unwrap();
    let bytes = std::fs::read(&pcm).unwrap();
    let samples = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let files = summary["files"].as_array().cloned().unwrap_or_default();
    (files, samples)
}

/// `GET path` with an optional Bearer token: status and body.
fn get(http: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {http}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_default();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `/api/recordings`' list, as seen with `token`.
fn recordings(http: SocketAddr, token: Option<&str>) -> Vec<serde_json::Value> {
    let (status, body) = get(http, "/api/recordings", token);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["recordings"].as_array().cloned().unwrap_or_default()
}

/// Waits until the server's log contains `needle`; the moment it was seen.
fn wait_for_log(server: &ServerBinary, needle: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if server.log().contains(needle) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `.opus` files in `dir`, sorted by name (which is the order they started).
fn opus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "opus"))
        .collect();
    files.sort();
    files
}

/// Sample indices (per channel) where the test signal's beeps start in interleaved
/// stereo `pcm`: the first sample above 0.05 on the left after at least 100 ms below it.
fn beep_onsets(pcm: &[f32]) -> Vec<usize> {
    let quiet_needed = SAMPLE_RATE as usize / 10;
    let mut onsets = Vec::new();
    let mut quiet = 0;
    for (i, frame) in pcm.chunks_exact(2).enumerate() {
        if frame[0].abs() > 0.05 {
            if quiet >= quiet_needed {
                onsets.push(i);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    onsets
}

/// Checks what FFmpeg said about each file: Ogg, Opus, stereo, 48 kHz.
fn check_format(files: &[serde_json::Value]) {
    for f in files {
        assert_eq!(f["format"], "ogg", "{f}");
        assert_eq!(f["codec"], "opus", "{f}");
        assert_eq!(f["channels"], 2, "{f}");
        assert_eq!(f["rate"], 48_000, "{f}");
    }
}

/// Checks the beeps come one second apart, 1 ms at most off, from first to last: the
/// recording's timeline has no gap and no repeat. Returns how many there were.
fn check_continuous(pcm: &[f32]) -> usize {
    let onsets = beep_onsets(pcm);
    for w in onsets.windows(2) {
        let apart = w[1] - w[0];
        assert!(
            apart.abs_diff(SAMPLE_RATE as usize) <= 48,
            "beeps {apart} samples apart at sample {} (onsets {onsets:?})",
            w[0]
        );
    }
    onsets.len()
}

/// One at a time: the tests that time a recording run alone (a machine busy with
/// FFmpeg's encoding beside them would blur the timing).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds between the server's log lines containing `from` and `to` (the first of each),
/// by the timestamps it wrote: the server's own clock, not when the test read the log.
fn logged_span(log: &str, from: &str, to: &str) -> f64 {
    let at = |needle: &str| -> f64 {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"));
        // `2026-12-07T15:09:54.606799Z  INFO ...`
        let hms = line
            .get(11..26)
            .unwrap_or_else(|| panic!("no time in {line:?}"));
        let mut parts = hms.split(':');
        let mut secs = 0.0;
        for unit in [3600.0, 60.0, 1.0] {
            let v: f64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
            secs += v * unit;
        }
        secs
    };
    let span = at(to) - at(from);
    // Across midnight.
    if span < 0.0 {
        span + 86_400.0
    } else {
        span
    }
}

/// The seconds the server's log says recording `file` ended with.
fn logged_seconds(log: &str, file: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains(file) && l.contains("ended:"))
        .unwrap_or_else(|| panic!("no end line for {file}:\n{log}"));
    line.split("ended: ")
        .nth(1)
        .and_then(|r| r.split(" s").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {line:?}"))
}

#[test]
fn ten_seconds_recorded_decode_to_the_tone_left_and_right_for_ten_seconds() {
    let test = "ten_seconds_recorded_decode_to_the_tone_left_and_right_for_ten_seconds";
    let Some(py) = decoder(test) else { return };
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // Not there yet: the server makes it.
    let rec = dir.path().join("rec/radio");
    let mut server = ServerBinary::start(
        &[
            "--source",
            "radio=tone",
            "--record",
            "radio",
            "--record-dir",
            rec.to_str().unwrap(),
            "--read-token",
            "radio=s3cret",
        ],
        &[],
    );
    wait_for_log(&server, "ready; Ctrl-C or SIGTERM stops");
    let started = wait_for_log(&server, "recording stream \"radio\" to ");

    std::thread::sleep(Duration::from_secs(5));
    // Listed while it is written, to a request with the stream's read token only.
    assert!(
        recordings(server.http, None).is_empty(),
        "listed without the read token"
    );
    assert!(recordings(server.http, Some("wrong")).is_empty());
    let listed = recordings(server.http, Some("s3cret"));
    assert_eq!(listed.len(), 1, "{listed:?}");
    let r = &listed[0];
    assert_eq!(r["stream"], "radio", "{r}");
    assert_eq!(r["recording"], true, "{r}");
    let file = r["file"].as_str().unwrap().to_string();
    assert!(
        file.starts_with("radio-") && file.ends_with("Z.opus"),
        "{file}"
    );
    let secs = r["duration_seconds"].as_f64().unwrap();
    assert!((3.5..=5.5).contains(&secs), "{r}");
    assert!(r["bytes"].as_u64().unwrap() > 10_000, "{r}");
    assert!(r["started"].as_str().unwrap().ends_with('Z'), "{r}");

    let until = started + Duration::from_secs(10);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let status = server
        .interrupt(Duration::from_secs(10))
        .expect("the server stops on SIGINT");
    assert!(status.success(), "{status}");
    // What was recorded, by the server's clock: from start-up (the line is written just
    // before the mixing thread starts; its first tick is 20 ms later) to SIGINT (the
    // thread stops within a tick of it).
    let recorded = logged_span(&server.log(), "recording \"radio\" into ", "shutting down");
    assert!((recorded - 10.0).abs() < 0.5, "recorded {recorded:.3} s");

    let files = opus_files(&rec);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(&file));
    let (summary, pcm) = decode(&py, &files);
    check_format(&summary);
    let decoded = pcm.len() / 2;
    let seconds = decoded as f64 / f64::from(SAMPLE_RATE);
    eprintln!("recorded {recorded:.3} s, decoded {seconds:.4} s ({decoded} samples)");
    assert!(
        (seconds - recorded).abs() <= 0.1,
        "decoded {seconds:.3} s of a recording of {recorded:.3} s"
    );
    // Whole 20 ms packets, less the pre-skip FFmpeg applied from the header.
    assert_eq!((decoded + PRE_SKIP) % 960, 0, "{decoded} samples");
    let logged = logged_seconds(&server.log(), &file);
    assert!((seconds - logged).abs() < 0.006, "log says {logged} s");

    let (left, right) = tone::check_stereo_tone(&pcm, 440.0, 660.0, 0.7).unwrap();
    eprintln!("left {left:?}\nright {right:?}");
    let beeps = check_continuous(&pcm);
    assert!((9..=11).contains(&beeps), "{beeps} beeps in {seconds:.2} s");
}

#[test]
fn segments_from_the_config_file_follow_on_without_a_gap() {
    let test = "segments_from_the_config_file_follow_on_without_a_gap";
    let Some(py) = decoder(test) else { return };
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let conf = conf_dir.join("mixcast.toml");
    // `rec` is the config file's folder's, not the working directory's.
    std::fs::write(
        &conf,
        "record_dir = \"rec\"\nrecord_segment_seconds = 2\n\
         [streams.radio]\nsources = [\"tone\"]\nrecord = true\n",
    )
    .unwrap();
    let mut server = ServerBinary::start(&["--config", conf.to_str().unwrap()], &[]);
    wait_for_log(&server, "ready; Ctrl-C or SIGTERM stops");
    let started = wait_for_log(&server, "recording stream \"radio\" to ");
    std::thread::sleep(
        (started + Duration::from_secs(7)).saturating_duration_since(Instant::now()),
    );
    let listed = recordings(server.http, None);
    let status = server.interrupt(Duration::from_secs(10)).expect("stops");
    assert!(status.success());
    let recorded = logged_span(&server.log(), "recording \"radio\" into ", "shutting down");

    let files = opus_files(&conf_dir.join("rec"));
    assert_eq!(files.len(), 4, "2 + 2 + 2 + 1 s: {files:?}");
    assert!(listed.len() >= 3, "{listed:?}");
    let names: Vec<&str> = listed.iter().filter_map(|r| r["file"].as_str()).collect();
    for (f, name) in files.iter().zip(&names) {
        assert!(
            f.ends_with(name),
            "listed in the order of their names: {names:?}"
        );
    }
    let (summary, pcm) = decode(&py, &files);
    check_format(&summary);
    let samples: Vec<u64> = summary
        .iter()
        .map(|f| f["samples"].as_u64().unwrap())
        .collect();
    // The first file drops the encoder's delay; the ones after it go on from there.
    assert_eq!(samples[0], 96_000 - PRE_SKIP as u64, "{samples:?}");
    assert_eq!(&samples[1..3], &[96_000, 96_000], "{samples:?}");
    let seconds = pcm.len() as f64 / 2.0 / f64::from(SAMPLE_RATE);
    assert!(
        (seconds - recorded).abs() <= 0.1,
        "{seconds:.3} s decoded from the segments of {recorded:.3} s"
    );
    tone::check_stereo_tone(&pcm, 440.0, 660.0, 0.7).unwrap();
    let beeps = check_continuous(&pcm);
    assert!((6..=8).contains(&beeps), "{beeps}");
}

fn mixcast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .args(args)
        .env_remove("MIXCAST_RECORD")
        .env_remove("MIXCAST_RECORD_DIR")
        .env_remove("MIXCAST_RECORD_SEGMENT_SECONDS")
        .env("MIXCAST_BIND", "127.0.0.1")
        .env("MIXCAST_HTTP_PORT", "0")
        .env("MIXCAST_UDP_PORT", "0")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_recording_folder_that_cannot_be_made_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let bad = file.join("recordings");
    let bad = bad.to_str().unwrap();
    for check in [true, false] {
        let mut args = vec!["--record", "live", "--record-dir", bad];
        if check {
            args.push("--check-config");
        }
        let (code, out, err) = mixcast(&args);
        assert_eq!(code, 2, "check-config {check}: {out}{err}");
        assert!(!out.contains("configuration OK"), "{out}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].contains(bad) && lines[0].contains("not a folder"),
            "{err}"
        );
    }
    // Nothing recorded: the folder is not looked at.
    let (code, out, err) = mixcast(&["--record-dir", bad, "--check-config"]);
    assert_eq!(code, 0, "{out}{err}");
    // A folder that does not exist yet under a writable one is fine, and `--check-config`
    // does not make it.
    let later = dir.path().join("later/rec");
    let (code, out, err) = mixcast(&[
        "--record",
        "live",
        "--record-dir",
        later.to_str().unwrap(),
        "--check-config",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration OK"));
    assert!(!later.exists());
}

#[test]
fn record_flags_and_their_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rec = rec.to_str().unwrap();
    for args in [
        vec!["--record", "live,music", "--record-segment-seconds", "60"],
        vec!["--record", "live", "--record", "music"],
    ] {
        let mut a = args.clone();
        a.extend(["--record-dir", rec, "--check-config"]);
        let (code, out, err) = mixcast(&a);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        // `music` is named only as a recorded stream.
        assert!(out.contains("\"music\"") && out.contains(rec), "{out}");
    }
    // `--check-config` prints them in the config file's keys, and that file reads back the
    // same (`record = [...]` records without configuring the stream).
    let (code, out, err) = mixcast(&[
        "--record",
        "live,music",
        "--record-dir",
        rec,
        "--record-segment-seconds",
        "60",
        "--check-config",
    ]);
    assert_eq!(code, 0, "{err}");
    let text = out.strip_suffix("configuration OK\n").unwrap_or(&out);
    let parsed: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        parsed["record"],
        toml::Value::Array(vec!["live".into(), "music".into()]),
        "{text}"
    );
    assert_eq!(parsed["record_dir"].as_str(), Some(rec));
    assert_eq!(parsed["record_segment_seconds"].as_integer(), Some(60));
    let saved = dir.path().join("saved.toml");
    std::fs::write(&saved, text).unwrap();
    let (code, again, err) = mixcast(&["--config", saved.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out, "reads back the same");
    assert!(
        !parsed["streams"].as_table().unwrap().contains_key("music"),
        "{text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_mixcast"))
        .args(["--check-config"])
        .env("MIXCAST_RECORD", "live,music")
        .env("MIXCAST_RECORD_DIR", rec)
        .env("MIXCAST_RECORD_SEGMENT_SECONDS", "90")
        .env("MIXCAST_BIND", "127.0.0.1")
        .env("MIXCAST_HTTP_PORT", "0")
        .env("MIXCAST_UDP_PORT", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\"music\"") && text.contains(rec), "{text}");
    assert!(text.contains("90"), "{text}");
    for (bad, says) in [
        (
            vec!["--record-segment-seconds", "0"],
            "record_segment_seconds",
        ),
        (
            vec!["--record-segment-seconds", "86401"],
            "record_segment_seconds",
        ),
        (vec!["--record", "a/b"], "--record"),
        (vec!["--record", "api"], "--record"),
    ] {
        let (code, _, err) = mixcast(&[&bad[..], &["--check-config"]].concat());
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

/// Publishes FFmpeg's tone (1000 Hz left, 1500 Hz right) and H264 video to `url` for
/// `seconds` with tests/interop/ffmpeg_whip.py, and waits until it is done (it DELETEs).
fn ffmpeg_publishes(py: &Python, url: &str, seconds: u32) {
    let mut cmd = py.command(&python::script("ffmpeg_whip.py"));
    cmd.arg(url)
        .args(["--seconds", &seconds.to_string()])
        .args(["--left-hz", "1000", "--right-hz", "1500"]);
    let out =
        python::run(cmd, Duration::from_secs(u64::from(seconds) + 40)).expect("run ffmpeg_whip.py");
    assert!(
        out.status.success(),
        "ffmpeg_whip.py failed ({}):\n{}",
        out.status,
        python::tail(&out.stderr, 40)
    );
}

/// The files in `dir` ending in `.ext`, sorted by name.
fn files_ending(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn a_stream_ffmpeg_publishes_is_recorded_with_its_h264_video_and_anew_when_it_comes_back() {
    let test =
        "a_stream_ffmpeg_publishes_is_recorded_with_its_h264_video_and_anew_when_it_comes_back";
    let Some(py) = decoder(test) else { return };
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // `cam` is not configured: it exists while FFmpeg publishes to it (and 5 s after).
    let mut server = ServerBinary::start(
        &["--record", "cam", "--record-dir", rec.to_str().unwrap()],
        &[],
    );
    wait_for_log(&server, "ready; Ctrl-C or SIGTERM stops");
    let url = format!("http://{}/cam/whip", server.http);
    ffmpeg_publishes(&py, &url, 4);
    // Removed 5 s after its publisher left (nobody watches): both files are closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.log().matches("of stream \"cam\" ended").count() < 2 {
        assert!(Instant::now() < deadline, "not closed:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = recordings(server.http, None);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|r| r["recording"] == false), "{first:?}");
    let media: Vec<&str> = first.iter().filter_map(|r| r["media"].as_str()).collect();
    assert!(
        media.contains(&"audio") && media.contains(&"video"),
        "{first:?}"
    );
    // It comes back: new files.
    ffmpeg_publishes(&py, &url, 3);
    let status = server.interrupt(Duration::from_secs(10)).expect("stops");
    assert!(status.success());
    let log = server.log();

    let opus = files_ending(&rec, "opus");
    let h264 = files_ending(&rec, "h264");
    assert_eq!((opus.len(), h264.len()), (2, 2), "{opus:?} {h264:?}\n{log}");
    for (a, v) in opus.iter().zip(&h264) {
        assert_eq!(
            a.file_stem(),
            v.file_stem(),
            "the video is named as its audio"
        );
    }
    for (file, publish_seconds) in opus.iter().zip([4.0, 3.0]) {
        let (summary, pcm) = decode(&py, std::slice::from_ref(file));
        check_format(&summary);
        let (left, right) = tone::check_stereo_tone(&pcm, 1000.0, 1500.0, publish_seconds - 1.5)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("{}: left {left:?} right {right:?}", file.display());
    }
    for file in &h264 {
        let (summary, _) = decode(&py, std::slice::from_ref(file));
        let v = &summary[0];
        assert_eq!(v["codec"], "h264", "{v}");
        assert_eq!(v["sizes"], serde_json::json!([[320, 240]]), "{v}");
        let decoded = v["frames"].as_u64().unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        let line = log
            .lines()
            .find(|l| l.contains(name) && l.contains("ended"))
            .unwrap_or_else(|| panic!("no end line for {name}:\n{log}"));
        let written: u64 = line
            .split(" frames")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no frame count in {line:?}"));
        eprintln!("{name}: {written} frames written, {decoded} decoded");
        // FFmpeg sends 25 frames a second; the file starts at a keyframe.
        assert!(written >= 50, "{line}");
        assert!(
            decoded + 2 >= written && decoded <= written,
            "{decoded} of {written}"
        );
    }
}

/// Runs tests/interop/vpx_frames.py for `codec`; the frames (keyframe flag, bytes).
fn vpx_frames(py: &Python, codec: &str, frames: u32) -> Vec<(bool, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames.bin");
    let mut cmd = py.command(&python::script("vpx_frames.py"));
    cmd.arg(codec)
        .arg(&out)
        .args(["--frames", &frames.to_string()]);
    let done = python::run(cmd, Duration::from_secs(60)).expect("run vpx_frames.py");
    python::script_summary(done, "vpx_frames.py").unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let mut rest = &bytes[..];
    let mut list = Vec::new();
    while rest.len() >= 5 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        list.push((rest[4] == 1, rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    list
}

/// The IVF half of video recording, with FFmpeg at both ends (FFmpeg's WHIP muxer sends
/// H264 only): libvpx's VP8 and VP9 frames, written by `record::VideoFile` as the writer
/// thread writes a source's frames (from the first keyframe, 90 kHz times), decode with
/// FFmpeg, every frame, at their size.
#[test]
fn vp8_and_vp9_frames_in_ivf_decode_with_ffmpeg() {
    use mixcast::record::{VideoCodec, VideoFile};
    let Some(py) = decoder("vp8_and_vp9_frames_in_ivf_decode_with_ffmpeg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (encoder, codec, name) in [
        ("libvpx", VideoCodec::Vp8, "vp8"),
        ("libvpx-vp9", VideoCodec::Vp9, "vp9"),
    ] {
        let frames = vpx_frames(&py, encoder, 60);
        assert_eq!(frames.len(), 60);
        let path = dir.path().join(format!("{name}.ivf"));
        let out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut file = VideoFile::new(out, codec).unwrap();
        for (i, (key, data)) in frames.iter().enumerate() {
            file.write(data, 1_000_000 + i as u64 * 3600, *key).unwrap();
        }
        assert_eq!(file.frames(), 60);
        drop(file.finish().unwrap());
        let (summary, _) = decode(&py, std::slice::from_ref(&path));
        let v = &summary[0];
        eprintln!("{name}: {v}");
        assert_eq!(v["format"], "ivf", "{v}");
        assert!(v["codec"].as_str().unwrap().contains(name), "{v}");
        assert_eq!(v["frames"], 60, "{v}");
        assert_eq!(v["sizes"], serde_json::json!([[320, 240]]), "{v}");
    }
}
