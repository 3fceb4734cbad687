//! A WHEP load generator: opens N real WHEP sessions (ICE, DTLS, SRTP) at a set join rate,
//! keeps them for a steady-state window, and measures what they receive and, when told the
//! server's process and `/metrics`, what it costs the server. Used by
//! `examples/whep_load.rs` and `tests/load_short.rs`.
//!
//! ```text
//!  ramp (this thread) ──job──► HTTP workers: socket, Rtc, offer, POST, accept the answer
//!                                   │ NewViewer (round robin)
//!                                   ▼
//!                     receive threads (io): epoll + recvmsg over the viewers' sockets;
//!                     RTP counted from its header, a sample (and STUN/DTLS/RTCP) fed to
//!                     the viewer's Rtc, timers scanned every 10 ms
//! ```
//!
//! Every viewer has a socket of its own (the server tells peers apart by source address),
//! so the process needs one descriptor per viewer: [`run`] raises RLIMIT_NOFILE to its hard
//! limit. Everything is bounded: at most [`MAX_VIEWERS`] viewers, a window of at most
//! [`MAX_DURATION`], per-request HTTP timeouts, and the `stop` flag is honoured within
//! 100 ms. Packet times are the kernel's receive timestamps (SO_TIMESTAMPNS), so the
//! jitter and first-packet figures measure the server, not how late this tool read them.

mod io;
mod probe;
pub mod stats;

pub use probe::{cpu_ns, realtime_ns, rss_kib, thread_cpu_ns};

use self::io::{IoOutcome, IoSettings, NewViewer};
use self::stats::{LogHistogram, PromHistogram};
use super::http::SignalClient;
use super::whep::{accept_answer, audio_offer, viewer_rtc_config, ClientError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use str0m::config::DtlsCert;

/// Most viewers one run may open.
pub const MAX_VIEWERS: usize = 20_000;
/// Longest steady-state window.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The server sends one Opus packet per 20 ms to each viewer.
const FRAME_NS: i64 = 20_000_000;
/// Descriptors kept free beyond one per viewer (HTTP, epoll, the standard ones).
const SPARE_FDS: u64 = 128;
/// How long the server's idle CPU is sampled before the first viewer joins.
const IDLE_PROBE: Duration = Duration::from_secs(1);
/// Packets of the window still in flight at its end: read for this long before stopping.
const DRAIN: Duration = Duration::from_millis(200);
/// A viewer that received less than this share of the window's packets (by time) counts as
/// short: its stream stopped or stalled, whatever its sequence numbers say.
const SHORT_SHARE: f64 = 0.9;
/// How often the waits of [`run`] look at the `stop` flag.
const POLL_STOP: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The WHEP endpoint, e.g. `http://127.0.0.1:8889/live/whep`.
    pub url: String,
    /// A Bearer token, if the stream needs one.
    pub token: Option<String>,
    /// Viewers to open (at most [`MAX_VIEWERS`]).
    pub viewers: usize,
    /// Joins per second.
    pub ramp_per_second: f64,
    /// The steady-state window, after every viewer has joined and `settle` has passed.
    pub duration: Duration,
    /// Wait between the last join and the window.
    pub settle: Duration,
    /// The local address of every viewer's socket (a specific address: it is announced).
    pub bind: IpAddr,
    /// Receive threads sharing the viewers.
    pub receive_threads: usize,
    /// Threads doing the HTTP POSTs (and DELETEs) in parallel.
    pub http_workers: usize,
    /// After its first `sample_first` packets, a viewer decrypts one RTP packet in
    /// `sample_every` (by sequence number); the others are only counted.
    pub sample_every: u64,
    /// Packets each viewer decrypts from the start.
    pub sample_first: u64,
    /// Longest wait from the POST to a connected session.
    pub connect_timeout: Duration,
    /// The server's process and `/metrics`, to measure it (both optional).
    pub server: ServerProbe,
    /// DELETE every session at the end (not needed when the server is killed anyway).
    pub delete_sessions: bool,
}

