//! Soak: churn of WHIP and WHEP sessions against a mixcast server in a child process on
//! 127.0.0.1, reporting every minute what the server holds (RSS, file descriptors, open
//! sessions, streams) and how its TX thread keeps time (late ticks, stalls, CPU, time spent
//! waiting for a core).
//!
//! Every 10 s a burst of `--sessions` sessions starts (through `--workers` client threads),
//! in turn: a publisher to a new stream that DELETEs after 2 s, one that vanishes without a
//! DELETE or close_notify, a viewer of `live` that DELETEs after 2 s, and a viewer that
//! POSTs and never connects. Bounded: `--minutes` (default 1, at most 60).
//!
//! ```text
//! cargo build --release --example soak
//! target/release/examples/soak --minutes 5 --sessions 150
//! target/release/examples/soak --minutes 2 --compare "--tx-threads 2"
//! ```
//! `--compare ARGS` runs a second child server with other arguments at the same time, fed
//! the same churn, and prints both side by side.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mixcast::client::load::{rss_kib, thread_cpu_ns};
use mixcast::client::whep::{play, PlayOptions};
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::config::ServeArgs;
use mixcast::media::sources::ToneSource;
use mixcast::server::Server;

const SERVE_FLAG: &str = "--internal-serve";
/// Set for a child that writes its log lines from the logging thread itself, as mixcast
/// did before `mixcast::logging` (the `--compare-blocking-log` child).
const BLOCKING_LOG_ENV: &str = "SOAK_BLOCKING_LOG";
/// How long a session that is not abandoned lasts.
const SESSION: Duration = Duration::from_secs(2);
/// The burst period.
const PERIOD: Duration = Duration::from_secs(10);

/// Churn sessions against a child server; report memory, descriptors, sessions and late
/// ticks every minute.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Cli {
    /// Minutes to run (at most 60).
    #[arg(long, default_value_t = 1)]
    minutes: u64,
    /// Sessions started per 10 s burst.
    #[arg(long, default_value_t = 150)]
    sessions: usize,
    /// Client threads running the sessions (default: one per session of a burst and
    /// server, so that a burst starts at once).
    #[arg(long)]
    workers: Option<usize>,
    /// Extra arguments for the child server.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    server_args: String,
    /// A second child server with these arguments, fed the same churn at the same time.
    #[arg(long, allow_hyphen_values = true)]
    compare: Option<String>,
    /// Also run a second child with the same arguments that logs the old way (each line
    /// written by the thread that logs it, blocking when the output is slow), fed the same
    /// churn at the same time.
    #[arg(long, conflicts_with = "compare")]
    compare_blocking_log: bool,
    /// Also run a second child from another build of this example (e.g. one built from
    /// an earlier commit), same arguments, fed the same churn at the same time.
    #[arg(long, conflicts_with_all = ["compare", "compare_blocking_log"])]
    compare_exe: Option<PathBuf>,
    /// Niceness of the client threads (0 to 19): on the server's own machine, clients at
    /// the server's priority starve its TX thread (hundreds of runnable threads stretch
    /// the scheduler's rounds to hundreds of milliseconds), which measures the machine,
    /// not the server.
    #[arg(long, default_value_t = 19)]
    client_nice: i32,
    /// Read the servers' logs through a pipe at this many milliseconds per line (a slow
    /// terminal or log shipper) instead of letting them write to a file.
    #[arg(long, default_value_t = 0.0)]
    log_ms_per_line: f64,
}

/// What the clients did to one server.
#[derive(Default)]
struct ClientTally {
    started: AtomicU64,
    failed: AtomicU64,
}

