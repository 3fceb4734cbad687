//! What the fuzz targets share: a reader that turns the fuzzer's bytes into choices, STUN
//! requests signed as a real peer signs them, and a connected str0m client with a session
//! in the engine on an in-memory wire with a virtual clock.
//!
//! Never reads the clock past the first instant, never touches a socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mixcast::engine::egress::{Egress, PublisherOptions, StreamMix};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::Encoder;
use mixcast::media::FRAME_DURATION;
use mixcast::metrics::Metrics;
use mixcast::net::dtls::SrtpKeys;
use mixcast::streams::{StreamDirectory, VideoSource};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The fuzzer's bytes, read as a sequence of choices. Reading past the end gives zeros.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Choices from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Choices { data }
    }

    /// True when every byte was used.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        b
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length-prefixed (one byte) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

/// The ICE passwords the STUN and demux targets sign with.
pub const PASSWORDS: [&str; 3] = [
    "the-session-password-0123",
    "another-password-for-b-456",
    "x",
];

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// A STUN message: `typ`, transaction id `tid`, then `attrs` (raw, as given: they may be
/// malformed), then MESSAGE-INTEGRITY keyed by `pwd` when given (RFC 8489 §14.5: over
/// everything before it, the length counting up to it), then FINGERPRINT when asked for.
/// The header's length is right for what follows when `attrs` is a multiple of 4 long.
pub fn stun_message(
    typ: [u8; 2],
    tid: [u8; 12],
    attrs: &[u8],
    pwd: Option<&str>,
    fingerprint: bool,
) -> Vec<u8> {
    use aws_lc_rs::hmac;
    let mut m = Vec::with_capacity(20 + attrs.len() + 32);
    m.extend_from_slice(&typ);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&tid);
    m.extend_from_slice(attrs);
    let set_len = |m: &mut Vec<u8>, extra: usize| {
        let len = (m.len() + extra - 20) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
    };
    if let Some(pwd) = pwd {
        set_len(&mut m, 24);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
        let tag = hmac::sign(&key, &m);
        m.extend_from_slice(&[0x00, 0x08, 0, 20]);
        m.extend_from_slice(tag.as_ref());
    }
    if fingerprint {
        set_len(&mut m, 8);
        let crc = crc32fast::hash(&m) ^ 0x5354_554e;
        m.extend_from_slice(&[0x80, 0x28, 0, 4]);
        m.extend_from_slice(&crc.to_be_bytes());
    }
    set_len(&mut m, 0);
    m
}

/// A USERNAME attribute (padded).
pub fn username_attr(user: &[u8]) -> Vec<u8> {
    let mut a = vec![0x00, 0x06];
    a.extend_from_slice(&(user.len() as u16).to_be_bytes());
    a.extend_from_slice(user);
    a.resize(4 + user.len().div_ceil(4) * 4, 0);
    a
}

/// Datagrams in flight on the in-memory wire, in order, delivered at the next step.
#[derive(Default)]
pub struct Wire {
    /// (source, destination, bytes).
    pub queue: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Transmitter for Wire {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if self.queue.len() < 10_000 {
            self.queue.push_back((source, destination, data.to_vec()));
        }
    }
}

/// The server's address on the wire.
pub const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8189);
/// The client's.
pub const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

/// The session's key in the engine.
pub const KEY: u64 = 1;

/// A str0m client and its session in an [`Egress`], on a [`Wire`], in virtual time.
pub struct Pair {
    /// The server's engine, with one stream `live` (a tone) and the session.
    pub egress: Egress,
    /// The client.
    pub client: Rtc,
    /// The client's audio m-line.
    pub mid: Mid,
    /// The wire between them.
    pub wire: Wire,
    /// Virtual time.
    pub now: Instant,
    client_timeout: Instant,
    next_tick: Instant,
    /// The client saw `Event::Connected`.
    pub connected: bool,
    /// The client's SRTP sending keys (our DTLS stack fills them in at the handshake).
    pub client_srtp: SrtpKeys,
    /// The server's answer.
    pub answer: String,
}