impl LoadOptions {
    /// `viewers` viewers of `url` joining at `ramp_per_second`, a `duration` window, and
    /// defaults for the rest.
    pub fn new(
        url: impl Into<String>,
        viewers: usize,
        ramp_per_second: f64,
        duration: Duration,
    ) -> LoadOptions {
        LoadOptions {
            url: url.into(),
            token: None,
            viewers,
            ramp_per_second,
            duration,
            settle: Duration::from_secs(1),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            receive_threads: 1,
            http_workers: 4,
            sample_every: 50,
            sample_first: 5,
            connect_timeout: super::whep::CONNECT_TIMEOUT,
            server: ServerProbe::default(),
            delete_sessions: true,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Invalid(m));
        if self.viewers == 0 || self.viewers > MAX_VIEWERS {
            return bad(format!("viewers: 1 to {MAX_VIEWERS}, not {}", self.viewers));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!(
                "duration: up to {MAX_DURATION:?}, not {:?}",
                self.duration
            ));
        }
        if !(self.ramp_per_second > 0.0 && self.ramp_per_second <= 100_000.0) {
            return bad(format!("ramp: above 0, not {}", self.ramp_per_second));
        }
        if self.bind.is_unspecified() {
            return bad("bind: a specific address (it is announced as the candidate)".into());
        }
        if self.receive_threads == 0 || self.http_workers == 0 || self.sample_every == 0 {
            return bad("threads, workers and sample_every must be at least 1".into());
        }
        Ok(())
    }
}

/// Where to measure the server.
#[derive(Debug, Clone, Default)]
pub struct ServerProbe {
    /// The server's process id: its CPU time and RSS are read from /proc.
    pub pid: Option<u32>,
    /// Its Prometheus endpoint, e.g. `http://127.0.0.1:8889/metrics`.
    pub metrics_url: Option<String>,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options are out of bounds.
    #[error("invalid options: {0}")]
    Invalid(String),
    /// A local resource failed (descriptors, threads, sockets).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The stop flag was raised.
    #[error("interrupted")]
    Interrupted,
}

/// What one viewer saw.
#[derive(Debug, Clone, Serialize)]
pub struct ViewerOutcome {
    /// Its number, in join order.
    pub index: usize,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Its session URL (None if the POST failed).
    #[serde(skip)]
    pub session_url: Option<String>,
    /// POST to connected (ICE and DTLS done), ms.
    pub connected_ms: Option<f64>,
    /// POST to the first audio packet (kernel receive time), ms.
    pub first_packet_ms: Option<f64>,
    /// RTP packets received, in all.
    pub received_total: u64,
    /// RTP packets received in the window.
    pub window_received: u64,
    /// RTP packets numbered from the first to the last of the window.
    pub window_expected: u64,
    /// `window_expected` minus `window_received`.
    pub window_lost: u64,
    /// RFC 3550 inter-arrival jitter at the window's end, µs.
    pub jitter_us: f64,
    /// The largest |D| of the window, µs.
    pub max_jitter_us: f64,
    /// RTP packets fed to the `Rtc` (decrypted) as a sample.
    pub rtp_sampled: u64,
    /// Of those, the ones SRTP decrypted.
    pub rtp_decrypted: u64,
}

impl ViewerOutcome {
    fn failed(index: usize, why: String) -> ViewerOutcome {
        ViewerOutcome {
            index,
            failure: Some(why),
            session_url: None,
            connected_ms: None,
            first_packet_ms: None,
            received_total: 0,
            window_received: 0,
            window_expected: 0,
            window_lost: 0,
            jitter_us: 0.0,
            max_jitter_us: 0.0,
            rtp_sampled: 0,
            rtp_decrypted: 0,
        }
    }
}

/// p50, p99 and max of a distribution.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(h: &LogHistogram, scale: f64) -> Option<Spread> {
        Some(Spread {
            p50: h.quantile(0.5)? as f64 / scale,
            p99: h.quantile(0.99)? as f64 / scale,
            max: h.max() as f64 / scale,
        })
    }
}

/// A TX timing histogram of the server over the window, µs (bucket upper bounds: "at
/// most"), and its largest value since the server started.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ServerTiming {
    /// Median, at most.
    pub p50_us: Option<f64>,
    /// 99th percentile, at most.
    pub p99_us: Option<f64>,
    /// Every tick of the window was at most this (infinite: above the last bucket).
    pub window_max_us: Option<f64>,
    /// The largest since the server started (ramp included), if it exports it.
    pub max_since_start_us: Option<f64>,
    /// Ticks in the window.
    pub ticks: u64,
}

/// The server's side of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// Its process id.
    pub pid: Option<u32>,
    /// Its CPU use with no viewer, percent of one core (the TX thread's spin included).
    pub idle_cpu_percent: Option<f64>,
    /// Its CPU use over the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// CPU time per packet delivered in the window, µs (idle use included).
    pub cpu_us_per_packet: Option<f64>,
    /// Connected viewers divided by the cores used.
    pub listeners_per_core: Option<f64>,
    /// CPU use of each of its threads (by name) over the window, percent of one core.
    pub thread_cpu_percent: BTreeMap<String, f64>,
    /// The same with no viewer (the idle probe before the ramp).
    pub idle_thread_cpu_percent: BTreeMap<String, f64>,
    /// CPU time of its TX threads (`mixcast-tx*`) per packet delivered, µs.
    pub tx_cpu_us_per_packet: Option<f64>,
    /// Connected viewers divided by the cores its TX threads used.
    pub listeners_per_tx_core: Option<f64>,
    /// RSS before the first viewer, KiB.
    pub rss_idle_kib: Option<u64>,
    /// RSS at the window's end, KiB.
    pub rss_steady_kib: Option<u64>,
    /// RSS growth per connected viewer, KiB.
    pub kib_per_listener: Option<f64>,
    /// Datagrams it sent in the window (its own counter).
    pub packets_sent: Option<u64>,
    /// How late its TX ticks started.
    pub tick_lateness: Option<ServerTiming>,
    /// How long its ticks (mix, encode, fan-out) took.
    pub fanout: Option<ServerTiming>,
}

