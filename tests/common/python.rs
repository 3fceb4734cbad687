//! Python for the interop tests: finds an interpreter that can import what a publisher
//! script needs, installing pip packages into `target/` when it cannot, and runs scripts as
//! bounded child processes.
//!
//! Owns the virtual environment `target/interop-venv` (or, where `venv` is missing,
//! `target/interop-pydeps` for `pip install --target`). Never installs anything outside
//! `target/` and never calls apt: Debian packages (GStreamer, PyGObject) must already be
//! there. Every child process is killed at its deadline, so nothing here can hang a test.
//!
//! Skip or fail: when a dependency is missing, [`unavailable`] prints `SKIPPED` and the test
//! passes, unless `CI` is set (not empty, not `false`/`0`) or `MIXCAST_REQUIRE_INTEROP=1`,
//! when it panics: in CI a missing third-party client is a broken setup, not a pass.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The longest a `pip install` of the interop packages may take (av's wheel is ~40 MB).
const PIP_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest an import check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// A Python interpreter plus the environment it needs (a `PYTHONPATH` for `--target`
/// installs).
#[derive(Debug, Clone)]
pub struct Python {
    /// The interpreter.
    pub exe: PathBuf,
    /// Extra environment for it.
    pub env: Vec<(String, OsString)>,
}

impl Python {
    /// A command running `script` with this interpreter; unbuffered output.
    pub fn command(&self, script: &Path) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("-u").arg(script);
        cmd.env("PYTHONUNBUFFERED", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Whether this interpreter imports every module in `modules`.
    fn imports(&self, modules: &[&str]) -> Result<(), String> {
        let code = format!("import {}", modules.join(", "));
        let mut cmd = Command::new(&self.exe);
        cmd.arg("-c").arg(code);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = run(cmd, PROBE_TIMEOUT)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} cannot import {}: {}",
                self.exe.display(),
                modules.join(", "),
                last_line(&out.stderr)
            ))
        }
    }
}

/// Whether the environment says a missing interop dependency is a failure.
pub fn interop_required() -> bool {
    let ci = std::env::var("CI").unwrap_or_default();
    let ci = !ci.is_empty() && ci != "false" && ci != "0";
    ci || std::env::var("MIXCAST_REQUIRE_INTEROP").as_deref() == Ok("1")
}

/// Reports a missing dependency: panics when interop is required, else prints `SKIPPED`.
pub fn unavailable(test: &str, why: &str) {
    if interop_required() {
        panic!("{test}: interop required (CI or MIXCAST_REQUIRE_INTEROP=1) but {why}");
    }
    // Straight to the process's stderr: `eprintln!` would be captured and hidden.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED, {why} (set MIXCAST_REQUIRE_INTEROP=1 to make this a failure)"
    );
}

/// A Python, or why none could be had.
type Found = Result<Python, String>;

/// A Python 3 that imports `modules`, installing `packages` with pip into `target/` if the
/// plain `python3` cannot. `Err` says why none could be had. Cached per test binary.
pub fn with_packages(modules: &[&str], packages: &[&str]) -> Result<Python, String> {
    static CACHE: OnceLock<Mutex<Vec<(String, Found)>>> = OnceLock::new();
    let key = format!("{modules:?}{packages:?}");
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    // The lock also keeps two tests of one binary from installing at the same time. A
    // panic while holding it poisons it; the cached data is still whole.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, found)) = cache.iter().find(|(k, _)| *k == key) {
        return found.clone();
    }
    let found = find_or_install(modules, packages);
    cache.push((key, found.clone()));
    found
}

