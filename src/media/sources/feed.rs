//! A source the embedding program feeds with its own audio: [`feed`] makes a pair, a
//! [`PcmFeed`] the program pushes 48 kHz interleaved stereo `f32` samples into from any
//! thread, and a [`FeedSource`] the mixer pulls one frame from per tick.
//!
//! Between the two is a lock-free single-producer single-consumer ring, so neither side ever
//! waits for the other. The program's clock and the TX thread's are not the same clock, so
//! the source keeps the delay between them bounded:
//! - it starts playing (and starts again after running dry) only once [`PREFILL_FRAMES`]
//!   frames are waiting, so a program that pushes a frame every 20 ms on a timer of its own
//!   does not underrun on each of its timer's late wake-ups;
//! - when more than [`MAX_BUFFERED_FRAMES`] frames are waiting (the program's clock runs
//!   fast, or it pushed a burst) it skips the oldest down to the prefill, counted in
//!   [`FeedSource::skipped_samples`]: the delay never grows past a few frames.

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::Source;
use crate::media::{Frame, FRAME_LEN};

/// Frames that must be waiting before the source starts playing (40 ms).
pub const PREFILL_FRAMES: usize = 2;
/// Frames waiting above which the oldest are skipped (the delay's bound, 160 ms).
pub const MAX_BUFFERED_FRAMES: usize = 8;
/// Room in the ring: one second of audio. More than [`MAX_BUFFERED_FRAMES`] so a burst is
/// taken whole and then trimmed by the source, instead of refused by the ring.
const RING_SAMPLES: usize = FRAME_LEN * 50;

/// The program's end: push samples into a stream's mix.
pub struct PcmFeed {
    prod: HeapProd<f32>,
    refused: u64,
}

/// The mixer's end: one of a stream's inputs.
pub struct FeedSource {
    cons: HeapCons<f32>,
    name: String,
    playing: bool,
    underruns: u64,
    skipped: u64,
}

/// A connected pair; `name` is what the stream's input list shows.
pub fn feed(name: impl Into<String>) -> (PcmFeed, FeedSource) {
    let (prod, cons) = HeapRb::<f32>::new(RING_SAMPLES).split();
    (
        PcmFeed { prod, refused: 0 },
        FeedSource {
            cons,
            name: name.into(),
            playing: false,
            underruns: 0,
            skipped: 0,
        },
    )
}

impl PcmFeed {
    /// Queues interleaved stereo samples (left, right, left, …; 48 kHz, nominally -1..=1;
    /// NaN and infinities become 0). Never blocks. Returns how many were taken: fewer than
    /// given only when a whole second is already waiting (the rest are dropped and counted
    /// in [`refused_samples`](Self::refused_samples)). An odd trailing sample is taken as a
    /// left sample; keep pushes to whole sample pairs.
    pub fn push(&mut self, samples: &[f32]) -> usize {
        let taken = self
            .prod
            .push_iter(samples.iter().map(|&s| if s.is_finite() { s } else { 0.0 }));
        self.refused += (samples.len() - taken) as u64;
        taken
    }

    /// Samples waiting for the mixer.
    pub fn queued_samples(&self) -> usize {
        self.prod.occupied_len()
    }

    /// Samples [`push`](Self::push) could not take.
    pub fn refused_samples(&self) -> u64 {
        self.refused
    }

    /// False once the source is gone (the input was removed from its stream, or the stream
    /// ended): pushing is then useless.
    pub fn is_connected(&self) -> bool {
        self.prod.read_is_held()
    }
}

impl FeedSource {
    /// Samples skipped to keep the delay bounded (see the module doc).
    pub fn skipped_samples(&self) -> u64 {
        self.skipped
    }
}

