//! A simulated network for the engine's virtual-clock tests: a wire with a fixed delay,
//! str0m peers (viewers that decode, publishers that send a tone and, if asked, fake VP8
//! video, optionally as simulcast layers), and a loop that jumps the clock to the next
//! thing that happens. Never reads the clock itself: time is whatever the test says.

#![allow(dead_code)] // each test file uses a different part

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mixcast::engine::egress::{Egress, PublisherOptions};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::opus::{Decoder, Encoder};
use mixcast::media::{FRAME_DURATION, FRAME_LEN, SAMPLE_RATE};
use mixcast::streams::VideoSource;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::rtcp::SenderInfo;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// One-way delay of the simulated link.
pub const LINK_DELAY: Duration = Duration::from_millis(5);

/// Datagrams in flight, delivered [`LINK_DELAY`] after they were sent; a destination with
/// a [`Policer`] gets only what fits its rate.
#[derive(Default)]
pub struct Wire {
    pub in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    pub now: Option<Instant>,
    pub limits: HashMap<SocketAddr, Policer>,
    /// Datagrams from this address are delayed by [`JITTER_DELAY`] more, one in four.
    pub jittery: Option<SocketAddr>,
    pub sent_jittery: u64,
    /// RTP and RTCP datagrams to this address are lost, one in `n` (handshakes pass):
    /// (address, n, how many were dropped).
    pub lossy: Option<(SocketAddr, u64, u64)>,
    pub sent_lossy: u64,
}

/// The extra delay of every fourth datagram from [`Wire::jittery`].
pub const JITTER_DELAY: Duration = Duration::from_millis(120);

/// A token bucket on the way to one address: a datagram that does not fit is dropped, as
/// a congested link would.
pub struct Policer {
    pub bytes_per_second: f64,
    pub burst: f64,
    tokens: f64,
    last: Option<Instant>,
    pub dropped: u64,
    pub passed: u64,
}

impl Policer {
    pub fn new(bytes_per_second: f64) -> Policer {
        let burst = bytes_per_second / 10.0;
        Policer {
            bytes_per_second,
            burst,
            tokens: burst,
            last: None,
            dropped: 0,
            passed: 0,
        }
    }

    fn admits(&mut self, now: Instant, len: usize) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.bytes_per_second;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            self.passed += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl Transmitter for Wire {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let now = self.now.expect("clock set");
        if let Some(p) = self.limits.get_mut(&destination) {
            if !p.admits(now, data.len()) {
                return;
            }
        }
        if let Some((to, n, dropped)) = &mut self.lossy {
            // RTP and RTCP start with version 2 (RFC 7983: first byte 128..=191).
            if *to == destination && (128..=191).contains(&data[0]) {
                self.sent_lossy += 1;
                if self.sent_lossy.is_multiple_of(*n) {
                    *dropped += 1;
                    return;
                }
            }
        }
        let mut at = now + LINK_DELAY;
        if self.jittery == Some(source) {
            self.sent_jittery += 1;
            if self.sent_jittery.is_multiple_of(4) {
                at += JITTER_DELAY;
            }
        }
        // Kept in order of delivery.
        let pos = self.in_flight.partition_point(|p| p.0 <= at);
        self.in_flight
            .insert(pos, (at, source, destination, data.to_vec()));
    }
}