/// This tool's own cost over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolReport {
    /// CPU use, percent of one core (the in-process server's too, when there is one).
    pub cpu_percent: f64,
    /// CPU time per packet received, µs.
    pub cpu_us_per_packet: Option<f64>,
    /// RSS at the window's end, MiB.
    pub rss_mib: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// A name for the run (the server's arguments, in the example).
    pub label: String,
    /// The endpoint.
    pub url: String,
    /// Viewers asked for.
    pub viewers: usize,
    /// Viewers connected with audio and no failure.
    pub connected: usize,
    /// Viewers that failed (POST refused, no connection, no audio, ICE dropped...).
    pub failed: usize,
    /// Failures by reason.
    pub failures: BTreeMap<String, usize>,
    /// Joins per second asked for.
    pub ramp_per_second: f64,
    /// From the first POST to the last viewer handed over, s.
    pub ramp_seconds: f64,
    /// The steady-state window, s.
    pub window_seconds: f64,
    /// RTP packets received in the window, all viewers.
    pub packets_received: u64,
    /// RTP packets numbered in the window (per viewer, first to last).
    pub packets_expected: u64,
    /// `packets_expected` minus `packets_received`.
    pub packets_lost: u64,
    /// Loss in percent.
    pub loss_percent: f64,
    /// Packets received per second in the window.
    pub packets_per_second: f64,
    /// Connected viewers that lost at least one packet.
    pub viewers_with_loss: usize,
    /// Connected viewers that received under 90% of the window's 50 packets/s.
    pub viewers_short: usize,
    /// Inter-arrival jitter |D| of every packet of the window, µs.
    pub jitter_us: Option<Spread>,
    /// RFC 3550 jitter estimate J of each viewer at the window's end, µs.
    pub viewer_jitter_us: Option<Spread>,
    /// POST to first audio packet, ms.
    pub first_packet_ms: Option<Spread>,
    /// POST to connected, ms.
    pub connected_ms: Option<Spread>,
    /// RTP packets decrypted as a sample.
    pub rtp_sampled: u64,
    /// Sampled packets that did not decrypt.
    pub decrypt_failures: u64,
    /// The server's figures, when it was probed.
    pub server: Option<ServerReport>,
    /// This tool's cost.
    pub tool: ToolReport,
    /// Every viewer's figures (not in the JSON line).
    #[serde(skip)]
    pub per_viewer: Vec<ViewerOutcome>,
}

/// The window and the end of the run, shared with the receive threads.
pub(crate) struct Control<'a> {
    stop: &'a AtomicBool,
    finish: AtomicBool,
    window_start_ns: AtomicI64,
    window_end_ns: AtomicI64,
}

impl Control<'_> {
    fn finished(&self) -> bool {
        self.finish.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed)
    }

    /// [start, end) of the window in CLOCK_REALTIME ns; far future until it is set.
    fn window(&self) -> (i64, i64) {
        (
            self.window_start_ns.load(Ordering::Relaxed),
            self.window_end_ns.load(Ordering::Relaxed),
        )
    }
}

/// One reading of the server (and of this process).
#[derive(Debug, Default)]
struct Sample {
    at_ns: i64,
    server_cpu_ns: Option<u64>,
    server_threads: Option<BTreeMap<u32, (String, u64)>>,
    server_rss_kib: Option<u64>,
    metrics: Option<String>,
    tool_cpu_ns: u64,
}

impl ServerProbe {
    fn sample(&self) -> Sample {
        let at_ns = realtime_ns();
        let server_cpu_ns = self.pid.and_then(|p| cpu_ns(Some(p)).ok());
        let server_threads = self.pid.and_then(|p| thread_cpu_ns(p).ok());
        let tool_cpu_ns = cpu_ns(None).unwrap_or(0);
        let server_rss_kib = self.pid.and_then(|p| rss_kib(Some(p)).ok());
        let metrics = self.metrics_url.as_deref().and_then(fetch_metrics);
        Sample {
            at_ns,
            server_cpu_ns,
            server_threads,
            server_rss_kib,
            metrics,
            tool_cpu_ns,
        }
    }
}

