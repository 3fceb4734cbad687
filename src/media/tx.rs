//! The spin-timed TX thread: owns an [`Egress`] (its peers and the streams' mixers) and
//! runs its 20 ms tick. Deadlines advance by exactly one frame from a fixed origin, so
//! lateness never accumulates; the thread parks until shortly before each deadline (woken
//! early by new datagrams or commands) and spins the rest of the way.
//! Never blocks on anything but its own park.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringbuf::traits::{Consumer, Producer};
use str0m::{Candidate, IceCreds, Rtc};

use super::FRAME_DURATION;
use crate::config::Fanout;
use crate::engine::egress::{Egress, Goodbyes, PublisherOptions, TickFrames};
use crate::engine::PeerKey;
use crate::metrics::Metrics;
use crate::net::batch::BatchSender;
use crate::net::dtls::SrtpKeys;
use crate::net::send::{NaiveSender, Outbox};
use crate::net::{DemuxCommand, OwnerQueueRx};
use crate::sessions::Sessions;

/// Commands signalling sends to a TX thread. Capacity of that channel:
pub const TX_COMMAND_CAPACITY: usize = 1024;

/// What a TX thread is asked to do.
pub enum TxCommand {
    /// Take over a negotiated viewer.
    AddViewer {
        /// Its key.
        key: PeerKey,
        /// Its `Rtc`, fresh from `accept_offer`.
        rtc: Box<Rtc>,
        /// Its SRTP keys, for the `direct` fan-out ([`crate::engine::offer::Negotiated`]).
        srtp_keys: Option<SrtpKeys>,
        /// The stream it watches.
        stream: String,
        /// The publisher whose mix-minus it hears (`?minus=`; such viewers are placed on
        /// the mixing thread).
        minus: Option<PeerKey>,
    },
    /// Take over a negotiated publisher; its audio joins the stream's mix (the stream is
    /// created if needed).
    AddPublisher {
        /// Its key.
        key: PeerKey,
        /// Its `Rtc`, fresh from `accept_offer`.
        rtc: Box<Rtc>,
        /// The stream it feeds.
        stream: String,
        /// Gain and ICE mode.
        options: PublisherOptions,
    },
    /// End a viewer or publisher (DELETE).
    RemoveViewer {
        /// Its key.
        key: PeerKey,
    },
    /// A trickled candidate for a viewer.
    RemoteCandidate {
        /// Its key.
        key: PeerKey,
        /// The candidate.
        candidate: Candidate,
    },
    /// ICE restart: the client's new credentials; the reply carries ours (None: no such
    /// session, nothing changed).
    IceRestart {
        /// Its key.
        key: PeerKey,
        /// The client's new ufrag and password.
        remote: IceCreds,
        /// Where the new local credentials go.
        reply: tokio::sync::oneshot::Sender<Option<IceCreds>>,
    },
    /// Close every session and stop.
    Shutdown,
}

/// Wake this long before a tick's deadline and spin the rest: covers the scheduler's wake-up
/// latency (tens of µs on an idle Linux box, more under load).
const SPIN_MARGIN: Duration = Duration::from_micros(1000);

/// Work between two ticks that takes longer than this is logged (debug), by part.
const SLOW_ROUND: Duration = Duration::from_millis(10);

/// A fed TX thread (see [`TxRole::Fed`]) with no timer due parks at most this long between
/// frames (it is unparked by each frame, datagram and command).
const FED_PARK_MAX: Duration = Duration::from_millis(100);

/// Datagrams handled between two looks at the clock for the tick's deadline (a look costs
/// about 20 ns; a datagram from 1 µs for media to about 0.2 ms for a DTLS flight).
const DEADLINE_CHECK_EVERY: usize = 4;

/// When a tick is this late (the machine stalled), skip the missed frames instead of
/// sending a burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);

/// How long a TX thread spends on goodbyes at shutdown, whatever its number of peers
/// (measured: well under 1 ms for a few peers; the peers left when it runs out end
/// without one, counted as skipped).
pub const GOODBYE_BUDGET: Duration = Duration::from_millis(500);

/// The goodbyes of every TX thread at shutdown, for the server's one log line.
#[derive(Debug, Default)]
pub struct GoodbyeTally {
    total: std::sync::Mutex<(Goodbyes, Duration)>,
}

