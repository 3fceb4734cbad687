//! The soak's README recipe, run for its shortest bounded time (`examples/soak.rs
//! --minutes 1`, a lighter burst than the default): it exits 0, and after its churn (a
//! quarter each: publishers that DELETE, publishers that vanish, viewers that DELETE,
//! viewers that never connect) the server holds no session and no stream but `live`, its
//! descriptors back to what a server at rest holds. What the soak measures at full load: the
//! README's *Streams nobody uses, and the soak*.

use std::process::Command;
use std::time::Duration;

/// `target/debug/examples/soak`: `cargo test` builds the examples before running tests.
fn soak_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    // target/debug/deps/soak_short-… → target/debug/examples/soak
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug");
    debug.join("examples").join("soak")
}

fn field(line: &str, name: &str) -> f64 {
    let at = line
        .find(name)
        .unwrap_or_else(|| panic!("no {name:?} in {line}"));
    line[at + name.len()..]
        .trim_start()
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after {name:?} in {line}"))
}

#[test]
fn a_one_minute_soak_leaves_nothing_behind() {
    let bin = soak_binary();
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test`, which builds the examples",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .args(["--minutes", "1", "--sessions", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the soak starts");
    // 1 minute of churn, 20 s to let the last sessions end, start-up: bounded at 3 min.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the soak overran 180 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // One report: a 1-minute soak's first minute ends with the churn.
    let last = stdout
        .lines()
        .rfind(|l| l.contains(" min "))
        .unwrap_or_else(|| panic!("no report:\n{stdout}"));
    let started = field(last, "sessions started");
    assert!(started >= 72.0, "6 bursts of 12: {last}");
    assert_eq!(field(last, "client errors"), 0.0, "{last}");
    assert_eq!(field(last, "open"), 0.0, "sessions left open: {last}");
    assert_eq!(field(last, "streams"), 1.0, "only `live` is left: {last}");
    // A server at rest holds about 15 descriptors (its sockets, pipes, the log); each
    // leaked session or connection would add to it.
    assert!(field(last, "fds") < 32.0, "descriptors left open: {last}");
}
