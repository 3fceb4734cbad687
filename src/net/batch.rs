//! The batched fan-out: a tick's datagrams are copied into a preallocated batch and handed
//! to the kernel with `sendmmsg(2)`, up to [`BATCH`] per system call, in the order they
//! were sent. Never blocks and never allocates per datagram; when the kernel has no room,
//! a bounded number of short waits, then the rest of the batch is dropped and counted.

use std::net::{SocketAddr, UdpSocket};

use super::send::Outbox;
use crate::engine::Transmitter;

/// Datagrams handed to the kernel per `sendmmsg` call at most. A 20 ms tick of 10,000
/// viewers is then about 160 system calls instead of 10,000; larger batches gain little
/// more (the kernel's per-datagram work dominates) and delay the first viewers' packets.
pub const BATCH: usize = 64;

/// Room for one datagram in the batch: larger ones (none that str0m makes, which keeps
/// under its MTU of about 1150 bytes) are sent alone.
pub const SLOT: usize = super::MAX_DATAGRAM;

/// How often a batch the kernel refuses for want of buffer space (EAGAIN, ENOBUFS) is
/// retried, each after waiting up to [`RETRY_WAIT`] for the socket to drain, before the
/// rest of the batch is dropped. Bounded: the TX thread must not stall the next tick.
pub const MAX_RETRIES: u32 = 3;

/// How long one retry waits for the socket to become writable.
pub const RETRY_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