impl GoodbyeTally {
    fn add(&self, done: Goodbyes, took: Duration) {
        let mut t = self.total.lock().unwrap_or_else(|e| e.into_inner());
        t.0.viewers += done.viewers;
        t.0.publishers += done.publishers;
        t.0.unconnected += done.unconnected;
        t.0.skipped += done.skipped;
        // The threads say goodbye in parallel: the slowest one is the time it took.
        t.1 = t.1.max(took);
    }

    /// The sum over the threads, and the longest any of them took.
    pub fn total(&self) -> (Goodbyes, Duration) {
        *self.total.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mixing thread's side of a link to another TX thread: each tick's frames.
pub struct FramesTx {
    /// The ring the frames go into.
    pub ring: FramesProd,
    /// The thread, unparked after each push.
    pub thread: std::thread::Thread,
}

/// Ticks a TX thread that does not mix may have waiting. Each holds a reference to the
/// tick's frames, not the frames: a thread this far behind drops ticks (counted in
/// `mixcast_tx_frames_dropped_total`) rather than sending a burst later.
pub const FRAMES_QUEUE_CAPACITY: usize = 8;

/// Producer half of a frames ring.
pub type FramesProd = ringbuf::HeapProd<Arc<TickFrames>>;
/// Consumer half of a frames ring.
pub type FramesCons = ringbuf::HeapCons<Arc<TickFrames>>;

/// Makes one frames ring.
pub fn frames_queue() -> (FramesProd, FramesCons) {
    use ringbuf::traits::Split;
    ringbuf::HeapRb::<Arc<TickFrames>>::new(FRAMES_QUEUE_CAPACITY).split()
}

/// What a TX thread does besides serving its own peers.
pub enum TxRole {
    /// It mixes and encodes on its 20 ms clock, and hands each tick's frames to the other
    /// TX threads (none with `--tx-threads 1`).
    Mixing {
        /// The other TX threads.
        others: Vec<FramesTx>,
    },
    /// It ticks when the mixing thread's frames arrive (its `Egress` is a mirror).
    Fed {
        /// Where the frames arrive.
        frames: FramesCons,
    },
}

/// Everything a TX thread owns.
pub struct TxThread {
    /// Its index among the TX threads (0 mixes).
    pub index: usize,
    /// Mixing or fed.
    pub role: TxRole,
    /// Viewers per TX thread, which signalling balances: this thread decrements its own
    /// entry when a viewer ends.
    pub load: Arc<[std::sync::atomic::AtomicUsize]>,
    /// The engine.
    pub egress: Egress,
    /// The socket to send on (a clone of the one the RX thread reads).
    pub socket: UdpSocket,
    /// Datagrams routed to this thread.
    pub datagrams: OwnerQueueRx,
    /// Commands from signalling.
    pub commands: Receiver<TxCommand>,
    /// Routing updates for the RX thread.
    pub demux: Sender<DemuxCommand>,
    /// The shared session table, cleaned when a viewer ends.
    pub sessions: Arc<Sessions>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How datagrams go to the kernel.
    pub fanout: Fanout,
    /// Where its goodbyes at shutdown are counted.
    pub goodbyes: Arc<GoodbyeTally>,
}

impl TxThread {
    /// Runs until a `Shutdown` command or until the command channel closes.
    pub fn run(self) {
        let TxThread {
            index,
            role,
            load,
            egress,
            socket,
            datagrams,
            commands,
            demux,
            sessions,
            metrics,
            fanout,
            goodbyes,
        } = self;
        let mut worker = Worker {
            index,
            role,
            load,
            egress,
            datagrams,
            commands,
            demux,
            sessions,
            metrics,
            goodbyes,
        };
        match fanout {
            Fanout::Naive => worker.run(&mut NaiveSender::new(socket)),
            Fanout::Batched | Fanout::Direct => {
                let metrics = worker.metrics.clone();
                worker.run(&mut BatchSender::new(socket, metrics))
            }
        }
    }
}

/// A TX thread's state, apart from how it sends.
struct Worker {
    index: usize,
    role: TxRole,
    load: Arc<[std::sync::atomic::AtomicUsize]>,
    egress: Egress,
    datagrams: OwnerQueueRx,
    commands: Receiver<TxCommand>,
    demux: Sender<DemuxCommand>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    goodbyes: Arc<GoodbyeTally>,
}

impl Worker {
    fn run(&mut self, tx: &mut impl Outbox) {
        let mut deadline = Instant::now() + FRAME_DURATION;
        loop {
            let now = Instant::now();
            loop {
                match self.commands.try_recv() {
                    Ok(TxCommand::AddViewer {
                        key,
                        rtc,
                        srtp_keys,
                        stream,
                        minus,
                    }) => {
                        self.egress
                            .add_viewer(now, key, *rtc, srtp_keys, &stream, tx);
                        if let Some(publisher) = minus {
                            self.egress.hear_minus(key, publisher);
                        }
                    }
                    Ok(TxCommand::AddPublisher {
                        key,
                        rtc,
                        stream,
                        options,
                    }) => self
                        .egress
                        .add_publisher(now, key, *rtc, &stream, options, tx),
                    Ok(TxCommand::RemoveViewer { key }) => self.egress.remove_viewer(key, tx),
                    Ok(TxCommand::RemoteCandidate { key, candidate }) => {
                        self.egress.add_remote_candidate(key, candidate, now, tx)
                    }
                    Ok(TxCommand::IceRestart { key, remote, reply }) => {
                        let _ = reply.send(self.egress.restart_ice(key, remote, now, tx));
                    }
                    Ok(TxCommand::Shutdown)
                    | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.say_goodbyes(tx);
                        self.reap();
                        return;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            let t1 = Instant::now();
            let mut received = 0usize;
            // Every datagram now, but not past the mixing thread's tick: at its deadline
            // the round stops, the tick goes out, and the next round (at once, no park)
            // goes on with the rest of the queue. A burst of DTLS handshakes (about 0.2 ms
            // each, more on a busy machine) used to hold the tick back for all of them:
            // `examples/soak.rs` measured stalls of 200 to 430 ms during bursts of 150
            // joins. Nothing is deferred past one tick: deferring handshakes longer was
            // measured to cost more (2,000 viewers joining at 250/s: POST-to-first-packet
            // p99 1.9 s instead of 0.25 s, the deferred handshakes waiting for their 1 s
            // resend).
            let mixing = matches!(self.role, TxRole::Mixing { .. });
            let mut backlog = false;
            while let Some(d) = self.datagrams.try_pop() {
                received += 1;
                self.egress
                    .handle_receive(now, d.key, d.source, d.destination, d.data(), tx);
                if mixing
                    && received.is_multiple_of(DEADLINE_CHECK_EVERY)
                    && Instant::now() >= deadline
                {
                    backlog = true;
                    break;
                }
            }
            let t2 = Instant::now();
            self.egress.handle_timeouts(now, tx);
            tx.flush();
            let t3 = Instant::now();
            if t3 - now > SLOW_ROUND {
                tracing::debug!(
                    commands = ?(t1 - now),
                    datagrams = ?(t2 - t1),
                    received,
                    timers = ?(t3 - t2),
                    "TX thread: a slow round between ticks"
                );
            }

            if let TxRole::Fed { frames } = &mut self.role {
                // Every tick that arrived, in order: a late thread catches up, within the
                // ring's few ticks.
                while let Some(f) = frames.try_pop() {
                    self.metrics
                        .tick_lateness
                        .observe(now.saturating_duration_since(f.deadline));
                    self.egress.take_frames(&f, now);
                    self.egress.fan_out(now, tx);
                    self.egress.handle_timeouts(now, tx);
                    tx.flush();
                    self.metrics.fanout.observe(now.elapsed());
                }
                self.reap();
                let now = Instant::now();
                match self.egress.next_timeout() {
                    Some(t) if t <= now => {}
                    Some(t) => std::thread::park_timeout((t - now).min(FED_PARK_MAX)),
                    None => std::thread::park_timeout(FED_PARK_MAX),
                }
                continue;
            }

            // The round may have run into the deadline: tick now, measured from now.
            let now = Instant::now();
            if now >= deadline {
                let late = now - deadline;
                self.metrics.tick_lateness.observe(late);
                if late > MAX_CATCH_UP {
                    let missed = late.as_nanos() / FRAME_DURATION.as_nanos();
                    tracing::warn!("TX thread stalled {late:?}: skipping {missed} frames");
                    deadline += FRAME_DURATION * missed as u32;
                }
                self.egress.encode(now);
                if let TxRole::Mixing { others } = &mut self.role {
                    if !others.is_empty() {
                        // Shared by reference: the other threads start their fan-out now,
                        // in parallel with ours.
                        let frames = Arc::new(self.egress.tick_frames(deadline));
                        for o in others.iter_mut() {
                            if o.ring.try_push(frames.clone()).is_err() {
                                self.metrics
                                    .tx_frames_dropped
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            o.thread.unpark();
                        }
                    }
                }
                self.egress.fan_out(now, tx);
                // The naive path's packets leave on the timeouts the tick's writes set for
                // `now`: send them here, so that the fan-out time covers them in both modes.
                self.egress.handle_timeouts(now, tx);
                tx.flush();
                self.metrics.fanout.observe(now.elapsed());
                deadline += FRAME_DURATION;
            }
            self.reap();

            let wake = match self.egress.next_timeout() {
                Some(t) if t < deadline => t,
                _ => deadline,
            };
            let now = Instant::now();
            if wake > now && !backlog {
                let left = wake - now;
                if wake == deadline && left <= SPIN_MARGIN {
                    std::hint::spin_loop();
                } else {
                    let sleep = if wake == deadline {
                        left - SPIN_MARGIN
                    } else {
                        left
                    };
                    std::thread::park_timeout(sleep);
                }
            }
        }
    }

    /// Ends every peer with a goodbye (RTCP BYE, DTLS close_notify) within
    /// [`GOODBYE_BUDGET`], flushed to the socket before the thread returns, and adds what
    /// it did to the server's tally.
    fn say_goodbyes(&mut self, tx: &mut impl Outbox) {
        let started = Instant::now();
        let done = self
            .egress
            .close_all(tx, || started.elapsed() < GOODBYE_BUDGET);
        tx.flush();
        self.goodbyes.add(done, started.elapsed());
    }

    /// Tells the demux and the session table about viewers that ended, and the session
    /// table about those that connected (no longer pending).
    fn reap(&mut self) {
        for key in self.egress.take_connected() {
            if let Some((id, e)) = self.sessions.connected(key) {
                tracing::info!(
                    key,
                    "{} {id} of stream {:?} from {}: connected after {} ms",
                    e.role.noun(),
                    e.stream,
                    crate::signal::endpoint::client_text(e.client),
                    e.connected_after.unwrap_or_default().as_millis()
                );
            }
        }
        for ended in self.egress.take_ended() {
            let _ = self
                .demux
                .try_send(DemuxCommand::Unregister { key: ended.key });
            let Some((id, e)) = self.sessions.remove_key(ended.key) else {
                continue;
            };
            if e.role == crate::engine::offer::Role::Viewer {
                self.load[self.index].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            let media = match e.connected_after {
                Some(_) => media_text(e.role, ended.tally),
                None => ", never connected".to_string(),
            };
            tracing::info!(
                key = ended.key,
                reason = ended.reason.as_str(),
                packets = ended.tally.packets,
                lost = ended.tally.lost,
                "{} {id} of stream {:?} from {}: ended ({}) after {:.1} s{media}",
                e.role.noun(),
                e.stream,
                crate::signal::endpoint::client_text(e.client),
                ended.reason.as_str(),
                e.created.elapsed().as_secs_f64()
            );
        }
    }
}

/// The media part of a session's last line: ", 615 packets sent, 3 lost (0.5 %)".
fn media_text(role: crate::engine::offer::Role, tally: crate::engine::egress::Tally) -> String {
    let (verb, whose) = match role {
        crate::engine::offer::Role::Viewer => ("sent", "as it reported"),
        crate::engine::offer::Role::Publisher => ("received", "missing"),
    };
    let n = tally.packets;
    let lost = match tally.lost {
        None => "no loss report yet".to_string(),
        Some(0) => format!("none lost ({whose})"),
        Some(l) => {
            // A viewer's lost packets are among those sent; a publisher's are not among
            // those received.
            let of = match role {
                crate::engine::offer::Role::Viewer => n,
                crate::engine::offer::Role::Publisher => n + l,
            };
            let pct = 100.0 * l as f64 / of.max(1) as f64;
            format!("{l} lost ({pct:.1} %, {whose})")
        }
    };
    format!(", {n} packets {verb}, {lost}")
}