impl Pair {
    /// A client offering audio (sending it: a WHIP publisher; receiving it: a WHEP
    /// viewer) and its session in the engine, not yet connected.
    pub fn new(role: Role, now: Instant) -> Pair {
        let mut mixer = Mixer::new();
        mixer.add(
            mixcast::media::sources::open(&mixcast::media::sources::SourceSpec::Tone)
                .expect("the test signal"),
            1.0,
        );
        let stream = StreamMix::new("live".into(), mixer, Encoder::new(64_000).expect("encoder"));
        let directory = std::sync::Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
        let metrics = std::sync::Arc::new(Metrics::default());
        let mut egress = Egress::new(vec![stream], directory, 64_000, metrics);

        let mut client = Rtc::builder()
            .set_crypto_provider(mixcast::net::dtls::crypto_provider())
            .build(now);
        let handles = mixcast::net::dtls::take_last_session().expect("our DTLS stack");
        client.add_local_candidate(Candidate::host(CLIENT, "udp").expect("candidate"));
        let mut api = client.sdp_api();
        let direction = match role {
            Role::Publisher => Direction::SendOnly,
            Role::Viewer => Direction::RecvOnly,
        };
        let mid = api.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer_sdp, pending) = api.apply().expect("an offer");
        let negotiated = offer::accept_for_stream(
            &offer_sdp.to_sdp_string(),
            role,
            &[SERVER],
            now,
            VideoSource::First,
            None,
        )
        .expect("str0m's own offer is accepted");
        let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer)
            .expect("the answer parses");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the client takes the answer");
        let mut wire = Wire::default();
        match role {
            Role::Publisher => {
                let options = PublisherOptions {
                    gain: 1.0,
                    ice_lite: negotiated.ice_lite,
                };
                egress.add_publisher(now, KEY, negotiated.rtc, "live", options, &mut wire)
            }
            Role::Viewer => egress.add_viewer(
                now,
                KEY,
                negotiated.rtc,
                negotiated.srtp_keys,
                "live",
                &mut wire,
            ),
        }
        let mut pair = Pair {
            egress,
            client,
            mid,
            wire,
            now,
            client_timeout: now,
            next_tick: now + FRAME_DURATION,
            connected: false,
            client_srtp: handles.srtp_keys,
            answer: negotiated.answer,
        };
        pair.drain_client();
        pair
    }

    fn drain_client(&mut self) {
        loop {
            match self.client.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.client_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => self.wire.send(t.source, t.destination, &t.contents),
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    self.client_timeout = self.now + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    /// Delivers what is on the wire, runs due timers and the 20 ms tick, then moves the
    /// clock to the next thing that happens (at most `max` ahead).
    pub fn step(&mut self, max: Duration) {
        while let Some((src, dst, data)) = self.wire.queue.pop_front() {
            if dst == CLIENT {
                let Ok(contents) = data.as_slice().try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    self.now,
                    str0m::net::Receive {
                        proto: str0m::net::Protocol::Udp,
                        source: src,
                        destination: dst,
                        contents,
                    },
                );
                if self.client.handle_input(input).is_ok() {
                    self.drain_client();
                }
            } else {
                self.egress
                    .handle_receive(self.now, KEY, src, dst, &data, &mut self.wire);
            }
        }
        if self.client_timeout <= self.now {
            if self.client.handle_input(Input::Timeout(self.now)).is_ok() {
                self.drain_client();
            } else {
                self.client_timeout = self.now + Duration::from_secs(3600);
            }
        }
        self.egress.handle_timeouts(self.now, &mut self.wire);
        if self.now >= self.next_tick {
            self.egress.tick(self.now, &mut self.wire);
            self.next_tick += FRAME_DURATION;
        }
        if !self.wire.queue.is_empty() {
            return; // deliver at once
        }
        let mut next = self.next_tick.min(self.client_timeout);
        if let Some(t) = self.egress.next_timeout() {
            next = next.min(t);
        }
        self.now = next.clamp(self.now, self.now + max);
    }

    /// Runs until `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0;
        while self.now < until && steps < 100_000 {
            self.step(until - self.now);
            steps += 1;
        }
    }

    /// Runs until the client is connected and its SRTP keys are known (at most 5 s of
    /// virtual time). False if that did not happen.
    pub fn connect(&mut self) -> bool {
        let limit = self.now + Duration::from_secs(5);
        let mut steps = 0;
        while !(self.connected && self.client_srtp.get().is_some()) && self.now < limit {
            self.step(Duration::from_millis(50));
            steps += 1;
            if steps > 100_000 {
                break;
            }
        }
        self.connected && self.client_srtp.get().is_some()
    }

    /// The client's audio SSRC and the Opus payload type both sides agreed on.
    pub fn audio_ssrc_and_pt(&mut self) -> Option<(u32, u8)> {
        let pt = self.client.writer(self.mid).and_then(|w| {
            w.payload_params()
                .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                .map(|p| *p.pt())
        })?;
        let ssrc = *self
            .client
            .direct_api()
            .stream_tx_by_mid(self.mid, None)?
            .ssrc();
        Some((ssrc, pt))
    }
}
