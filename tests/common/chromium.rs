//! A headless Chromium driven over the DevTools protocol (CDP), for the browser tests.
//!
//! Owns one Chromium process with a fresh profile in a temp dir, and one page attached
//! through a flattened CDP session on the browser's WebSocket. Every call is bounded by a
//! deadline: nothing here may hang a test. The process is killed on drop.

use serde_json::{json, Value};
use std::fs::File;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long Chromium gets to start and open its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound on one CDP command's round trip unless the caller gives another.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// The flags from shared/docs/TESTING.md: quiet, local only, WebRTC on loopback.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--no-pings",
    "--disable-domain-reliability",
    "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE [::1]",
    "--no-proxy-server",
    "--allow-loopback-in-peer-connection",
    "--webrtc-ip-handling-policy=default_public_and_private_interfaces",
    "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints,Translate",
];

/// What went wrong talking to Chromium.
#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    /// The process could not be started or died.
    #[error("chromium process: {0}")]
    Process(String),
    /// The DevTools connection failed.
    #[error("devtools connection: {0}")]
    Connection(String),
    /// A deadline passed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Chromium answered a command with an error.
    #[error("{method}: {message}")]
    Command {
        /// The CDP method.
        method: String,
        /// Chromium's message.
        message: String,
    },
    /// The page's JavaScript threw.
    #[error("javascript exception: {0}")]
    Exception(String),
}

/// Where the Chromium binary is: `$CHROMIUM`, else `/usr/bin/chromium`, if it exists.
pub fn find_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    candidate.is_file().then_some(candidate)
}

/// One page (tab) of a [`Chromium`]: its CDP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page(String);

/// A running headless Chromium with one or more pages, one of them current.
pub struct Chromium {
    child: Arc<Mutex<Child>>,
    profile: tempfile::TempDir,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    console: Vec<String>,
}

impl Chromium {
    /// Starts `binary` with a fresh profile and opens one blank page.
    pub fn launch(binary: &Path, extra_flags: &[&str]) -> Result<Chromium, CdpError> {
        let profile = tempfile::tempdir().map_err(|e| CdpError::Process(e.to_string()))?;
        let log = File::create(profile.path().join("chromium.log"))
            .map_err(|e| CdpError::Process(e.to_string()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| CdpError::Process(e.to_string()))?;
        let child = Command::new(binary)
            .args(FLAGS)
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| CdpError::Process(format!("cannot start {}: {e}", binary.display())))?;
        // From here on, `Chromium`'s drop (or `kill_on_error`) ends the process.
        let mut guard = ChildGuard(Some(child));
        let (port, path) = wait_for_devtools_port(profile.path(), &mut guard)?;
        let socket = connect(port, &path)?;
        let child = guard
            .0
            .take()
            .expect("the guard holds the child until here");
        let mut chromium = Chromium {
            child: Arc::new(Mutex::new(child)),
            profile,
            socket,
            session: String::new(),
            next_id: 0,
            console: Vec::new(),
        };
        chromium.open_page()?;
        Ok(chromium)
    }