fn fetch_metrics(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .proxy(None)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => r.body_mut().read_to_string().ok(),
        Err(e) => {
            tracing::warn!("GET {url}: {e}");
            None
        }
    }
}

/// Runs the load and reports. Returns `Interrupted` if `stop` is raised.
pub fn run(opts: &LoadOptions, stop: &AtomicBool) -> Result<LoadReport, LoadError> {
    opts.validate()?;
    let fd_limit = probe::raise_fd_limit()?;
    if opts.viewers as u64 + SPARE_FDS > fd_limit {
        return Err(LoadError::Invalid(format!(
            "{} viewers need {} descriptors; the hard limit is {fd_limit}",
            opts.viewers,
            opts.viewers as u64 + SPARE_FDS
        )));
    }
    // One certificate for every viewer: generating one per Rtc costs a key generation each.
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| LoadError::Invalid("no DTLS certificate".into()))?;

    let idle_start = opts.server.sample();
    if opts.server.pid.is_some() {
        wait(IDLE_PROBE, stop)?;
    }
    let idle_end = opts.server.sample();

    let control = Control {
        stop,
        finish: AtomicBool::new(false),
        window_start_ns: AtomicI64::new(i64::MAX),
        window_end_ns: AtomicI64::new(i64::MAX),
    };
    let settings = IoSettings {
        sample_every: opts.sample_every,
        sample_first: opts.sample_first,
        connect_timeout: opts.connect_timeout,
        // A connected viewer gets its first packet within a tick or two.
        media_timeout: Duration::from_secs(2),
    };
    let join_failures = Mutex::new(Vec::new());

    let (outcomes, ramp_seconds, start, end) = std::thread::scope(|s| {
        let mut io_senders = Vec::new();
        let mut io_threads = Vec::new();
        for n in 0..opts.receive_threads {
            let (tx, rx) = crossbeam_channel::unbounded();
            io_senders.push(tx);
            let control = &control;
            io_threads.push(
                std::thread::Builder::new()
                    .name(format!("load-rx-{n}"))
                    .spawn_scoped(s, move || io::run(control, rx, settings))?,
            );
        }

        let ramp_start = Instant::now();
        let (job_tx, job_rx) = crossbeam_channel::bounded::<usize>(opts.viewers);
        let mut workers = Vec::new();
        for n in 0..opts.http_workers {
            let job_rx = job_rx.clone();
            let io_senders = io_senders.clone();
            let cert = &cert;
            let join_failures = &join_failures;
            workers.push(
                std::thread::Builder::new()
                    .name(format!("load-http-{n}"))
                    .spawn_scoped(s, move || {
                        let signal = SignalClient::new(opts.token.as_deref());
                        for index in job_rx {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            match join(index, opts, cert, &signal) {
                                Ok(viewer) => {
                                    let _ = io_senders[index % io_senders.len()].send(viewer);
                                }
                                Err(e) => {
                                    tracing::debug!(index, "join failed: {e}");
                                    join_failures
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push(ViewerOutcome::failed(index, failure_reason(&e)));
                                }
                            }
                        }
                    })?,
            );
        }
        drop(io_senders);

        let ramped = ramp(opts, ramp_start, &job_tx, stop);
        drop(job_tx);
        for w in workers {
            let _ = w.join();
        }
        let ramp_seconds = ramp_start.elapsed().as_secs_f64();

        let result = ramped.and_then(|()| {
            // The window, in the kernel timestamps' clock: set before it starts so that
            // the receive threads place every packet by its own arrival time.
            let start_ns = realtime_ns() + opts.settle.as_nanos() as i64;
            let end_ns = start_ns + opts.duration.as_nanos() as i64;
            control.window_start_ns.store(start_ns, Ordering::Relaxed);
            control.window_end_ns.store(end_ns, Ordering::Relaxed);
            wait_until_realtime(start_ns, stop)?;
            let start = opts.server.sample();
            wait_until_realtime(end_ns, stop)?;
            let end = opts.server.sample();
            wait(DRAIN, stop)?;
            Ok((start, end))
        });
        control.finish.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for t in io_threads {
            match t.join() {
                Ok(Ok(o)) => outcomes.push(o),
                Ok(Err(e)) => return Err(LoadError::Io(e)),
                Err(_) => {
                    return Err(LoadError::Io(std::io::Error::other(
                        "a receive thread panicked",
                    )))
                }
            }
        }
        let (start, end) = result?;
        Ok((outcomes, ramp_seconds, start, end))
    })?;

    let mut report = summarize(
        opts,
        outcomes,
        join_failures
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        ramp_seconds,
        [&idle_start, &idle_end, &start, &end],
    );
    if opts.delete_sessions {
        delete_sessions(opts, &report.per_viewer, stop);
    }
    report.tool.rss_mib = rss_kib(None).unwrap_or(0) as f64 / 1024.0;
    Ok(report)
}

