//! The load tool's receive loop: one thread owns a share of the viewers (each a socket of
//! its own and a client `Rtc`) and reads their datagrams.
//!
//! Cheap per packet by design: an RTP packet is counted from its clear header (sequence
//! number, RTP time) and the kernel's receive timestamp, without decryption. Only STUN,
//! DTLS, RTCP and a sample of RTP (all of a viewer's first packets, then one in
//! `sample_every`) go through the viewer's `Rtc`: its SRTP must decrypt every sampled
//! packet (each one must come back as an `Event::RtpPacket`, else it counts as a decryption
//! failure), and its ICE keeps answering the server's consent checks.
//!
//! Two ways of reading, by measurement. A viewer still joining is in epoll and read as soon
//! as anything arrives, so that its handshake is not slowed. Once it is connected and has
//! its first packets it leaves epoll and is *swept*: every `SWEEP` its socket is emptied
//! with one `recvmmsg`, about five packets per call. Measured at 600 viewers (this tool's
//! CPU per packet received, everything included): 4.7 µs reading each socket when epoll
//! reported it, 3.0 µs sweeping; what remains is mostly the kernel's own receive path
//! (half of it) and the viewers' RTCP and STUN sends. Reading late costs no accuracy:
//! packet times are the kernel's receive timestamps, and consent checks tolerate seconds.
//! Never blocks but in `epoll_wait`, for at most `MAX_WAIT`.

use super::probe::realtime_ns;
use super::stats::{Jitter, LogHistogram, SeqExtender, WindowCount};
use super::{Control, ViewerOutcome};
use crossbeam_channel::Receiver;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

/// How often a swept viewer's socket is emptied: about five packets per `recvmmsg`.
const SWEEP: Duration = Duration::from_millis(100);
/// Datagrams one `recvmmsg` may return: room for 320 ms of packets, so that a sweep that
/// comes late still empties a socket in one call (a fuller one gets another call).
const BATCH: usize = 16;
/// Larger than any datagram a WebRTC peer sends.
const DATAGRAM: usize = 2048;
/// Room for one SCM_TIMESTAMPNS control message (a cmsghdr and a timespec), in u64s so
/// that it is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;
/// Ready sockets taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// Longest `epoll_wait`: new viewers and the stop flag are looked at this often.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// How often every viewer's `Rtc` timeout and deadlines are checked. str0m's timers after
/// the handshake (consent, RTCP reports) are in the hundreds of milliseconds; handshake
/// retransmissions are in the hundreds too; so 10 ms is early enough and scanning ten
/// thousand viewers a hundred times a second costs little.
const SCAN_INTERVAL: Duration = Duration::from_millis(10);
/// Opus RTP time runs at 48 kHz whatever the audio's rate (RFC 7587).
const OPUS_CLOCK: u32 = 48_000;

/// A viewer whose answer was accepted, handed from an HTTP worker to a receive thread.
pub(super) struct NewViewer {
    pub index: usize,
    pub socket: UdpSocket,
    pub rtc: Rtc,
    pub posted_ns: i64,
    pub posted_at: Instant,
    pub session_url: String,
}

/// How the receive threads treat viewers.
#[derive(Debug, Clone, Copy)]
pub(super) struct IoSettings {
    pub sample_every: u64,
    pub sample_first: u64,
    pub connect_timeout: Duration,
    pub media_timeout: Duration,
}

/// What one receive thread hands back.
pub(super) struct IoOutcome {
    pub viewers: Vec<ViewerOutcome>,
    /// |D| of every packet in the window, nanoseconds.
    pub jitter: LogHistogram,
}

struct Viewer {
    index: usize,
    socket: UdpSocket,
    local: SocketAddr,
    rtc: Rtc,
    /// In epoll (joining).
    registered: bool,
    /// Read by the sweep (joined).
    swept: bool,
    posted_ns: i64,
    posted_at: Instant,
    session_url: String,
    next_timeout: Instant,
    connected_ns: Option<i64>,
    first_rtp_ns: Option<i64>,
    failure: Option<String>,
    seq: SeqExtender,
    received: u64,
    window: WindowCount,
    jitter: Jitter,
    window_max_jitter_ns: u64,
    fed: u64,
    decrypted: u64,
}

