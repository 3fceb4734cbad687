//! The egress engine with no sockets and a virtual clock: a str0m client takes the
//! server's answer, connects, and receives ten seconds of the mix in a fraction of that
//! wall time. The decoded audio must be 440 Hz left and 660 Hz right.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::engine::egress::{Egress, StreamMix};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::analysis::{deinterleave, dominant_frequency, rms};
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::{Decoder, Encoder};
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::{FRAME_DURATION, FRAME_LEN, SAMPLE_RATE};
use mixcast::metrics::Metrics;
use mixcast::streams::StreamDirectory;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// One-way delay of the simulated link.
const LINK_DELAY: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Wire {
    in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    now: Option<Instant>,
}

impl Transmitter for Wire {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let at = self.now.expect("clock set") + LINK_DELAY;
        self.in_flight
            .push_back((at, source, destination, data.to_vec()));
    }
}

struct ClientSide {
    decoder: Decoder,
    pcm: Vec<f32>,
    packets: u32,
    connected: bool,
}

impl ClientSide {
    /// Drains the client `Rtc` to its next timeout (the single-mutation rule).
    fn drain(&mut self, client: &mut Rtc, wire: &mut Wire) -> Instant {
        let mut frame = [0.0f32; FRAME_LEN];
        loop {
            match client.poll_output().unwrap() {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => wire.send(t.source, t.destination, &t.contents),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(m)) => {
                    self.packets += 1;
                    let n = self.decoder.decode(&m.data, &mut frame).unwrap();
                    self.pcm.extend_from_slice(&frame[..n * 2]);
                }
                Output::Event(_) => {}
            }
        }
    }
}

#[test]
fn ten_seconds_of_the_mix_in_virtual_time() {
    let server_addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
    let client_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let wall = Instant::now();
    let mut now = wall;

    let mut mixer = Mixer::new();
    mixer.add(sources::open(&SourceSpec::Tone).unwrap(), 1.0);
    let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).unwrap());
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
    let mut egress = Egress::new(vec![stream], directory, 128_000, metrics.clone());

    let mut client = Rtc::builder().build(now);
    client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
    let mut api = client.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer_sdp, pending) = api.apply().unwrap();

    let negotiated = offer::accept(
        &offer_sdp.to_sdp_string(),
        Role::Viewer,
        &[server_addr],
        now,
    )
    .unwrap();
    assert!(negotiated.answer.contains("stereo=1"));
    let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer).unwrap();
    client.sdp_api().accept_answer(pending, answer).unwrap();

    let mut wire = Wire {
        now: Some(now),
        ..Default::default()
    };
    egress.add_viewer(now, 1, negotiated.rtc, "live", &mut wire);

    let mut client_side = ClientSide {
        decoder: Decoder::new().unwrap(),
        pcm: Vec::new(),
        packets: 0,
        connected: false,
    };
    let mut client_timeout = client_side.drain(&mut client, &mut wire);
    let mut next_tick = now + FRAME_DURATION;

    // 10 s of audio is 500 packets; give the handshake a few seconds of virtual time.
    let limit = now + Duration::from_secs(15);
    while client_side.packets < 500 && now < limit {
        wire.now = Some(now);
        // Deliver everything due.
        while wire.in_flight.front().is_some_and(|p| p.0 <= now) {
            let (_, src, dst, data) = wire.in_flight.pop_front().unwrap();
            if dst == client_addr {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: src,
                        destination: dst,
                        contents: data.as_slice().try_into().unwrap(),
                    },
                );
                client.handle_input(input).unwrap();
                client_timeout = client_side.drain(&mut client, &mut wire);
            } else {
                egress.handle_receive(now, 1, src, dst, &data, &mut wire);
            }
        }
        if client_timeout <= now {
            client.handle_input(Input::Timeout(now)).unwrap();
            client_timeout = client_side.drain(&mut client, &mut wire);
        }
        egress.handle_timeouts(now, &mut wire);
        if now >= next_tick {
            egress.tick(now, &mut wire);
            next_tick += FRAME_DURATION;
        }
        // Jump to the next thing that happens.
        let mut next = next_tick.min(client_timeout);
        if let Some(t) = egress.next_timeout() {
            next = next.min(t);
        }
        if let Some(p) = wire.in_flight.front() {
            next = next.min(p.0);
        }
        now = next.max(now);
    }
    let took = wall.elapsed();
    let ClientSide {
        pcm,
        packets,
        connected,
        ..
    } = client_side;
    println!("received {packets} packets (10 s of audio) in {took:?} of wall time");
    assert!(connected, "the client never connected");
    assert_eq!(packets, 500, "expected 10 s of 20 ms packets");
    assert!(egress.take_ended().is_empty());
    assert_eq!(egress.viewer_count(), 1);

    let (left, right) = deinterleave(&pcm[pcm.len() / 2..]);
    let (fl, fr) = (
        dominant_frequency(&left, SAMPLE_RATE),
        dominant_frequency(&right, SAMPLE_RATE),
    );
    println!(
        "left {fl:.1} Hz, right {fr:.1} Hz, rms {:.3}/{:.3}",
        rms(&left),
        rms(&right)
    );
    assert!((fl - 440.0).abs() < 5.0, "left {fl} Hz");
    assert!((fr - 660.0).abs() < 5.0, "right {fr} Hz");
    assert!(metrics.packets_sent() >= 500);
}
