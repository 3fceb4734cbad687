//! The egress engine with no sockets and a virtual clock: a str0m client takes the
//! server's answer, connects, and receives ten seconds of the mix in a fraction of that
//! wall time. The decoded audio must be 440 Hz left and 660 Hz right.

#[path = "common/sim.rs"]
mod sim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::engine::egress::{Egress, StreamMix, STREAM_GRACE};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::{EndReason, Transmitter};
use mixcast::media::analysis::{deinterleave, dominant_frequency, rms};
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::{Decoder, Encoder};
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::{FRAME_DURATION, FRAME_LEN, SAMPLE_RATE};
use mixcast::metrics::Metrics;
use mixcast::streams::StreamDirectory;
use sim::{new_av_peer, new_peer, run_until, vp8_frame, Peer, Wire};
use str0m::media::{Direction, MediaKind, MediaTime};
use str0m::rtp::rtcp::SenderInfo;
use str0m::{Candidate, Event, Input, Output, Rtc};

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
    egress.add_viewer(
        now,
        1,
        negotiated.rtc,
        negotiated.srtp_keys,
        "live",
        &mut wire,
    );

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
                sim::receive(&mut client, now, src, dst, &data).unwrap();
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
    // The clock is virtual: 10 s of audio must take a small fraction of that in wall time
    // (0.2 s here in release, 0.6 s in debug). The bound is loose so that a loaded CI
    // machine does not fail it, yet a test that slept in real time would.
    assert!(
        took < Duration::from_secs(3),
        "10 s of virtual time took {took:?} of wall time"
    );
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

