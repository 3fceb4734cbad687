//! The RX thread: reads the UDP socket, routes each datagram through the [`Demux`] and
//! pushes it onto its owner's ring, then wakes the owner. Never blocks on an owner: a full
//! ring drops the datagram and counts it.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

use crossbeam_channel::Receiver;
use ringbuf::traits::Producer;

use super::demux::{Demux, Route};
use super::{Datagram, DemuxCommand, OwnerQueueTx, MAX_DATAGRAM};
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
    let mut demux = Demux::default();
    // One heap slot reused for every datagram: received in place, moved into the ring.
    let mut slot = Box::new(Datagram {
        key: 0,
        source: ([0, 0, 0, 0], 0).into(),
        len: 0,
        buf: [0; MAX_DATAGRAM],
    });
    while !stop.load(Ordering::Relaxed) {
        let received = socket.recv_from(&mut slot.buf);
        // Commands first: a session registered just before its first STUN request must
        // be known when that request is routed.
        for cmd in commands.try_iter() {
            match cmd {
                DemuxCommand::Register { ufrag, key, owner } => {
                    demux.register(ufrag, Route { key, owner })
                }
                DemuxCommand::Unregister { key } => demux.unregister(key),
            }
        }
        let (len, source) = match received {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue
            }
            // ICMP port unreachable from a gone peer surfaces here on Linux: not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::warn!("UDP receive: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(route) = demux.route(source, &slot.buf[..len]) else {
            metrics.udp_unrouted.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(owner) = owners.get_mut(route.owner) else {
            continue;
        };
        slot.key = route.key;
        slot.source = source;
        slot.len = len;
        // Copies the datagram into the ring's storage; `slot` is reused.
        let d = Datagram {
            key: slot.key,
            source: slot.source,
            len: slot.len,
            buf: slot.buf,
        };
        if owner.queue.try_push(d).is_err() {
            metrics.udp_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        owner.thread.unpark();
    }
}
