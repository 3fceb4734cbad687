//! Mix-minus at the scale the issue names, in virtual time: 64 talkers (two-way publishers,
//! each its own tone) and 1,000 listen-only viewers of one stream on the direct fan-out,
//! for 10 s of media. Every viewer's sequence is complete (one packet per tick, sequence
//! +1 and RTP time +960, nothing missing); every talker hears the other 63 and not itself
//! (its own frequency down in the codec's noise floor, measured 27 to 44 dB under the
//! others, which are at -40 dBFS each: 64 tones squeezed by the limiter; a wrong
//! subtraction would leave it near -40 too);
//! a listen-only viewer hears all 64.

#[path = "common/sim.rs"]
mod sim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::config::Fanout;
use mixcast::engine::egress::Egress;
use mixcast::media::analysis::{deinterleave, Spectrum};
use mixcast::media::{FRAME_DURATION, SAMPLE_RATE};
use mixcast::metrics::Metrics;
use mixcast::streams::StreamDirectory;
use sim::{new_peer, run_until, Peer, Wire};
use str0m::media::Direction;

const TALKERS: usize = 64;
const VIEWERS: usize = 1_000;
const MEDIA: Duration = Duration::from_secs(10);

/// Talker `k`'s tone: 83.7 Hz apart from 310 Hz, off any common grid, so that no mix of
/// two talkers' tones (the limiter is not perfectly linear) lands on a third's frequency.
fn tone_of(k: usize) -> f32 {
    310.0 + 83.7 * k as f32
}

/// The RMS (dBFS) within ±4 Hz of `hz`.
fn level_db(s: &Spectrum, hz: f32) -> f32 {
    20.0 * s.band_rms(hz, 8.0).max(1e-9).log10()
}

fn counter(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is exported"))
}

/// Checks that one viewer's packets are one per tick from its first, none missing.
fn complete(p: &Peer, ticks: usize) {
    assert!(
        p.audio_seqs.len() + 10 >= ticks,
        "peer {}: {} packets of about {ticks} ticks",
        p.key,
        p.audio_seqs.len()
    );
    for (w, t) in p.audio_seqs.windows(2).zip(p.audio_times.windows(2)) {
        assert_eq!(w[1], w[0] + 1, "peer {}: sequence gap", p.key);
        assert_eq!(t[1].0.numer() - t[0].0.numer(), 960, "peer {}: time", p.key);
    }
}

#[test]
fn sixty_four_talkers_and_a_thousand_viewers_for_ten_seconds() {
    let wall = Instant::now();
    let mut now = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(StreamDirectory::new([("room".to_string(), vec![])]));
    let mut egress = Egress::new(vec![], directory, 128_000, metrics.clone());
    egress.set_fanout(Fanout::Direct);
    let mut wire = Wire::default();
    let mut next_tick = now + FRAME_DURATION;

    let mut peers = Vec::with_capacity(TALKERS + VIEWERS);
    for k in 0..TALKERS {
        let port = 40_000 + k as u16;
        let mut p = new_peer(
            k as u64 + 1,
            port,
            Direction::SendRecv,
            &mut egress,
            &mut wire,
            now,
            "room",
        );
        p.tone_hz = tone_of(k);
        peers.push(p);
    }
    for v in 0..VIEWERS {
        let key = 10_000 + v as u64;
        let mut p = new_peer(
            key,
            41_000 + v as u16,
            Direction::RecvOnly,
            &mut egress,
            &mut wire,
            now,
            "room",
        );
        // One viewer's sound is checked; the others' sequences only (decoding 1,000
        // streams would be most of the test's time and prove nothing more).
        p.decode = v == 0;
        peers.push(p);
    }
    let start = now;
    run_until(
        start + MEDIA,
        &mut now,
        &mut next_tick,
        &mut peers,
        &mut egress,
        &mut wire,
    );
    println!(
        "{TALKERS} talkers and {VIEWERS} viewers, {} s of media in {:.1} s",
        MEDIA.as_secs(),
        wall.elapsed().as_secs_f32()
    );
    assert!(egress.take_ended().is_empty(), "nobody ended");
    assert!(peers.iter().all(|p| p.connected), "every peer connected");

    // Everyone connects within the first second; from then on a packet every tick.
    let ticks = ((MEDIA - Duration::from_secs(1)).as_millis() / 20) as usize;
    for p in &peers {
        complete(p, ticks);
    }

    let tail = |p: &Peer| {
        let n = p.pcm.len();
        deinterleave(&p.pcm[n - 2 * 2 * SAMPLE_RATE as usize..]).0
    };
    let mut worst = f32::MIN;
    for (k, talker) in peers[..TALKERS].iter().enumerate() {
        let s = Spectrum::new(&tail(talker), SAMPLE_RATE);
        let own = level_db(&s, tone_of(k));
        let mut others: Vec<f32> = (0..TALKERS)
            .filter(|&j| j != k)
            .map(|j| level_db(&s, tone_of(j)))
            .collect();
        others.sort_by(|a, b| a.total_cmp(b));
        let median = others[others.len() / 2];
        // The codec's noise floor next to its own frequency, half-way to the neighbours'.
        let floor = level_db(&s, tone_of(k) - 41.85).max(level_db(&s, tone_of(k) + 41.85));
        println!(
            "talker {k} ({:.0} Hz): own {own:.1} dBFS (floor {floor:.1}), others {:.1} / {median:.1} / {:.1}",
            tone_of(k),
            others[0],
            others[others.len() - 1]
        );
        worst = worst.max(own - median);
        // Its own tone is gone into the codec's noise: not a residue of a wrong subtraction.
        assert!(
            median > own + 20.0 && own < floor + 8.0,
            "talker {k}: own {own:.1} dBFS, floor {floor:.1}, the others' median {median:.1} dBFS"
        );
    }
    println!(
        "own tone at least {:.1} dB under the others' median",
        -worst
    );

    let s = Spectrum::new(&tail(&peers[TALKERS]), SAMPLE_RATE);
    let levels: Vec<f32> = (0..TALKERS).map(|k| level_db(&s, tone_of(k))).collect();
    let quietest = levels.iter().cloned().fold(f32::MAX, f32::min);
    let loudest = levels.iter().cloned().fold(f32::MIN, f32::max);
    println!("the viewer hears all {TALKERS}: {quietest:.1} to {loudest:.1} dBFS");
    assert!(
        loudest - quietest < 6.0,
        "{quietest:.1} to {loudest:.1} dBFS"
    );
    assert!(quietest > -50.0, "{quietest:.1} dBFS");

    // Every talker speaks all the time: one mix-minus encode per talker per tick.
    let encodes = counter(&metrics, "mixcast_mixminus_encodes_total ");
    assert!(
        encodes as usize > TALKERS * ticks,
        "{encodes} mix-minus encodes for {TALKERS} talkers over {ticks} ticks"
    );
}