impl Viewer {
    fn new(v: NewViewer, now: Instant) -> io::Result<Viewer> {
        let local = v.socket.local_addr()?;
        Ok(Viewer {
            index: v.index,
            socket: v.socket,
            local,
            rtc: v.rtc,
            registered: false,
            swept: false,
            posted_ns: v.posted_ns,
            posted_at: v.posted_at,
            session_url: v.session_url,
            next_timeout: now,
            connected_ns: None,
            first_rtp_ns: None,
            failure: None,
            seq: SeqExtender::default(),
            received: 0,
            window: WindowCount::default(),
            jitter: Jitter::default(),
            window_max_jitter_ns: 0,
            fed: 0,
            decrypted: 0,
        })
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    /// One datagram that arrived (by the kernel's clock) at `arrival_ns`.
    #[allow(clippy::too_many_arguments)]
    fn on_datagram(
        &mut self,
        data: &[u8],
        source: impl FnOnce() -> Option<SocketAddr>,
        arrival_ns: i64,
        now: Instant,
        window: (i64, i64),
        jitter: &mut LogHistogram,
        settings: &IoSettings,
    ) {
        if let Some((seq, rtp_time)) = rtp_header(data) {
            let ext = self.seq.extend(seq);
            self.received += 1;
            self.first_rtp_ns.get_or_insert(arrival_ns);
            let (start, end) = window;
            if arrival_ns < end {
                let in_window = arrival_ns >= start;
                if let Some(d) = self.jitter.on_packet(ext, rtp_time, arrival_ns, OPUS_CLOCK) {
                    if in_window {
                        jitter.record(d);
                        self.window_max_jitter_ns = self.window_max_jitter_ns.max(d);
                    }
                }
                if in_window {
                    self.window.add(ext);
                }
            }
            let sampled = self.received <= settings.sample_first
                || ext.is_multiple_of(settings.sample_every.max(1));
            if !sampled {
                return;
            }
            self.fed += 1;
        }
        let Some(source) = source() else { return };
        let Ok(contents) = data.try_into() else {
            // Not STUN, DTLS, RTP or RTCP: nothing the server sends.
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        match self.rtc.handle_input(input) {
            Ok(()) => self.drain(),
            Err(e) => self.fail(format!("rtc: {e}")),
        }
    }

    /// Runs the `Rtc`'s due timers and checks the viewer's deadlines.
    fn on_scan(&mut self, now: Instant, settings: &IoSettings) {
        if self.failure.is_some() {
            return;
        }
        let since_post = now.saturating_duration_since(self.posted_at);
        if self.connected_ns.is_none() && since_post > settings.connect_timeout {
            return self.fail(format!(
                "not connected within {:?} of the POST",
                settings.connect_timeout
            ));
        }
        if self.first_rtp_ns.is_none()
            && since_post > settings.connect_timeout + settings.media_timeout
        {
            return self.fail("connected but no audio arrived".into());
        }
        if now >= self.next_timeout {
            match self.rtc.handle_input(Input::Timeout(now)) {
                Ok(()) => self.drain(),
                Err(e) => self.fail(format!("rtc: {e}")),
            }
        }
    }

    /// Polls the `Rtc` to its next timeout, sending what it transmits.
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = at;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // A lost datagram as far as the server is concerned; ICE notices if
                    // the path is really gone.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => self.connected_ns = Some(realtime_ns()),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.fail("ICE disconnected".into())
                    }
                    Event::RtpPacket(_) => self.decrypted += 1,
                    _ => {}
                },
                Err(e) => return self.fail(format!("rtc: {e}")),
            }
        }
    }

    /// Whether the viewer is connected and has its first packets (decrypted): it then
    /// leaves epoll for the sweep.
    fn joined(&self, settings: &IoSettings) -> bool {
        self.connected_ns.is_some() && self.received >= settings.sample_first
    }

    /// Reads what its socket holds (one `recvmmsg`, another if that one came back full).
    fn read_socket(
        &mut self,
        batch: &mut RecvBatch,
        now: Instant,
        window: (i64, i64),
        jitter: &mut LogHistogram,
        settings: &IoSettings,
    ) {
        loop {
            match batch.receive(self.socket.as_raw_fd()) {
                Ok(count) => {
                    for i in 0..count {
                        let arrival = batch.timestamp_ns(i).unwrap_or_else(realtime_ns);
                        self.on_datagram(
                            batch.data(i),
                            || batch.source(i),
                            arrival,
                            now,
                            window,
                            jitter,
                            settings,
                        );
                    }
                    if count < BATCH || self.failure.is_some() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // An ICMP error queued on the socket: UDP is lossy, ICE decides.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
                Err(e) => return self.fail(format!("recv: {e}")),
            }
        }
    }

    fn outcome(self) -> ViewerOutcome {
        let ms = |ns: i64| ns as f64 / 1e6;
        ViewerOutcome {
            index: self.index,
            failure: self.failure,
            session_url: Some(self.session_url),
            connected_ms: self.connected_ns.map(|t| ms(t - self.posted_ns)),
            first_packet_ms: self.first_rtp_ns.map(|t| ms(t - self.posted_ns)),
            received_total: self.received,
            window_received: self.window.received(),
            window_expected: self.window.expected(),
            window_lost: self.window.lost(),
            jitter_us: self.jitter.estimate_ns() as f64 / 1e3,
            max_jitter_us: self.window_max_jitter_ns as f64 / 1e3,
            rtp_sampled: self.fed,
            rtp_decrypted: self.decrypted,
        }
    }
}

