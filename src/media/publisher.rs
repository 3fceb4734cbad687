//! A WHIP publisher's audio as an input of a mix: Opus packets in, 20 ms frames out.
//!
//! ```text
//!  thread owning the publisher's Rtc                 TX thread, once per 20 ms tick
//!  PublisherFeed::push(seq, ts, payload, arrival)    PublisherInput::fill (a mixer Source)
//!        │ copy into a fixed-size record               drain ring ─► JitterBuffer::push
//!        └──────────► SPSC ring (FEED_CAPACITY) ─────► JitterBuffer::pop ─► Decoder
//!                                                      decode / FEC / conceal / merge / stretch
//!                                                      ─► queue ─► fades ─► frame
//! ```
//!
//! [`publisher_channel`] makes the two ends. The feed never blocks: when the ring is full the
//! packet is dropped and counted. `fill` never blocks and does not allocate (beyond what the
//! codec does inside a decode); it does the decoding, so a slow publisher thread can never
//! make the mix late. Counters are published to a [`PublisherMonitor`] (atomics) on every
//! tick, readable from any thread.
//!
//! Time: the jitter buffer needs the tick's time, which [`Source::fill`] does not pass, so
//! `fill` reads `Instant::now()` once per tick (the TX thread ticks within microseconds of
//! its deadline). [`PublisherInput::fill_at`] takes the time as an argument, for callers
//! that have it and for tests. Packet arrival times must come from the same clock.
//!
//! Sound:
//! - Lost packets are rebuilt from the next packet's in-band FEC when it carries some
//!   (speech from browsers), otherwise concealed by the decoder.
//! - Clock drift: a merge (two packets in one frame) plays the first up to its middle, then
//!   cross-fades over 5 ms into the second at the offset (±5 ms) where the two match best;
//!   a stretch (one packet over two frames) cross-fades back by 6.7..10 ms to the best
//!   matching point two or three times. A sustained note keeps its phase, so neither cuts
//!   nor dips; the buffer prefers quiet moments for both. Decoded audio that does not fill
//!   a whole frame waits in a small queue for the next tick.
//! - The first frame after silence fades in over [`FADE_IN_SAMPLES`]; when the stream stops
//!   (the jitter buffer runs out, the publisher goes quiet or leaves) the decoder's
//!   concealment is faded out over [`FADE_OUT_SAMPLES`], so neither end clicks.
//!
//! A publisher whose packets stop is reported idle after [`IDLE_TIMEOUT`]; one whose feed
//! was dropped is reported finished once faded out: the mix may then remove it.

use super::jitter::{JitterBuffer, JitterStats, Pop, MAX_PAYLOAD};
use super::opus::{packet_has_fec, CodecError, Decoder};
use super::sources::Source;
use super::{Frame, CHANNELS, FRAME_LEN, FRAME_SAMPLES};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Capacity of the ring from a publisher's thread to its input, in packets: 64 packets of
/// 20 ms, 1.3 s, far more than arrive between two ticks even after a stall of the TX thread.
/// About 100 KiB per publisher.
pub const FEED_CAPACITY: usize = 64;
/// No packet for this long: the publisher is idle (stopped sending).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// No first packet this long after the first tick: idle too (never started sending).
pub const FIRST_PACKET_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the fade-in after silence (5 ms).
pub const FADE_IN_SAMPLES: usize = 240;
/// Length of the fade-out into silence (10 ms).
pub const FADE_OUT_SAMPLES: usize = 480;
/// RMS below which a frame counts as quiet (-50 dBFS): drift corrections happen then.
pub const QUIET_RMS: f32 = 0.003;
/// Most jitter buffer pops in one tick: packets shorter than 20 ms take several (eight of
/// the shortest Opus packets, 2.5 ms). WebRTC senders use 20 ms (sometimes 10 ms) packets,
/// which the jitter buffer's capacity and drift control are tuned for.
const MAX_POPS_PER_FILL: usize = 8;
/// Merges and stretches splice audio with a cross-fade of this many samples (5 ms)...
const SPLICE_XFADE: usize = 240;
/// ...a merge at the best matching offset within this many samples (±5 ms) of a plain
/// drop of one frame...
const MERGE_SEARCH: usize = 240;
/// ...a stretch at this sample of the packet, back to the best matching offset this many
/// samples earlier (6.7..10 ms), repeated two or three times.
const STRETCH_SPLICE: usize = FRAME_SAMPLES - SPLICE_XFADE;
const STRETCH_BACK: std::ops::RangeInclusive<usize> = 320..=480;
/// Room for decoded audio: under a frame left over, plus one pop's worth (at most a
/// stretch to two frames and a sixth).
const QUEUE_LEN: usize = 4 * FRAME_LEN;

/// One packet in the ring: fixed size, so the ring is allocated once.
struct PacketRecord {
    seq: u16,
    ts: u32,
    arrival: Instant,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

/// The counters of one publisher's input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Packets accepted into the jitter buffer.
    pub packets: u64,
    /// Packets decoded.
    pub played: u64,
    /// Packets given up on as missing (frames of audio missing by their RTP timestamps).
    pub lost: u64,
    /// Sequence numbers passed over that carried no audio (padding-only packets, such as
    /// Chromium's bandwidth probes, which str0m drops): not a loss.
    pub skipped: u64,
    /// Lost frames rebuilt from the next packet's in-band FEC.
    pub fec_recovered: u64,
    /// Frames made up by concealment within the stream: loss without FEC, running dry
    /// until a late packet came, drift, bad packets. Not the frames after the last packet
    /// (see `concealed_at_end`).
    pub concealed: u64,
    /// Frames concealed after the last packet that no packet followed: the fade-out when
    /// the publisher stops or leaves (or before a silence). Nothing was missing there.
    pub concealed_at_end: u64,
    /// Packets that came after their turn.
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Frames dropped (two packets merged into one frame) because the sender is fast.
    pub dropped_for_drift: u64,
    /// Frames concealed because the sender is slow.
    pub inserted_for_drift: u64,
    /// Frames concealed because the buffer ran dry.
    pub underruns: u64,
    /// Packets dropped unplayed: ring full, or the jitter buffer evicted them.
    pub overflow: u64,
    /// Empty or oversized payloads refused.
    pub invalid: u64,
    /// Packets the decoder refused (concealed instead).
    pub decode_errors: u64,
    /// Restarts of the jitter buffer for a restarted sender.
    pub resyncs: u64,
    /// The jitter buffer's target delay.
    pub target_delay: Duration,
    /// The last measured playout delay (beyond the fastest network transit).
    pub delay: Duration,
    /// No packet for [`IDLE_TIMEOUT`] (or none at all for [`FIRST_PACKET_TIMEOUT`]).
    pub idle: bool,
    /// The feed was dropped and the input has faded out: it only plays silence now.
    pub finished: bool,
    /// The RTP timestamp (as the publisher sent it) of the first sample of the frame
    /// played at the last tick; `None` when that frame was not decoded from packets
    /// (silence, concealment). With the publisher's sender reports this gives the capture
    /// time of what the mix is playing (lip-sync).
    pub playout_rtp: Option<u32>,
}

const WORDS: usize = 21;