fn find_or_install(modules: &[&str], packages: &[&str]) -> Result<Python, String> {
    let system = Python {
        exe: std::env::var_os("MIXCAST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3")),
        env: Vec::new(),
    };
    let mut why = match system.imports(modules) {
        Ok(()) => return Ok(system),
        Err(e) => vec![e],
    };
    let target = target_dir();

    // 1. A virtual environment under target/.
    let venv = target.join("interop-venv");
    let venv_python = Python {
        exe: venv.join("bin").join("python3"),
        env: Vec::new(),
    };
    if venv_python.exe.is_file() && venv_python.imports(modules).is_ok() {
        return Ok(venv_python);
    }
    let made = if venv_python.exe.is_file() {
        Ok(())
    } else {
        let mut cmd = Command::new(&system.exe);
        cmd.args(["-m", "venv"]).arg(&venv);
        checked(cmd, PROBE_TIMEOUT, "python3 -m venv")
    };
    match made.and_then(|()| {
        let mut cmd = Command::new(&venv_python.exe);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages);
        checked(cmd, PIP_TIMEOUT, "pip install into the venv")
    }) {
        Ok(()) => match venv_python.imports(modules) {
            Ok(()) => return Ok(venv_python),
            Err(e) => why.push(e),
        },
        Err(e) => why.push(e),
    }

    // 2. Debian without python3-venv: pip install --target, found through PYTHONPATH.
    let pydeps = target.join("interop-pydeps");
    let with_path = Python {
        exe: system.exe.clone(),
        env: vec![("PYTHONPATH".into(), pydeps.clone().into_os_string())],
    };
    if with_path.imports(modules).is_ok() {
        return Ok(with_path);
    }
    let mut cmd = Command::new(&system.exe);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .arg("--target")
    .arg(&pydeps)
    .args(packages);
    match checked(cmd, PIP_TIMEOUT, "pip install --target") {
        Ok(()) => match with_path.imports(modules) {
            Ok(()) => return Ok(with_path),
            Err(e) => why.push(e),
        },
        Err(e) => why.push(e),
    }
    Err(why.join("; "))
}

/// `target/` of this crate (`CARGO_TARGET_DIR` if set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The interop scripts' directory, `tests/interop`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
        .join(name)
}

/// What a finished child printed.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// A child process with its output collected on two threads, killed on drop.
pub struct Running {
    child: Option<Child>,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    what: String,
}

impl Running {
    /// Starts `cmd` with piped output; `what` names it in errors.
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Running, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(collect);
        Ok(Running {
            child: Some(child),
            stdout,
            stderr,
            what: what.to_string(),
        })
    }

    /// Waits for the child until `timeout`; past it, kills it and says so.
    pub fn wait(mut self, timeout: Duration) -> Result<Output, String> {
        let deadline = Instant::now() + timeout;
        let Some(mut child) = self.child.take() else {
            return Err(format!("{}: already waited for", self.what));
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let stderr = join(self.stderr.take());
                    return Err(format!(
                        "{} still running after {timeout:?}: killed. stderr:\n{}",
                        self.what,
                        tail(&stderr, 40)
                    ));
                }
                Err(e) => return Err(format!("{}: wait: {e}", self.what)),
            }
        };
        Ok(Output {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn join(handle: Option<thread::JoinHandle<String>>) -> String {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{:?}", cmd.get_program());
    Running::spawn(cmd, &what)?.wait(timeout)
}

/// Runs `cmd`; an error unless it exits 0.
fn checked(cmd: Command, timeout: Duration, what: &str) -> Result<(), String> {
    let out = run(cmd, timeout).map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}: {}",
            out.status,
            last_line(&out.stderr)
        ))
    }
}

/// The JSON summary an interop script prints as its last stdout line, after checking that
/// it (`what`) exited 0; else its stderr's tail.
pub fn script_summary(out: Output, what: &str) -> Result<serde_json::Value, String> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            tail(&out.stderr, 30)
        ));
    }
    serde_json::from_str(last_line(&out.stdout))
        .map_err(|e| format!("{what}'s summary {:?}: {e}", out.stdout))
}

/// The last non-empty line of `text` (where Python puts the exception).
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A Python whose PyAV has FFmpeg 8's whip muxer with libopus and libx264, or None after
/// [`unavailable`] (which fails the test where interop is required).
pub fn ffmpeg_whip(test: &str) -> Option<Python> {
    let py = match with_packages(&["av", "numpy"], &["av", "numpy"]) {
        Ok(py) => py,
        Err(why) => {
            unavailable(test, &format!("no Python with PyAV and numpy: {why}"));
            return None;
        }
    };
    let mut probe = Command::new(&py.exe);
    for (k, v) in &py.env {
        probe.env(k, v);
    }
    probe.arg("-c").arg(
        "import av, sys\n\
         missing = [n for n, have in (('whip', av.formats_available), \
         ('libopus', av.codecs_available), ('libx264', av.codecs_available)) if n not in have]\n\
         sys.exit('PyAV ' + av.__version__ + ' lacks ' + ', '.join(missing) if missing else 0)",
    );
    match run(probe, Duration::from_secs(30)) {
        Ok(out) if out.status.success() => Some(py),
        Ok(out) => {
            unavailable(test, last_line(&out.stderr));
            None
        }
        Err(e) => {
            unavailable(test, &e);
            None
        }
    }
}
