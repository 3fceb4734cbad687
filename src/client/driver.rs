//! Drives one str0m `Rtc` over one blocking UDP socket: the sans-IO run loop of a client.
//!
//! Owns the socket and the `Rtc` together so that the one rule of str0m holds by
//! construction: every mutation (`mutate`, `step`) is followed by a full drain of
//! `poll_output` to `Timeout`. It never blocks past the limit a caller gives to `step`.

use super::whep::ClientError;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};

/// Big enough for any datagram a WebRTC peer sends (str0m's MTU is well under this).
const RECV_BUFFER: usize = 2048;

/// Most datagrams `take_queued` reads: a bound, far above what queues in one late wake-up.
const MAX_QUEUED: usize = 4096;

/// `set_read_timeout` refuses zero: the shortest wait we ask for.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The shortest sleep of `sleep_until`: a bound on its spinning should the `Rtc` keep
/// asking for a timeout that is already due.
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// One `Rtc` and the socket its traffic goes through.
pub(crate) struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    /// When the `Rtc` next wants a `Timeout`, from the last drain.
    next_timeout: Instant,
    /// The longest one sleep of `sleep_until` lasts (None: until the next deadline).
    max_nap: Option<Duration>,
}

impl Driver {
    /// Wraps a fresh `Rtc` and a bound socket.
    pub(crate) fn new(rtc: Rtc, socket: UdpSocket) -> Result<Driver, ClientError> {
        let local = socket.local_addr()?;
        Ok(Driver {
            rtc,
            socket,
            local,
            buf: vec![0; RECV_BUFFER],
            next_timeout: Instant::now(),
            max_nap: None,
        })
    }

    /// Makes `sleep_until` look at the socket at least every `nap`, so that what arrives
    /// is fed within `nap` of arriving (its receive time is the time it is read).
    pub(crate) fn set_max_nap(&mut self, nap: Duration) {
        self.max_nap = Some(nap);
    }

    /// The socket's local address (the host candidate to announce).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Applies one mutation to the `Rtc`, then drains it.
    pub(crate) fn mutate<R>(
        &mut self,
        change: impl FnOnce(&mut Rtc) -> R,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<R, ClientError> {
        let result = change(&mut self.rtc);
        self.drain(on_event)?;
        Ok(result)
    }

    /// Waits for one datagram or for the `Rtc`'s next timeout, but never past `limit`;
    /// feeds what happened to the `Rtc` and drains it.
    pub(crate) fn step(
        &mut self,
        limit: Instant,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), ClientError> {
        let wake = self.next_timeout.min(limit);
        let wait = wake.saturating_duration_since(Instant::now()).max(MIN_WAIT);
        self.socket.set_read_timeout(Some(wait))?;
        self.receive_one(on_event).map(|_| ())
    }

    /// Sleeps until `until` on a timer (precise to tens of microseconds, unlike a socket's
    /// read timeout, which the kernel rounds to its tick), waking for the `Rtc`'s timeouts.
    /// Datagrams that arrive meanwhile wait in the socket's buffer and are fed at each
    /// wake-up, so nothing is lost; replies are only later by at most one sleep. For a
    /// sender whose timing matters more than its receiving (a WHIP publisher).
    pub(crate) fn sleep_until(
        &mut self,
        until: Instant,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), ClientError> {
        loop {
            // Ends with an `Input::Timeout(now)`: the `Rtc`'s due timers run here.
            self.take_queued(on_event)?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let wake = self.next_timeout.min(until);
            let mut nap = wake.saturating_duration_since(now).max(MIN_SLEEP);
            if let Some(max) = self.max_nap {
                nap = nap.min(max);
            }
            std::thread::sleep(nap.min(until - now));
        }
    }

    /// Feeds every datagram already queued on the socket, without waiting for more: what
    /// arrived while this thread was not scheduled. Returns how many were read.
    pub(crate) fn take_queued(
        &mut self,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<usize, ClientError> {
        self.socket.set_nonblocking(true)?;
        let mut taken = 0;
        let result = loop {
            if taken == MAX_QUEUED {
                break Ok(taken);
            }
            match self.receive_one(on_event) {
                Ok(true) => taken += 1,
                Ok(false) => break Ok(taken),
                Err(e) => break Err(e),
            }
        };
        self.socket.set_nonblocking(false)?;
        result
    }

    /// Reads one datagram (or sees the wait end), feeds it and drains. Returns whether a
    /// datagram was read.
    fn receive_one(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<bool, ClientError> {
        let received = self.socket.recv_from(&mut self.buf);
        let now = Instant::now();
        let input = match received {
            Ok((len, source)) => {
                let Ok(contents) = self.buf[..len].try_into() else {
                    // Not STUN, DTLS, RTP or RTCP: nothing a peer of ours sends.
                    tracing::debug!(%source, len, "dropping unrecognised datagram");
                    return Ok(true);
                };
                Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    },
                )
            }
            // WouldBlock on unix, TimedOut on windows: the wait is over.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Input::Timeout(now)
            }
            // A signal (Ctrl-C) arrived on this thread: the caller looks at its flag next.
            Err(e) if e.kind() == ErrorKind::Interrupted => Input::Timeout(now),
            // An ICMP error reported on the socket: UDP is lossy, ICE decides what it means.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Input::Timeout(now),
            Err(e) => return Err(e.into()),
        };
        let was_datagram = matches!(input, Input::Receive(..));
        self.rtc
            .handle_input(input)
            .map_err(|e| ClientError::Rtc(e.to_string()))?;
        self.drain(on_event)?;
        Ok(was_datagram)
    }

    /// Starts a local close (RTCP BYE, DTLS close_notify) and sends what that produces.
    /// Best effort: the session is over either way.
    pub(crate) fn close(&mut self) {
        if self.rtc.close().is_ok() {
            let _ = self.drain(&mut |_| {});
        }
    }

    /// Polls the `Rtc` until it returns `Timeout`, sending every transmit and handing every
    /// event to `on_event`.
    fn drain(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<(), ClientError> {
        loop {
            let output = self
                .rtc
                .poll_output()
                .map_err(|e| ClientError::Rtc(e.to_string()))?;
            match output {
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination) {
                        // A lost datagram, as far as the peer is concerned; ICE and
                        // consent checks notice if the path is really gone.
                        tracing::debug!(destination = %t.destination, error = %e, "send failed");
                    }
                }
                Output::Event(event) => on_event(event),
            }
        }
    }
}