impl PublisherStats {
    fn to_words(self) -> [u64; WORDS] {
        [
            self.packets,
            self.played,
            self.lost,
            self.fec_recovered,
            self.concealed,
            self.skipped,
            self.concealed_at_end,
            self.late,
            self.duplicates,
            self.dropped_for_drift,
            self.inserted_for_drift,
            self.underruns,
            self.overflow,
            self.invalid,
            self.decode_errors,
            self.resyncs,
            u64::try_from(self.target_delay.as_micros()).unwrap_or(u64::MAX),
            u64::try_from(self.delay.as_micros()).unwrap_or(u64::MAX),
            u64::from(self.idle),
            u64::from(self.finished),
            // Bit 32 marks a timestamp as present.
            self.playout_rtp.map_or(0, |ts| (1 << 32) | u64::from(ts)),
        ]
    }

    fn from_words(w: [u64; WORDS]) -> Self {
        PublisherStats {
            packets: w[0],
            played: w[1],
            lost: w[2],
            fec_recovered: w[3],
            concealed: w[4],
            skipped: w[5],
            concealed_at_end: w[6],
            late: w[7],
            duplicates: w[8],
            dropped_for_drift: w[9],
            inserted_for_drift: w[10],
            underruns: w[11],
            overflow: w[12],
            invalid: w[13],
            decode_errors: w[14],
            resyncs: w[15],
            target_delay: Duration::from_micros(w[16]),
            delay: Duration::from_micros(w[17]),
            idle: w[18] != 0,
            finished: w[19] != 0,
            // Truncation keeps the low 32 bits: the timestamp.
            playout_rtp: (w[20] >> 32 != 0).then_some(w[20] as u32),
        }
    }
}

/// State shared by both ends and their monitors.
struct Shared {
    /// The input's last published stats, one word per field.
    words: [AtomicU64; WORDS],
    /// Packets the feed dropped: ring full.
    feed_full: AtomicU64,
    /// Payloads the feed refused: empty or too long.
    feed_invalid: AtomicU64,
}

/// Reads a publisher's counters from any thread (cheap to clone).
#[derive(Clone)]
pub struct PublisherMonitor(Arc<Shared>);

impl PublisherMonitor {
    /// The counters as of the input's last tick, plus the feed's own drops.
    pub fn stats(&self) -> PublisherStats {
        let mut s = PublisherStats::from_words(std::array::from_fn(|i| {
            self.0.words[i].load(Ordering::Relaxed)
        }));
        s.overflow += self.0.feed_full.load(Ordering::Relaxed);
        s.invalid += self.0.feed_invalid.load(Ordering::Relaxed);
        s
    }

    /// True when the publisher stopped sending (see [`PublisherStats::idle`]).
    pub fn is_idle(&self) -> bool {
        self.stats().idle
    }

    /// True when the feed is gone and the input has faded out.
    pub fn is_finished(&self) -> bool {
        self.stats().finished
    }
}

impl std::fmt::Debug for PublisherMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PublisherMonitor")
            .field(&self.stats())
            .finish()
    }
}

/// The publisher's end: owned by the thread that owns its `Rtc`. Dropping it tells the
/// input that the publisher has left.
pub struct PublisherFeed {
    prod: HeapProd<PacketRecord>,
    shared: Arc<Shared>,
}