impl Source for FeedSource {
    fn fill(&mut self, out: &mut Frame) {
        let waiting = self.cons.occupied_len();
        if !self.playing {
            if waiting < PREFILL_FRAMES * FRAME_LEN {
                out.fill(0.0);
                return;
            }
            self.playing = true;
        }
        if waiting > MAX_BUFFERED_FRAMES * FRAME_LEN {
            // Keep whole sample pairs: left stays left.
            let excess = (waiting - PREFILL_FRAMES * FRAME_LEN) & !1;
            self.skipped += self.cons.skip(excess) as u64;
        }
        let n = self.cons.pop_slice(out);
        if n < FRAME_LEN {
            out[n..].fill(0.0);
            self.underruns += 1;
            self.playing = false;
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn underruns(&self) -> u64 {
        self.underruns
    }

    /// The program dropped its [`PcmFeed`] and everything it pushed has been played.
    fn is_finished(&self) -> bool {
        !self.cons.write_is_held() && self.cons.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(v: f32) -> Vec<f32> {
        vec![v; FRAME_LEN]
    }

    #[test]
    fn waits_for_the_prefill_then_plays_in_order() {
        let (mut feed, mut src) = feed("prog");
        let mut out = [1.0f32; FRAME_LEN];
        assert_eq!(feed.push(&frame_of(0.1)), FRAME_LEN);
        src.fill(&mut out);
        assert!(
            out.iter().all(|&s| s == 0.0),
            "one frame is not the prefill"
        );
        feed.push(&frame_of(0.2));
        src.fill(&mut out);
        assert!(out.iter().all(|&s| s == 0.1));
        src.fill(&mut out);
        assert!(out.iter().all(|&s| s == 0.2));
        assert_eq!(src.underruns(), 0);
    }

    #[test]
    fn running_dry_pads_counts_and_waits_for_the_prefill_again() {
        let (mut feed, mut src) = feed("prog");
        let mut out = [0.0f32; FRAME_LEN];
        feed.push(&frame_of(0.1));
        feed.push(&vec![0.3; FRAME_LEN + 2]);
        src.fill(&mut out);
        src.fill(&mut out);
        src.fill(&mut out);
        assert_eq!(&out[..2], &[0.3, 0.3]);
        assert!(out[2..].iter().all(|&s| s == 0.0));
        assert_eq!(src.underruns(), 1);
        feed.push(&frame_of(0.5));
        src.fill(&mut out);
        assert!(
            out.iter().all(|&s| s == 0.0),
            "not playing until the prefill"
        );
        assert_eq!(src.underruns(), 1, "waiting is not an underrun");
    }

    #[test]
    fn a_burst_is_trimmed_to_the_prefill_keeping_the_newest() {
        let (mut feed, mut src) = feed("prog");
        let mut out = [0.0f32; FRAME_LEN];
        for k in 0..20 {
            feed.push(&frame_of(k as f32));
        }
        src.fill(&mut out);
        // 20 waiting: 18 skipped, frame 18 played, 19 left.
        assert!(out.iter().all(|&s| s == 18.0), "{}", out[0]);
        assert_eq!(src.skipped_samples(), 18 * FRAME_LEN as u64);
        assert_eq!(feed.queued_samples(), FRAME_LEN);
    }

    #[test]
    fn non_finite_samples_become_silence_and_a_full_ring_refuses() {
        let (mut feed, mut src) = feed("prog");
        feed.push(&[f32::NAN, f32::INFINITY]);
        feed.push(&frame_of(0.25));
        feed.push(&frame_of(0.25)[..FRAME_LEN - 2]);
        let mut out = [1.0f32; FRAME_LEN];
        src.fill(&mut out);
        assert_eq!(&out[..3], &[0.0, 0.0, 0.25]);
        let big = vec![0.0f32; RING_SAMPLES + 10];
        let taken = feed.push(&big);
        assert!(taken < big.len());
        assert_eq!(feed.refused_samples(), (big.len() - taken) as u64);
    }

    #[test]
    fn finishes_once_the_program_lets_go_and_the_ring_is_played() {
        let (mut feed, mut src) = feed("prog");
        feed.push(&frame_of(0.1));
        feed.push(&frame_of(0.1));
        assert!(!src.is_finished());
        drop(feed);
        assert!(!src.is_finished(), "what was pushed is still played");
        let mut out = [0.0f32; FRAME_LEN];
        src.fill(&mut out);
        src.fill(&mut out);
        assert!(src.is_finished());

        let (feed, src) = super::feed("prog");
        assert!(feed.is_connected());
        drop(src);
        assert!(!feed.is_connected());
    }
}
