//! Two TX threads' engines in virtual time, as `--tx-threads 2` wires them: the mixing one
//! encodes each tick and hands its frames to a mirror (`Egress::mirror`), which serves its
//! own viewers with them. Viewers on either engine must hear the same thing (440 Hz left,
//! 660 Hz right, the same RTP timestamps), in every fan-out mode; and when the frames stop
//! (the stream ended on the mixing thread), the mirror's viewers end.

#[path = "common/sim.rs"]
mod sim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::config::Fanout;
use mixcast::engine::egress::{Egress, StreamMix, MIRROR_GRACE};
use mixcast::engine::EndReason;
use mixcast::media::analysis::{deinterleave, dominant_frequency};
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::Encoder;
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::{FRAME_DURATION, SAMPLE_RATE};
use mixcast::metrics::Metrics;
use mixcast::streams::StreamDirectory;
use sim::{add_peer, Peer, PeerSetup, Wire};
use str0m::media::Direction;
use str0m::Input;

/// The two engines and their viewers: `on[i]` is the engine (0 mixes, 1 is the mirror)
/// of `peers[i]`.
struct Pair {
    engines: [Egress; 2],
    peers: Vec<Peer>,
    on: Vec<usize>,
    wire: Wire,
    now: Instant,
    next_tick: Instant,
    /// Whether the mixing engine's frames reach the mirror.
    feed: bool,
}

impl Pair {
    fn new(mode: Fanout) -> Pair {
        let now = Instant::now();
        let mut mixer = Mixer::new();
        mixer.add(sources::open(&SourceSpec::Tone).unwrap(), 1.0);
        let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).unwrap());
        let metrics = Arc::new(Metrics::default());
        let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
        let mut mixing = Egress::new(vec![stream], directory.clone(), 128_000, metrics.clone());
        let mut mirror = Egress::mirror(directory, metrics);
        mixing.set_fanout(mode);
        mirror.set_fanout(mode);
        Pair {
            engines: [mixing, mirror],
            peers: Vec::new(),
            on: Vec::new(),
            wire: Wire::default(),
            now,
            next_tick: now + FRAME_DURATION,
            feed: true,
        }
    }

    fn add_viewer(&mut self, engine: usize) {
        let n = self.peers.len() as u64;
        let setup = PeerSetup::new(n + 1, 50_000 + n as u16, Direction::RecvOnly, "live");
        let peer = add_peer(&setup, &mut self.engines[engine], &mut self.wire, self.now);
        self.peers.push(peer);
        self.on.push(engine);
    }

    /// Runs both engines until `until`, as their two threads would: the mixing one ticks
    /// on its clock and the mirror fans out the same tick's frames.
    fn run_until(&mut self, until: Instant) {
        while self.now < until {
            let now = self.now;
            self.wire.now = Some(now);
            while self.wire.in_flight.front().is_some_and(|p| p.0 <= now) {
                let (_, src, dst, data) = self.wire.in_flight.pop_front().unwrap();
                if let Some(p) = self.peers.iter_mut().find(|p| p.addr == dst) {
                    if sim::receive(&mut p.rtc, now, src, dst, &data).is_ok() {
                        p.drain(&mut self.wire, now);
                    }
                } else if let Some(i) = self.peers.iter().position(|p| p.addr == src) {
                    let key = self.peers[i].key;
                    self.engines[self.on[i]].handle_receive(
                        now,
                        key,
                        src,
                        dst,
                        &data,
                        &mut self.wire,
                    );
                }
            }
            for p in self.peers.iter_mut() {
                if p.timeout <= now && p.rtc.is_alive() {
                    p.rtc.handle_input(Input::Timeout(now)).unwrap();
                    p.drain(&mut self.wire, now);
                }
            }
            for e in &mut self.engines {
                e.handle_timeouts(now, &mut self.wire);
            }
            if now >= self.next_tick {
                let [mixing, mirror] = &mut self.engines;
                mixing.encode(now);
                let frames = mixing.tick_frames(self.next_tick);
                mixing.fan_out(now, &mut self.wire);
                if self.feed {
                    mirror.take_frames(&frames, now);
                    mirror.fan_out(now, &mut self.wire);
                } else {
                    // A thread that gets no frames still runs its timers; its streams
                    // end after MIRROR_GRACE (checked by its next fan-out).
                    mirror.take_frames(
                        &mixcast::engine::egress::TickFrames {
                            deadline: self.next_tick,
                            streams: Vec::new(),
                        },
                        now,
                    );
                    mirror.fan_out(now, &mut self.wire);
                }
                self.next_tick += FRAME_DURATION;
            }
            let mut next = self.next_tick.min(until);
            for p in &self.peers {
                next = next.min(p.timeout);
            }
            for e in &mut self.engines {
                if let Some(t) = e.next_timeout() {
                    next = next.min(t);
                }
            }
            if let Some(p) = self.wire.in_flight.front() {
                next = next.min(p.0);
            }
            self.now = if next > now {
                next
            } else {
                now + Duration::from_micros(100)
            };
        }
    }
}