/// Sends viewer `i`'s job at `start + i / rate`.
fn ramp(
    opts: &LoadOptions,
    start: Instant,
    jobs: &crossbeam_channel::Sender<usize>,
    stop: &AtomicBool,
) -> Result<(), LoadError> {
    for index in 0..opts.viewers {
        let at = start + Duration::from_secs_f64(index as f64 / opts.ramp_per_second);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(LoadError::Interrupted);
            }
            let now = Instant::now();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(POLL_STOP));
        }
        // Bounded by the number of viewers: never full.
        let _ = jobs.send(index);
    }
    Ok(())
}

/// Creates viewer `index`: socket, `Rtc`, offer, POST, answer.
fn join(
    index: usize,
    opts: &LoadOptions,
    cert: &DtlsCert,
    signal: &SignalClient,
) -> Result<NewViewer, ClientError> {
    let socket = UdpSocket::bind(SocketAddr::new(opts.bind, 0))?;
    socket.set_nonblocking(true)?;
    io::enable_receive_timestamps(&socket)?;
    let local = socket.local_addr()?;
    // RTP mode: every packet SRTP decrypts comes out as an `Event::RtpPacket` at once (no
    // depacketizer holding packets back while it waits for the ones not fed to it).
    let mut rtc = viewer_rtc_config()
        .set_rtp_mode(true)
        .set_dtls_cert(cert.clone())
        .build(Instant::now());
    let (offer, pending) = audio_offer(&mut rtc, local)?;
    let posted_ns = realtime_ns();
    let posted_at = Instant::now();
    let created = signal.post_offer(&opts.url, &offer.to_sdp_string())?;
    accept_answer(&mut rtc, pending, &created.answer, opts.bind)?;
    Ok(NewViewer {
        index,
        socket,
        rtc,
        posted_ns,
        posted_at,
        session_url: created.session_url,
    })
}

/// A failure's reason without its details (URLs, bodies), to count failures by kind.
fn failure_reason(e: &ClientError) -> String {
    match e {
        ClientError::Status { status, .. } => format!("POST: status {status}"),
        ClientError::Http(m) => format!("POST: {}", m.rsplit(": ").next().unwrap_or(m)),
        ClientError::Rtc(m) => format!("answer: {m}"),
        ClientError::Io(e) => format!("socket: {e}"),
    }
}

fn summarize(
    opts: &LoadOptions,
    io: Vec<IoOutcome>,
    join_failures: Vec<ViewerOutcome>,
    ramp_seconds: f64,
    [idle_start, idle_end, start, end]: [&Sample; 4],
) -> LoadReport {
    let window_ns = (end.at_ns - start.at_ns).max(1);
    let window_seconds = window_ns as f64 / 1e9;
    let time_expected = window_ns / FRAME_NS;

    let mut jitter = LogHistogram::default();
    let mut per_viewer = join_failures;
    for o in io {
        jitter.merge(&o.jitter);
        per_viewer.extend(o.viewers);
    }
    // Viewers whose job never ran (stopped early) are not here; none when not stopped.
    for v in &mut per_viewer {
        if v.failure.is_none() && v.window_received == 0 {
            v.failure = Some("no audio in the window".into());
        }
    }
    per_viewer.sort_by_key(|v| v.index);

    let mut failures = BTreeMap::new();
    let mut viewer_jitter = LogHistogram::default();
    let mut first_packet = LogHistogram::default();
    let mut connected_ms = LogHistogram::default();
    let (mut received, mut expected, mut lost, mut sampled, mut decrypted) = (0, 0, 0, 0, 0);
    let (mut connected, mut with_loss, mut short) = (0, 0, 0);
    for v in &per_viewer {
        sampled += v.rtp_sampled;
        decrypted += v.rtp_decrypted.min(v.rtp_sampled);
        if let Some(f) = &v.failure {
            *failures.entry(f.clone()).or_insert(0) += 1;
            continue;
        }
        connected += 1;
        received += v.window_received;
        expected += v.window_expected;
        lost += v.window_lost;
        with_loss += usize::from(v.window_lost > 0);
        short += usize::from((v.window_received as f64) < SHORT_SHARE * time_expected as f64);
        viewer_jitter.record((v.jitter_us * 1e3) as u64);
        if let Some(ms) = v.first_packet_ms {
            first_packet.record((ms * 1e6).max(0.0) as u64);
        }
        if let Some(ms) = v.connected_ms {
            connected_ms.record((ms * 1e6).max(0.0) as u64);
        }
    }
    let failed = per_viewer.len() - connected + opts.viewers.saturating_sub(per_viewer.len());

    let tool_cpu_ns = end.tool_cpu_ns.saturating_sub(start.tool_cpu_ns);
    let tool = ToolReport {
        cpu_percent: tool_cpu_ns as f64 / window_ns as f64 * 100.0,
        cpu_us_per_packet: (received > 0).then(|| tool_cpu_ns as f64 / 1e3 / received as f64),
        rss_mib: 0.0,
    };
    let server = (opts.server.pid.is_some() || opts.server.metrics_url.is_some()).then(|| {
        server_report(
            opts,
            [idle_start, idle_end, start, end],
            connected,
            received,
        )
    });

    LoadReport {
        label: String::new(),
        url: opts.url.clone(),
        viewers: opts.viewers,
        connected,
        failed,
        failures,
        ramp_per_second: opts.ramp_per_second,
        ramp_seconds,
        window_seconds,
        packets_received: received,
        packets_expected: expected,
        packets_lost: lost,
        loss_percent: if expected > 0 {
            lost as f64 / expected as f64 * 100.0
        } else {
            0.0
        },
        packets_per_second: received as f64 / window_seconds,
        viewers_with_loss: with_loss,
        viewers_short: short,
        jitter_us: Spread::of(&jitter, 1e3),
        viewer_jitter_us: Spread::of(&viewer_jitter, 1e3),
        first_packet_ms: Spread::of(&first_packet, 1e6),
        connected_ms: Spread::of(&connected_ms, 1e6),
        rtp_sampled: sampled,
        decrypt_failures: sampled - decrypted,
        server,
        tool,
        per_viewer,
    }
}

