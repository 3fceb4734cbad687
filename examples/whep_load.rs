//! WHEP load generator: opens N real WHEP sessions (ICE, DTLS, SRTP) against a mixcast
//! server on 127.0.0.1 and measures what the viewers receive and what it costs the server.
//!
//! By default the server runs in a child process (this binary again, with a hidden flag),
//! so that its CPU time and RSS are its own; `--url` targets a server already running
//! instead (add `--pid` for its CPU and RSS). `--compare "<args>"` repeats the run against
//! a second child started with other arguments and prints both, with the ratios.
//!
//! ```text
//! cargo build --release --example whep_load
//! target/release/examples/whep_load --viewers 2000 --ramp 200/s --duration 20
//! target/release/examples/whep_load --viewers 1000 --compare "--fanout naive"
//! target/release/examples/whep_load --url http://127.0.0.1:8889/live/whep --pid 1234
//! ```
//! The last line of the output is one JSON object (`{"runs": [...], "ratios": {...}}`).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mixcast::client::load::{self, LoadOptions, LoadReport, ServerProbe};
use mixcast::config::ServeArgs;
use mixcast::server::Server;

/// The hidden first argument that makes this binary the server.
const SERVE_FLAG: &str = "--internal-serve";
/// Longest wait for the child server's HTTP to answer.
const CHILD_START: Duration = Duration::from_secs(20);
/// Grace between SIGTERM and SIGKILL for the child.
const CHILD_STOP: Duration = Duration::from_secs(5);

/// Open N WHEP viewers at a join rate, hold a steady window, report loss, jitter, time to
/// first packet, and the server's CPU, memory and TX timing.
#[derive(Parser, Debug)]
#[command(name = "whep_load")]
struct Cli {
    /// Viewers to open (at most 20000).
    #[arg(long, default_value_t = 200)]
    viewers: usize,
    /// Join rate, e.g. `200/s` or `200`.
    #[arg(long, default_value = "200/s", value_parser = parse_rate)]
    ramp: f64,
    /// Steady-state window after the last join, seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Wait between the last join and the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// The stream to watch.
    #[arg(long, default_value = "live")]
    stream: String,
    /// A running server's WHEP endpoint (loopback only) instead of a child server.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the server's process id, for its CPU time and RSS.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// A Bearer token for the stream.
    #[arg(long)]
    token: Option<String>,
    /// Extra arguments for the child server (split on whitespace).
    #[arg(
        long,
        default_value = "",
        allow_hyphen_values = true,
        conflicts_with = "url"
    )]
    server_args: String,
    /// Run again against a child server started with these arguments instead (for example
    /// the naive fan-out), and print both runs and their ratio.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "url")]
    compare: Option<String>,
    /// Receive threads of this tool.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// HTTP workers doing the POSTs.
    #[arg(long, default_value_t = 4)]
    http_workers: usize,
    /// Decrypt one RTP packet in this many per viewer (after its first 5).
    #[arg(long, default_value_t = 50)]
    sample_every: u64,
    /// Write each viewer's figures, one JSON object per line, to this file.
    #[arg(long)]
    per_viewer: Option<std::path::PathBuf>,
    /// Exit with status 3 if any packet was lost, any session failed or any sample did not
    /// decrypt.
    #[arg(long)]
    strict: bool,
}

