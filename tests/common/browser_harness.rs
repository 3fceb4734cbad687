//! The frame around a browser test: find Chromium or skip, run the test body on its own
//! thread with a watchdog, and report the page's console and Chromium's log on failure.
//!
//! Owns no browser state of its own; the browser is [`crate::chromium::Chromium`]. Never
//! lets a test hang: the body gets [`TEST_LIMIT`], then Chromium is killed.

use crate::chromium::{self, CdpError, Chromium};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// The longest any one browser test may take before its watchdog fails it.
pub const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The tests that measure media run one at a time: two Chromiums, a server and a decoder
/// at once are too much for a small machine.
static MEDIA: Mutex<()> = Mutex::new(());

/// Holds the media lock of this test binary until dropped.
pub fn media_lock() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    MEDIA.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Chromium flags for a fake camera (a generated pattern) and a fake microphone
/// playing `wav` (looped; Chromium's beep without one), granted without asking.
pub fn fake_devices(wav: Option<&Path>) -> Vec<String> {
    let mut flags = vec![
        "--use-fake-device-for-media-stream".to_owned(),
        "--use-fake-ui-for-media-stream".to_owned(),
    ];
    if let Some(wav) = wav {
        flags.push(format!(
            "--use-file-for-fake-audio-capture={}",
            wav.display()
        ));
    }
    flags
}

/// The Chromium binary, or None when the test should skip (it prints SKIPPED past the
/// test harness's capture, so a plain `cargo test` shows it); panics instead when
/// `MIXCAST_REQUIRE_BROWSER=1` or `CI` is set (not empty, `false` or `0`).
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(binary) = chromium::find_binary() {
        return Some(binary);
    }
    let ci = std::env::var("CI").unwrap_or_default();
    let ci = !ci.is_empty() && ci != "false" && ci != "0";
    if ci || std::env::var("MIXCAST_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "{test}: a browser is required (CI or MIXCAST_REQUIRE_BROWSER=1) but no Chromium \
             was found (set CHROMIUM or install /usr/bin/chromium)"
        );
    }
    // Straight to the process's stderr: `eprintln!` would be captured and hidden.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED, no Chromium (set CHROMIUM or install /usr/bin/chromium)"
    );
    None
}

/// Launches Chromium and runs `body` with it on its own thread; fails the test with the
/// page's console and Chromium's log if `body` fails, and kills Chromium if it overruns.
pub fn with_chromium(
    binary: PathBuf,
    flags: &[String],
    body: impl FnOnce(&mut Chromium) -> Result<(), String> + Send + 'static,
) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut browser = Chromium::launch(&binary, &flags).unwrap_or_else(|e| panic!("{e}"));
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

/// A CDP error as a test failure's message.
pub fn cdp(error: CdpError) -> String {
    error.to_string()
}

/// Saves a screenshot of the whole page as `<name>.png` in `target/tmp/screenshots/` (or
/// `$MIXCAST_SCREENSHOTS`), for a person to look at; says where on stderr.
pub fn screenshot(browser: &mut Chromium, name: &str) -> Result<(), String> {
    let dir = std::env::var_os("MIXCAST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.png"));
    browser.screenshot(&path).map_err(cdp)?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}