impl PublisherFeed {
    /// Hands one Opus RTP packet to the input: sequence number, 48 kHz RTP timestamp,
    /// payload and arrival time. Never blocks. False when dropped: empty or longer than
    /// [`MAX_PAYLOAD`], or the ring is full (the TX thread is not keeping up); both counted.
    pub fn push(&mut self, seq: u16, ts: u32, payload: &[u8], arrival: Instant) -> bool {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            self.shared.feed_invalid.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.prod.is_full() {
            self.shared.feed_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut record = PacketRecord {
            seq,
            ts,
            arrival,
            // Cannot truncate: MAX_PAYLOAD fits in u16 (checked by the jitter buffer).
            len: payload.len() as u16,
            data: [0; MAX_PAYLOAD],
        };
        record.data[..payload.len()].copy_from_slice(payload);
        match self.prod.try_push(record) {
            Ok(()) => true,
            Err(_) => {
                self.shared.feed_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A monitor of this publisher's counters.
    pub fn monitor(&self) -> PublisherMonitor {
        PublisherMonitor(self.shared.clone())
    }
}

// The feed moves to the thread owning the publisher's Rtc, the input to the TX thread,
// monitors anywhere.
const _: () = {
    const fn sendable<T: Send>() {}
    const fn shareable<T: Send + Sync>() {}
    sendable::<PublisherFeed>();
    sendable::<PublisherInput>();
    shareable::<PublisherMonitor>();
};

/// Makes a publisher's feed and its mixer input. Allocates the ring, the jitter buffer and
/// the decoder (about 200 KiB); fails only if the decoder cannot be made.
pub fn publisher_channel() -> Result<(PublisherFeed, PublisherInput), CodecError> {
    let (prod, cons) = HeapRb::<PacketRecord>::new(FEED_CAPACITY).split();
    let shared = Arc::new(Shared {
        words: std::array::from_fn(|_| AtomicU64::new(0)),
        feed_full: AtomicU64::new(0),
        feed_invalid: AtomicU64::new(0),
    });
    let input = PublisherInput {
        cons,
        jitter: JitterBuffer::new(),
        out: Playout {
            decoder: Decoder::new()?,
            scratch: Box::new([0.0; FRAME_LEN]),
            second: Box::new([0.0; FRAME_LEN]),
            queue: PcmQueue {
                buf: Box::new([0.0; QUEUE_LEN]),
                have: 0,
            },
            fec_recovered: 0,
            concealed: 0,
            decode_errors: 0,
            last_len: FRAME_SAMPLES,
        },
        name: "publisher".to_string(),
        shared: shared.clone(),
        sounding: false,
        first_tick: None,
        finished: false,
        playout_rtp: None,
    };
    Ok((PublisherFeed { prod, shared }, input))
}

/// The mixer's end: a [`Source`] that plays the publisher's audio. See the module doc.
pub struct PublisherInput {
    cons: HeapCons<PacketRecord>,
    jitter: JitterBuffer,
    out: Playout,
    name: String,
    shared: Arc<Shared>,
    /// The last frame had sound (the next silence must fade out; the next sound after
    /// silence fades in).
    sounding: bool,
    first_tick: Option<Instant>,
    finished: bool,
    /// See [`PublisherStats::playout_rtp`].
    playout_rtp: Option<u32>,
}

impl PublisherInput {
    /// Names the input (for logs and the stream list).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A monitor of this input's counters, readable from any thread.
    pub fn monitor(&self) -> PublisherMonitor {
        PublisherMonitor(self.shared.clone())
    }

    /// The counters as of the last tick.
    pub fn stats(&self) -> PublisherStats {
        self.monitor().stats()
    }

    /// [`Source::fill`] at tick time `now` (the clock of the packets' arrival times).
    pub fn fill_at(&mut self, out: &mut Frame, now: Instant) {
        let first_tick = *self.first_tick.get_or_insert(now);
        let (a, b) = self.cons.as_slices();
        let drained = a.len() + b.len();
        for r in a.iter().chain(b) {
            let len = usize::from(r.len).min(MAX_PAYLOAD);
            let pushed = self.jitter.push(r.seq, r.ts, &r.data[..len], r.arrival);
            tracing::trace!(
                publisher = %self.name,
                seq = r.seq,
                ts = r.ts,
                len,
                arrival_us = signed_us(first_tick, r.arrival),
                ?pushed,
                "jitter push"
            );
        }
        self.cons.skip(drained);
        let left = !self.cons.write_is_held();

        let mut pops = 0;
        // A publisher that has left and has nothing more buffered stops at once rather
        // than being concealed as if it were late.
        let gone = left && self.jitter.buffered() == 0;
        while !gone && self.out.queue.have < FRAME_SAMPLES && pops < MAX_POPS_PER_FILL {
            pops += 1;
            let pop = self.jitter.pop(now);
            let kind = pop_kind(&pop);
            let empty = pop == Pop::Empty;
            match pop {
                Pop::Packet(p) => self.out.decode(p),
                Pop::Lost { fec_from_next } => self.out.lost(fec_from_next),
                Pop::Merge { first, second } => self.out.merge(first, second),
                Pop::Stretch(p) => self.out.stretch(p),
                Pop::Empty => {}
            }
            tracing::trace!(
                publisher = %self.name,
                now_us = signed_us(first_tick, now),
                pop = kind,
                lag_us = self.jitter.lag().map(|l| l.as_micros() as u64),
                target_us = self.jitter.target().as_micros() as u64,
                buffered = self.jitter.buffered(),
                "jitter pop"
            );
            if empty {
                break;
            }
        }

        if self.out.queue.have >= FRAME_SAMPLES {
            self.out.take(out);
            // The last packet decoded ends `have` samples after this frame; the frame
            // starts a frame before that. Merges and stretches make it approximate (a few
            // ms), which is fine for lip-sync.
            self.playout_rtp = self.jitter.last_played_rtp().map(|ts| {
                let end = ts.wrapping_add(self.out.last_len as u32);
                end.wrapping_sub((self.out.queue.have + FRAME_SAMPLES) as u32)
            });
            let level = rms(out);
            self.jitter.set_quiet(level < QUIET_RMS);
            if !self.sounding {
                fade(&mut out[..], 0, FADE_IN_SAMPLES, true);
                self.sounding = true;
            }
        } else if self.sounding {
            // The stream stopped: what was decoded, then concealment, faded to silence.
            let from = self.out.queue.have;
            self.out.fade_tail();
            self.out.take(out);
            self.out.queue.have = 0;
            let start = from.min(FRAME_SAMPLES - FADE_OUT_SAMPLES);
            fade(&mut out[..], start, FADE_OUT_SAMPLES, false);
            out[(start + FADE_OUT_SAMPLES) * CHANNELS..].fill(0.0);
            self.sounding = false;
            self.playout_rtp = None;
        } else {
            out.fill(0.0);
            self.out.queue.have = 0;
            self.playout_rtp = None;
        }

        let was_finished = self.finished;
        self.finished = left && !self.sounding && self.jitter.buffered() == 0;
        let idle = match self.jitter.last_arrival() {
            Some(_) => self.jitter.is_idle(now, IDLE_TIMEOUT),
            None => now.saturating_duration_since(first_tick) >= FIRST_PACKET_TIMEOUT,
        };
        let s = self.publish(idle);
        if self.finished && !was_finished {
            // The whole account of the publisher's audio, once it has faded out of the mix
            // (the session's "publisher left" line comes from the engine, a tick or so
            // earlier).
            tracing::info!(
                publisher = %self.name,
                packets = s.packets,
                played = s.played,
                lost = s.lost,
                skipped = s.skipped,
                fec_recovered = s.fec_recovered,
                concealed = s.concealed,
                concealed_at_end = s.concealed_at_end,
                late = s.late,
                drift_drops = s.dropped_for_drift,
                drift_inserts = s.inserted_for_drift,
                "publisher audio ended"
            );
        }
    }

    /// True when the feed is gone and the input has faded out (as of the last tick).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn publish(&self, idle: bool) -> PublisherStats {
        let j: JitterStats = self.jitter.stats();
        let stats = PublisherStats {
            packets: j.received,
            played: j.played,
            lost: j.lost,
            skipped: j.skipped,
            fec_recovered: self.out.fec_recovered,
            // Every frame concealed after the last packet was one of these (a dry pop).
            concealed: self.out.concealed.saturating_sub(j.trailing),
            concealed_at_end: j.trailing,
            late: j.late,
            duplicates: j.duplicates,
            dropped_for_drift: j.drift_drops,
            inserted_for_drift: j.drift_inserts,
            underruns: j.underruns,
            overflow: j.overflow,
            invalid: j.invalid,
            decode_errors: self.out.decode_errors,
            resyncs: j.resyncs,
            target_delay: self.jitter.target(),
            delay: self.jitter.lag().unwrap_or_default(),
            idle,
            finished: self.finished,
            playout_rtp: self.playout_rtp,
        };
        for (word, value) in self.shared.words.iter().zip(stats.to_words()) {
            word.store(value, Ordering::Relaxed);
        }
        stats
    }
}

impl Source for PublisherInput {
    fn fill(&mut self, out: &mut Frame) {
        self.fill_at(out, Instant::now());
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn underruns(&self) -> u64 {
        self.jitter.stats().underruns
    }

    fn fill_at(&mut self, out: &mut Frame, now: Instant) {
        PublisherInput::fill_at(self, out, now);
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// `t - from` in µs, negative when earlier (for trace logs).
fn signed_us(from: Instant, t: Instant) -> i64 {
    match t.checked_duration_since(from) {
        Some(d) => d.as_micros() as i64,
        None => -(from.saturating_duration_since(t).as_micros() as i64),
    }
}

/// A pop's kind, for trace logs.
fn pop_kind(pop: &Pop<'_>) -> &'static str {
    match pop {
        Pop::Packet(_) => "packet",
        Pop::Lost {
            fec_from_next: Some(_),
        } => "lost+next",
        Pop::Lost {
            fec_from_next: None,
        } => "lost",
        Pop::Merge { .. } => "merge",
        Pop::Stretch(_) => "stretch",
        Pop::Empty => "empty",
    }
}

/// The decoder and the decoded audio waiting to be played (more than a frame only when a
/// packet is shorter than 20 ms or a merge could not be cross-faded).
struct Playout {
    decoder: Decoder,
    scratch: Box<Frame>,
    second: Box<Frame>,
    /// Decoded interleaved samples, `have` per channel.
    queue: PcmQueue,
    fec_recovered: u64,
    concealed: u64,
    decode_errors: u64,
    /// Samples (per channel) of the last packet decoded.
    last_len: usize,
}

impl Playout {
    fn append_scratch(&mut self, n: usize) {
        self.queue
            .push(&self.scratch[..n.min(FRAME_SAMPLES) * CHANNELS]);
    }

    fn decode(&mut self, packet: &[u8]) {
        match self.decoder.decode(packet, &mut self.scratch) {
            Ok(n) => {
                self.last_len = n;
                self.append_scratch(n);
            }
            Err(_) => {
                self.decode_errors += 1;
                self.conceal();
            }
        }
    }

    fn lost(&mut self, fec_from_next: Option<&[u8]>) {
        if let Some(next) = fec_from_next.filter(|p| packet_has_fec(p)) {
            if let Ok(n) = self.decoder.decode_fec(next, &mut self.scratch) {
                self.fec_recovered += 1;
                self.append_scratch(n);
                return;
            }
        }
        self.conceal();
    }

    fn conceal(&mut self) {
        self.concealed += 1;
        self.fade_tail();
    }

    /// Concealment to fade out into silence when the stream stops (not counted: nothing
    /// is missing).
    fn fade_tail(&mut self) {
        match self.decoder.conceal(&mut self.scratch) {
            Ok(n) => self.append_scratch(n),
            Err(_) => {
                self.scratch.fill(0.0);
                self.append_scratch(FRAME_SAMPLES);
            }
        }
    }

    /// Decodes two packets and plays them as about one frame: the first half of the first,
    /// a short cross-fade into the second at the offset where the two match best (so a
    /// sustained tone keeps its phase), then the rest of the second. Both ends join their
    /// neighbours without a step; the output is [`FRAME_SAMPLES`] ± [`MERGE_SEARCH`] samples.
    fn merge(&mut self, first: &[u8], second: &[u8]) {
        let a = self.decoder.decode(first, &mut self.scratch);
        let b = self.decoder.decode(second, &mut self.second);
        match (a, b) {
            (Ok(FRAME_SAMPLES), Ok(FRAME_SAMPLES)) => {
                let m = FRAME_SAMPLES / 2 - SPLICE_XFADE / 2;
                let range = m - MERGE_SEARCH..=m + MERGE_SEARCH;
                let k = best_match(&self.scratch, m, &self.second, range);
                splice(&mut self.queue, &self.scratch, m, &self.second, k);
            }
            (Ok(na), Ok(nb)) if na + nb <= FRAME_SAMPLES && nb >= SPLICE_XFADE => {
                // Short packets (10 ms): one after the other in one frame, then about the
                // first one's length cut out of the middle at the best matching offset.
                let n = na + nb;
                self.scratch[na * CHANNELS..n * CHANNELS]
                    .copy_from_slice(&self.second[..nb * CHANNELS]);
                let m = (nb - SPLICE_XFADE) / 2;
                let search = MERGE_SEARCH.min(m);
                let k = best_match(
                    &self.scratch,
                    m,
                    &self.scratch,
                    m + na - search..=m + na + search,
                );
                let x = &self.scratch;
                self.queue.push(&x[..m * CHANNELS]);
                cross_fade(&mut self.queue, x, m, x, k);
                self.queue
                    .push(&x[(k + SPLICE_XFADE) * CHANNELS..n * CHANNELS]);
            }
            (a, b) => {
                // Odd packet lengths or a bad packet: play what decoded, without merging.
                if let Ok(n) = a {
                    self.append_scratch(n);
                } else {
                    self.decode_errors += 1;
                }
                match b {
                    Ok(n) => {
                        std::mem::swap(&mut self.scratch, &mut self.second);
                        self.append_scratch(n);
                    }
                    Err(_) => self.decode_errors += 1,
                }
            }
        }
    }

    /// Decodes a packet and plays it for about two frames: up to [`STRETCH_SPLICE`], then
    /// a cross-fade back to the offset that matches best between [`STRETCH_BACK`] samples
    /// earlier (so a sustained tone keeps its phase), and so on until about a frame has
    /// been added, then the rest of the packet.
    fn stretch(&mut self, packet: &[u8]) {
        match self.decoder.decode(packet, &mut self.scratch) {
            Ok(FRAME_SAMPLES) => {
                let s = STRETCH_SPLICE;
                let back = s - STRETCH_BACK.end()..=s - STRETCH_BACK.start();
                let k = best_match(&self.scratch, s, &self.scratch, back);
                let q = s - k;
                let repeats = ((FRAME_SAMPLES + q / 2) / q).max(1);
                let b = &self.scratch;
                self.queue.push(&b[..s * CHANNELS]);
                for r in 0..repeats {
                    cross_fade(&mut self.queue, b, s, b, k);
                    let end = if r + 1 == repeats { FRAME_SAMPLES } else { s };
                    self.queue
                        .push(&b[(k + SPLICE_XFADE) * CHANNELS..end * CHANNELS]);
                }
            }
            Ok(n) => {
                // Too short to repeat a pitch-aligned piece of: concealment adds the frame.
                self.append_scratch(n);
                self.conceal();
            }
            Err(_) => {
                self.decode_errors += 1;
                self.conceal();
            }
        }
    }

    /// Moves the first frame of decoded audio to `out` (zeros where there is none).
    fn take(&mut self, out: &mut Frame) {
        self.queue.take(out);
    }
}

/// Queues `a` up to sample `m`, a cross-fade from `a` at `m` into `b` at `k`, then `b`
/// from there to its end.
fn splice(queue: &mut PcmQueue, a: &Frame, m: usize, b: &Frame, k: usize) {
    queue.push(&a[..m * CHANNELS]);
    cross_fade(queue, a, m, b, k);
    queue.push(&b[(k + SPLICE_XFADE) * CHANNELS..]);
}

/// Queues a raised-cosine cross-fade of [`SPLICE_XFADE`] samples from `a` at `m` into `b`
/// at `k`.
fn cross_fade(queue: &mut PcmQueue, a: &Frame, m: usize, b: &Frame, k: usize) {
    for i in 0..SPLICE_XFADE {
        let t = (i as f32 + 0.5) / SPLICE_XFADE as f32;
        let w = 0.5 - 0.5 * (std::f32::consts::PI * t).cos();
        let mut pair = [0.0; CHANNELS];
        for (c, p) in pair.iter_mut().enumerate() {
            let x = a[(m + i) * CHANNELS + c];
            let y = b[(k + i) * CHANNELS + c];
            *p = x * (1.0 - w) + y * w;
        }
        queue.push(&pair);
    }
}

/// Decoded interleaved audio waiting to be played: `have` samples per channel.
struct PcmQueue {
    buf: Box<[f32; QUEUE_LEN]>,
    have: usize,
}

impl PcmQueue {
    /// Appends interleaved samples (what does not fit is dropped; it always fits: pops
    /// stop once a frame is queued, and one pop adds at most a little over two frames).
    fn push(&mut self, samples: &[f32]) {
        let at = self.have * CHANNELS;
        let n = samples.len().min(QUEUE_LEN - at) / CHANNELS * CHANNELS;
        self.buf[at..at + n].copy_from_slice(&samples[..n]);
        self.have += n / CHANNELS;
    }

    /// Moves the first frame to `out` (zeros where there is none).
    fn take(&mut self, out: &mut Frame) {
        let n = self.have.min(FRAME_SAMPLES) * CHANNELS;
        out[..n].copy_from_slice(&self.buf[..n]);
        out[n..].fill(0.0);
        let total = self.have * CHANNELS;
        self.buf.copy_within(n..total, 0);
        self.have -= n / CHANNELS;
    }
}

/// The offset `k` in `range` where `b`'s [`SPLICE_XFADE`] samples match `a`'s from `m`
/// best: the highest normalised correlation of the channels' sum. `m` when `a` is silent
/// there or `m` is in the range and nothing matches better.
fn best_match(a: &Frame, m: usize, b: &Frame, range: std::ops::RangeInclusive<usize>) -> usize {
    let mono = |f: &Frame, i: usize| f[i * CHANNELS..(i + 1) * CHANNELS].iter().sum::<f32>();
    let a_energy: f32 = (0..SPLICE_XFADE).map(|i| mono(a, m + i).powi(2)).sum();
    let hi = (*range.end()).min(FRAME_SAMPLES - SPLICE_XFADE);
    let mut best = (m.clamp(*range.start(), hi), f32::MIN);
    if a_energy < 1e-6 {
        return best.0;
    }
    for k in *range.start()..=hi {
        let (mut dot, mut energy) = (0.0, 0.0);
        for i in 0..SPLICE_XFADE {
            let y = mono(b, k + i);
            dot += mono(a, m + i) * y;
            energy += y * y;
        }
        let score = dot / (energy * a_energy).sqrt().max(1e-9);
        if score > best.1 {
            best = (k, score);
        }
    }
    best.0
}

/// A linear fade over `len` samples per channel starting at sample `start`: in (0 to 1)
/// or out (1 to 0).
fn fade(frame: &mut [f32], start: usize, len: usize, fade_in: bool) {
    for i in 0..len {
        let g = (i as f32 + 0.5) / len as f32;
        let g = if fade_in { g } else { 1.0 - g };
        for c in 0..CHANNELS {
            if let Some(s) = frame.get_mut((start + i) * CHANNELS + c) {
                *s *= g;
            }
        }
    }
}

fn rms(frame: &[f32]) -> f32 {
    (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency, Spectrum};
    use crate::media::jitter::MAX_DRY_CONCEAL;
    use crate::media::opus::{Encoder, MAX_PACKET};
    use crate::media::{FRAME_DURATION, SAMPLE_RATE};
    use std::f32::consts::PI;

    const MS: Duration = Duration::from_millis(1);
    const AMPLITUDE: f32 = 0.5;
    /// The largest step between two samples of a 0.5 sine at 1 kHz is 0.065, and the
    /// codec's own output of it reaches 0.10; a click (a cut, or a splice out of phase) is
    /// a step of up to 1.0.
    const MAX_STEP: f32 = 0.15;

    /// `frames` 20 ms Opus packets (stereo CELT, as the crate's encoder makes them) of a
    /// 1 kHz sine on both channels.
    fn tone_packets(frames: usize) -> Vec<Vec<u8>> {
        sine_packets(frames, 1000.0)
    }

    /// `frames` 20 ms Opus packets of a sine at `hz` on both channels.
    fn sine_packets(frames: usize, hz: f32) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(0).unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut frame = [0f32; FRAME_LEN];
        (0..frames)
            .map(|f| {
                for i in 0..FRAME_SAMPLES {
                    let n = (f * FRAME_SAMPLES + i) as f32;
                    let s = AMPLITUDE * (2.0 * PI * hz * n / SAMPLE_RATE as f32).sin();
                    frame[2 * i] = s;
                    frame[2 * i + 1] = s;
                }
                let len = enc.encode(&frame, &mut packet).unwrap();
                packet[..len].to_vec()
            })
            .collect()
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// A packet on the wire: arrival after the start, seq, ts, payload.
    struct Sent<'a> {
        at: Duration,
        seq: u16,
        ts: u32,
        payload: &'a [u8],
    }

    /// Sends `packets` every `period` (with `jitter` µs of random delay, a seeded `loss`
    /// in 1000 of them dropped) and ticks the input every 20 ms for `ticks`. Returns the
    /// output, frame by frame.
    fn play(
        input: &mut PublisherInput,
        feed: &mut PublisherFeed,
        sent: Vec<Sent<'_>>,
        ticks: usize,
    ) -> Vec<Frame> {
        let t0 = Instant::now();
        let mut sent = sent;
        sent.sort_by_key(|s| s.at);
        let mut sent = sent.into_iter().peekable();
        let mut out = Vec::with_capacity(ticks);
        let mut frame = [0f32; FRAME_LEN];
        for k in 0..ticks {
            let now = MS + FRAME_DURATION * k as u32;
            while let Some(s) = sent.next_if(|s| s.at <= now) {
                assert!(feed.push(s.seq, s.ts, s.payload, t0 + s.at));
            }
            input.fill_at(&mut frame, t0 + now);
            out.push(frame);
        }
        out
    }

    fn schedule(
        packets: &[Vec<u8>],
        period: Duration,
        jitter_us: u64,
        loss_per_mille: u64,
    ) -> Vec<Sent<'_>> {
        let mut rng = Rng(0x5eed);
        let mut sent = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let delay = Duration::from_micros(rng.below(jitter_us + 1));
            if i >= 5 && i + 5 < packets.len() && rng.below(1000) < loss_per_mille {
                continue;
            }
            sent.push(Sent {
                at: period * i as u32 + delay,
                seq: 65_000u16.wrapping_add(i as u16),
                ts: 4_000_000_000u32.wrapping_add(960 * i as u32),
                payload: p,
            });
        }
        sent
    }

    fn frame_rms(f: &Frame) -> f32 {
        rms(f)
    }

    /// The ticks from the first sounding frame to the last.
    fn sounding(out: &[Frame]) -> (usize, usize) {
        let first = out.iter().position(|f| frame_rms(f) > 0.01).unwrap();
        let last = out.iter().rposition(|f| frame_rms(f) > 0.01).unwrap();
        (first, last)
    }

    /// Frames that sound after the last packet of a stream: concealment while the buffer
    /// is dry, then one faded to silence.
    const TAIL: usize = MAX_DRY_CONCEAL as usize + 1;

    /// Checks the end of a stream that played about `frames` frames from `first` (give or
    /// take a frame: a merge need not drop exactly 960 samples): the concealment of the
    /// dry buffer, a fade to zero within [`TAIL`] frames, then silence.
    fn assert_clean_end(out: &[Frame], first: usize, frames: usize) {
        let end = first + frames;
        let silent_half = |f: &Frame| f[FRAME_LEN / 2..].iter().all(|&s| s == 0.0);
        let faded = (end - 1..out.len())
            .find(|&i| silent_half(&out[i]))
            .unwrap();
        assert!(
            faded + 1 >= end + TAIL - 1 && faded <= end + TAIL,
            "faded out at {faded}, stream ended at {end}"
        );
        assert!(out[faded + 1..].iter().all(|f| f.iter().all(|&s| s == 0.0)));
        let step = max_step(&out[end - 2..]);
        assert!(step < MAX_STEP, "a click at the end: step of {step}");
    }

    /// The lowest RMS over 5 ms of either channel, and where (sample index).
    fn min_window_rms(frames: &[Frame]) -> (f32, usize) {
        let all: Vec<f32> = frames.iter().flatten().copied().collect();
        let (l, r) = deinterleave(&all);
        let mut low = (f32::MAX, 0);
        for ch in [l, r] {
            for start in (0..ch.len().saturating_sub(240)).step_by(60) {
                let level = rms(&ch[start..start + 240]);
                if level < low.0 {
                    low = (level, start);
                }
            }
        }
        low
    }

    fn max_step(frames: &[Frame]) -> f32 {
        let all: Vec<f32> = frames.iter().flatten().copied().collect();
        let (l, r) = deinterleave(&all);
        [l, r]
            .iter()
            .flat_map(|c| c.windows(2).map(|w| (w[1] - w[0]).abs()))
            .fold(0.0, f32::max)
    }

    /// Checks that `frames` is a steady 1 kHz tone on both channels, at full level in
    /// every frame, without clicks.
    fn assert_steady_tone(frames: &[Frame], min_rms: f32) {
        assert_steady_sine(frames, min_rms, 1000.0)
    }

    /// Checks that `frames` is a steady sine at `hz` on both channels, at full level in
    /// every frame and every 5 ms, without clicks.
    fn assert_steady_sine(frames: &[Frame], min_rms: f32, hz: f32) {
        // Not even a short dip (a splice out of phase cancels for a few milliseconds).
        let (low, at) = min_window_rms(frames);
        let nominal = AMPLITUDE / 2f32.sqrt();
        assert!(low > 0.9 * nominal, "level down to {low} at sample {at}");
        for (i, f) in frames.iter().enumerate() {
            let level = frame_rms(f);
            assert!(
                level > min_rms,
                "frame {i} of {}: RMS {level}",
                frames.len()
            );
        }
        let step = max_step(frames);
        assert!(step < MAX_STEP, "a click: step of {step}");
        let all: Vec<f32> = frames.iter().flatten().copied().collect();
        let (l, r) = deinterleave(&all);
        for ch in [l, r] {
            let s = Spectrum::new(&ch, SAMPLE_RATE);
            let peak = s.dominant_frequency();
            assert!((peak - hz).abs() < 2.0, "at {peak} Hz");
            let purity = s.band_fraction(hz, 50.0);
            assert!(purity > 0.99, "only {purity} of the energy near 1 kHz");
        }
    }

    #[test]
    fn in_order_tone_plays_at_1khz_without_gaps() {
        let packets = tone_packets(250);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let out = play(
            &mut input,
            &mut feed,
            schedule(&packets, 20 * MS, 0, 0),
            270,
        );
        let (first, _) = sounding(&out);
        assert!(first < 3, "first heard at tick {first}");
        // Past the fade-in, every frame at the full level of a 0.5 sine (RMS 0.354).
        assert_steady_tone(&out[first + 1..first + 250], 0.33);
        assert_clean_end(&out, first, 250);
        let s = input.stats();
        assert_eq!((s.packets, s.played, s.lost), (250, 250, 0));
        // Nothing concealed within the stream; the frames after the last packet are the
        // fade-out, counted apart.
        assert_eq!((s.concealed, s.concealed_at_end), (0, s.underruns), "{s:?}");
        assert_eq!(s.underruns, MAX_DRY_CONCEAL as u64, "{s:?}");
        assert!(!s.idle && !s.finished);
    }

    #[test]
    fn padding_between_packets_is_not_a_loss() {
        // Chromium's bandwidth probes: padding-only packets on the audio SSRC take sequence
        // numbers, str0m drops them, so the audio packets around them are 2..12 apart in
        // sequence but consecutive in time (seen on loopback: gaps of 11, 8, 2, 2, 2, 3).
        let packets = tone_packets(500);
        let mut sent = schedule(&packets, 20 * MS, 3_000, 0);
        let mut shift = 0u16;
        for (i, s) in sent.iter_mut().enumerate() {
            if i % 37 == 20 {
                shift += [10, 7, 1, 1, 2][i % 5];
            }
            s.seq = s.seq.wrapping_add(shift);
        }
        let (mut feed, mut input) = publisher_channel().unwrap();
        let out = play(&mut input, &mut feed, sent, 530);
        let (first, _) = sounding(&out);
        let s = input.stats();
        assert_eq!(s.skipped, u64::from(shift), "{s:?}");
        assert_eq!((s.played, s.lost, s.concealed), (500, 0, 0), "{s:?}");
        // No frame of delay was added per gap, so the drift control has nothing to undo.
        assert_eq!(s.dropped_for_drift + s.inserted_for_drift, 0, "{s:?}");
        assert_steady_tone(&out[first + 1..first + 500], 0.33);
        assert_clean_end(&out, first, 500);
    }

    #[test]
    fn concealment_after_the_last_packet_is_counted_apart() {
        // The publisher's last packet plays, the buffer runs dry for three ticks, then the
        // publisher leaves (its DELETE drops the feed): those three frames were the audio
        // fading out, not a loss.
        let packets = tone_packets(100);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let sent = schedule(&packets, 20 * MS, 0, 0);
        let out = play(&mut input, &mut feed, sent, 104);
        let mut s = input.stats();
        assert_eq!((s.played, s.lost, s.concealed), (100, 0, 0), "{s:?}");
        assert!(s.concealed_at_end > 0, "{s:?}");
        let dry = s.concealed_at_end;
        drop(feed);
        let mut frame = [0f32; FRAME_LEN];
        let t0 = Instant::now() + FRAME_DURATION * 104;
        for k in 0..5 {
            input.fill_at(&mut frame, t0 + FRAME_DURATION * k);
        }
        assert!(input.is_finished());
        s = input.stats();
        assert_eq!((s.concealed, s.concealed_at_end), (0, dry), "{s:?}");
        assert_eq!(s.underruns, dry, "{s:?}");
        // And they were heard as the tone carrying on, not as silence.
        let (_, last) = sounding(&out);
        assert!(last >= 101, "silent from {last}");
    }

    #[test]
    fn first_packet_is_audible_within_three_ticks() {
        let packets = tone_packets(5);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let t0 = Instant::now();
        feed.push(1, 0, &packets[0], t0);
        let mut frame = [0f32; FRAME_LEN];
        let mut heard = None;
        for k in 0..3u32 {
            // Later packets arrive on time; the ticks run 19.9 ms behind the first packet.
            feed.push(
                2 + k as u16,
                960 * (k + 1),
                &packets[k as usize + 1],
                t0 + 20 * MS * (k + 1),
            );
            input.fill_at(
                &mut frame,
                t0 + Duration::from_micros(19_900) + FRAME_DURATION * k,
            );
            if heard.is_none() && frame_rms(&frame) > 0.05 {
                heard = Some(k);
            }
        }
        assert!(heard.is_some(), "not heard within 3 ticks");
        // The fade-in starts from silence: no click.
        assert!(frame[0].abs() < 0.01 && frame[1].abs() < 0.01);
    }

    #[test]
    fn five_percent_loss_is_concealed() {
        let packets = tone_packets(500);
        let sent = schedule(&packets, 20 * MS, 10_000, 50);
        let lost = 500 - sent.len() as u64;
        assert!((15..=40).contains(&lost), "{lost} lost");
        let (mut feed, mut input) = publisher_channel().unwrap();
        let out = play(&mut input, &mut feed, sent, 530);
        let (first, _) = sounding(&out);
        let s = input.stats();
        assert_eq!(s.lost, lost, "{s:?}");
        // A frame per loss, except that a run of losses whose next packet is already due
        // is given up on with one frame; the dry end of the stream is counted apart.
        assert!(s.concealed <= lost && s.concealed + 3 >= lost, "{s:?}");
        assert_eq!(s.concealed_at_end, MAX_DRY_CONCEAL as u64, "{s:?}");
        // One frame per packet, lost or not, give or take the drift control's corrections.
        let frames =
            500 + s.inserted_for_drift + s.underruns - MAX_DRY_CONCEAL as u64 - s.dropped_for_drift;
        assert_clean_end(&out, first, frames as usize);
        // Concealment keeps the tone going: no frame mid-stream drops near silence, and the
        // spectrum stays a 1 kHz tone.
        let body = &out[first + 1..first + frames as usize];
        for (i, f) in body.iter().enumerate() {
            assert!(frame_rms(f) > 0.1, "frame {i}: RMS {}", frame_rms(f));
        }
        let all: Vec<f32> = body.iter().flatten().copied().collect();
        let (l, _) = deinterleave(&all);
        assert!((dominant_frequency(&l, SAMPLE_RATE) - 1000.0).abs() < 2.0);
        assert!(Spectrum::new(&l, SAMPLE_RATE).band_fraction(1000.0, 50.0) > 0.95);
    }

    /// A sine whose period does not divide 20 ms: two frames in a row are in opposite
    /// phase, the worst case for dropping or inserting a frame.
    const DRIFT_HZ: f32 = 1025.0;

    /// 60 s of a [`DRIFT_HZ`] sine from a sender whose clock is off by `ppm`, 5 ms of
    /// jitter.
    fn drifting(ppm: i64) -> (Vec<Frame>, PublisherStats) {
        let packets = sine_packets(3000, DRIFT_HZ);
        let period = Duration::from_nanos((20_000_000 * (1_000_000 - ppm) / 1_000_000) as u64);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let out = play(
            &mut input,
            &mut feed,
            schedule(&packets, period, 5_000, 0),
            3100,
        );
        (out, input.stats())
    }

    #[test]
    fn a_fast_sender_is_followed_without_gaps_or_clicks() {
        let (out, s) = drifting(1000);
        let (first, _) = sounding(&out);
        // 3000 packets, three or more pairs of them merged into one frame.
        assert!((3..=5).contains(&s.dropped_for_drift), "{s:?}");
        let frames = 3000 - s.dropped_for_drift as usize;
        assert_clean_end(&out, first, frames);
        assert_eq!((s.lost, s.late, s.inserted_for_drift), (0, 0, 0), "{s:?}");
        assert_eq!((s.concealed, s.concealed_at_end), (0, s.underruns), "{s:?}");
        assert!(s.delay <= 60 * MS, "{s:?}");
        assert_steady_sine(&out[first + 1..first + frames], 0.3, DRIFT_HZ);
    }

    #[test]
    fn a_slow_sender_is_followed_without_gaps_or_clicks() {
        let (out, s) = drifting(-1000);
        let (first, _) = sounding(&out);
        // 60 ms lost in 60 s: two or three frames concealed in between.
        assert!((2..=4).contains(&s.inserted_for_drift), "{s:?}");
        assert_eq!((s.lost, s.late), (0, 0), "{s:?}");
        // One drop may bring the start delay (40..60 ms) down to the target.
        assert!(s.dropped_for_drift <= 1, "{s:?}");
        let dry = s.underruns - MAX_DRY_CONCEAL as u64;
        assert!(dry <= 1, "{s:?}");
        let frames = 3000 + (s.inserted_for_drift + dry) as usize - s.dropped_for_drift as usize;
        assert_clean_end(&out, first, frames);
        assert!(s.delay <= 60 * MS, "{s:?}");
        assert_steady_sine(&out[first + 1..first + frames], 0.3, DRIFT_HZ);
    }

    #[test]
    fn a_leaving_publisher_fades_out_and_finishes() {
        let packets = tone_packets(100);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let monitor = feed.monitor();
        let t0 = Instant::now();
        let mut frame = [0f32; FRAME_LEN];
        let mut out = Vec::new();
        for (k, p) in packets.iter().enumerate() {
            let now = t0 + FRAME_DURATION * k as u32;
            feed.push(k as u16, 960 * k as u32, p, now);
            input.fill_at(&mut frame, now + MS);
            out.push(frame);
        }
        assert!(!monitor.is_finished());
        drop(feed);
        for k in 100..110u32 {
            input.fill_at(&mut frame, t0 + FRAME_DURATION * k + MS);
            out.push(frame);
        }
        let (_, last) = sounding(&out);
        // The buffered packets played out, then one frame faded to silence.
        assert!(last >= 100, "cut off at {last}");
        assert!(out[last + 1..].iter().all(|f| f.iter().all(|&s| s == 0.0)));
        assert!(
            max_step(&out[90..]) < MAX_STEP,
            "a click: {}",
            max_step(&out[90..])
        );
        let tail = &out[last][FRAME_LEN - 20..];
        assert!(tail.iter().all(|s| s.abs() < 1e-3), "{tail:?}");
        assert!(input.is_finished() && monitor.is_finished());
        assert_eq!(monitor.stats().played, 100);
    }

    #[test]
    fn an_idle_publisher_is_reported_and_comes_back() {
        let packets = tone_packets(200);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let monitor = input.monitor();
        // 1 s of packets, 3 s of nothing, 1 s of packets again (continuing numbering).
        let mut sent = schedule(&packets, 20 * MS, 0, 0);
        for s in &mut sent[50..100] {
            s.at += Duration::from_secs(3);
            s.ts = s.ts.wrapping_add(3 * SAMPLE_RATE);
        }
        sent.truncate(100);
        let t0 = Instant::now();
        let mut sent = sent.into_iter().peekable();
        let mut frame = [0f32; FRAME_LEN];
        let mut out = Vec::new();
        let mut idle_ticks = Vec::new();
        for k in 0..260u32 {
            let now = MS + FRAME_DURATION * k;
            while let Some(s) = sent.next_if(|s| s.at <= now) {
                feed.push(s.seq, s.ts, s.payload, t0 + s.at);
            }
            input.fill_at(&mut frame, t0 + now);
            out.push(frame);
            if monitor.is_idle() {
                idle_ticks.push(k);
            }
        }
        // Idle from 2 s after the last packet of the first second until the packets return.
        let first_idle = *idle_ticks.first().expect("never idle");
        assert_eq!(first_idle, (980 + 2000) / 20, "{idle_ticks:?}");
        assert!(idle_ticks.iter().all(|&k| k < 200));
        // Silent while away, sounding again after.
        assert!(out[60..195].iter().all(|f| frame_rms(f) < 1e-3));
        assert!(out[205..245].iter().all(|f| frame_rms(f) > 0.3));
        assert!(max_step(&out) < MAX_STEP, "a click: {}", max_step(&out));
        assert!(!monitor.stats().finished);
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let (mut feed, mut input) = publisher_channel().unwrap();
        let t0 = Instant::now();
        let mut rng = Rng(42);
        let mut frame = [0f32; FRAME_LEN];
        let mut payload = vec![0u8; MAX_PAYLOAD + 1];
        for k in 0..500u32 {
            let len = match k % 50 {
                0 => 0,
                1 => MAX_PAYLOAD + 1,
                _ => rng.below(payload.len() as u64 + 1) as usize,
            };
            for b in &mut payload[..len] {
                *b = rng.below(256) as u8;
            }
            let seq = if k % 7 == 0 {
                rng.below(65_536) as u16
            } else {
                k as u16
            };
            feed.push(seq, 960 * k, &payload[..len], t0 + FRAME_DURATION * k);
            input.fill_at(&mut frame, t0 + FRAME_DURATION * k + MS);
            assert!(frame.iter().all(|s| (-1.0..=1.0).contains(s)));
        }
        let s = input.stats();
        assert!(s.decode_errors > 0 && s.invalid > 0, "{s:?}");
    }

    #[test]
    fn a_full_ring_drops_and_counts() {
        let (mut feed, mut input) = publisher_channel().unwrap();
        let t0 = Instant::now();
        let accepted = (0..FEED_CAPACITY as u16 + 10)
            .filter(|&k| feed.push(k, 960 * u32::from(k), &[0xfc, 0xff, 0xfe], t0))
            .count();
        assert_eq!(accepted, FEED_CAPACITY);
        assert!(!feed.push(1, 0, &[], t0));
        let s = feed.monitor().stats();
        assert_eq!((s.overflow, s.invalid, s.packets), (10, 1, 0), "{s:?}");
        let mut frame = [0f32; FRAME_LEN];
        input.fill_at(&mut frame, t0);
        assert_eq!(feed.monitor().stats().packets, FEED_CAPACITY as u64);
        // Room again.
        assert!(feed.push(100, 96_000, &[0xfc, 0xff, 0xfe], t0));
    }

    #[test]
    fn fec_rebuilds_lost_speech_packets() {
        // Mono SILK with in-band FEC, as a browser sends: a tone that changes pitch every
        // 200 ms (a steady tone is not worth FEC to the encoder). Every 10th packet lost.
        let mut enc =
            ropus::Encoder::builder(SAMPLE_RATE, ropus::Channels::Mono, ropus::Application::Voip)
                .bitrate(ropus::Bitrate::Bits(32_000))
                .inband_fec(ropus::InbandFec::Enabled)
                .packet_loss_perc(10)
                .build()
                .unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut phase = 0f32;
        let packets: Vec<Vec<u8>> = (0..200)
            .map(|f| {
                let hz = [200.0, 350.0, 500.0, 280.0][(f / 10) % 4];
                let pcm: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|_| {
                        phase += 2.0 * PI * hz / SAMPLE_RATE as f32;
                        0.3 * phase.sin()
                    })
                    .collect();
                let len = enc.encode_float(&pcm, &mut packet).unwrap();
                packet[..len].to_vec()
            })
            .collect();
        let lost = |i: usize| i % 10 == 5 && i < 190;
        let with_fec = (0..200)
            .filter(|&i| lost(i) && packet_has_fec(&packets[i + 1]))
            .count() as u64;
        assert!(with_fec >= 10, "only {with_fec} losses followed by FEC");
        let sent: Vec<Sent<'_>> = schedule(&packets, 20 * MS, 0, 0)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !lost(*i))
            .map(|(_, s)| s)
            .collect();
        let (mut feed, mut input) = publisher_channel().unwrap();
        let out = play(&mut input, &mut feed, sent, 210);
        let s = input.stats();
        assert_eq!((s.lost, s.fec_recovered), (19, with_fec), "{s:?}");
        // The losses without FEC were concealed; the dry end of the stream is counted apart.
        assert_eq!(s.concealed, 19 - with_fec, "{s:?}");
        assert_eq!(s.concealed_at_end, s.underruns, "{s:?}");
        let (first, _) = sounding(&out);
        for (i, f) in out[first + 5..first + 200].iter().enumerate() {
            assert!(frame_rms(f) > 0.01, "frame {i}: {}", frame_rms(f));
        }
    }

    /// `frames` 10 ms Opus packets of a 1 kHz sine on both channels.
    fn ten_ms_packets(frames: usize) -> Vec<Vec<u8>> {
        let mut enc = ropus::Encoder::builder(
            SAMPLE_RATE,
            ropus::Channels::Stereo,
            ropus::Application::Audio,
        )
        .frame_duration(ropus::FrameDuration::Ms10)
        .bitrate(ropus::Bitrate::Bits(128_000))
        .build()
        .unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let half = FRAME_SAMPLES / 2;
        (0..frames)
            .map(|f| {
                let pcm: Vec<f32> = (0..half * 2)
                    .map(|k| {
                        let n = (f * half + k / 2) as f32;
                        AMPLITUDE * (2.0 * PI * 1000.0 * n / SAMPLE_RATE as f32).sin()
                    })
                    .collect();
                let len = enc.encode_float(&pcm, &mut packet).unwrap();
                packet[..len].to_vec()
            })
            .collect()
    }

    fn ten_ms_schedule(packets: &[Vec<u8>], period: Duration, jitter_us: u64) -> Vec<Sent<'_>> {
        let mut rng = Rng(17);
        packets
            .iter()
            .enumerate()
            .map(|(i, p)| Sent {
                at: period * i as u32 + Duration::from_micros(rng.below(jitter_us + 1)),
                seq: i as u16,
                ts: 480 * i as u32,
                payload: p,
            })
            .collect()
    }

    #[test]
    fn ten_ms_packets_play_continuously() {
        let packets = ten_ms_packets(400);
        let sent = ten_ms_schedule(&packets, 10 * MS, 0);
        let (mut feed, mut input) = publisher_channel().unwrap();
        let out = play(&mut input, &mut feed, sent, 220);
        let (first, _) = sounding(&out);
        assert_steady_tone(&out[first + 1..first + 200], 0.33);
        let s = input.stats();
        assert_eq!((s.played, s.lost), (400, 0), "{s:?}");
    }

    #[test]
    fn ten_ms_packets_from_drifting_senders_stay_continuous() {
        let packets = ten_ms_packets(3000);
        for ppm in [1000i64, -1000] {
            let period = Duration::from_nanos((10_000_000 * (1_000_000 - ppm) / 1_000_000) as u64);
            let sent = ten_ms_schedule(&packets, period, 5_000);
            let (mut feed, mut input) = publisher_channel().unwrap();
            let out = play(&mut input, &mut feed, sent, 1550);
            let s = input.stats();
            let (first, _) = sounding(&out);
            // 30 s, 30 ms of drift: at least one correction, never running dry.
            assert!(
                s.dropped_for_drift + s.inserted_for_drift >= 1,
                "{ppm}: {s:?}"
            );
            assert_eq!((s.lost, s.late), (0, 0), "{ppm}: {s:?}");
            // Only the end of the stream ran dry.
            assert_eq!(s.underruns, MAX_DRY_CONCEAL as u64, "{ppm}: {s:?}");
            for (i, f) in out[first + 1..first + 1400].iter().enumerate() {
                assert!(frame_rms(f) > 0.2, "{ppm}: frame {i}: RMS {}", frame_rms(f));
            }
            assert!(s.delay <= 60 * MS, "{ppm}: {s:?}");
        }
    }
}
