//! The `mixcast` binary as a child process on 127.0.0.1 with free ports, its log (stdout)
//! going to a file the test reads (a pipe nobody drains would block the server once full),
//! killed when dropped. Plus small HTTP reads of its `/metrics` and `/api/streams`.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server binary.
pub struct ServerBinary {
    child: Child,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its UDP (media) port.
    pub udp_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

impl ServerBinary {
    /// Starts the binary with `args` (after the bind address and ports) and `env`, and
    /// waits until it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ServerBinary {
        ServerBinary::start_on(free_tcp(), free_udp(), args, env)
    }

    /// As [`start`](Self::start), on the given ports (a server restarted where the last
    /// one was).
    pub fn start_on(
        http_port: u16,
        udp_port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ServerBinary {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).expect("the log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixcast"));
        cmd.args(["--bind", "127.0.0.1", "--http-port"])
            .arg(http_port.to_string())
            .arg("--udp-port")
            .arg(udp_port.to_string())
            .args(args)
            .env("RUST_LOG", "mixcast=info")
            .env_remove("MIXCAST_MAX_STREAMS")
            .stdout(Stdio::from(out))
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the mixcast binary");
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(http).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server did not listen on {http}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ServerBinary {
            child,
            http,
            udp_port,
            log,
            _dir: dir,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (as Ctrl-C does) and waits up to `timeout` for the process to exit;
    /// its exit status, or None if it did not exit in time (it is killed on drop).
    pub fn interrupt(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of a child we spawned and not yet reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` and the body (status 200 required).
    pub fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the answer");
        assert!(text.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
        text.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default()
    }

    /// A counter or gauge from `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// The names `/api/streams` lists.
    pub fn stream_names(&self) -> Vec<String> {
        let body = self.get("/api/streams");
        let v: serde_json::Value = serde_json::from_str(body.trim())
            .or_else(|_| serde_json::from_str(dechunk(&body).trim()))
            .unwrap_or_else(|e| panic!("/api/streams is not JSON ({e}): {body}"));
        let list = v.get("streams").cloned().unwrap_or(v);
        list.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl ServerBinary {
    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits up to `timeout` for the process to
    /// exit; its exit status, or None if it did not exit in time (it is killed on drop).
    pub fn signal_and_wait(
        &mut self,
        signal: libc::c_int,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// The body of a chunked answer, joined.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for ServerBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
