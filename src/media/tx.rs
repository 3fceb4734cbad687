//! The spin-timed TX thread: owns an [`Egress`] (its peers and the streams' mixers) and
//! runs its 20 ms tick. Deadlines advance by exactly one frame from a fixed origin, so
//! lateness never accumulates; the thread parks until shortly before each deadline (woken
//! early by new datagrams or commands) and spins the rest of the way.
//! Never blocks on anything but its own park.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringbuf::traits::Consumer;
use str0m::{Candidate, IceCreds, Rtc};

use super::FRAME_DURATION;
use crate::engine::egress::{Egress, PublisherOptions};
use crate::engine::{PeerKey, Transmitter};
use crate::metrics::Metrics;
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

struct SocketTx<'a> {
    socket: &'a UdpSocket,
}

impl Transmitter for SocketTx<'_> {
    fn send(&mut self, _source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        // A failed send (peer gone, buffer full) loses one packet; RTP tolerates that.
        if let Err(e) = self.socket.send_to(data, destination) {
            tracing::trace!(%destination, "send: {e}");
        }
    }
}

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
}

impl TxThread {
    /// Runs until a `Shutdown` command or until the command channel closes.
    pub fn run(mut self) {
        let mut deadline = Instant::now() + FRAME_DURATION;
        loop {
            let now = Instant::now();
            let mut tx = SocketTx {
                socket: &self.socket,
            };
            loop {
                match self.commands.try_recv() {
                    Ok(TxCommand::AddViewer { key, rtc, stream }) => {
                        self.egress.add_viewer(now, key, *rtc, &stream, &mut tx)
                    }
                    Ok(TxCommand::AddPublisher {
                        key,
                        rtc,
                        stream,
                        options,
                    }) => self
                        .egress
                        .add_publisher(now, key, *rtc, &stream, options, &mut tx),
                    Ok(TxCommand::RemoveViewer { key }) => self.egress.remove_viewer(key, &mut tx),
                    Ok(TxCommand::RemoteCandidate { key, candidate }) => self
                        .egress
                        .add_remote_candidate(key, candidate, now, &mut tx),
                    Ok(TxCommand::IceRestart { key, remote, reply }) => {
                        let _ = reply.send(self.egress.restart_ice(key, remote, now, &mut tx));
                    }
                    Ok(TxCommand::Shutdown)
                    | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.egress.close_all(&mut tx);
                        self.reap();
                        return;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            while let Some(d) = self.datagrams.try_pop() {
                self.egress
                    .handle_receive(now, d.key, d.source, d.destination, d.data(), &mut tx);
            }
            self.egress.handle_timeouts(now, &mut tx);

            if now >= deadline {
                let late = now - deadline;
                self.metrics.tick_lateness.observe(late);
                if late > MAX_CATCH_UP {
                    let missed = late.as_nanos() / FRAME_DURATION.as_nanos();
                    tracing::warn!("TX thread stalled {late:?}: skipping {missed} frames");
                    deadline += FRAME_DURATION * missed as u32;
                }
                self.egress.tick(now, &mut tx);
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