/// The child's command line: mixcast's own serve options.
#[derive(Parser)]
#[command(name = "mixcast-load-server", args_override_self = true)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("expected a rate like 200/s, not {s:?}")),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SERVE_FLAG) {
        return serve_child(&args[2..]);
    }
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .init();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let cli = Cli::parse();
    match run(&cli) {
        Ok(clean) if clean || !cli.strict => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("whep_load: {e:#}");
            if STOP.load(Ordering::Relaxed) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs every requested run; returns whether all were clean.
fn run(cli: &Cli) -> anyhow::Result<bool> {
    let mut runs = Vec::new();
    if let Some(url) = &cli.url {
        check_loopback(url)?;
        let mut opts = options(cli, url.clone());
        opts.server = ServerProbe {
            pid: cli.pid,
            metrics_url: Some(metrics_url(url)?),
        };
        let mut report = load::run(&opts, &STOP)?;
        report.label = "server at --url".into();
        runs.push(report);
    } else {
        let mut configs = vec![cli.server_args.clone()];
        configs.extend(cli.compare.clone());
        for server_args in configs {
            let child = ChildServer::start(&server_args, cli.viewers)?;
            let mut opts = options(cli, child.whep_url(&cli.stream));
            opts.server = ServerProbe {
                pid: Some(child.pid()),
                metrics_url: Some(child.metrics_url()),
            };
            // The child is killed at the end: its sessions go with it.
            opts.delete_sessions = false;
            let result = load::run(&opts, &STOP);
            drop(child);
            let mut report = result?;
            report.label = if server_args.trim().is_empty() {
                "default".into()
            } else {
                server_args.trim().to_string()
            };
            runs.push(report);
        }
    }

    let refs: Vec<&LoadReport> = runs.iter().collect();
    print!("{}", load::table(&refs));
    if let Some(path) = &cli.per_viewer {
        write_per_viewer(path, &runs)?;
    }
    let ratios = match &runs[..] {
        [a, b] => {
            let ratio = |f: fn(&LoadReport) -> Option<f64>| match (f(a), f(b)) {
                (Some(x), Some(y)) if y != 0.0 => Some(x / y),
                _ => None,
            };
            serde_json::json!({
                "listeners_per_core": ratio(|r| r.server.as_ref()?.listeners_per_core),
                "cpu_us_per_packet": ratio(|r| r.server.as_ref()?.cpu_us_per_packet),
                "kib_per_listener": ratio(|r| r.server.as_ref()?.kib_per_listener),
            })
        }
        _ => serde_json::Value::Null,
    };
    println!("{}", serde_json::json!({ "runs": runs, "ratios": ratios }));
    Ok(runs
        .iter()
        .all(|r| r.failed == 0 && r.packets_lost == 0 && r.decrypt_failures == 0))
}

fn options(cli: &Cli, url: String) -> LoadOptions {
    let mut opts = LoadOptions::new(
        url,
        cli.viewers,
        cli.ramp,
        Duration::from_secs_f64(cli.duration.clamp(0.0, 3600.0)),
    );
    opts.token = cli.token.clone();
    opts.settle = Duration::from_secs_f64(cli.settle.clamp(0.0, 60.0));
    opts.receive_threads = cli.threads;
    opts.http_workers = cli.http_workers;
    opts.sample_every = cli.sample_every;
    opts
}

fn write_per_viewer(path: &std::path::Path, runs: &[LoadReport]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
    );
    for r in runs {
        for v in &r.per_viewer {
            let mut line = serde_json::to_value(v)?;
            line["run"] = serde_json::Value::from(r.label.clone());
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `scheme://authority/metrics` of a WHEP URL.
fn metrics_url(url: &str) -> anyhow::Result<String> {
    let uri: ureq::http::Uri = url.parse().context("--url")?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        bail!("--url must be absolute: {url}");
    };
    Ok(format!("{scheme}://{authority}/metrics"))
}

/// Load goes to this machine's loopback only.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let uri: ureq::http::Uri = url.parse().context("--url")?;
    let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--url must point at a loopback address (127.0.0.0/8, ::1), not {host:?}");
    }
    Ok(())
}

/// The server in a child process: this binary, re-executed with `--internal-serve`.
struct ChildServer {
    child: Child,
    http: SocketAddr,
}

impl ChildServer {
    fn start(extra_args: &str, viewers: usize) -> anyhow::Result<ChildServer> {
        let http_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let udp_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg(SERVE_FLAG)
            .args(["--bind", "127.0.0.1"])
            .args(["--http-port", &http_port.to_string()])
            .args(["--udp-port", &udp_port.to_string()])
            .args(["--max-viewers", &(viewers + 100).to_string()])
            // The load joins hundreds at once from one address.
            .args(["--max-pending-per-ip", &(viewers + 100).to_string()])
            .args(extra_args.split_whitespace())
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it runs in the child before exec.
        unsafe {
            command.pre_exec(|| {
                // Dies with this process, however this process ends.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().context("starting the child server")?;
        let mut server = ChildServer {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .proxy(None)
            .build()
            .into();
        let deadline = Instant::now() + CHILD_START;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the child server exited at start-up: {status} (args: {extra_args:?})");
            }
            if agent.get(&server.metrics_url()).call().is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline || STOP.load(Ordering::Relaxed) {
                bail!("the child server did not answer HTTP within {CHILD_START:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn whep_url(&self, stream: &str) -> String {
        format!("http://{}/{stream}/whep", self.http)
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.http)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signals our own child, which has not been reaped (try_wait said so).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + CHILD_STOP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child: runs the server like `mixcast serve` until SIGTERM or SIGINT.
fn serve_child(args: &[String]) -> ExitCode {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mixcast=warn,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .init();
    let args = args.iter().skip_while(|a| *a == "--");
    let cli = ServeCli::parse_from(
        std::iter::once("mixcast-load-server".to_string()).chain(args.cloned()),
    );
    let config = match cli.serve.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mixcast (load child): {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mixcast (load child): {e}");
            return ExitCode::FAILURE;
        }
    };
    server.wait_for_signal();
    server.shutdown();
    ExitCode::SUCCESS
}
