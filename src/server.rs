//! Starting and stopping a whole server: the UDP socket and its RX thread, the TX thread,
//! and HTTP signalling on a tokio runtime of its own.
//!
//! ```text
//!  HTTP (axum) ──TxCommand──► TX thread 0 (Egress: mixers, encoder, peers' Rtc) ──► UDP send
//!      │          │                ▲      │ each tick's frames (SPSC ring, Arc)
//!      │          └──TxCommand──► TX threads 1.. (Egress::mirror: viewers' Rtc) ──► UDP send
//!      │                          ▲
//!      └──DemuxCommand──► RX thread ──Datagram ring per TX thread (one UDP port for every peer)
//! ```

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::egress::{Egress, StreamMix};
use crate::media::mixer::Mixer;
use crate::media::opus::Encoder;
use crate::media::sources;
use crate::media::tx::{
    frames_queue, FramesTx, GoodbyeTally, TxCommand, TxRole, TxThread, TX_COMMAND_CAPACITY,
};
use crate::metrics::Metrics;
use crate::net::{owner_queue, rx, socket};
use crate::record::{Recorder, Recordings};
use crate::sessions::Sessions;
use crate::signal::{self, AppState, Shared, TxHandle, TxThreads};
use crate::streams::StreamDirectory;

/// Routing updates queued for the RX thread (one per session start, restart and end).
const DEMUX_COMMAND_CAPACITY: usize = 4096;

/// How long shutdown waits for the threads before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is invalid (a source cannot be opened, a bad TLS file...).
    #[error("config: {0}")]
    Config(String),
    /// The OS refused a thread or a runtime.
    #[error("cannot start: {0}")]
    Os(#[from] std::io::Error),
}

/// A running server. Its threads and runtime stop on [`Server::shutdown`] (or drop).
pub struct Server {
    http_addr: SocketAddr,
    udp_addr: SocketAddr,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    tx: Vec<TxHandle>,
    stop_rx: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    goodbyes: Arc<GoodbyeTally>,
}