/// The batch being filled: datagrams copied into one preallocated buffer, in the order
/// they were sent (so each viewer keeps its place in the tick, and its offset from the
/// tick's start stays constant).
pub struct Batch {
    data: Box<[u8]>,
    lens: [u16; BATCH],
    destinations: [SocketAddr; BATCH],
    len: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            data: vec![0; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            destinations: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            len: 0,
        }
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i`: where it goes and its bytes.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let start = i * SLOT;
        (
            self.destinations[i],
            &self.data[start..start + self.lens[i] as usize],
        )
    }

    fn push(&mut self, destination: SocketAddr, data: &[u8]) {
        debug_assert!(self.len < BATCH && data.len() <= SLOT);
        let start = self.len * SLOT;
        self.data[start..start + data.len()].copy_from_slice(data);
        // SLOT fits in u16 (checked by the caller: data.len() <= SLOT).
        self.lens[self.len] = data.len() as u16;
        self.destinations[self.len] = destination;
        self.len += 1;
    }
}

/// What a [`BatchSender`] sends through: a socket (`sendmmsg`), or a fake in tests.
pub trait SendMany {
    /// Sends datagrams `from..batch.len()` of `batch` in order, without blocking; returns
    /// how many, from `from` on, the kernel took (at least one), or the error that stopped
    /// the first of them.
    fn send_many(&mut self, batch: &Batch, from: usize) -> std::io::Result<usize>;
    /// Sends one datagram alone (too large for a slot).
    fn send_one(&mut self, destination: SocketAddr, data: &[u8]) -> std::io::Result<()>;
    /// Waits at most `timeout` for room to send.
    fn wait_writable(&mut self, timeout: std::time::Duration);
}

/// What a [`BatchSender`] did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams dropped: the kernel had no room after [`MAX_RETRIES`], or refused that one.
    pub dropped: u64,
    /// System calls made (`sendmmsg` and single sends).
    pub calls: u64,
}

/// The batched fan-out: each datagram is copied into a preallocated [`Batch`]; a full
/// batch, and whatever is held at [`Outbox::flush`], goes to the kernel with as few
/// `sendmmsg` calls as it takes. No allocation per datagram.
pub struct BatchSender<S: SendMany = MmsgSocket> {
    sink: S,
    batch: Batch,
    stats: SendStats,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl BatchSender<MmsgSocket> {
    /// Sends on `socket`, counting drops and system calls in `metrics`.
    pub fn new(socket: UdpSocket, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        let mut s = BatchSender::with_sink(MmsgSocket::new(socket));
        s.metrics = Some(metrics);
        s
    }
}

impl<S: SendMany> BatchSender<S> {
    /// Sends through `sink`.
    pub fn with_sink(sink: S) -> BatchSender<S> {
        BatchSender {
            sink,
            batch: Batch::new(),
            stats: SendStats::default(),
            metrics: None,
        }
    }

    /// What was sent and dropped so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// The sink (tests inspect their fake).
    pub fn sink(&self) -> &S {
        &self.sink
    }

    fn send_batch(&mut self) {
        let before = self.stats;
        let total = self.batch.len();
        let mut from = 0;
        let mut retries = 0;
        while from < total {
            self.stats.calls += 1;
            match self.sink.send_many(&self.batch, from) {
                Ok(n) if n > 0 => {
                    // A sink never reports more than it was given.
                    let n = n.min(total - from);
                    from += n;
                    self.stats.sent += n as u64;
                    retries = 0;
                }
                Ok(_) => {
                    // Nothing taken and no error: as good as no room.
                    retries += 1;
                    if retries > MAX_RETRIES {
                        self.stats.dropped += (total - from) as u64;
                        break;
                    }
                    self.sink.wait_writable(RETRY_WAIT);
                }
                Err(e) if is_no_room(&e) => {
                    retries += 1;
                    if retries > MAX_RETRIES {
                        let lost = total - from;
                        tracing::debug!("send: {e}; dropping {lost} datagrams");
                        self.stats.dropped += lost as u64;
                        break;
                    }
                    self.sink.wait_writable(RETRY_WAIT);
                }
                Err(e) => {
                    // This datagram is refused (unreachable, bad address): skip it alone.
                    let (destination, _) = self.batch.get(from);
                    tracing::trace!(%destination, "send: {e}");
                    self.stats.dropped += 1;
                    from += 1;
                }
            }
        }
        self.batch.len = 0;
        self.report(before);
    }

    fn report(&self, before: SendStats) {
        if let Some(m) = &self.metrics {
            use std::sync::atomic::Ordering::Relaxed;
            m.udp_send_dropped
                .fetch_add(self.stats.dropped - before.dropped, Relaxed);
            m.udp_send_calls
                .fetch_add(self.stats.calls - before.calls, Relaxed);
        }
    }
}

/// The kernel has no room now (socket buffer or device queue full), or a signal came:
/// worth a bounded retry.
fn is_no_room(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.kind() == std::io::ErrorKind::Interrupted
        || e.raw_os_error() == Some(libc::ENOBUFS)
}

impl<S: SendMany> Transmitter for BatchSender<S> {
    fn send(&mut self, _source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if data.len() > SLOT {
            // Keep the order: what is held goes first.
            self.send_batch();
            let before = self.stats;
            self.stats.calls += 1;
            match self.sink.send_one(destination, data) {
                Ok(()) => self.stats.sent += 1,
                Err(e) => {
                    tracing::trace!(%destination, "send: {e}");
                    self.stats.dropped += 1;
                }
            }
            self.report(before);
            return;
        }
        self.batch.push(destination, data);
        if self.batch.len() == BATCH {
            self.send_batch();
        }
    }
}

impl<S: SendMany> Outbox for BatchSender<S> {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.send_batch();
        }
    }
}

/// A UDP socket sending with `sendmmsg(2)` and `MSG_DONTWAIT` (never blocks).
pub struct MmsgSocket {
    socket: UdpSocket,
}

impl MmsgSocket {
    /// Wraps `socket`.
    pub fn new(socket: UdpSocket) -> MmsgSocket {
        MmsgSocket { socket }
    }
}

/// `addr` as a C socket address.
fn sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

impl SendMany for MmsgSocket {
    fn send_many(&mut self, batch: &Batch, from: usize) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let count = batch.len() - from;
        // The C structures live on the stack (about 13 KiB for 64 datagrams): nothing is
        // allocated, and the sender holds no raw pointers between calls.
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for k in 0..count {
            let (destination, data) = batch.get(from + k);
            let addr_len = sockaddr(destination, &mut addrs[k]);
            iovs[k] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = &mut addrs[k] as *mut _ as *mut libc::c_void;
            h.msg_namelen = addr_len;
            h.msg_iov = &mut iovs[k];
            h.msg_iovlen = 1;
        }
        // SAFETY: `hdrs[..count]` point into `addrs`, `iovs` and `batch`, all alive and
        // unmoved for the call; the kernel only reads the payloads.
        let n = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn send_one(&mut self, destination: SocketAddr, data: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let addr_len = sockaddr(destination, &mut addr);
        // SAFETY: `data` and `addr` are alive for the call, which only reads them.
        let n = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_DONTWAIT,
                &addr as *const _ as *const libc::sockaddr,
                addr_len,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn wait_writable(&mut self, timeout: std::time::Duration) {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd and timespec; ppoll only writes `revents`.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io;

    /// A sink that records what it was given and answers from a script: `Some(Ok(n))`
    /// takes at most n, `Some(Err)` fails, `None` (or an empty script) takes everything.
    #[derive(Default)]
    struct Fake {
        script: VecDeque<io::Result<usize>>,
        sent: Vec<(SocketAddr, Vec<u8>)>,
        calls: usize,
        waits: usize,
    }

    impl SendMany for Fake {
        fn send_many(&mut self, batch: &Batch, from: usize) -> io::Result<usize> {
            self.calls += 1;
            let take = match self.script.pop_front() {
                Some(Ok(n)) => n.min(batch.len() - from),
                Some(Err(e)) => return Err(e),
                None => batch.len() - from,
            };
            for i in from..from + take {
                let (d, data) = batch.get(i);
                self.sent.push((d, data.to_vec()));
            }
            Ok(take)
        }
        fn send_one(&mut self, destination: SocketAddr, data: &[u8]) -> io::Result<()> {
            self.calls += 1;
            self.sent.push((destination, data.to_vec()));
            Ok(())
        }
        fn wait_writable(&mut self, _: std::time::Duration) {
            self.waits += 1;
        }
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
    }

    /// Datagram `i`: its index in its first bytes, a length that varies.
    fn datagram(i: usize) -> Vec<u8> {
        let mut d = (i as u32).to_be_bytes().to_vec();
        d.resize(100 + i % 50, 0xab);
        d
    }

    fn send_n(s: &mut BatchSender<Fake>, n: usize) {
        let src = addr(9999);
        for i in 0..n {
            s.send(src, addr(i), &datagram(i));
        }
    }

    fn assert_in_order(sent: &[(SocketAddr, Vec<u8>)], n: usize) {
        assert_eq!(sent.len(), n, "each datagram exactly once");
        for (i, (d, data)) in sent.iter().enumerate() {
            assert_eq!(*d, addr(i), "datagram {i} to its own destination");
            assert_eq!(*data, datagram(i), "datagram {i} intact");
        }
    }

    #[test]
    fn a_full_batch_goes_out_without_a_flush() {
        let mut s = BatchSender::with_sink(Fake::default());
        send_n(&mut s, BATCH - 1);
        assert!(s.sink().sent.is_empty(), "held until the batch is full");
        s.send(addr(9999), addr(BATCH - 1), &datagram(BATCH - 1));
        assert_eq!(s.sink().calls, 1, "one sendmmsg for a full batch");
        assert_in_order(&s.sink().sent, BATCH);
        s.flush();
        assert_eq!(s.sink().calls, 1, "nothing left to flush");
    }

    #[test]
    fn order_is_the_send_order_across_batches_and_nothing_twice() {
        let mut s = BatchSender::with_sink(Fake::default());
        let n = 3 * BATCH + 5;
        send_n(&mut s, n);
        s.flush();
        s.flush();
        assert_in_order(&s.sink().sent, n);
        assert_eq!(s.sink().calls, 4);
        assert_eq!(
            s.stats(),
            SendStats {
                sent: n as u64,
                dropped: 0,
                calls: 4
            }
        );
        // The same sends again (the next tick): the same order, hence the same offsets.
        let first = s.sink().sent.clone();
        send_n(&mut s, n);
        s.flush();
        assert_eq!(s.sink().sent[n..], first[..]);
    }

    #[test]
    fn a_partial_send_resumes_at_the_next_datagram() {
        let mut fake = Fake::default();
        fake.script.extend([Ok(10), Ok(1), Ok(30)]);
        let mut s = BatchSender::with_sink(fake);
        send_n(&mut s, BATCH);
        assert_in_order(&s.sink().sent, BATCH);
        assert_eq!(s.sink().calls, 4, "10 + 1 + 30 + the remaining 23");
        assert_eq!(s.stats().dropped, 0);
    }

    #[test]
    fn no_room_is_retried_a_bounded_number_of_times_then_dropped() {
        let mut fake = Fake::default();
        fake.script.push_back(Ok(5));
        fake.script
            .push_back(Err(io::Error::from(io::ErrorKind::WouldBlock)));
        fake.script
            .push_back(Err(io::Error::from_raw_os_error(libc::ENOBUFS)));
        let mut s = BatchSender::with_sink(fake);
        send_n(&mut s, 20);
        s.flush();
        // Two refusals, then room again: everything arrives, in order.
        assert_in_order(&s.sink().sent, 20);
        assert_eq!(s.sink().waits, 2);

        let mut fake = Fake::default();
        fake.script.push_back(Ok(5));
        for _ in 0..=MAX_RETRIES {
            fake.script
                .push_back(Err(io::Error::from(io::ErrorKind::WouldBlock)));
        }
        let mut s = BatchSender::with_sink(fake);
        send_n(&mut s, 20);
        s.flush();
        assert_in_order(&s.sink().sent, 5);
        assert_eq!(s.stats().dropped, 15, "the rest of the batch is dropped");
        assert_eq!(s.sink().waits, MAX_RETRIES as usize);
        // The sender is usable afterwards, and the dropped ones are not sent later.
        s.flush();
        assert_eq!(s.sink().sent.len(), 5);
        s.send(addr(9999), addr(5), &datagram(5));
        s.flush();
        assert_eq!(s.sink().sent.len(), 6);
    }

    #[test]
    fn a_refused_datagram_is_skipped_alone() {
        let mut fake = Fake::default();
        fake.script.push_back(Ok(3));
        fake.script
            .push_back(Err(io::Error::from_raw_os_error(libc::ENETUNREACH)));
        let mut s = BatchSender::with_sink(fake);
        send_n(&mut s, 8);
        s.flush();
        let sent: Vec<SocketAddr> = s.sink().sent.iter().map(|p| p.0).collect();
        let want: Vec<SocketAddr> = [0, 1, 2, 4, 5, 6, 7].into_iter().map(addr).collect();
        assert_eq!(sent, want);
        assert_eq!(s.stats().dropped, 1);
    }

    #[test]
    fn an_oversized_datagram_goes_alone_after_what_is_held() {
        let mut s = BatchSender::with_sink(Fake::default());
        send_n(&mut s, 3);
        let big = vec![7u8; SLOT + 1];
        s.send(addr(9999), addr(3), &big);
        s.flush();
        let sent: Vec<SocketAddr> = s.sink().sent.iter().map(|p| p.0).collect();
        assert_eq!(sent, (0..4).map(addr).collect::<Vec<_>>());
        assert_eq!(s.sink().sent[3].1, big);
    }

    #[test]
    fn real_sockets_on_loopback_receive_every_datagram_in_order() {
        let receivers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for r in &receivers {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let mut s = BatchSender::new(sender, metrics.clone());
        let n = 2 * BATCH + 7;
        for i in 0..n {
            let to = receivers[i % 3].local_addr().unwrap();
            s.send(from, to, &datagram(i));
        }
        s.flush();
        assert_eq!(s.stats().sent, n as u64);
        assert!(s.stats().calls <= 4, "{:?}", s.stats());
        let mut buf = [0u8; 2048];
        for i in 0..n {
            let (len, src) = receivers[i % 3].recv_from(&mut buf).unwrap();
            assert_eq!(src, from);
            assert_eq!(&buf[..len], &datagram(i)[..], "datagram {i}");
        }
        for r in &receivers {
            r.set_nonblocking(true).unwrap();
            assert!(r.recv_from(&mut buf).is_err(), "nothing sent twice");
        }
        assert_eq!(
            metrics
                .udp_send_calls
                .load(std::sync::atomic::Ordering::Relaxed),
            s.stats().calls
        );
    }
}
