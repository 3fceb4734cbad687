//! Which video a stream's viewers get, in virtual time (no sockets; see tests/common/sim.rs):
//! simulcast publishers (OBS 32's rids "0", "1", "2") are received on every layer and only
//! the top layer reaches viewers; the per-stream video source setting (`first`, `latest`,
//! `none`) picks the publisher.

#[path = "common/sim.rs"]
mod sim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::engine::egress::{Egress, StreamMix};
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::Encoder;
use mixcast::media::FRAME_DURATION;
use mixcast::metrics::Metrics;
use mixcast::streams::{StreamDirectory, VideoSource};
use sim::{add_peer, frame_number, run_until, Peer, PeerSetup, Wire};
use str0m::media::{Direction, Rid};

/// An engine with one configured, empty stream `name` whose video is chosen by `source`.
fn engine(name: &str, source: VideoSource) -> (Egress, Arc<StreamDirectory>) {
    let stream = StreamMix::new(name.into(), Mixer::new(), Encoder::new(64_000).unwrap())
        .with_video_source(source);
    let directory = Arc::new(StreamDirectory::new([(name.to_string(), vec![])]));
    let egress = Egress::new(
        vec![stream],
        directory.clone(),
        64_000,
        Arc::new(Metrics::default()),
    );
    (egress, directory)
}

/// The simulation's clock, wire and peers.
struct Sim {
    now: Instant,
    next_tick: Instant,
    wire: Wire,
    peers: Vec<Peer>,
    egress: Egress,
}

impl Sim {
    fn new(egress: Egress) -> Sim {
        let now = Instant::now();
        Sim {
            now,
            next_tick: now + FRAME_DURATION,
            wire: Wire::default(),
            peers: Vec::new(),
            egress,
        }
    }

    /// Adds a peer; returns its index in `peers`.
    fn add(&mut self, setup: PeerSetup) -> usize {
        let peer = add_peer(&setup, &mut self.egress, &mut self.wire, self.now);
        self.peers.push(peer);
        self.peers.len() - 1
    }

    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        run_until(
            until,
            &mut self.now,
            &mut self.next_tick,
            &mut self.peers,
            &mut self.egress,
            &mut self.wire,
        );
    }

    /// Ends peer `i` as a DELETE would, and stops it sending.
    fn remove(&mut self, i: usize) {
        self.peers[i].sending = false;
        let key = self.peers[i].key;
        self.egress.remove_viewer(key, &mut self.wire);
    }
}

fn publisher(key: u64, stream: &str, source: VideoSource) -> PeerSetup<'_> {
    PeerSetup {
        video: true,
        video_source: source,
        ..PeerSetup::new(key, 53000 + key as u16, Direction::SendOnly, stream)
    }
}

fn viewer(key: u64, stream: &str, source: VideoSource) -> PeerSetup<'_> {
    PeerSetup {
        video: true,
        video_source: source,
        ..PeerSetup::new(key, 53000 + key as u16, Direction::RecvOnly, stream)
    }
}

/// A publisher sending three simulcast layers: its answer receives all three, the layers
/// all arrive, and viewers (on clean links) get the top layer's frames only (byte for
/// byte, in order, under their one video stream); keyframe requests go to the top layer.
#[test]
fn simulcast_top_layer_reaches_viewers() {
    let (egress, directory) = engine("cam", VideoSource::First);
    let mut sim = Sim::new(egress);
    let rids = ["0", "1", "2"];
    let p = sim.add(PeerSetup {
        rids: &rids,
        ..publisher(1, "cam", VideoSource::First)
    });
    let answer = sim.peers[p].answer.clone();
    for rid in rids {
        assert!(answer.contains(&format!("a=rid:{rid} recv")), "{answer}");
    }
    assert!(answer.contains("a=simulcast:recv 0;1;2"), "{answer}");
    let viewers: Vec<usize> = (2..=4)
        .map(|k| sim.add(viewer(k, "cam", VideoSource::First)))
        .collect();
    sim.run(Duration::from_secs(3));
    assert!(sim.egress.take_ended().is_empty(), "nobody ended");
    assert!(
        sim.peers.iter().all(|p| p.connected),
        "every peer connected"
    );
    assert_eq!(
        directory.get("cam").and_then(|s| s.video),
        Some(str0m::format::Codec::Vp8)
    );

    let sent = sim.peers[p].sent;
    for &v in &viewers {
        let got = &sim.peers[v].video_in;
        assert!(
            got.len() as u64 >= sent - 10,
            "{} of {sent} frames (three layers sent)",
            got.len()
        );
        let first = frame_number(&got[0]);
        for (i, f) in got.iter().enumerate() {
            assert_eq!(
                f,
                &sim::vp8_layer_frame(first + i as u64, 0),
                "frame {i}: only layer \"0\", whole and in order"
            );
        }
    }
    // A viewer joining now is offered the stream's codec only, as signalling does, and
    // gets the top layer too.
    let codec = directory.get("cam").and_then(|s| s.video);
    let late = sim.add(PeerSetup {
        current_video: codec,
        ..viewer(5, "cam", VideoSource::First)
    });
    let answer = &sim.peers[late].answer;
    let video_section = answer.split("m=video").nth(1).unwrap_or("");
    assert!(
        video_section.contains("VP8/90000") && !video_section.contains("H264/90000"),
        "only VP8 offered: {answer}"
    );
    sim.run(Duration::from_secs(1));
    let got = &sim.peers[late].video_in;
    assert!(got.len() >= 40, "{} frames for the late viewer", got.len());
    assert!(
        got.iter().all(|f| f[18] == 0 && f.len() == 1000),
        "top layer only"
    );

    let top = Rid::from("0");
    let requests = &sim.peers[p].keyframe_rids;
    println!(
        "{sent} frames per layer sent; viewers got {} (top layer only); keyframe requests: {requests:?}",
        sim.peers[viewers[0]].video_in.len()
    );
    assert!(!requests.is_empty(), "joining viewers ask for a keyframe");
    assert!(
        requests.iter().all(|r| *r == Some(top)),
        "keyframe requests go to the top layer: {requests:?}"
    );
}