/// Amplitude of the `hz` component (Goertzel with a Hann window).
fn amplitude_at(samples: &[f32], hz: f32) -> f32 {
    let n = samples.len();
    let w = 2.0 * std::f32::consts::PI * hz / SAMPLE_RATE as f32;
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    let mut wsum = 0.0f32;
    for (i, &x) in samples.iter().enumerate() {
        let win = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos();
        wsum += win;
        let s = x * win + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    2.0 * power.max(0.0).sqrt() / wsum
}

/// A publisher creates a stream on demand and is heard by a viewer within 100 ms of its
/// first packet (virtual time, 5 ms each way on the wire); mixed into a configured stream
/// it is heard on top of the test signal; when it leaves, the on-demand stream lives on
/// for the grace period, then ends its viewer and leaves the directory.
#[test]
fn publishers_feed_the_mix_in_virtual_time() {
    let wall = Instant::now();
    let mut now = wall;
    let mut mixer = Mixer::new();
    mixer.add(sources::open(&SourceSpec::Tone).unwrap(), 1.0);
    let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).unwrap());
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
    let mut egress = Egress::new(vec![stream], directory.clone(), 128_000, metrics.clone());
    let mut wire = Wire::default();
    let mut next_tick = now + FRAME_DURATION;

    // The viewer of "mic" joins first: the stream does not exist yet.
    let mut peers = vec![new_peer(
        1,
        50001,
        Direction::SendOnly,
        &mut egress,
        &mut wire,
        now,
        "mic",
    )];
    assert!(directory.contains("mic"), "publishing creates the stream");
    peers.push(new_peer(
        2,
        50002,
        Direction::RecvOnly,
        &mut egress,
        &mut wire,
        now,
        "mic",
    ));
    peers.push(new_peer(
        3,
        50003,
        Direction::RecvOnly,
        &mut egress,
        &mut wire,
        now,
        "live",
    ));
    peers.push(new_peer(
        4,
        50004,
        Direction::SendOnly,
        &mut egress,
        &mut wire,
        now,
        "live",
    ));
    let until = now + Duration::from_secs(4);
    run_until(
        until,
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    assert!(egress.take_ended().is_empty(), "nobody ended");
    assert!(peers.iter().all(|p| p.connected), "every peer connected");
    assert_eq!(directory.get("mic").map(|s| s.publishers), Some(1));

    // How soon the viewer of "mic" heard the publisher's first packet.
    let (publisher, viewer) = (&peers[0], &peers[1]);
    let first_sent = publisher.first_sent.expect("the publisher sent");
    let heard = viewer
        .pcm
        .chunks(FRAME_LEN)
        .zip(&viewer.arrivals)
        .find(|(frame, _)| rms(frame) > 0.05)
        .map(|(_, at)| *at)
        .expect("the viewer of mic heard something");
    let delay = heard.saturating_duration_since(first_sent);
    println!("first packet heard after {delay:?} (virtual time, 10 ms of it on the wire)");
    assert!(delay <= Duration::from_millis(100), "heard after {delay:?}");

    // "mic": 1 kHz in both channels. "live": the test signal plus 1 kHz.
    let tail = |p: &Peer| p.pcm[p.pcm.len() - 2 * 48_000..].to_vec();
    let (l, r) = deinterleave(&tail(&peers[1]));
    assert!(amplitude_at(&l, 1000.0) > 0.15 && amplitude_at(&r, 1000.0) > 0.15);
    let (l, r) = deinterleave(&tail(&peers[2]));
    println!(
        "live: left 440 Hz {:.3}, right 660 Hz {:.3}, 1 kHz {:.3}/{:.3}",
        amplitude_at(&l, 440.0),
        amplitude_at(&r, 660.0),
        amplitude_at(&l, 1000.0),
        amplitude_at(&r, 1000.0)
    );
    assert!(amplitude_at(&l, 440.0) > 0.1 && amplitude_at(&r, 660.0) > 0.1);
    assert!(amplitude_at(&l, 1000.0) > 0.15 && amplitude_at(&r, 1000.0) > 0.15);
    assert!(amplitude_at(&l, 660.0) < 0.02 && amplitude_at(&r, 440.0) < 0.02);

    // The publisher of "mic" leaves: its viewer keeps receiving (silence) through the
    // grace period, then the stream ends.
    peers[0].sending = false;
    egress.remove_viewer(1, &mut wire);
    let received = peers[1].arrivals.len();
    let grace_end = now + STREAM_GRACE - Duration::from_secs(1);
    run_until(
        grace_end,
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    assert!(
        directory.contains("mic"),
        "the stream outlives its publisher for a while"
    );
    let packets = peers[1].arrivals.len() - received;
    assert!(
        packets as u64 >= (STREAM_GRACE.as_millis() as u64 - 1000) / 20 - 5,
        "{packets}"
    );
    run_until(
        now + Duration::from_secs(3),
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    assert!(!directory.contains("mic"), "then it is removed");
    let ended = egress.take_ended();
    assert!(ended
        .iter()
        .any(|e| e.key == 1 && e.reason == EndReason::Closed));
    assert!(ended
        .iter()
        .any(|e| e.key == 2 && e.reason == EndReason::StreamEnded));
    assert!(directory.contains("live"), "a configured stream stays");
    assert_eq!(
        egress.viewer_count(),
        2,
        "the live viewer and publisher remain"
    );
    println!("simulated {:?} in {:?}", now - wall, wall.elapsed());
}

/// A publisher's video reaches every viewer of its stream that takes video, byte for
/// byte, as it arrives; viewers joining at once cost the publisher a handful of keyframe
/// requests, not one each; an audio-only viewer and another stream's viewer get none.
#[test]
fn video_passes_through_in_virtual_time() {
    let wall = Instant::now();
    let mut now = wall;
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::default());
    let mut egress = Egress::new(Vec::new(), directory.clone(), 64_000, metrics);
    let mut wire = Wire::default();
    let mut next_tick = now + FRAME_DURATION;

    let mut peers = vec![new_av_peer(
        1,
        51001,
        Direction::SendOnly,
        true,
        &mut egress,
        &mut wire,
        now,
        "cam",
    )];
    for k in 2..=6 {
        peers.push(new_av_peer(
            k,
            51000 + k as u16,
            Direction::RecvOnly,
            true,
            &mut egress,
            &mut wire,
            now,
            "cam",
        ));
    }
    peers.push(new_peer(
        7,
        51007,
        Direction::RecvOnly,
        &mut egress,
        &mut wire,
        now,
        "cam",
    ));
    peers.push(new_av_peer(
        8,
        51008,
        Direction::SendOnly,
        false,
        &mut egress,
        &mut wire,
        now,
        "other",
    ));
    peers.push(new_av_peer(
        9,
        51009,
        Direction::RecvOnly,
        true,
        &mut egress,
        &mut wire,
        now,
        "other",
    ));
    let until = now + Duration::from_secs(3);
    run_until(
        until,
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    assert!(egress.take_ended().is_empty(), "nobody ended");
    assert!(peers.iter().all(|p| p.connected), "every peer connected");
    assert_eq!(
        directory.get("cam").and_then(|s| s.video),
        Some(str0m::format::Codec::Vp8),
        "the stream knows its video codec"
    );

    let sent = peers[0].sent;
    for viewer in &peers[1..6] {
        let got = &viewer.video_in;
        assert!(
            got.len() as u64 >= sent - 10,
            "{} of {sent} frames",
            got.len()
        );
        // Byte for byte, in order, no duplicates.
        let first = u64::from_be_bytes(got[0][10..18].try_into().unwrap());
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f, &vp8_frame(first + i as u64), "frame {i}");
        }
    }
    assert!(
        peers[6].video_in.is_empty(),
        "an audio-only viewer gets no video"
    );
    assert!(
        peers[8].video_in.is_empty(),
        "another stream's viewer gets none"
    );
    let pli = peers[0].keyframe_requests;
    println!("{sent} frames forwarded to 5 viewers; {pli} keyframe requests reached the publisher");
    assert!(
        (1..=3).contains(&pli),
        "{pli} keyframe requests for 5 viewers joining at once"
    );
}