impl Server {
    /// Starts everything and returns once the sockets are bound.
    pub fn start(config: Config) -> Result<Server, StartError> {
        // The certificate first, so that a bad one stops start-up before any thread runs.
        // Our own reading of the PEM files, with the crypto provider installed
        // (signal::tls says why rustls cannot choose one itself).
        let https = match &config.tls {
            Some(tls) => Some(Arc::new(
                signal::tls::server_config(tls)
                    .map_err(|e| StartError::Config(format!("TLS: {e}")))?,
            )),
            None => None,
        };
        // The recording folder next, for the same reason: one line and exit 2 if it
        // cannot be made or written.
        if config.record.any() {
            crate::record::prepare_dir(&config.record.dir).map_err(StartError::Config)?;
        }
        let metrics = Arc::new(Metrics::default());
        let recordings = Arc::new(Recordings::default());
        let sessions = Arc::new(Sessions::with_max_pending_per_ip(config.max_pending_per_ip));

        let mut mixes = Vec::new();
        for s in &config.streams {
            let mut mixer = Mixer::new();
            for input in &s.sources {
                let source = sources::open(&input.spec)
                    .map_err(|e| StartError::Config(format!("stream {}: {e}", s.name)))?;
                mixer.add(source, input.gain);
            }
            let encoder = Encoder::new(config.bitrate)
                .map_err(|e| StartError::Config(format!("stream {}: {e}", s.name)))?;
            mixes.push(StreamMix::new(s.name.clone(), mixer, encoder).with_video_source(s.video));
        }
        let directory = Arc::new(
            StreamDirectory::new(config.streams.iter().map(|s| {
                (
                    s.name.clone(),
                    s.sources.iter().map(|i| i.spec.to_string()).collect(),
                )
            }))
            .with_max_on_demand(config.max_streams),
        );

        let udp_bind = SocketAddr::new(config.bind, config.udp_port);
        let udp = socket::bind_udp(udp_bind).map_err(|source| StartError::Bind {
            addr: udp_bind,
            source,
        })?;
        let udp_addr = udp.local_addr()?;
        let candidates = socket::candidate_addrs(udp_addr, &config.public_ips);
        let http_bind = SocketAddr::new(config.bind, config.http_port);
        let http = TcpListener::bind(http_bind).map_err(|source| StartError::Bind {
            addr: http_bind,
            source,
        })?;
        http.set_nonblocking(true)?;
        let http_addr = http.local_addr()?;

        let (demux_tx, demux_rx) = crossbeam_channel::bounded(DEMUX_COMMAND_CAPACITY);
        let goodbyes = Arc::new(GoodbyeTally::default());
        let threads = config.tx_threads.max(1);
        let load: Arc<[std::sync::atomic::AtomicUsize]> = (0..threads)
            .map(|_| std::sync::atomic::AtomicUsize::new(0))
            .collect();
        // TX thread `index` ("mixcast-tx", then "mixcast-tx1"...), its engine and queues.
        let spawn_tx = |index: usize,
                        role: TxRole,
                        mut egress: Egress,
                        datagrams,
                        commands|
         -> std::io::Result<JoinHandle<()>> {
            egress.set_fanout(config.fanout);
            let thread = TxThread {
                index,
                role,
                load: load.clone(),
                egress,
                socket: udp.try_clone()?,
                datagrams,
                commands,
                demux: demux_tx.clone(),
                sessions: sessions.clone(),
                metrics: metrics.clone(),
                fanout: config.fanout,
                goodbyes: goodbyes.clone(),
            };
            let name = match index {
                0 => "mixcast-tx".to_string(),
                i => format!("mixcast-tx{i}"),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || thread.run())
        };
        // Threads 1.. first: the mixing thread needs their handles to feed them.
        let mut fed = Vec::new();
        let mut others = Vec::new();
        for index in 1..threads {
            let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(TX_COMMAND_CAPACITY);
            let (queue_tx, queue_rx) = owner_queue();
            let (frames_tx, frames_rx) = frames_queue();
            let egress = Egress::mirror(directory.clone(), metrics.clone());
            let role = TxRole::Fed { frames: frames_rx };
            let join = spawn_tx(index, role, egress, queue_rx, cmd_rx)?;
            others.push(FramesTx {
                ring: frames_tx,
                thread: join.thread().clone(),
            });
            fed.push((cmd_tx, queue_tx, join));
        }
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(TX_COMMAND_CAPACITY);
        let (queue_tx, queue_rx) = owner_queue();
        let mut egress = Egress::new(mixes, directory.clone(), config.bitrate, metrics.clone());
        let mut record_join = None;
        if config.record.any() {
            let (recorder, join) =
                Recorder::start(&config.record, metrics.clone(), recordings.clone())?;
            egress.set_recorder(recorder);
            record_join = Some(join);
            tracing::info!(
                "recording {} into {} (a new file every {} s of a stream)",
                config
                    .record
                    .streams
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                config.record.dir.display(),
                config.record.segment.as_secs()
            );
        }
        let role = TxRole::Mixing { others };
        let tx_join = spawn_tx(0, role, egress, queue_rx, cmd_rx)?;
        let mut handles = vec![TxHandle {
            commands: cmd_tx,
            thread: tx_join.thread().clone(),
        }];
        let mut owners = vec![rx::Owner {
            queue: queue_tx,
            thread: tx_join.thread().clone(),
        }];
        let mut joins = vec![tx_join];
        for (commands, queue, join) in fed {
            handles.push(TxHandle {
                commands,
                thread: join.thread().clone(),
            });
            owners.push(rx::Owner {
                queue,
                thread: join.thread().clone(),
            });
            joins.push(join);
        }

        let stop_rx = Arc::new(AtomicBool::new(false));
        let rx_join = {
            let (metrics, stop) = (metrics.clone(), stop_rx.clone());
            std::thread::Builder::new()
                .name("mixcast-rx".into())
                .spawn(move || rx::run(udp, owners, demux_rx, metrics, stop))?
        };

        let state = AppState(Arc::new(Shared {
            directory,
            auth: config.auth.clone(),
            candidates: candidates.clone(),
            ice_servers: config.ice_servers.clone(),
            max_viewers: config.max_viewers,
            max_publishers: config.max_publishers,
            sessions: sessions.clone(),
            metrics: metrics.clone(),
            tx: TxThreads {
                handles: handles.clone(),
                load,
            },
            demux: demux_tx,
            next_key: AtomicU64::new(1),
            recordings,
            event_streams: Default::default(),
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mixcast-http")
            .enable_all()
            .build()?;
        let (http_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = signal::app(state);
        // One accept loop for HTTP and HTTPS, with the timeouts and caps (signal::listen).
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(http)?
        };
        runtime.spawn(signal::listen::serve(
            listener,
            https,
            app,
            config.http,
            stopped,
        ));
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            "signalling on {scheme}://{http_addr}/ (WHIP: /{{stream}}/whip, WHEP: /{{stream}}/whep)"
        );
        tracing::info!(
            "media on udp {udp_addr}; host candidates: {}",
            candidates
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for s in &config.streams {
            let srcs: Vec<String> = s.sources.iter().map(|i| i.spec.to_string()).collect();
            if srcs.is_empty() {
                tracing::info!("stream {:?} plays its publishers only", s.name);
            } else {
                tracing::info!("stream {:?} plays {}", s.name, srcs.join(" + "));
            }
        }
        tracing::info!(
            "fan-out: {:?}, {} TX thread{}",
            config.fanout,
            threads,
            if threads == 1 { "" } else { "s" }
        );
        log_publish_rule(&config);

        Ok(Server {
            http_addr,
            udp_addr,
            sessions,
            metrics,
            tx: handles,
            stop_rx,
            threads: {
                joins.push(rx_join);
                // Last: it closes the files once the mixing TX thread has stopped.
                joins.extend(record_join);
                joins
            },
            http_stop: Some(http_stop),
            runtime: Some(runtime),
            goodbyes,
        })
    }

    /// Where HTTP listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The UDP port's address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Live WebRTC sessions (viewers and publishers).
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions answered for HTTP clients at `ip` and not yet connected.
    pub fn pending_sessions(&self, ip: std::net::IpAddr) -> usize {
        self.sessions.pending_from(ip)
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Blocks until Ctrl-C or SIGTERM. Logs "ready" once both are caught (a signal before
    /// that ends the process the default way, with nothing yet to say goodbye to).
    pub fn wait_for_signal(&self) {
        let Some(rt) = &self.runtime else { return };
        rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(mut int), Ok(mut term)) => {
                        tracing::info!("ready; Ctrl-C or SIGTERM stops");
                        tokio::select! {
                            _ = int.recv() => {},
                            _ = term.recv() => {},
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!("cannot catch SIGINT and SIGTERM: {e}; Ctrl-C stops");
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                tracing::info!("ready; Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        });
    }

    /// Stops accepting, closes sessions, joins the threads (bounded by a grace period).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let started = Instant::now();
        if let Some(s) = self.http_stop.take() {
            let _ = s.send(());
        }
        // A full queue still sees the disconnect: the TX thread exits when the channel closes.
        for tx in &self.tx {
            tx.send(TxCommand::Shutdown);
        }
        self.stop_rx.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            while !t.is_finished() && started.elapsed() < SHUTDOWN_GRACE {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("a thread did not stop in time; leaving it");
            }
        }
        let (said, took) = self.goodbyes.total();
        tracing::info!(
            unconnected = said.unconnected,
            skipped = said.skipped,
            "sent goodbyes (RTCP BYE, DTLS close_notify) to {} viewers and {} publishers in {took:?}",
            said.viewers,
            said.publishers
        );
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(300));
        }
        tracing::info!("stopped in {:?}", started.elapsed());
    }
}

/// Says at start-up who may publish; warns when anyone on the network may.
fn log_publish_rule(config: &Config) {
    let auth = &config.auth;
    let loopback_only = config.bind.is_loopback();
    if auth.allow_public_publish && !loopback_only {
        let open: Vec<&str> = if auth.publish.default.is_empty() {
            vec!["every stream without its own publish token"]
        } else {
            Vec::new()
        };
        if !open.is_empty() {
            tracing::warn!(
                "--allow-public-publish: ANYONE who can reach this server may publish to {}",
                open.join(", ")
            );
        }
    } else if !auth.publish.any() {
        tracing::info!(
            "publishing (WHIP) is open to clients on this machine only; set --publish-token to let others publish"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.stop();
        }
    }
}