/// Two video publishers, the second joining a second after the first; returns the
/// simulation, the publishers' and the viewers' indices.
fn two_publishers(source: VideoSource) -> (Sim, usize, usize, Vec<usize>) {
    let (egress, _) = engine("studio", source);
    let mut sim = Sim::new(egress);
    let a = sim.add(publisher(1, "studio", source));
    let viewers: Vec<usize> = (10..13)
        .map(|k| sim.add(viewer(k, "studio", source)))
        .collect();
    sim.run(Duration::from_secs(2));
    let b = sim.add(publisher(2, "studio", source));
    sim.run(Duration::from_secs(2));
    assert!(sim.egress.take_ended().is_empty(), "nobody ended");
    assert!(
        sim.peers.iter().all(|p| p.connected),
        "every peer connected"
    );
    (sim, a, b, viewers)
}

/// Whether the last frame viewer `v` got is publisher `p`'s latest (frame counters of
/// the two publishers differ by the second they were apart).
fn last_frame_from(sim: &Sim, v: usize, p: usize) -> bool {
    let last = sim.peers[v].video_in.last().map(|f| frame_number(f));
    let sent = sim.peers[p].sent;
    last.is_some_and(|n| n < sent && n + 10 >= sent)
}

/// `first` (the default): the first video publisher keeps the stream while a second one
/// sends; when the first leaves, the second takes over with a keyframe request.
#[test]
fn first_video_publisher_keeps_the_stream() {
    let (mut sim, a, b, viewers) = two_publishers(VideoSource::First);
    for &v in &viewers {
        assert!(last_frame_from(&sim, v, a), "viewers still get the first");
    }
    assert_eq!(sim.peers[b].keyframe_requests, 0, "the second is not asked");
    sim.remove(a);
    sim.run(Duration::from_secs(1));
    assert!(sim.peers[b].keyframe_requests >= 1, "the next one is asked");
    for &v in &viewers {
        assert!(last_frame_from(&sim, v, b), "viewers get the second");
    }
}

/// `latest`: the newest video publisher takes over at once, with a keyframe request; when
/// it leaves, the one still sending takes the stream back.
#[test]
fn latest_video_publisher_takes_over() {
    let (mut sim, a, b, viewers) = two_publishers(VideoSource::Latest);
    assert!(
        sim.peers[b].keyframe_requests >= 1,
        "the newcomer is asked for a keyframe"
    );
    for &v in &viewers {
        assert!(last_frame_from(&sim, v, b), "viewers get the newest");
    }
    let before = sim.peers[a].keyframe_requests;
    sim.remove(b);
    sim.run(Duration::from_secs(1));
    assert!(sim.peers[a].keyframe_requests > before, "asked again");
    for &v in &viewers {
        assert!(last_frame_from(&sim, v, a), "back to the first");
    }
}

/// `none`: an audio-only stream. Viewers' video m-sections are rejected in the answer,
/// publishers' video goes nowhere (and they are never asked for keyframes), audio plays.
#[test]
fn no_video_source_is_audio_only() {
    let (mut sim, a, b, viewers) = two_publishers(VideoSource::None);
    for &v in &viewers {
        let p = &sim.peers[v];
        assert!(p.answer.contains("m=video 0 "), "{}", p.answer);
        assert!(p.video_in.is_empty(), "no video reaches viewers");
        assert!(
            p.arrivals.len() > 150,
            "audio plays: {} packets",
            p.arrivals.len()
        );
    }
    assert_eq!(
        sim.peers[a].keyframe_requests + sim.peers[b].keyframe_requests,
        0
    );
    sim.run(Duration::from_millis(500));
    assert!(sim.peers[a].sent > 150, "the publisher kept sending");
}