/// The sequence number and RTP time of an RTP packet (RFC 7983's first-byte ranges, and
/// RFC 5761's payload types to tell RTP from RTCP); None for anything else.
fn rtp_header(data: &[u8]) -> Option<(u16, u32)> {
    if data.len() < 12 || !(128..=191).contains(&data[0]) {
        return None;
    }
    let payload_type = data[1] & 0x7f;
    if (64..=95).contains(&payload_type) {
        return None; // RTCP
    }
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let time = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    Some((seq, time))
}

/// Runs one receive thread until `control.finish` (or `control.stop`) is set; takes new
/// viewers from `incoming`.
pub(super) fn run(
    control: &Control<'_>,
    incoming: Receiver<NewViewer>,
    settings: IoSettings,
) -> io::Result<IoOutcome> {
    let epoll = Epoll::new()?;
    let mut batch = Box::new(RecvBatch::new());
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut viewers: Vec<Viewer> = Vec::new();
    let mut jitter = LogHistogram::default();
    let mut next_scan = Instant::now();

    let mut swept: Vec<usize> = Vec::new();
    let mut next_sweep = Instant::now();

    while !control.finished() {
        let now = Instant::now();
        while let Ok(new) = incoming.try_recv() {
            let index = new.index;
            let mut viewer = match Viewer::new(new, now) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(index, "viewer lost before it started: {e}");
                    continue;
                }
            };
            match epoll.add(viewer.socket.as_raw_fd(), viewers.len() as u64) {
                Ok(()) => viewer.registered = true,
                Err(e) => viewer.fail(format!("epoll: {e}")),
            }
            // The first checks go out now, not at the next scan.
            viewer.drain();
            viewers.push(viewer);
        }

        let wait = next_scan
            .min(next_sweep)
            .saturating_duration_since(now)
            .min(MAX_WAIT);
        let ready = epoll.wait(&mut events, wait)?;
        let now = Instant::now();
        let window = control.window();
        for event in &events[..ready] {
            let slot = event.u64 as usize;
            let viewer = &mut viewers[slot];
            viewer.read_socket(&mut batch, now, window, &mut jitter, &settings);
            if viewer.failure.is_none() && viewer.joined(&settings) {
                // Joined: from now on its socket is emptied by the sweep.
                viewer.swept = true;
                swept.push(slot);
            }
            if (viewer.failure.is_some() || viewer.swept) && viewer.registered {
                let _ = epoll.delete(viewer.socket.as_raw_fd());
                viewer.registered = false;
            }
        }

        if now >= next_sweep {
            swept.retain(|&slot| {
                let viewer = &mut viewers[slot];
                viewer.read_socket(&mut batch, now, window, &mut jitter, &settings);
                viewer.failure.is_none()
            });
            next_sweep = now + SWEEP;
        }

        if now >= next_scan {
            for viewer in &mut viewers {
                viewer.on_scan(now, &settings);
                if viewer.failure.is_some() && viewer.registered {
                    let _ = epoll.delete(viewer.socket.as_raw_fd());
                    viewer.registered = false;
                }
            }
            swept.retain(|&slot| viewers[slot].failure.is_none());
            next_scan = now + SCAN_INTERVAL;
        }
    }
    Ok(IoOutcome {
        viewers: viewers.into_iter().map(Viewer::outcome).collect(),
        jitter,
    })
}