fn check_tone(p: &Peer) {
    let pcm = &p.pcm[p.pcm.len() / 2..];
    let (left, right) = deinterleave(pcm);
    let (l, r) = (
        dominant_frequency(&left, SAMPLE_RATE),
        dominant_frequency(&right, SAMPLE_RATE),
    );
    assert!((l - 440.0).abs() < 5.0, "viewer {}: left {l} Hz", p.key);
    assert!((r - 660.0).abs() < 5.0, "viewer {}: right {r} Hz", p.key);
}

#[test]
fn mirror_viewers_hear_the_mixing_threads_frames() {
    for mode in [Fanout::Naive, Fanout::Batched, Fanout::Direct] {
        let mut pair = Pair::new(mode);
        for i in 0..4 {
            pair.add_viewer(i % 2);
        }
        let start = pair.now;
        pair.run_until(start + Duration::from_secs(6));
        for p in &pair.peers {
            assert!(p.connected, "{mode:?}: viewer {} connected", p.key);
            // About 5 s of audio after the handshake: 250 frames at 50 per second.
            assert!(
                p.audio_times.len() > 200,
                "{mode:?}: viewer {} got {} frames",
                p.key,
                p.audio_times.len()
            );
            check_tone(p);
        }
        // The same frames: the RTP times of the last second agree between a viewer of the
        // mixing engine and one of the mirror (offset by their start, a constant).
        let times = |p: &Peer| -> Vec<u64> {
            let t = &p.audio_times;
            let base = t[0].0.numer();
            t[t.len() - 50..]
                .iter()
                .map(|(m, _)| m.numer() - base)
                .collect()
        };
        let (a, b) = (times(&pair.peers[0]), times(&pair.peers[1]));
        let steps = |v: &[u64]| v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
        assert_eq!(steps(&a), steps(&b), "{mode:?}: both step 960 per frame");
        assert!(
            steps(&a).iter().all(|&s| s == 960),
            "{mode:?}: {:?}",
            steps(&a)
        );
        assert_eq!(pair.engines[0].viewer_count(), 2);
        assert_eq!(pair.engines[1].viewer_count(), 2);
    }
}

#[test]
fn mirror_viewers_end_when_the_frames_stop() {
    let mut pair = Pair::new(Fanout::Direct);
    pair.add_viewer(1);
    pair.add_viewer(0);
    let start = pair.now;
    pair.run_until(start + Duration::from_secs(3));
    assert!(pair.peers.iter().all(|p| p.connected));
    let _ = pair.engines[1].take_ended();

    pair.feed = false;
    let stopped = pair.now;
    pair.run_until(stopped + MIRROR_GRACE - Duration::from_millis(200));
    assert!(
        pair.engines[1].take_ended().is_empty(),
        "not before the grace"
    );
    pair.run_until(stopped + MIRROR_GRACE + Duration::from_millis(200));
    let ended = pair.engines[1].take_ended();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].reason, EndReason::StreamEnded);
    assert_eq!(pair.engines[1].viewer_count(), 0);
    // The mixing engine's viewer plays on.
    assert_eq!(pair.engines[0].viewer_count(), 1);
    assert!(pair.engines[0].take_ended().is_empty());
}