/// A viewer behind a link too narrow for the top layer (its receiver reports show the
/// loss) moves to the next layer at that layer's keyframe, and stays there; a viewer on a
/// clean link keeps the top layer.
#[test]
fn a_lossy_viewer_moves_to_a_smaller_layer() {
    let (egress, _) = engine("cam", VideoSource::First);
    let mut sim = Sim::new(egress);
    let rids = ["0", "1", "2"];
    let p = sim.add(PeerSetup {
        rids: &rids,
        ..publisher(1, "cam", VideoSource::First)
    });
    let clean = sim.add(viewer(2, "cam", VideoSource::First));
    let narrow = sim.add(viewer(3, "cam", VideoSource::First));
    // 128 kbit/s of audio and 400 kbit/s of top layer do not fit 450 kbit/s; the middle
    // layer's 200 kbit/s does.
    let narrow_addr = sim.peers[narrow].addr;
    sim.wire
        .limits
        .insert(narrow_addr, sim::Policer::new(450_000.0 / 8.0));
    sim.run(Duration::from_secs(6));
    assert!(
        sim.peers.iter().all(|p| p.connected),
        "every peer connected"
    );
    let layers = |v: usize| -> Vec<u8> { sim.peers[v].video_in.iter().map(|f| f[18]).collect() };
    let clean_layers = layers(clean);
    assert!(
        !clean_layers.is_empty() && clean_layers.iter().all(|&l| l == 0),
        "the clean viewer keeps the top layer"
    );
    let narrow_layers = layers(narrow);
    let policer = &sim.wire.limits[&narrow_addr];
    let switched = narrow_layers.iter().position(|&l| l == 1);
    println!(
        "narrow viewer: {} frames, first of layer 1 at #{switched:?}; link dropped {} of {} \
         datagrams; keyframe requests {:?}",
        narrow_layers.len(),
        policer.dropped,
        policer.dropped + policer.passed,
        sim.peers[p].keyframe_rids
    );
    let switched = switched.expect("the narrow viewer moved to layer 1");
    let after = &narrow_layers[switched..];
    assert!(
        after.iter().all(|&l| l == 1),
        "after the move, only layer 1: {after:?}"
    );
    assert!(after.len() >= 50, "{} frames of layer 1", after.len());
    // The move waited for a keyframe of layer 1 (the fake frames are all keyframes) and
    // the publisher was asked for one.
    assert!(
        sim.peers[p].keyframe_rids.contains(&Some(Rid::from("1"))),
        "layer 1's keyframe requested: {:?}",
        sim.peers[p].keyframe_rids
    );
    // Loss on the narrow link fell once the viewer moved down.
    let dropped_before = sim.wire.limits[&narrow_addr].dropped;
    sim.run(Duration::from_secs(3));
    let dropped_after = sim.wire.limits[&narrow_addr].dropped - dropped_before;
    println!("dropped in the 3 s after the move: {dropped_after}");
    assert!(
        dropped_after < 20,
        "{dropped_after} datagrams dropped on layer 1"
    );
}

/// Loss toward a viewer is repaired by NACK and RTX (str0m keeps each viewer's recent video
/// packets and resends what the viewer's NACKs ask for, on the RTX payload type the answer
/// negotiated): with one RTP/RTCP datagram in ten lost on the way to the viewer, every
/// video frame still arrives, byte for byte and in order.
#[test]
fn viewer_loss_is_repaired_by_nack_and_rtx() {
    let (egress, _) = engine("lossy", VideoSource::First);
    let mut sim = Sim::new(egress);
    let p = sim.add(publisher(1, "lossy", VideoSource::First));
    let v = sim.add(viewer(2, "lossy", VideoSource::First));
    assert!(
        sim.peers[v].answer.contains("rtx/90000"),
        "the viewer's answer negotiates RTX"
    );
    sim.wire.lossy = Some((sim.peers[v].addr, 10, 0));
    sim.run(Duration::from_secs(5));
    let dropped = sim.wire.lossy.map_or(0, |l| l.2);
    let got = &sim.peers[v].video_in;
    let sent = sim.peers[p].sent;
    println!(
        "{dropped} datagrams lost toward the viewer; {} of {sent} frames received",
        got.len()
    );
    assert!(dropped >= 20, "the link lost packets ({dropped})");
    // Audio is not resent (Opus conceals loss instead): its gaps show the loss was real.
    let audio: Vec<u64> = sim.peers[v]
        .audio_times
        .iter()
        .map(|a| a.0.numer())
        .collect();
    let audio_gaps = audio.windows(2).filter(|w| w[1] - w[0] > 960).count();
    println!("audio: {} frames, {audio_gaps} gaps", audio.len());
    assert!(
        audio_gaps >= 5,
        "audio lost packets too ({audio_gaps} gaps)"
    );
    assert!(
        got.len() as u64 + 20 >= sent,
        "{} of {sent} frames",
        got.len()
    );
    let first = frame_number(&got[0]);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(
            frame_number(f),
            first + i as u64,
            "frame {i}: a gap, not repaired"
        );
        assert_eq!(f, &sim::vp8_frame(first + i as u64), "frame {i} bytes");
    }
}
