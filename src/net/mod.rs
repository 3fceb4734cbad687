//! The UDP side: one socket for every peer, the receive loop and its O(1) demux.
//!
//! The RX thread reads datagrams and hands each to the thread that owns its peer through a
//! lock-free SPSC ring ([`OwnerQueue`]); owners send on their own clone of the socket.

pub mod batch;
pub mod demux;
pub mod dtls;
pub mod rx;
pub mod send;
pub mod socket;
pub mod srtp;
pub mod stun;

use std::net::SocketAddr;

use crate::engine::PeerKey;

/// Largest datagram we accept; larger ones are truncated by the kernel and then refused by
/// str0m. WebRTC stays under the path MTU (about 1200 to 1500 bytes).
pub const MAX_DATAGRAM: usize = 2048;

/// Datagrams one owner thread may have waiting; when full the RX thread drops and counts
/// (`mixcast_udp_queue_full_total`). Each slot is a whole [`Datagram`] (2 KiB), resident
/// once the ring has wrapped: 17.4 MB per TX thread, the largest fixed cost of the server
/// (docs/fanout.md, "Memory per listener"). 2,048 slots were tried: 2,000 viewers joining
/// at 250/s while the TX thread was behind overflowed them (26 datagrams dropped,
/// handshake packets among them, each a 1 s DTLS resend for its viewer); 8,192 lost none.
/// A byte ring of variable-length records would keep the depth at a fraction of the
/// memory; not done yet.
pub const OWNER_QUEUE_CAPACITY: usize = 8192;

/// A received datagram on its way to the thread that owns `key`.
pub struct Datagram {
    /// The session it belongs to.
    pub key: PeerKey,
    /// Who sent it.
    pub source: SocketAddr,
    /// The address it was sent to: ours, as the peer sees it. On a socket bound to all
    /// interfaces this comes from IP_PKTINFO; str0m needs it to pair the datagram with
    /// the local candidate it was sent to.
    pub destination: SocketAddr,
    /// Bytes used in `buf`.
    pub len: usize,
    /// The payload.
    pub buf: [u8; MAX_DATAGRAM],
}

impl Datagram {
    /// The payload bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The producer half of an owner's datagram ring (held by the RX thread).
pub type OwnerQueueTx = ringbuf::HeapProd<Datagram>;
/// The consumer half (held by the owner thread).
pub type OwnerQueueRx = ringbuf::HeapCons<Datagram>;

/// Makes one owner's queue.
pub fn owner_queue() -> (OwnerQueueTx, OwnerQueueRx) {
    use ringbuf::traits::Split;
    ringbuf::HeapRb::<Datagram>::new(OWNER_QUEUE_CAPACITY).split()
}

/// What signalling and owners tell the RX thread about routing.
#[derive(Debug)]
pub enum DemuxCommand {
    /// STUN requests whose USERNAME starts with `ufrag:` belong to `key`, owned by `owner`.
    Register {
        /// Our ICE username fragment for the session.
        ufrag: String,
        /// Our ICE password for that ufrag: a new source address is learned only from a
        /// request whose MESSAGE-INTEGRITY it verifies.
        pwd: String,
        /// The session.
        key: PeerKey,
        /// Index of the owning thread.
        owner: usize,
    },
    /// Forget `key`: its ufrags and addresses.
    Unregister {
        /// The session.
        key: PeerKey,
    },
}