/// A str0m peer on the simulated wire: a viewer that decodes what it receives, or a
/// publisher that sends a 1 kHz tone every 20 ms (and a fake VP8 frame, on every
/// simulcast layer it has).
pub struct Peer {
    pub key: u64,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub timeout: Instant,
    pub connected: bool,
    /// Viewer: decoded audio and the virtual time each 20 ms frame arrived.
    pub decoder: Decoder,
    pub pcm: Vec<f32>,
    pub arrivals: Vec<Instant>,
    /// Publisher: its encoder, the m-line to write, frames sent and when the first left.
    pub encoder: Option<Encoder>,
    pub audio: Option<(Mid, Pt)>,
    pub mid: Mid,
    pub sent: u64,
    pub first_sent: Option<Instant>,
    pub sending: bool,
    /// Video: the m-line (if any), frames received (their bytes), keyframe requests seen
    /// and the layer each asked for.
    pub video_mid: Option<Mid>,
    pub video_in: Vec<Vec<u8>>,
    pub keyframe_requests: u32,
    pub keyframe_rids: Vec<Option<Rid>>,
    /// Publisher: the simulcast layers it sends (empty: one plain video stream).
    pub layers: Vec<Rid>,
    /// The answer the server gave this peer.
    pub answer: String,
    /// Viewer: each audio frame's and video frame's RTP time and the sender report it
    /// came with (lip-sync).
    pub audio_times: Vec<(MediaTime, Option<SenderInfo>)>,
    pub video_times: Vec<(MediaTime, Option<SenderInfo>)>,
    /// Publisher: its tone starts at this frame (silence before); `None`: from the start.
    pub onset_frame: Option<u64>,
    /// Publisher: the frequency of its tone (both channels).
    pub tone_hz: f32,
    /// Decode received audio into `pcm` (off for crowds whose sound is not checked).
    pub decode: bool,
    /// The last RTP sequence number of each audio packet received.
    pub audio_seqs: Vec<u64>,
}

/// A fake VP8 key frame (the frame tag and start code of RFC 6386, then `n` as a marker):
/// forwarded frames must arrive byte for byte.
pub fn vp8_frame(n: u64) -> Vec<u8> {
    let mut f = vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    f.extend_from_slice(&n.to_be_bytes());
    f.resize(300, 0x55);
    f
}

/// [`vp8_frame`] of simulcast layer `layer` (0 = the first listed): byte 18 names the
/// layer, and lower layers are smaller, as real ones are (1000, 500, 333 bytes: 400, 200
/// and 133 kbit/s at 50 frames a second).
pub fn vp8_layer_frame(n: u64, layer: usize) -> Vec<u8> {
    let mut f = vp8_frame(n);
    f[18] = layer as u8;
    f.resize(1000 / (layer + 1), 0x55);
    f
}

/// The frame counter of a received [`vp8_frame`].
pub fn frame_number(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[10..18].try_into().expect("a vp8_frame"))
}

impl Peer {
    pub fn drain(&mut self, wire: &mut Wire, now: Instant) {
        let mut frame = [0.0f32; FRAME_LEN];
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => wire.send(t.source, t.destination, &t.contents),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::KeyframeRequest(r)) => {
                    self.keyframe_requests += 1;
                    self.keyframe_rids.push(r.rid);
                }
                Output::Event(Event::MediaData(m)) if Some(m.mid) == self.video_mid => {
                    self.video_in.push(m.data.to_vec());
                    self.video_times.push((m.time, m.last_sender_info));
                }
                Output::Event(Event::MediaData(m)) => {
                    self.audio_times.push((m.time, m.last_sender_info));
                    self.audio_seqs.push(**m.seq_range.end());
                    if self.decode {
                        let n = self.decoder.decode(&m.data, &mut frame).unwrap();
                        self.pcm.extend_from_slice(&frame[..n * 2]);
                    }
                    self.arrivals.push(now);
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Publisher: writes the next 20 ms of its tone (both channels), and a video frame
    /// on each layer if it has video.
    pub fn send_frame(&mut self, now: Instant, wire: &mut Wire) {
        if self.audio.is_none() && self.connected {
            let mid = self.mid;
            let pt = self.rtc.writer(mid).and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                    .map(|p| p.pt())
            });
            self.audio = pt.map(|pt| (mid, pt));
        }
        let (Some(enc), Some((mid, pt)), true) = (&mut self.encoder, self.audio, self.connected)
        else {
            return;
        };
        let mut pcm = [0.0f32; FRAME_LEN];
        let silent = self.onset_frame.is_some_and(|f| self.sent < f);
        for i in (0..FRAME_LEN / 2).filter(|_| !silent) {
            let t = (self.sent as usize * (FRAME_LEN / 2) + i) as f32 / SAMPLE_RATE as f32;
            let x = 0.3 * (2.0 * std::f32::consts::PI * self.tone_hz * t).sin();
            pcm[2 * i] = x;
            pcm[2 * i + 1] = x;
        }
        let mut packet = vec![0u8; 1500];
        let n = enc.encode(&pcm, &mut packet).unwrap();
        packet.truncate(n);
        let time = str0m::media::MediaTime::new(
            self.sent * (FRAME_LEN as u64 / 2),
            str0m::media::Frequency::FORTY_EIGHT_KHZ,
        );
        self.rtc
            .writer(mid)
            .unwrap()
            .write(pt, now, time, packet)
            .unwrap();
        if let Some(vmid) = self.video_mid {
            let pt = self.rtc.writer(vmid).and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                    .map(|p| p.pt())
            });
            if let Some(pt) = pt {
                let vtime = str0m::media::MediaTime::new(
                    self.sent * 1800,
                    str0m::media::Frequency::NINETY_KHZ,
                );
                if self.layers.is_empty() {
                    self.rtc
                        .writer(vmid)
                        .unwrap()
                        .write(pt, now, vtime, vp8_frame(self.sent))
                        .unwrap();
                } else {
                    for (i, rid) in self.layers.clone().into_iter().enumerate() {
                        self.rtc
                            .writer(vmid)
                            .unwrap()
                            .rid(rid)
                            .write(pt, now, vtime, vp8_layer_frame(self.sent, i))
                            .unwrap();
                    }
                }
            }
        }
        self.sent += 1;
        self.first_sent.get_or_insert(now);
        self.drain(wire, now);
    }
}