fn server_report(
    opts: &LoadOptions,
    [idle_start, idle_end, start, end]: [&Sample; 4],
    connected: usize,
    received: u64,
) -> ServerReport {
    let window_ns = (end.at_ns - start.at_ns).max(1) as f64;
    let cpu = match (start.server_cpu_ns, end.server_cpu_ns) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64),
        _ => None,
    };
    let idle_cpu_percent = match (idle_start.server_cpu_ns, idle_end.server_cpu_ns) {
        (Some(a), Some(b)) => {
            let ns = (idle_end.at_ns - idle_start.at_ns).max(1) as f64;
            Some(b.saturating_sub(a) as f64 / ns * 100.0)
        }
        _ => None,
    };
    let cpu_fraction = cpu.map(|c| c / window_ns);
    let rss_idle_kib = idle_end.server_rss_kib;
    let rss_steady_kib = end.server_rss_kib;
    let metric = |s: &Sample, name: &str| {
        s.metrics
            .as_deref()
            .and_then(|t| stats::prom_value(t, name))
    };
    let packets_sent = match (
        metric(start, "mixcast_packets_sent_total"),
        metric(end, "mixcast_packets_sent_total"),
    ) {
        (Some(a), Some(b)) => Some((b - a).max(0.0) as u64),
        _ => None,
    };
    let threads = |a: &Sample, b: &Sample| -> BTreeMap<String, f64> {
        let (Some(x), Some(y)) = (&a.server_threads, &b.server_threads) else {
            return BTreeMap::new();
        };
        let ns = (b.at_ns - a.at_ns).max(1) as f64;
        probe::thread_cpu_delta(x, y)
            .into_iter()
            .map(|(name, cpu)| (name, cpu as f64 / ns * 100.0))
            .collect()
    };
    let thread_cpu_percent = threads(start, end);
    let tx_percent: Option<f64> = (!thread_cpu_percent.is_empty()).then(|| {
        thread_cpu_percent
            .iter()
            .filter(|(name, _)| name.starts_with("mixcast-tx"))
            .map(|(_, p)| p)
            .sum()
    });
    ServerReport {
        pid: opts.server.pid,
        idle_thread_cpu_percent: threads(idle_start, idle_end),
        tx_cpu_us_per_packet: tx_percent
            .filter(|_| received > 0)
            .map(|p| p / 100.0 * window_ns / 1e3 / received as f64),
        listeners_per_tx_core: tx_percent
            .filter(|p| *p > 0.0)
            .map(|p| connected as f64 / (p / 100.0)),
        thread_cpu_percent,
        idle_cpu_percent,
        cpu_percent: cpu_fraction.map(|f| f * 100.0),
        cpu_us_per_packet: cpu
            .filter(|_| received > 0)
            .map(|c| c / 1e3 / received as f64),
        listeners_per_core: cpu_fraction
            .filter(|f| *f > 0.0)
            .map(|f| connected as f64 / f),
        rss_idle_kib,
        rss_steady_kib,
        kib_per_listener: match (rss_idle_kib, rss_steady_kib) {
            (Some(a), Some(b)) if connected > 0 => Some((b as f64 - a as f64) / connected as f64),
            _ => None,
        },
        packets_sent,
        tick_lateness: timing(
            start,
            end,
            "mixcast_tx_tick_lateness_seconds",
            "mixcast_tx_tick_lateness_max_seconds",
        ),
        fanout: timing(
            start,
            end,
            "mixcast_tx_fanout_seconds",
            "mixcast_tx_fanout_max_seconds",
        ),
    }
}