/// A child server and its log.
struct ChildServer {
    name: String,
    child: Child,
    http: SocketAddr,
    log: PathBuf,
    tally: ClientTally,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    at: Option<Instant>,
    tx_cpu_ns: u64,
    tx_wait_ns: u64,
    late_ticks: f64,
    stalls: u64,
    slow_rounds: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SERVE_FLAG) {
        return serve_child(&args[2..]);
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.minutes == 0 || cli.minutes > 60 {
        bail!("--minutes takes 1 to 60");
    }
    let dir = tempfile::tempdir()?;
    let slow = Duration::from_secs_f64(cli.log_ms_per_line.max(0.0) / 1000.0);
    let mut servers = vec![Arc::new(ChildServer::start(
        "server",
        &cli.server_args,
        dir.path(),
        slow,
        false,
        None,
    )?)];
    if let Some(other) = &cli.compare {
        servers.push(Arc::new(ChildServer::start(
            "compare",
            other,
            dir.path(),
            slow,
            false,
            None,
        )?));
    }
    if let Some(exe) = &cli.compare_exe {
        let name = exe.display().to_string();
        servers.push(Arc::new(ChildServer::start(
            &name,
            &cli.server_args,
            dir.path(),
            slow,
            false,
            Some(exe),
        )?));
    }
    if cli.compare_blocking_log {
        servers.push(Arc::new(ChildServer::start(
            "blocking-log",
            &cli.server_args,
            dir.path(),
            slow,
            true,
            None,
        )?));
    }
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<(Arc<ChildServer>, usize)>(100_000);
    let workers = cli.workers.unwrap_or(cli.sessions * servers.len()).max(1);
    for _ in 0..workers {
        let rx = jobs_rx.clone();
        let nice = cli.client_nice.clamp(0, 19);
        std::thread::spawn(move || {
            // SAFETY: plain system calls on this thread's own id.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, nice);
            }
            while let Ok((server, n)) = rx.recv() {
                server.tally.started.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = session(&server, n) {
                    tracing::debug!("session {n}: {e}");
                    server.tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    println!(
        "soak: {} min, {} sessions per 10 s (a quarter each: publisher DELETEs, publisher \
         vanishes, viewer DELETEs, viewer never connects), {} client threads at nice {}",
        cli.minutes, cli.sessions, workers, cli.client_nice
    );
    for s in &servers {
        println!("  {}: args {:?}", s.name, s.args_text());
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(60 * cli.minutes);
    let mut last: Vec<Sample> = servers.iter().map(|s| s.sample()).collect();
    let mut next_burst = start;
    let mut next_report = start + Duration::from_secs(60);
    let mut n = 0usize;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_burst {
            // Interleaved, so that both servers see the same churn at the same moments.
            for _ in 0..cli.sessions {
                for s in &servers {
                    let _ = jobs_tx.try_send((s.clone(), n));
                }
                n += 1;
            }
            next_burst += PERIOD;
        }
        if now >= next_report {
            let minute = (now - start).as_secs() / 60;
            for (s, prev) in servers.iter().zip(last.iter_mut()) {
                let cur = s.sample();
                s.report(minute, prev, &cur);
                *prev = cur;
            }
            next_report += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the last sessions end and the server reap them, then a last look.
    std::thread::sleep(Duration::from_secs(20));
    for (s, prev) in servers.iter().zip(last.iter_mut()) {
        let cur = s.sample();
        s.report(cli.minutes, prev, &cur);
        s.print_slowest();
    }
    Ok(())
}

/// One session of the churn; `n` picks its kind.
fn session(server: &ChildServer, n: usize) -> anyhow::Result<()> {
    let base = format!("http://{}", server.http);
    match n % 4 {
        0 | 1 => {
            let mut opts = PublishOptions::new(
                format!("{base}/soak-{n}/whip"),
                Box::new(ToneSource::sine(1000, 1000, 0.2)),
                SESSION,
            );
            opts.abandon = n % 4 == 1;
            Publisher::start(opts)?.wait()?;
        }
        2 => {
            play(&PlayOptions {
                url: format!("{base}/live/whep"),
                token: None,
                duration: SESSION,
                bind: [127, 0, 0, 1].into(),
                decode: false,
            })?;
        }
        _ => {
            // An offer whose only candidate is a port nothing answers on: never connects.
            let mut rtc = str0m::Rtc::builder().build(Instant::now());
            rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse()?, "udp")?);
            let mut api = rtc.sdp_api();
            api.add_media(
                str0m::media::MediaKind::Audio,
                str0m::media::Direction::RecvOnly,
                None,
                None,
                None,
            );
            let (offer, _pending) = api.apply().context("no offer")?;
            ureq::post(&format!("{base}/live/whep"))
                .header("Content-Type", "application/sdp")
                .send(offer.to_sdp_string())?;
        }
    }
    Ok(())
}

impl ChildServer {
    fn start(
        name: &str,
        extra: &str,
        dir: &std::path::Path,
        log_pace: Duration,
        blocking_log: bool,
        exe: Option<&std::path::Path>,
    ) -> anyhow::Result<ChildServer> {
        let http_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let udp_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(match exe {
            Some(e) => e.to_path_buf(),
            None => std::env::current_exe()?,
        });
        command
            .arg(SERVE_FLAG)
            .args(["--bind", "127.0.0.1"])
            .args(["--http-port", &http_port.to_string()])
            .args(["--udp-port", &udp_port.to_string()])
            // The churn comes from one address.
            .args(["--max-pending-per-ip", "1000"])
            .args(extra.split_whitespace())
            .env("RUST_LOG", "mixcast=info,mixcast::media::tx=debug")
            .env_remove(BLOCKING_LOG_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if log_pace.is_zero() {
                Stdio::from(std::fs::File::create(&log)?)
            } else {
                Stdio::piped()
            });
        if blocking_log {
            command.env(BLOCKING_LOG_ENV, "1");
        }
        // SAFETY: prctl is async-signal-safe; it runs in the child before exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().context("starting the child server")?;
        if let Some(pipe) = child.stderr.take() {
            // A slow reader: the pipe fills and the server's log writes wait for it.
            let mut file = std::fs::File::create(&log)?;
            std::thread::spawn(move || {
                use std::io::Write;
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                    std::thread::sleep(log_pace);
                }
            });
        }
        let server = ChildServer {
            name: name.to_string(),
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            log,
            tally: ClientTally::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.metrics().is_none() {
            if Instant::now() > deadline {
                bail!("the child server did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn args_text(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/cmdline", self.child.id()))
            .map(|c| c.replace('\0', " ").trim().to_string())
            .unwrap_or_default()
    }

    fn metrics(&self) -> Option<String> {
        ureq::get(&format!("http://{}/metrics", self.http))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    }

    fn sample(&self) -> Sample {
        let pid = self.child.id();
        let (mut tx_cpu_ns, mut tx_wait_ns) = (0, 0);
        if let Ok(threads) = thread_cpu_ns(pid) {
            for (tid, (name, ns)) in threads {
                if name.starts_with("mixcast-tx") {
                    tx_cpu_ns += ns;
                    tx_wait_ns += run_queue_wait_ns(pid, tid);
                }
            }
        }
        let text = self.metrics().unwrap_or_default();
        let bucket = |le: &str| {
            let key = format!("mixcast_tx_tick_lateness_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (stalls, slow_rounds) = self.log_counts();
        Sample {
            at: Some(Instant::now()),
            tx_cpu_ns,
            tx_wait_ns,
            late_ticks: bucket("+Inf") - bucket("0.01"),
            stalls,
            slow_rounds,
        }
    }

    fn log_counts(&self) -> (u64, u64) {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return (0, 0);
        };
        let (mut stalls, mut slow) = (0, 0);
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            stalls += u64::from(line.contains("TX thread stalled"));
            slow += u64::from(line.contains("a slow round"));
        }
        (stalls, slow)
    }

    fn report(&self, minute: u64, prev: &Sample, cur: &Sample) {
        let text = self.metrics().unwrap_or_default();
        let value =
            |name: &str| mixcast::client::load::stats::prom_value(&text, name).unwrap_or(0.0);
        let open = value("mixcast_sessions_created_total")
            - value("mixcast_sessions_closed_total")
            - value("mixcast_sessions_failed_total");
        let secs = match (prev.at, cur.at) {
            (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        let streams = ureq::get(&format!("http://{}/api/streams", self.http))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .map(|t| t.matches("\"name\"").count())
            .unwrap_or(0);
        println!(
            "{:>8} min {minute:>2}: sessions started {} (client errors {}), open {open:.0}, \
             streams {streams}, RSS {:.1} MiB, fds {}, ticks >10 ms late {:.0}, stalls logged {}, \
             slow rounds {}, TX CPU {:.1}%, TX waited for a core {:.0} ms, worst tick {:.1} ms",
            self.name,
            self.tally.started.load(Ordering::Relaxed),
            self.tally.failed.load(Ordering::Relaxed),
            rss_kib(Some(self.child.id())).unwrap_or(0) as f64 / 1024.0,
            std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
                .map(|d| d.count())
                .unwrap_or(0),
            cur.late_ticks - prev.late_ticks,
            cur.stalls - prev.stalls,
            cur.slow_rounds - prev.slow_rounds,
            (cur.tx_cpu_ns - prev.tx_cpu_ns) as f64 / 1e9 / secs * 100.0,
            (cur.tx_wait_ns - prev.tx_wait_ns) as f64 / 1e6,
            value("mixcast_tx_tick_lateness_max_seconds") * 1000.0,
        );
    }

    /// The five slowest rounds the TX thread logged, as it logged them.
    fn print_slowest(&self) {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return;
        };
        let mut lines: Vec<String> = BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("a slow round") || l.contains("TX thread stalled"))
            .collect();
        lines.sort_by_key(|l| std::cmp::Reverse(l.len()));
        for l in lines.iter().take(5) {
            println!("  {}: {l}", self.name);
        }
    }
}

/// Time thread `tid` spent runnable but waiting for a core (`/proc/.../schedstat`).
fn run_queue_wait_ns(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The child: the server, until killed.
fn serve_child(args: &[String]) -> ExitCode {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mixcast=info"));
    // As the binary logs (through mixcast::logging's queue), or, for the comparison, the
    // way it did before: each line written to stderr by the thread that logs it.
    let _log = if std::env::var_os(BLOCKING_LOG_ENV).is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(env)
            .with_writer(std::io::stderr)
            .init();
        None
    } else {
        let (writer, guard) = match mixcast::logging::queued(std::io::stderr) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("soak child: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing_subscriber::fmt()
            .with_env_filter(env)
            .with_writer(writer)
            .init();
        Some(guard)
    };
    let cli = ServeCli::parse_from(
        std::iter::once("soak-server".to_string()).chain(args.iter().cloned()),
    );
    let server = match cli
        .serve
        .resolve()
        .map_err(|e| e.to_string())
        .and_then(|c| Server::start(c).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak child: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.wait_for_signal();
    server.shutdown();
    ExitCode::SUCCESS
}