/// How to set up a [`Peer`].
#[derive(Clone)]
pub struct PeerSetup<'a> {
    pub key: u64,
    pub port: u16,
    /// `SendOnly`: a WHIP publisher; `RecvOnly`: a WHEP viewer.
    pub direction: Direction,
    /// With a video m-line.
    pub video: bool,
    /// A publisher's simulcast layers (rids), in its `a=simulcast` order.
    pub rids: &'a [&'a str],
    pub stream: &'a str,
    /// How the stream picks its video, and its video's codec now (what signalling reads
    /// from the directory).
    pub video_source: VideoSource,
    pub current_video: Option<str0m::format::Codec>,
}

impl<'a> PeerSetup<'a> {
    pub fn new(key: u64, port: u16, direction: Direction, stream: &'a str) -> PeerSetup<'a> {
        PeerSetup {
            key,
            port,
            direction,
            video: false,
            rids: &[],
            stream,
            video_source: VideoSource::First,
            current_video: None,
        }
    }
}

pub fn new_peer(
    key: u64,
    port: u16,
    direction: Direction,
    egress: &mut Egress,
    wire: &mut Wire,
    now: Instant,
    stream: &str,
) -> Peer {
    new_av_peer(key, port, direction, false, egress, wire, now, stream)
}

#[allow(clippy::too_many_arguments)]
pub fn new_av_peer(
    key: u64,
    port: u16,
    direction: Direction,
    video: bool,
    egress: &mut Egress,
    wire: &mut Wire,
    now: Instant,
    stream: &str,
) -> Peer {
    let setup = PeerSetup {
        video,
        ..PeerSetup::new(key, port, direction, stream)
    };
    add_peer(&setup, egress, wire, now)
}

/// Negotiates a peer as `setup` says and hands the server's side to `egress`.
pub fn add_peer(setup: &PeerSetup, egress: &mut Egress, wire: &mut Wire, now: Instant) -> Peer {
    let server_addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", setup.port).parse().unwrap();
    let direction = setup.direction;
    let mut rtc = Rtc::builder().build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, direction, None, None, None);
    let layers: Vec<Rid> = setup.rids.iter().map(|r| Rid::from(*r)).collect();
    let simulcast = (!layers.is_empty()).then(|| {
        let mut s = Simulcast::new();
        for rid in setup.rids {
            s.add_send_layer(SimulcastLayer::new(rid));
        }
        s
    });
    let video_mid = setup
        .video
        .then(|| api.add_media(MediaKind::Video, direction, None, None, simulcast));
    let (offer_sdp, pending) = api.apply().unwrap();
    // A two-way (sendrecv) peer is a WHIP publisher that also hears its mix-minus.
    let role = if matches!(direction, Direction::SendOnly | Direction::SendRecv) {
        Role::Publisher
    } else {
        Role::Viewer
    };
    let negotiated = offer::accept_for_stream(
        &offer_sdp.to_sdp_string(),
        role,
        &[server_addr],
        now,
        setup.video_source,
        setup.current_video,
    )
    .unwrap();
    let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
    wire.now = Some(now);
    match role {
        Role::Publisher => {
            let want = match direction {
                Direction::SendRecv => "a=sendrecv",
                _ => "a=recvonly",
            };
            assert!(negotiated.answer.contains(want), "a WHIP answer receives");
            let options = PublisherOptions {
                gain: 1.0,
                ice_lite: negotiated.ice_lite,
            };
            egress.add_publisher(now, setup.key, negotiated.rtc, setup.stream, options, wire);
        }
        Role::Viewer => egress.add_viewer(
            now,
            setup.key,
            negotiated.rtc,
            negotiated.srtp_keys,
            setup.stream,
            wire,
        ),
    }
    let mut peer = Peer {
        key: setup.key,
        addr,
        rtc,
        timeout: now,
        connected: false,
        decoder: Decoder::new().unwrap(),
        pcm: Vec::new(),
        arrivals: Vec::new(),
        encoder: (role == Role::Publisher).then(|| Encoder::new(64_000).unwrap()),
        audio: None,
        mid,
        sent: 0,
        first_sent: None,
        sending: true,
        video_mid,
        video_in: Vec::new(),
        keyframe_requests: 0,
        keyframe_rids: Vec::new(),
        layers,
        answer: negotiated.answer,
        audio_times: Vec::new(),
        video_times: Vec::new(),
        onset_frame: None,
        tone_hz: 1000.0,
        decode: true,
        audio_seqs: Vec::new(),
    };
    peer.drain(wire, now);
    peer
}