    /// Opens another blank page (a tab) and makes it the current one: `navigate`,
    /// `evaluate` and the rest then act on it. Returns it, for [`Chromium::switch_to`].
    pub fn open_page(&mut self) -> Result<Page, CdpError> {
        let target = self.browser_command(
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            COMMAND_TIMEOUT,
        )?;
        let target_id = target["targetId"].clone();
        let attached = self.browser_command(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            COMMAND_TIMEOUT,
        )?;
        self.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| CdpError::Connection("attachToTarget gave no sessionId".into()))?
            .to_owned();
        self.command("Runtime.enable", json!({}), COMMAND_TIMEOUT)?;
        self.command("Page.enable", json!({}), COMMAND_TIMEOUT)?;
        Ok(Page(self.session.clone()))
    }

    /// The current page.
    pub fn current_page(&self) -> Page {
        Page(self.session.clone())
    }

    /// Makes `page` the current page.
    pub fn switch_to(&mut self, page: &Page) {
        self.session = page.0.clone();
    }

    /// Loads `url` in the page and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str, timeout: Duration) -> Result<(), CdpError> {
        let deadline = Instant::now() + timeout;
        let result = self.command("Page.navigate", json!({ "url": url }), timeout)?;
        if let Some(error) = result["errorText"].as_str() {
            return Err(CdpError::Command {
                method: "Page.navigate".into(),
                message: format!("{url}: {error}"),
            });
        }
        self.wait_for("document.readyState === 'complete'", deadline, "page load")
            .map(|_| ())
    }

    /// Evaluates `expression` in the page, awaiting it if it is a promise, and returns its
    /// value as JSON.
    pub fn evaluate(&mut self, expression: &str) -> Result<Value, CdpError> {
        let result = self.command(
            "Runtime.evaluate",
            json!({
                "expression": expression,
                "awaitPromise": true,
                "returnByValue": true,
                "timeout": COMMAND_TIMEOUT.as_millis() as u64,
            }),
            COMMAND_TIMEOUT,
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("unknown exception");
            return Err(CdpError::Exception(text.to_owned()));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it returns a truthy value (which it
    /// returns), or `deadline` passes.
    pub fn wait_for(
        &mut self,
        expression: &str,
        deadline: Instant,
        what: &str,
    ) -> Result<Value, CdpError> {
        let started = Instant::now();
        loop {
            let value = self.evaluate(expression)?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(CdpError::Timeout(started.elapsed(), what.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the whole page (beyond the viewport too).
    pub fn screenshot(&mut self, path: &Path) -> Result<(), CdpError> {
        let shot = self.command(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
            COMMAND_TIMEOUT,
        )?;
        let png = shot["data"]
            .as_str()
            .and_then(decode_base64)
            .ok_or_else(|| CdpError::Connection("captureScreenshot gave no PNG".into()))?;
        std::fs::write(path, png).map_err(|e| CdpError::Process(format!("{}: {e}", path.display())))
    }

    /// The page's console messages and uncaught exceptions so far, for failure reports.
    pub fn console(&self) -> &[String] {
        &self.console
    }

    /// Chromium's own stdout and stderr so far, for failure reports.
    pub fn process_log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// Sends a command to the page's session and returns its result.
    pub fn command(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        let session = self.session.clone();
        self.send(method, params, Some(&session), timeout)
    }

    fn browser_command(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        self.send(method, params, None, timeout)
    }

    fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        let deadline = Instant::now() + timeout;
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .map_err(|e| CdpError::Connection(format!("sending {method}: {e}")))?;
        loop {
            let reply = self.receive(deadline, timeout, method)?;
            if reply["id"].as_u64() == Some(id) {
                if let Some(error) = reply.get("error") {
                    return Err(CdpError::Command {
                        method: method.to_owned(),
                        message: error["message"].as_str().unwrap_or("?").to_owned(),
                    });
                }
                return Ok(reply["result"].clone());
            }
            self.record_event(&reply);
        }
    }

    /// Reads the next CDP message, or fails once `deadline` passes.
    fn receive(
        &mut self,
        deadline: Instant,
        timeout: Duration,
        waiting_for: &str,
    ) -> Result<Value, CdpError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CdpError::Timeout(
                    timeout,
                    format!("the reply to {waiting_for}"),
                ));
            }
            self.socket
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| CdpError::Connection(e.to_string()))?;
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| CdpError::Connection(format!("bad JSON from chromium: {e}")));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => {
                    let exited = self
                        .child
                        .lock()
                        .ok()
                        .and_then(|mut child| child.try_wait().ok().flatten());
                    return Err(CdpError::Connection(format!(
                        "reading the reply to {waiting_for}: {e} (chromium exited: {exited:?})"
                    )));
                }
            }
        }
    }

    fn record_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|args| {
                        args.iter()
                            .map(|a| match &a["value"] {
                                Value::String(s) => s.clone(),
                                Value::Null => a["description"].as_str().unwrap_or("").to_owned(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let kind = params["type"].as_str().unwrap_or("log");
                self.console
                    .push(format!("console.{kind}: {}", args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str())
                    .unwrap_or("?");
                self.console.push(format!("uncaught: {text}"));
            }
            _ => {}
        }
    }
}

impl Chromium {
    /// A handle that can kill this Chromium from another thread (a test's watchdog).
    pub fn killer(&self) -> Killer {
        Killer(Arc::clone(&self.child))
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.killer().kill();
    }
}

/// Kills a Chromium from any thread; see [`Chromium::killer`].
pub struct Killer(Arc<Mutex<Child>>);

impl Killer {
    /// Kills the process and reaps it; harmless if it has already exited.
    pub fn kill(&self) {
        // A poisoned lock still holds a valid `Child`.
        let mut child = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Kills the child if launching fails half way.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for Chromium to write `DevToolsActivePort` (port, then the browser's WebSocket
/// path) into its profile.
fn wait_for_devtools_port(
    profile: &Path,
    child: &mut ChildGuard,
) -> Result<(u16, String), CdpError> {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    loop {
        if let Ok(contents) = std::fs::read_to_string(&file) {
            let mut lines = contents.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse::<u16>() {
                    return Ok((port, path.trim().to_owned()));
                }
            }
        }
        let log = || std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default();
        if let Some(Ok(Some(status))) = child.0.as_mut().map(|c| c.try_wait()) {
            return Err(CdpError::Process(format!(
                "exited with {status} before opening DevTools:\n{}",
                log()
            )));
        }
        if Instant::now() >= deadline {
            return Err(CdpError::Timeout(
                LAUNCH_TIMEOUT,
                format!("chromium's DevTools port; its log:\n{}", log()),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(port: u16, path: &str) -> Result<WebSocket<TcpStream>, CdpError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)
        .map_err(|e| CdpError::Connection(format!("{addr}: {e}")))?;
    // Bounds the handshake; `receive` sets its own timeout per read afterwards.
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| CdpError::Connection(e.to_string()))?;
    let url = format!("ws://{addr}{path}");
    let (socket, _response) = tungstenite::client(url.as_str(), stream)
        .map_err(|e| CdpError::Connection(format!("websocket handshake with {url}: {e}")))?;
    Ok(socket)
}

/// Standard base64 (CDP's encoding of binary data), or None if malformed.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in digits {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