fn timing(start: &Sample, end: &Sample, name: &str, max_name: &str) -> Option<ServerTiming> {
    let before = PromHistogram::parse(start.metrics.as_deref()?, name)?;
    let text = end.metrics.as_deref()?;
    let window = PromHistogram::parse(text, name)?.since(&before);
    let us = |s: f64| s * 1e6;
    Some(ServerTiming {
        p50_us: window.quantile(0.5).map(us),
        p99_us: window.quantile(0.99).map(us),
        window_max_us: window.max_bound().map(us),
        max_since_start_us: stats::prom_value(text, max_name).map(us),
        ticks: window.count,
    })
}

/// DELETEs every session, in parallel, for at most 30 s.
fn delete_sessions(opts: &LoadOptions, viewers: &[ViewerOutcome], stop: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (tx, rx) = crossbeam_channel::unbounded();
    for url in viewers.iter().filter_map(|v| v.session_url.as_deref()) {
        let _ = tx.send(url);
    }
    drop(tx);
    std::thread::scope(|s| {
        for _ in 0..opts.http_workers {
            let rx = rx.clone();
            s.spawn(move || {
                let signal = SignalClient::new(opts.token.as_deref());
                for url in rx {
                    if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = signal.delete(url) {
                        tracing::debug!("DELETE {url}: {e}");
                    }
                }
            });
        }
    });
}

/// Sleeps for `d`, looking at `stop`.
fn wait(d: Duration, stop: &AtomicBool) -> Result<(), LoadError> {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(LoadError::Interrupted);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(POLL_STOP));
    }
}

/// Sleeps until CLOCK_REALTIME reaches `ns`, looking at `stop`.
fn wait_until_realtime(ns: i64, stop: &AtomicBool) -> Result<(), LoadError> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(LoadError::Interrupted);
        }
        let left = ns - realtime_ns();
        if left <= 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_nanos(left as u64).min(POLL_STOP));
    }
}