/// Gives a client's `rtc` the datagram `data` that `source` sent to `destination`, arrived
/// at `now`: str0m's result.
pub fn receive(
    rtc: &mut Rtc,
    now: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    data: &[u8],
) -> Result<(), str0m::RtcError> {
    rtc.handle_input(Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents: data.try_into().expect("a datagram str0m knows"),
        },
    ))
}

/// Runs the simulation until `until`: delivers datagrams, timeouts, 20 ms ticks, and the
/// publishers' frames every 20 ms.
pub fn run_until(
    until: Instant,
    now: &mut Instant,
    next_tick: &mut Instant,
    peers: &mut [Peer],
    egress: &mut Egress,
    wire: &mut Wire,
) {
    while *now < until {
        wire.now = Some(*now);
        while wire.in_flight.front().is_some_and(|p| p.0 <= *now) {
            let (_, src, dst, data) = wire.in_flight.pop_front().unwrap();
            if let Some(p) = peers.iter_mut().find(|p| p.addr == dst) {
                if receive(&mut p.rtc, *now, src, dst, &data).is_ok() {
                    p.drain(wire, *now);
                }
            } else if let Some(p) = peers.iter().find(|p| p.addr == src) {
                egress.handle_receive(*now, p.key, src, dst, &data, wire);
            }
        }
        for p in peers.iter_mut() {
            if p.timeout <= *now && p.rtc.is_alive() {
                p.rtc.handle_input(Input::Timeout(*now)).unwrap();
                p.drain(wire, *now);
            }
        }
        egress.handle_timeouts(*now, wire);
        if *now >= *next_tick {
            egress.tick(*now, wire);
            for p in peers.iter_mut().filter(|p| p.sending) {
                p.send_frame(*now, wire);
            }
            *next_tick += FRAME_DURATION;
        }
        let mut next = (*next_tick).min(until);
        for p in peers.iter() {
            next = next.min(p.timeout);
        }
        if let Some(t) = egress.next_timeout() {
            next = next.min(t);
        }
        if let Some(p) = wire.in_flight.front() {
            next = next.min(p.0);
        }
        *now = next.max(*now);
        if next <= *now && wire.in_flight.front().is_none_or(|p| p.0 > *now) {
            // Nothing due before the clock moves: step to the next event strictly later.
            *now = (*now + Duration::from_micros(100)).min(until.max(*now));
        }
    }
}
