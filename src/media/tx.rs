//! The spin-timed TX thread: owns an [`Egress`] (its peers and the streams' mixers) and
//! runs its 20 ms tick. Deadlines advance by exactly one frame from a fixed origin, so
//! lateness never accumulates; the thread parks until shortly before each deadline (woken
//! early by new datagrams or commands) and spins the rest of the way.
//! Never blocks on anything but its own park.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringbuf::traits::Consumer;
use str0m::{Candidate, IceCreds, Rtc};

use super::FRAME_DURATION;
use crate::config::Fanout;
use crate::engine::egress::{Egress, PublisherOptions};
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

/// When a tick is this late (the machine stalled), skip the missed frames instead of
/// sending a burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);

/// Everything a TX thread owns.
pub struct TxThread {
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
}

impl TxThread {
    /// Runs until a `Shutdown` command or until the command channel closes.
    pub fn run(self) {
        let TxThread {
            egress,
            socket,
            datagrams,
            commands,
            demux,
            sessions,
            metrics,
            fanout,
        } = self;
        let mut worker = Worker {
            egress,
            datagrams,
            commands,
            demux,
            sessions,
            metrics,
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
    egress: Egress,
    datagrams: OwnerQueueRx,
    commands: Receiver<TxCommand>,
    demux: Sender<DemuxCommand>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
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
                    }) => self
                        .egress
                        .add_viewer(now, key, *rtc, srtp_keys, &stream, tx),
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
                        self.egress.close_all(tx);
                        tx.flush();
                        self.reap();
                        return;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            while let Some(d) = self.datagrams.try_pop() {
                self.egress
                    .handle_receive(now, d.key, d.source, d.destination, d.data(), tx);
            }
            self.egress.handle_timeouts(now, tx);
            tx.flush();

            if now >= deadline {
                let late = now - deadline;
                self.metrics.tick_lateness.observe(late);
                if late > MAX_CATCH_UP {
                    let missed = late.as_nanos() / FRAME_DURATION.as_nanos();
                    tracing::warn!("TX thread stalled {late:?}: skipping {missed} frames");
                    deadline += FRAME_DURATION * missed as u32;
                }
                self.egress.tick(now, tx);
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
            if wake > now {
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

    /// Tells the demux and the session table about viewers that ended.
    fn reap(&mut self) {
        for ended in self.egress.take_ended() {
            let _ = self
                .demux
                .try_send(DemuxCommand::Unregister { key: ended.key });
            self.sessions.remove_key(ended.key);
        }
    }
}
