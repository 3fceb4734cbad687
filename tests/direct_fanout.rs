//! The `direct` fan-out in virtual time: the engine builds and SRTP-protects audio-only
//! viewers' packets itself (no `Rtc` on the way), and str0m clients must still decrypt and
//! decode them: 10 s of the test tone each, no loss, 440 Hz left and 660 Hz right.

#[path = "common/sim.rs"]
mod sim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::config::Fanout;
use mixcast::engine::egress::{Egress, StreamMix};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::analysis::{deinterleave, dominant_frequency};
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::{Decoder, Encoder};
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::{FRAME_DURATION, FRAME_LEN, SAMPLE_RATE};
use mixcast::metrics::Metrics;
use mixcast::streams::StreamDirectory;
use sim::Wire;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Client {
    addr: SocketAddr,
    rtc: Rtc,
    timeout: Instant,
    decoder: Decoder,
    pcm: Vec<f32>,
    packets: u32,
    connected: bool,
    /// RTP datagrams that arrived with the extension bit clear (ours: str0m's carry
    /// header extensions) and with it set.
    plain: u32,
    extended: u32,
}

impl Client {
    fn drain(&mut self, wire: &mut Wire) {
        let mut frame = [0.0f32; FRAME_LEN];
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
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

/// Runs `viewers` audio-only str0m clients against an engine in `mode` until each has
/// 500 packets (10 s) or 15 s of virtual time passed. With `video_first`, the first
/// viewer also takes video.
fn run(mode: Fanout, viewers: usize, video_first: bool) -> Vec<Client> {
    let server_addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
    let mut now = Instant::now();
    let mut mixer = Mixer::new();
    mixer.add(sources::open(&SourceSpec::Tone).unwrap(), 1.0);
    let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).unwrap());
    let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
    let mut egress = Egress::new(
        vec![stream],
        directory,
        128_000,
        Arc::new(Metrics::default()),
    );
    egress.set_fanout(mode);
    let mut wire = Wire {
        now: Some(now),
        ..Default::default()
    };
    let mut clients = Vec::new();
    for i in 0..viewers {
        let addr = SocketAddr::from(([127, 0, 0, 1], 50_000 + i as u16));
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        if video_first && i == 0 {
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let (offer_sdp, pending) = api.apply().unwrap();
        let negotiated = offer::accept(
            &offer_sdp.to_sdp_string(),
            Role::Viewer,
            &[server_addr],
            now,
        )
        .unwrap();
        let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        egress.add_viewer(
            now,
            i as u64 + 1,
            negotiated.rtc,
            negotiated.srtp_keys,
            "live",
            &mut wire,
        );
        let mut c = Client {
            addr,
            rtc,
            timeout: now,
            decoder: Decoder::new().unwrap(),
            pcm: Vec::new(),
            packets: 0,
            connected: false,
            plain: 0,
            extended: 0,
        };
        c.drain(&mut wire);
        clients.push(c);
    }
    let mut next_tick = now + FRAME_DURATION;
    let limit = now + Duration::from_secs(15);
    while clients.iter().any(|c| c.packets < 500) && now < limit {
        wire.now = Some(now);
        while wire.in_flight.front().is_some_and(|p| p.0 <= now) {
            let (_, src, dst, data) = wire.in_flight.pop_front().unwrap();
            if let Some(c) = clients.iter_mut().find(|c| c.addr == dst) {
                if data.len() > 12
                    && (128..192).contains(&data[0])
                    && !(192..224).contains(&data[1])
                {
                    if data[0] & 0x10 == 0 {
                        c.plain += 1;
                    } else {
                        c.extended += 1;
                    }
                }
                sim::receive(&mut c.rtc, now, src, dst, &data).unwrap();
                c.drain(&mut wire);
            } else {
                let key = clients.iter().position(|c| c.addr == src).unwrap() as u64 + 1;
                egress.handle_receive(now, key, src, dst, &data, &mut wire);
            }
        }
        for c in clients.iter_mut().filter(|c| c.timeout <= now) {
            c.rtc.handle_input(Input::Timeout(now)).unwrap();
            c.drain(&mut wire);
        }
        egress.handle_timeouts(now, &mut wire);
        if now >= next_tick {
            egress.tick(now, &mut wire);
            next_tick += FRAME_DURATION;
        }
        let mut next = next_tick;
        for c in &clients {
            next = next.min(c.timeout);
        }
        if let Some(t) = egress.next_timeout() {
            next = next.min(t);
        }
        if let Some(p) = wire.in_flight.front() {
            next = next.min(p.0);
        }
        now = next.max(now);
    }
    assert!(egress.take_ended().is_empty());
    clients
}

fn check_tone(c: &Client) {
    let (left, right) = deinterleave(&c.pcm[c.pcm.len() / 2..]);
    let (fl, fr) = (
        dominant_frequency(&left, SAMPLE_RATE),
        dominant_frequency(&right, SAMPLE_RATE),
    );
    assert!((fl - 440.0).abs() < 5.0, "left {fl} Hz");
    assert!((fr - 660.0).abs() < 5.0, "right {fr} Hz");
}

#[test]
fn direct_viewers_decrypt_and_decode_ten_seconds() {
    let clients = run(Fanout::Direct, 3, false);
    for c in &clients {
        assert!(c.connected, "a client never connected");
        assert_eq!(c.packets, 500, "10 s of 20 ms packets, none lost");
        assert_eq!(c.extended, 0, "every RTP packet built by the engine");
        assert!(c.plain >= 500);
        check_tone(c);
    }
}

#[test]
fn batched_viewers_get_str0m_packets() {
    // The control: str0m's packets carry header extensions, so `plain` tells the paths apart.
    let clients = run(Fanout::Batched, 2, false);
    for c in &clients {
        assert_eq!(c.packets, 500);
        assert_eq!(c.plain, 0);
        assert!(c.extended >= 500);
        check_tone(c);
    }
}

#[test]
fn viewers_of_video_stay_on_str0m_in_direct_mode() {
    // Their sender reports line audio up with video, so str0m keeps sending their audio.
    let clients = run(Fanout::Direct, 2, true);
    assert_eq!(clients[0].packets, 500);
    assert_eq!(
        clients[0].plain, 0,
        "the viewer of video gets str0m's packets"
    );
    assert!(clients[0].extended >= 500);
    assert_eq!(clients[1].packets, 500);
    assert_eq!(
        clients[1].extended, 0,
        "the audio-only viewer gets direct packets"
    );
    for c in &clients {
        check_tone(c);
    }
}