/// An epoll instance (level-triggered: a socket not emptied is reported again).
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the fd it returns is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and a valid event to read.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: valid descriptors; DEL ignores the event (non-null for old kernels).
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        // Rounded up: rounding down turned the last millisecond before a deadline into a
        // busy loop of zero-timeout waits.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` is valid for `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

/// Buffers for one `recvmmsg`: datagrams, source addresses and receive timestamps.
struct RecvBatch {
    data: [[u8; DATAGRAM]; BATCH],
    names: [libc::sockaddr_storage; BATCH],
    controls: [[u64; CONTROL_WORDS]; BATCH],
    iovecs: [libc::iovec; BATCH],
    headers: [libc::mmsghdr; BATCH],
}

impl RecvBatch {
    fn new() -> RecvBatch {
        // SAFETY: every field is plain old data for which all zeroes is a valid value
        // (null pointers are set before each use).
        unsafe { std::mem::zeroed() }
    }

    /// Reads up to `BATCH` datagrams from `fd` without waiting.
    fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.data[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM,
            };
            let h = &mut self.headers[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CONTROL_WORDS * 8;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points into `self`, which outlives the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn data(&self, i: usize) -> &[u8] {
        let len = (self.headers[i].msg_len as usize).min(DATAGRAM);
        &self.data[i][..len]
    }

    fn source(&self, i: usize) -> Option<SocketAddr> {
        let len = self.headers[i].msg_hdr.msg_namelen;
        // SAFETY: the kernel wrote a socket address of `len` bytes into `names[i]`.
        let addr = unsafe { socket2::SockAddr::new(self.names[i], len) };
        addr.as_socket()
    }

    /// The kernel's receive time (SO_TIMESTAMPNS, CLOCK_REALTIME) of datagram `i`.
    fn timestamp_ns(&self, i: usize) -> Option<i64> {
        let header = &self.headers[i].msg_hdr;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
        // `msg_controllen`; the timespec is read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    return Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
                }
                cmsg = libc::CMSG_NXTHDR(header, cmsg);
            }
        }
        None
    }
}

/// Asks the kernel to stamp each datagram `socket` receives (read back by `RecvBatch`).
pub(super) fn enable_receive_timestamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 111 | 0x80; // Opus with the marker bit
        rtp[2..4].copy_from_slice(&65535u16.to_be_bytes());
        rtp[4..8].copy_from_slice(&123_456u32.to_be_bytes());
        assert_eq!(rtp_header(&rtp), Some((65535, 123_456)));
        let mut rtcp = rtp;
        rtcp[1] = 200; // SR
        assert_eq!(rtp_header(&rtcp), None);
        let mut stun = rtp;
        stun[0] = 0x00;
        assert_eq!(rtp_header(&stun), None);
        let mut dtls = rtp;
        dtls[0] = 23;
        assert_eq!(rtp_header(&dtls), None);
        assert_eq!(rtp_header(&rtp[..11]), None);
    }

    #[test]
    fn receive_batch_reads_datagrams_with_timestamps_and_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable_receive_timestamps(&rx).expect("timestamps");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = realtime_ns();
        for n in 0..3u8 {
            tx.send_to(&[n; 5], rx.local_addr().expect("addr"))
                .expect("send");
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = Box::new(RecvBatch::new());
        let count = batch.receive(rx.as_raw_fd()).expect("datagrams");
        assert_eq!(count, 3);
        for i in 0..count {
            assert_eq!(batch.data(i), &[i as u8; 5]);
            assert_eq!(batch.source(i), Some(tx.local_addr().expect("addr")));
            let ts = batch.timestamp_ns(i).expect("a timestamp");
            assert!(ts >= before - 1_000_000 && ts <= realtime_ns());
        }
        let empty = batch.receive(rx.as_raw_fd());
        assert_eq!(empty.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
    }
}