/// Formats runs side by side: one column per run, and the ratio of the first to the
/// second where it means something, when there are two.
pub fn table(runs: &[&LoadReport]) -> String {
    use std::fmt::Write;
    let f1 = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let f2 = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let spread = |s: Option<Spread>| {
        s.map_or("-".to_string(), |s| {
            format!("{:.1} / {:.1} / {:.1}", s.p50, s.p99, s.max)
        })
    };
    let timing = |t: Option<ServerTiming>| {
        t.map_or("-".to_string(), |t| {
            format!(
                "{} / {} / {} ({})",
                f1(t.p50_us),
                f1(t.p99_us),
                f1(t.window_max_us),
                f1(t.max_since_start_us)
            )
        })
    };
    type Row<'a> = (
        &'a str,
        Box<dyn Fn(&LoadReport) -> String + 'a>,
        Option<fn(&LoadReport) -> Option<f64>>,
    );
    let rows: Vec<Row> = vec![
        ("run", Box::new(|r| r.label.clone()), None),
        (
            "viewers connected / asked",
            Box::new(|r| format!("{} / {}", r.connected, r.viewers)),
            None,
        ),
        ("failed sessions", Box::new(|r| r.failed.to_string()), None),
        (
            "ramp: asked /s, took s",
            Box::new(|r| format!("{:.0}, {:.1}", r.ramp_per_second, r.ramp_seconds)),
            None,
        ),
        (
            "window s",
            Box::new(|r| format!("{:.1}", r.window_seconds)),
            None,
        ),
        (
            "packets/s received",
            Box::new(|r| format!("{:.0}", r.packets_per_second)),
            None,
        ),
        (
            "loss % (lost / expected)",
            Box::new(|r| {
                format!(
                    "{:.4} ({} / {})",
                    r.loss_percent, r.packets_lost, r.packets_expected
                )
            }),
            None,
        ),
        (
            "viewers with loss / short",
            Box::new(|r| format!("{} / {}", r.viewers_with_loss, r.viewers_short)),
            None,
        ),
        (
            "jitter |D| µs p50/p99/max",
            Box::new(move |r| spread(r.jitter_us)),
            None,
        ),
        (
            "viewer J µs p50/p99/max",
            Box::new(move |r| spread(r.viewer_jitter_us)),
            None,
        ),
        (
            "POST→first packet ms p50/p99/max",
            Box::new(move |r| spread(r.first_packet_ms)),
            None,
        ),
        (
            "POST→connected ms p50/p99/max",
            Box::new(move |r| spread(r.connected_ms)),
            None,
        ),
        (
            "SRTP sampled / failed",
            Box::new(|r| format!("{} / {}", r.rtp_sampled, r.decrypt_failures)),
            None,
        ),
        (
            "server CPU % (idle %)",
            Box::new(move |r| {
                let s = r.server.as_ref();
                format!(
                    "{} ({})",
                    f1(s.and_then(|s| s.cpu_percent)),
                    f1(s.and_then(|s| s.idle_cpu_percent))
                )
            }),
            Some(|r| r.server.as_ref()?.cpu_percent),
        ),
        (
            "server CPU µs/packet",
            Box::new(move |r| f2(r.server.as_ref().and_then(|s| s.cpu_us_per_packet))),
            Some(|r| r.server.as_ref()?.cpu_us_per_packet),
        ),
        (
            "listeners per core",
            Box::new(|r| {
                let l = r.server.as_ref().and_then(|s| s.listeners_per_core);
                l.map_or("-".into(), |l| format!("{l:.0}"))
            }),
            Some(|r| r.server.as_ref()?.listeners_per_core),
        ),
        (
            "TX threads: µs/packet, listeners/core",
            Box::new(|r| {
                let s = r.server.as_ref();
                format!(
                    "{}, {}",
                    f2(s.and_then(|s| s.tx_cpu_us_per_packet)),
                    s.and_then(|s| s.listeners_per_tx_core)
                        .map_or("-".into(), |l| format!("{l:.0}"))
                )
            }),
            Some(|r| r.server.as_ref()?.listeners_per_tx_core),
        ),
        (
            "server threads CPU % (idle %)",
            Box::new(|r| {
                let Some(s) = r.server.as_ref() else {
                    return "-".into();
                };
                s.thread_cpu_percent
                    .iter()
                    .map(|(name, p)| {
                        let idle = s.idle_thread_cpu_percent.get(name).copied().unwrap_or(0.0);
                        format!("{}:{p:.0}({idle:.0})", name.trim_start_matches("mixcast-"))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            None,
        ),
        (
            "server RSS MiB idle → steady",
            Box::new(|r| {
                let s = r.server.as_ref();
                let mib =
                    |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
                format!(
                    "{} → {}",
                    mib(s.and_then(|s| s.rss_idle_kib)),
                    mib(s.and_then(|s| s.rss_steady_kib))
                )
            }),
            None,
        ),
        (
            "server KiB per listener",
            Box::new(move |r| f1(r.server.as_ref().and_then(|s| s.kib_per_listener))),
            Some(|r| r.server.as_ref()?.kib_per_listener),
        ),
        (
            "tick lateness µs p50/p99/max (ever)",
            Box::new(move |r| timing(r.server.as_ref().and_then(|s| s.tick_lateness))),
            None,
        ),
        (
            "tick time µs p50/p99/max (ever)",
            Box::new(move |r| timing(r.server.as_ref().and_then(|s| s.fanout))),
            None,
        ),
        (
            "tool CPU % (µs/packet)",
            Box::new(move |r| {
                format!(
                    "{:.1} ({})",
                    r.tool.cpu_percent,
                    f2(r.tool.cpu_us_per_packet)
                )
            }),
            None,
        ),
        (
            "tool RSS MiB",
            Box::new(|r| format!("{:.0}", r.tool.rss_mib)),
            None,
        ),
    ];
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, cell, _)| runs.iter().map(|r| cell(r)).collect())
        .collect();
    let column = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let columns: Vec<usize> = (0..runs.len()).map(column).collect();
    let mut out = String::new();
    for ((name, _, ratio), cells) in rows.iter().zip(&cells) {
        let _ = write!(out, "{name:<width$}");
        for (cell, w) in cells.iter().zip(&columns) {
            let _ = write!(out, "  {cell:<w$}");
        }
        if let ([a, b], Some(ratio)) = (runs, ratio) {
            if let (Some(x), Some(y)) = (ratio(a), ratio(b)) {
                if y != 0.0 {
                    let _ = write!(out, "  ×{:.2}", x / y);
                }
            }
        }
        if runs.len() == 2 && *name == "run" {
            let _ = write!(out, "  ratio first/second");
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
    for r in runs {
        for (why, n) in &r.failures {
            let _ = writeln!(out, "{}: {n} failed: {why}", r.label);
        }
    }
    out
}