/// Twenty viewers joining within a second cost the publisher a few keyframe requests, not
/// twenty; when the video source leaves, the next publisher that sends video takes over,
/// is asked for a keyframe, and its frames reach the viewers.
#[test]
fn crowd_join_and_source_switch_in_virtual_time() {
    let mut now = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::default());
    let mut egress = Egress::new(Vec::new(), directory.clone(), 64_000, metrics);
    let mut wire = Wire::default();
    let mut next_tick = now + FRAME_DURATION;

    let mut peers = vec![new_av_peer(
        1,
        52001,
        Direction::SendOnly,
        true,
        &mut egress,
        &mut wire,
        now,
        "cam",
    )];
    run_until(
        now + Duration::from_secs(1),
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    let before = peers[0].keyframe_requests;
    // Twenty viewers, one every 50 ms.
    for k in 0..20u64 {
        peers.push(new_av_peer(
            10 + k,
            52010 + k as u16,
            Direction::RecvOnly,
            true,
            &mut egress,
            &mut wire,
            now,
            "cam",
        ));
        run_until(
            now + Duration::from_millis(50),
            &mut now,
            &mut next_tick,
            &mut peers,
            &mut egress,
            &mut wire,
        );
    }
    run_until(
        now + Duration::from_secs(1),
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    let crowd = peers[0].keyframe_requests - before;
    println!("20 viewers joining over 1 s: {crowd} keyframe requests");
    assert!(
        (1..=4).contains(&crowd),
        "{crowd} keyframe requests for 20 joiners"
    );
    assert!(
        peers[1..].iter().all(|p| !p.video_in.is_empty()),
        "every viewer got video"
    );

    // A second publisher with video; the first leaves; the second becomes the source.
    peers.push(new_av_peer(
        2,
        52002,
        Direction::SendOnly,
        true,
        &mut egress,
        &mut wire,
        now,
        "cam",
    ));
    run_until(
        now + Duration::from_secs(1),
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    let second = peers.len() - 1;
    assert_eq!(peers[second].keyframe_requests, 0, "not the source yet");
    let received: Vec<usize> = peers[1..21].iter().map(|p| p.video_in.len()).collect();
    peers[0].sending = false;
    egress.remove_viewer(1, &mut wire);
    run_until(
        now + Duration::from_secs(2),
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    assert!(
        peers[second].keyframe_requests >= 1,
        "the new source is asked for a keyframe"
    );
    let sent_by_second = peers[second].sent;
    for (viewer, before) in peers[1..21].iter().zip(received) {
        let new = &viewer.video_in[before..];
        assert!(new.len() >= 50, "{} frames after the switch", new.len());
        // The last frames are the second publisher's (its counter, not the first's).
        let n = u64::from_be_bytes(new[new.len() - 1][10..18].try_into().unwrap());
        assert!(
            n < sent_by_second && n + 10 >= sent_by_second,
            "frame {n} of {sent_by_second}"
        );
    }
    assert_eq!(
        directory.get("cam").and_then(|s| s.video),
        Some(str0m::format::Codec::Vp8)
    );
}

/// The sender-clock time (seconds) a viewer's sender report maps `time` to.
fn sender_clock(time: MediaTime, info: &SenderInfo) -> f64 {
    let rate = time.frequency().get() as f64;
    let delta = (time.numer() as u32).wrapping_sub(info.rtp_time.numer() as u32) as i32;
    mixcast::engine::sync::ntp_secs(info.ntp_time) + f64::from(delta) / rate
}

/// Lip-sync: a publisher's tone starts with its video frame N, its packets cross a jittery
/// link (one in four 120 ms late, so its audio waits well over 100 ms in the jitter buffer
/// while video is forwarded at once). A viewer that lines audio and video up by their
/// sender reports, as browsers do, must find the tone's onset within 80 ms of frame N
/// (the bound). Measured: +13 ms, the two Opus codecs in the path; without the
/// sender-report mapping of `engine::sync` it was +148 ms. The onset comes after 8 s
/// because str0m's own publisher sends its first audio report at 5 s.
#[test]
fn lip_sync_survives_the_jitter_buffer_in_virtual_time() {
    let mut now = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::default());
    let mut egress = Egress::new(Vec::new(), directory, 64_000, metrics);
    let mut wire = Wire::default();
    let mut next_tick = now + FRAME_DURATION;

    const ONSET: u64 = 400;
    let mut publisher = new_av_peer(
        1,
        52001,
        Direction::SendOnly,
        true,
        &mut egress,
        &mut wire,
        now,
        "sync",
    );
    publisher.onset_frame = Some(ONSET);
    wire.jittery = Some(publisher.addr);
    let viewer = new_av_peer(
        2,
        52002,
        Direction::RecvOnly,
        true,
        &mut egress,
        &mut wire,
        now,
        "sync",
    );
    let mut peers = vec![publisher, viewer];
    let until = now + Duration::from_secs(10);
    run_until(
        until,
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    let viewer = &peers[1];
    assert!(viewer.connected, "viewer connected");

    // The video frame captured with the onset, mapped through its sender report.
    let vi = viewer
        .video_in
        .iter()
        .position(|f| u64::from_be_bytes(f[10..18].try_into().unwrap()) == ONSET)
        .expect("the onset's video frame reached the viewer");
    let vtime = viewer.video_times[vi].0;
    let vinfo = viewer.video_times[..=vi].iter().rev().find_map(|v| v.1);
    let video_at = sender_clock(vtime, &vinfo.expect("a video sender report by then"));

    // The tone's onset in the decoded audio, mapped through the audio sender report.
    let onset = viewer
        .pcm
        .chunks(2)
        .position(|s| s[0].abs() > 0.05)
        .expect("the tone reached the viewer");
    let frame = onset / (FRAME_LEN / 2);
    let atime = viewer.audio_times[frame].0;
    // str0m attaches the report to some packets only: take the latest one by then.
    let ainfo = viewer.audio_times[..=frame].iter().rev().find_map(|a| a.1);
    let sample = MediaTime::new(
        atime.numer() + (onset % (FRAME_LEN / 2)) as u64,
        atime.frequency(),
    );
    let audio_at = sender_clock(sample, &ainfo.expect("an audio sender report by then"));

    let skew_ms = (audio_at - video_at) * 1000.0;
    println!("lip-sync: audio {skew_ms:+.1} ms against video");
    assert!(
        skew_ms.abs() < 80.0,
        "audio {skew_ms:+.1} ms against video (jitter buffer not accounted for?)"
    );
}

/// Two talkers (`sendrecv` publishers, 1 kHz and 440 Hz) and a listen-only viewer of one
/// stream in virtual time: each talker hears the other and not itself, with its RTP times
/// continuous; the viewer hears both; a viewer tied to talker 1 (`Egress::hear_minus`, what
/// `?minus=` does) hears 440 Hz only; the talkers' frames are counted as mix-minus encodes.
#[test]
fn talkers_hear_the_mix_minus_themselves_in_virtual_time() {
    let mut now = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
    let mut egress = Egress::new(vec![], directory, 128_000, metrics.clone());
    let mut wire = Wire::default();
    let mut next_tick = now + FRAME_DURATION;
    let mut peers = vec![new_peer(
        1,
        50001,
        Direction::SendRecv,
        &mut egress,
        &mut wire,
        now,
        "talk",
    )];
    let mut second = new_peer(
        2,
        50002,
        Direction::SendRecv,
        &mut egress,
        &mut wire,
        now,
        "talk",
    );
    second.tone_hz = 440.0;
    peers.push(second);
    for (key, port) in [(3, 50003), (4, 50004)] {
        peers.push(new_peer(
            key,
            port,
            Direction::RecvOnly,
            &mut egress,
            &mut wire,
            now,
            "talk",
        ));
    }
    assert!(
        egress.hear_minus(4, 1),
        "viewer 4 hears the mix minus talker 1"
    );
    assert!(
        !egress.hear_minus(4, 99),
        "no publisher 99: refused (and viewer 4 ended)"
    );
    peers.pop();
    peers.push(new_peer(
        5,
        50005,
        Direction::RecvOnly,
        &mut egress,
        &mut wire,
        now,
        "talk",
    ));
    assert!(egress.hear_minus(5, 1));
    run_until(
        now + Duration::from_secs(4),
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    let ended = egress.take_ended();
    assert_eq!(ended.len(), 1, "only viewer 4 ended: {ended:?}");
    assert!(peers.iter().all(|p| p.connected), "every peer connected");

    let tail = |p: &Peer| p.pcm[p.pcm.len() - 2 * 48_000..].to_vec();
    let db = |a: f32, b: f32| 20.0 * (a.max(1e-9) / b.max(1e-9)).log10();
    for (i, hear, not) in [(0, 440.0, 1000.0), (1, 1000.0, 440.0), (3, 440.0, 1000.0)] {
        let (l, r) = deinterleave(&tail(&peers[i]));
        for ch in [&l, &r] {
            let (h, n) = (amplitude_at(ch, hear), amplitude_at(ch, not));
            println!(
                "peer {}: {hear} Hz {h:.3}, {not} Hz {n:.5} ({:.1} dB)",
                peers[i].key,
                db(n, h)
            );
            assert!(h > 0.2, "peer {}: {hear} Hz at {h}", peers[i].key);
            assert!(db(n, h) < -30.0, "peer {}: {not} Hz at {n}", peers[i].key);
        }
        // One packet per tick, RTP time +960 each.
        for w in peers[i].audio_times.windows(2) {
            assert_eq!(
                w[1].0.numer() - w[0].0.numer(),
                960,
                "peer {}",
                peers[i].key
            );
        }
    }
    let (l, _) = deinterleave(&tail(&peers[2]));
    assert!(amplitude_at(&l, 440.0) > 0.2 && amplitude_at(&l, 1000.0) > 0.2);
    let text = metrics.render();
    let own: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("mixcast_mixminus_encodes_total ")?
                .parse()
                .ok()
        })
        .expect("the counter is exported");
    // Two talkers, both always audible, for about 4 s (200 ticks) each.
    assert!(own > 2 * 180, "{own} mix-minus encodes");
}
