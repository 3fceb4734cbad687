//! The RX thread: reads the UDP socket, routes each datagram through the [`Demux`] and
//! pushes it onto its owner's ring, then wakes the owner. Never blocks on an owner: a full
//! ring drops the datagram and counts it.
//!
//! Reads go through `quinn-udp`, which asks the kernel for each datagram's destination
//! address (IP_PKTINFO) and coalesces bursts (GRO): a socket bound to `0.0.0.0` must tell
//! str0m which of our addresses a peer used, or ICE cannot pair the candidates.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ringbuf::traits::Producer;

use super::demux::{Demux, Route, Routed};
use super::{Datagram, DemuxCommand, OwnerQueueTx, MAX_DATAGRAM};

/// The receive buffer: room for a GRO batch of datagrams.
const RECV_BUFFER: usize = 64 * 1024;
use crate::metrics::Metrics;

/// How often the RX thread wakes with no traffic to look at commands and shutdown.
const IDLE_WAKE: Duration = Duration::from_millis(50);

/// An owner as the RX thread sees it: its ring and its thread, to unpark.
pub struct Owner {
    /// The ring's producer half.
    pub queue: OwnerQueueTx,
    /// The owner's thread.
    pub thread: Thread,
}

/// Runs the RX loop until `stop` is set.
pub fn run(
    socket: UdpSocket,
    mut owners: Vec<Owner>,
    commands: Receiver<DemuxCommand>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) {
    if let Err(e) = socket.set_read_timeout(Some(IDLE_WAKE)) {
        tracing::error!("UDP socket: cannot set a read timeout: {e}; RX thread stops");
        return;
    }
    let state = match quinn_udp::UdpSocketState::new((&socket).into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                "UDP socket: cannot enable destination addresses: {e}; RX thread stops"
            );
            return;
        }
    };
    // quinn-udp makes the socket non-blocking, which voids the read timeout above: the
    // thread would spin on an idle socket (a whole core, found by the load tool). Blocking
    // again, it sleeps in recvmsg until a datagram or the timeout.
    if let Err(e) = socket.set_nonblocking(false) {
        tracing::error!("UDP socket: cannot make it blocking: {e}; RX thread stops");
        return;
    }
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("UDP socket: no local address: {e}; RX thread stops");
            return;
        }
    };
    let mut demux = Demux::default();
    let mut refused = RefusedLog::default();
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut meta = [quinn_udp::RecvMeta::default()];
    while !stop.load(Ordering::Relaxed) {
        let received = {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            state.recv((&socket).into(), &mut bufs, &mut meta)
        };
        // Commands first: a session registered just before its first STUN request must
        // be known when that request is routed.
        for cmd in commands.try_iter() {
            match cmd {
                DemuxCommand::Register {
                    ufrag,
                    pwd,
                    key,
                    owner,
                } => demux.register(ufrag, &pwd, Route { key, owner }),
                DemuxCommand::Unregister { key } => demux.unregister(key),
            }
        }
        match received {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // ICMP port unreachable from a gone peer surfaces here on Linux: not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::warn!("UDP receive: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let m = &meta[0];
        let destination = SocketAddr::new(m.dst_ip.unwrap_or(local.ip()), local.port());
        let stride = m.stride.max(1);
        for data in buf[..m.len].chunks(stride) {
            let routed = deliver(&mut demux, &mut owners, &metrics, m.addr, destination, data);
            if let Routed::Unauthenticated(route) = routed {
                refused.note(route.key, m.addr);
            }
        }
    }
}

/// Routes one datagram onto its owner's ring; returns what the demux decided.
fn deliver(
    demux: &mut Demux,
    owners: &mut [Owner],
    metrics: &Metrics,
    source: SocketAddr,
    destination: SocketAddr,
    data: &[u8],
) -> Routed {
    if data.len() > MAX_DATAGRAM {
        metrics.udp_unrouted.fetch_add(1, Ordering::Relaxed);
        return Routed::Unknown;
    }
    let routed = demux.route(source, data);
    let route = match routed {
        Routed::To(route) => route,
        Routed::Unauthenticated(_) => {
            metrics
                .udp_stun_unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            return routed;
        }
        Routed::Unknown => {
            metrics.udp_unrouted.fetch_add(1, Ordering::Relaxed);
            return routed;
        }
    };
    let Some(owner) = owners.get_mut(route.owner) else {
        return routed;
    };
    let mut d = Datagram {
        key: route.key,
        source,
        destination,
        len: data.len(),
        buf: [0; MAX_DATAGRAM],
    };
    d.buf[..data.len()].copy_from_slice(data);
    if owner.queue.try_push(d).is_err() {
        metrics.udp_queue_full.fetch_add(1, Ordering::Relaxed);
    }
    owner.thread.unpark();
    routed
}

/// How often at most the RX thread logs refused STUN requests: a flood of them must not
/// become a flood of log lines.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Says, at most once per [`REFUSED_LOG_EVERY`], how many STUN requests naming a session's
/// ufrag failed their integrity check since the last line, and the latest one's session
/// and source.
#[derive(Default)]
struct RefusedLog {
    last: Option<Instant>,
    since: u64,
}

impl RefusedLog {
    fn note(&mut self, key: crate::engine::PeerKey, source: SocketAddr) {
        self.since += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < REFUSED_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            key,
            %source,
            refused = self.since,
            "STUN requests naming a session's ufrag with a wrong MESSAGE-INTEGRITY, dropped \
             (the latest for this session from this address; at most one line per {REFUSED_LOG_EVERY:?})"
        );
        self.last = Some(now);
        self.since = 0;
    }
}
