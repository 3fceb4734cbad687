//! An adaptive jitter buffer for one publisher's Opus RTP packets.
//!
//! Owns the packets between their arrival and their turn to be decoded: it puts them back in
//! order, drops duplicates and late ones, says when one is lost (with the next packet, whose
//! in-band FEC may rebuild it), and keeps the playout delay just above the network's jitter
//! while the sender's clock drifts against our 20 ms tick. It never reads the clock (time is
//! the `arrival` and `now` arguments), never allocates after [`JitterBuffer::new`], never
//! blocks and never panics on bad input: payloads are opaque bytes, copied into
//! [`CAPACITY`] preallocated slots of [`MAX_PAYLOAD`] bytes.
//!
//! ```text
//!  push(seq, ts, payload, arrival)              pop(now), once per 20 ms tick
//!  ─► unwrap seq/ts ─► transit = arrival - ts   ─► Packet(p)          decode p
//!     (invalid? dup? late? sender restarted?)      Lost{fec_from_next} FEC from the next, or conceal
//!  ─► slot[seq % CAPACITY]                         Merge{first,second} two packets in one frame (too deep)
//!                                                  Stretch(p)          one packet over two frames (too shallow)
//!                                                  Empty               silence (buffering)
//! ```
//!
//! # Timing model
//! Each packet's *transit* is `arrival - ts/48 kHz`. Its minimum over the last
//! [`TRANSIT_WINDOW`] packets is the fastest the network delivered: a packet with timestamp
//! `ts` could have been here at `min_transit + ts` at the earliest. The *lag* of a packet is
//! how long after that instant it is popped. Jitter is the excess of each packet's transit
//! over the minimum; the *target* lag is the [`JITTER_QUANTILE`] of that excess (a histogram
//! that forgets over about ten seconds) plus [`TARGET_HEADROOM`], kept within
//! [`MIN_TARGET`]..=[`MAX_TARGET`] and never below [`START_TARGET`] for the first second.
//!
//! Playout starts when the first packet's lag reaches the target: 40 ms (two or three
//! ticks) after the first packet of a new publisher. It then follows sequence numbers, one
//! packet per pop:
//! - a missing packet with later ones present is lost: `Lost` with the next packet for FEC
//!   (several missing ones are given up on at once when the next present one is already due).
//!   What is missing is counted by RTP timestamps, not sequence numbers: the next present
//!   packet's timestamp against the one expected after the last frame played. Sequence
//!   numbers passed over whose timestamps follow on (the packets on both sides are
//!   consecutive in time) carried no audio: padding-only packets, which Chromium sends on
//!   its audio SSRC as bandwidth probes and str0m drops before they reach us. They are
//!   [`JitterStats::skipped`], played straight through, never concealed. A timestamp jump
//!   larger than the sequence gap is a silence (DTX), not a loss beyond the gap;
//! - a missing packet with nothing after it means the buffer ran dry (the packet is late or
//!   lost, or the sender slow or silent): `Lost` without moving on. If the packet then comes,
//!   it plays (the delay grew by a frame); if a later one comes instead, the concealed
//!   frames stood in for the missing ones. Concealment continues until the waiting packet's
//!   lag is back near the target; after [`MAX_DRY_CONCEAL`] such frames the buffer gives up
//!   and re-buffers (`Empty`) like at the start, skipping packets that are stale by then.
//!   This also covers DTX and other silences in the stream. Frames concealed after the
//!   last packet that no packet followed (the end of the stream, a silence) are
//!   [`JitterStats::trailing`]: a fade-out, nothing missing.
//!
//! # Clock drift
//! A sender whose clock is 0.1 % fast gains 1 ms a second on our tick. When the lag stays
//! above target + one frame + [`DRIFT_BAND`] for a second, two packets are played as one
//! frame (`Merge`); when it stays below target - [`DRIFT_BAND`] for 200 ms, one packet is
//! played over two frames (`Stretch`). Both wait for a quiet moment
//! ([`JitterBuffer::set_quiet`], told by the caller after decoding) for a while (5 s and
//! 1 s), then act anyway. Each correction moves the lag by one frame and the band between
//! the two thresholds is wider than a frame, so corrections do not oscillate. The caller
//! does the audio work (see [`publisher`](super::publisher)): pitch-aligned splices that
//! keep a sustained note's phase, never a cut.
//!
//! # Resync
//! A packet whose transit differs from the minimum by more than [`RESYNC_TRANSIT`] (a
//! restarted sender, a timestamp jump, a very long stall) or whose sequence number is older
//! than anything the buffer remembers is suspect and dropped; [`RESYNC_CONFIRM`] suspects in
//! a row restart the buffer from the latest one (the store is flushed, timing re-learnt,
//! the jitter histogram kept).

use super::opus::MAX_PACKET;
use super::FRAME_DURATION;
use std::time::{Duration, Instant};

/// Packets the buffer can hold: 1 s of 20 ms packets, five times the largest target delay.
/// A packet more than this many sequence numbers ahead of the next one to play evicts the
/// oldest ones (they are counted in [`JitterStats::overflow`]).
pub const CAPACITY: usize = 50;
/// Longest payload stored (an Opus packet is at most 1275 bytes per frame); longer or empty
/// payloads are refused and counted in [`JitterStats::invalid`].
pub const MAX_PAYLOAD: usize = MAX_PACKET;
/// Target lag until about a second of packets has been measured: the first packet of a new
/// publisher plays 40..60 ms after it arrived.
pub const START_TARGET: Duration = Duration::from_millis(40);
/// Smallest target lag.
pub const MIN_TARGET: Duration = Duration::from_millis(20);
/// Largest target lag.
pub const MAX_TARGET: Duration = Duration::from_millis(200);
/// Added to the measured jitter to make the target.
pub const TARGET_HEADROOM: Duration = Duration::from_millis(10);
/// Fraction of packets the target lag should be long enough for.
pub const JITTER_QUANTILE: f32 = 0.97;
/// Half-width of the dead band around the target in which the drift control leaves the
/// lag alone (the band is target - this ..= target + one frame + this).
pub const DRIFT_BAND: Duration = Duration::from_millis(10);
/// Frames concealed after the buffer ran dry before it gives up and re-buffers (100 ms).
pub const MAX_DRY_CONCEAL: u32 = 5;
/// A packet whose transit differs from the minimum by more than this is suspect (see
/// the module doc's Resync).
pub const RESYNC_TRANSIT: Duration = Duration::from_secs(2);
/// Suspect packets in a row that make the buffer resync.
pub const RESYNC_CONFIRM: u32 = 2;
/// Packets over which the minimum transit is taken (2 s).
pub const TRANSIT_WINDOW: usize = 100;

/// Packets below the first one that are still accepted before playout starts (reordering
/// of the very first packets).
const BACKFILL: u64 = 5;
/// Jitter histogram: bucket width and count (0..300 ms; the last bucket takes the rest).
const BUCKET_US: i64 = 5_000;
const BUCKETS: usize = 60;
/// Per-packet forgetting factor of the histogram: a memory of about 500 packets (10 s).
const HIST_FORGET: f32 = 0.998;
/// Packets measured before the target may go below [`START_TARGET`].
const WARMUP: u64 = 50;
/// Pops in a row above the band before a drop may be done at a quiet moment, and after
/// which it is done anyway (1 s and 5 s).
const DROP_WINDOW: u32 = 50;
const DROP_PATIENCE: u32 = 250;
/// Pops in a row below the band before an insert may be done at a quiet moment, and after
/// which it is done anyway (200 ms and 1 s).
const INSERT_WINDOW: u32 = 10;
const INSERT_PATIENCE: u32 = 50;
/// RTP timestamp step of one packet until one is measured (20 ms at 48 kHz), and the
/// longest step believed (120 ms, Opus's longest packet): a longer one between consecutive
/// sequence numbers is a silence (DTX), not a packet's length.
const DEFAULT_STEP: i64 = 960;
const MAX_STEP: i64 = 5760;
/// Extended sequence numbers start here so that a backwards jump never goes below zero.
const SEQ_BASE: u64 = 1 << 32;
const FRAME_US: i64 = FRAME_DURATION.as_micros() as i64;

const _: () = assert!(MAX_PAYLOAD <= u16::MAX as usize && CAPACITY as u64 > 2 * BACKFILL);

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds of an RTP timestamp at 48 kHz (1 sample = 125/6 µs).
fn ts_us(ts: i64) -> i64 {
    ts.saturating_mul(125) / 6
}

/// What to play this tick (see the module doc). Payloads borrow from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop<'a> {
    /// The next packet, in order: decode it.
    Packet(&'a [u8]),
    /// No packet for this frame (lost, or the buffer ran dry): conceal one 20 ms frame.
    /// `fec_from_next` is the packet right after the missing one when it is here: its
    /// in-band FEC may rebuild the missing frame (decode it with FEC, then play it normally
    /// at the next pop).
    Lost {
        /// The following packet, for FEC recovery.
        fec_from_next: Option<&'a [u8]>,
    },
    /// The buffer is too deep (the sender's clock is fast): decode both packets, in order,
    /// and play them as about one frame (the caller cross-fades from the first into the
    /// second).
    Merge {
        /// The next packet.
        first: &'a [u8],
        /// The one after it.
        second: &'a [u8],
    },
    /// The buffer is too shallow (the sender's clock is slow): decode the next packet and
    /// play it over about two frames (the caller repeats part of it). The caller then holds
    /// a frame of audio and skips the next pop, which is how the buffer's delay grows.
    Stretch(&'a [u8]),
    /// Nothing to play (before the first packet, or re-buffering): silence.
    Empty,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored for playout.
    Stored,
    /// Stored after restarting the buffer (a restarted sender).
    Resynced,
    /// Already here or already played: dropped.
    Duplicate,
    /// Its turn has passed: dropped (its timing still counts toward the jitter estimate).
    Late,
    /// Empty or longer than [`MAX_PAYLOAD`]: dropped.
    Invalid,
    /// Out of line with the stream's timing or far too old: dropped, and a resync is
    /// considered if the next one is too.
    Suspect,
}

/// Counters since the buffer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets stored.
    pub received: u64,
    /// Packets handed out to decode (including both of a [`Pop::Merge`]).
    pub played: u64,
    /// Packets given up on as missing: frames of audio missing by their timestamps.
    pub lost: u64,
    /// Sequence numbers passed over that carried no audio: the packets on both sides of
    /// the gap have consecutive timestamps. These are padding-only packets (Chromium's
    /// bandwidth probes ride on its audio stream), which str0m drops before the buffer.
    pub skipped: u64,
    /// Packets that came after their turn (a lost packet that turns up later counts here too).
    pub late: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Empty or oversized payloads dropped.
    pub invalid: u64,
    /// Packets dropped unplayed: evicted by a packet too far ahead, or stale at a (re)start.
    pub overflow: u64,
    /// Frames concealed because the buffer ran dry (or was catching up after running dry).
    pub underruns: u64,
    /// Of the underruns, the frames concealed after the last packet of a stretch of
    /// audio: before the buffer gave up and re-buffered (a silence, a restarted sender), or
    /// up to now with nothing come since (the publisher stopped, or is about to leave).
    /// Nothing is missing there: the concealment fades the audio out.
    pub trailing: u64,
    /// [`Pop::Merge`]s: frames dropped because the buffer was too deep.
    pub drift_drops: u64,
    /// [`Pop::Stretch`]es: packets played longer because the buffer was too shallow.
    pub drift_inserts: u64,
    /// Times playout (re)started after buffering.
    pub starts: u64,
    /// Restarts caused by a sender's timing or numbering jump.
    pub resyncs: u64,
    /// Suspect packets dropped.
    pub suspects: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Ready,
    /// Handed out; the sequence number is kept to recognise duplicates.
    Played,
}

struct Slot {
    seq: u64,
    /// Extended RTP timestamp.
    ts: i64,
    state: SlotState,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

/// The jitter buffer of one publisher. See the module doc.
pub struct JitterBuffer {
    slots: Box<[Slot]>,
    /// Ready slots.
    ready: usize,
    /// Next sequence number to play (or the lowest one accepted, before playout starts).
    next: u64,
    /// Highest extended sequence number accepted.
    highest: u64,
    /// Reference for all times, set by the first packet.
    epoch: Option<Instant>,
    last_arrival: Option<Instant>,
    /// Timestamp of the last accepted packet, raw and extended.
    last_ts: u32,
    last_ts_ext: i64,
    /// Recent transits (µs), a ring, and their minimum.
    transits: [i64; TRANSIT_WINDOW],
    transit_len: usize,
    transit_pos: usize,
    min_transit: i64,
    /// Jitter histogram (weights of the excess transit), its total and the packets seen.
    hist: [f32; BUCKETS],
    hist_total: f32,
    measured: u64,
    target_us: i64,
    playing: bool,
    /// Consecutive dry pops.
    dry: u32,
    /// Drift control: ticks in a row whose lag was above the band, and below it; the tick
    /// being watched and its lowest lag so far.
    high_for: u32,
    low_for: u32,
    watch_now: i64,
    tick_lag: Option<i64>,
    last_lag: Option<i64>,
    /// Extended RTP timestamp of the last packet played.
    last_played_ts: Option<i64>,
    /// Extended RTP timestamp the next frame should have: after the last packet played,
    /// plus a step per frame given up on since. `None` until the first play after a start.
    expect_ts: Option<i64>,
    /// RTP timestamp step of one packet, measured between consecutive sequence numbers.
    step: i64,
    quiet: bool,
    suspects: u32,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// An empty buffer. Allocates its [`CAPACITY`] slots (about 75 KiB); nothing after.
    pub fn new() -> Self {
        let slots = (0..CAPACITY)
            .map(|_| Slot {
                seq: 0,
                ts: 0,
                state: SlotState::Free,
                len: 0,
                data: [0; MAX_PAYLOAD],
            })
            .collect();
        JitterBuffer {
            slots,
            ready: 0,
            next: 0,
            highest: 0,
            epoch: None,
            last_arrival: None,
            last_ts: 0,
            last_ts_ext: 0,
            last_played_ts: None,
            expect_ts: None,
            step: DEFAULT_STEP,
            transits: [0; TRANSIT_WINDOW],
            transit_len: 0,
            transit_pos: 0,
            min_transit: 0,
            hist: [0.0; BUCKETS],
            hist_total: 0.0,
            measured: 0,
            target_us: us(START_TARGET),
            playing: false,
            dry: 0,
            high_for: 0,
            low_for: 0,
            watch_now: i64::MIN,
            tick_lag: None,
            last_lag: None,
            quiet: false,
            suspects: 0,
            stats: JitterStats::default(),
        }
    }

    /// Takes one RTP packet: sequence number, 48 kHz timestamp, Opus payload (copied) and
    /// the instant it arrived (the same clock as [`pop`](Self::pop)'s `now`).
    pub fn push(&mut self, seq: u16, ts: u32, payload: &[u8], arrival: Instant) -> Pushed {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            self.stats.invalid += 1;
            return Pushed::Invalid;
        }
        let epoch = match self.epoch {
            Some(e) => e,
            None => {
                self.epoch = Some(arrival);
                self.highest = SEQ_BASE + u64::from(seq);
                self.next = self.highest - BACKFILL;
                self.last_ts = ts;
                self.last_ts_ext = 0;
                arrival
            }
        };
        let ext = self.unroll_seq(seq);
        let ts_ext = self.last_ts_ext + i64::from(ts.wrapping_sub(self.last_ts) as i32);
        let transit = signed_micros(epoch, arrival) - ts_us(ts_ext);

        let off_timing =
            self.transit_len > 0 && (transit - self.min_transit).abs() > us(RESYNC_TRANSIT);
        let ancient = ext + CAPACITY as u64 <= self.next;
        let mut resynced = false;
        if off_timing || ancient {
            // Still a sign of life from the publisher.
            self.last_arrival = Some(self.last_arrival.map_or(arrival, |a| a.max(arrival)));
            self.suspects += 1;
            if self.suspects < RESYNC_CONFIRM {
                self.stats.suspects += 1;
                return Pushed::Suspect;
            }
            self.resync(ext);
            resynced = true;
        }
        self.suspects = 0;

        if ext < self.next {
            let slot = &self.slots[Self::index(ext)];
            if slot.state != SlotState::Free && slot.seq == ext {
                self.stats.duplicates += 1;
                return Pushed::Duplicate;
            }
            self.measure(ts, ts_ext, transit, arrival);
            self.stats.late += 1;
            return Pushed::Late;
        }
        {
            let slot = &self.slots[Self::index(ext)];
            if slot.state == SlotState::Ready && slot.seq == ext {
                self.stats.duplicates += 1;
                return Pushed::Duplicate;
            }
        }
        self.measure(ts, ts_ext, transit, arrival);
        self.highest = self.highest.max(ext);
        if ext >= self.next + CAPACITY as u64 {
            self.evict_below(ext + 1 - CAPACITY as u64);
        }
        let slot = &mut self.slots[Self::index(ext)];
        slot.seq = ext;
        slot.ts = ts_ext;
        slot.state = SlotState::Ready;
        // Cannot truncate: MAX_PAYLOAD fits in u16 (checked at compile time).
        slot.len = payload.len() as u16;
        slot.data[..payload.len()].copy_from_slice(payload);
        self.ready += 1;
        self.stats.received += 1;
        self.learn_step(ext);
        if resynced {
            Pushed::Resynced
        } else {
            Pushed::Stored
        }
    }

    /// What to play next, at tick time `now`. Call when the caller needs audio: once per
    /// tick, twice for 10 ms packets, not at all when it still holds a frame (after a
    /// [`Pop::Stretch`]).
    pub fn pop(&mut self, now: Instant) -> Pop<'_> {
        let Some(epoch) = self.epoch else {
            return Pop::Empty;
        };
        let now_us = signed_micros(epoch, now);
        if !self.playing && !self.try_start(now_us) {
            return Pop::Empty;
        }
        let next = self.next;
        let present = if self.is_ready(next) {
            Some(next)
        } else {
            self.first_ready_after(next)
        };
        let Some(present) = present else {
            return self.dry_pop();
        };
        let lag = self.lag_of(now_us, present);
        self.last_lag = Some(lag);
        if self.dry > 0 {
            if lag < self.target_us - us(DRIFT_BAND) {
                // Back from running dry, but the waiting packet is early: keep concealing
                // until the delay is rebuilt.
                return self.dry_pop();
            }
            // The frames concealed while dry stood in for the missing packets (if any).
            self.pass_over(present);
            self.dry = 0;
            return self.play_next(lag, now_us);
        }
        if present == next {
            return self.play_next(lag, now_us);
        }
        let missing = self.missing_before(present);
        if missing == 0 {
            // The sequence numbers in between carried no audio (padding): not a loss.
            self.pass_over(present);
            return self.play_next(lag, now_us);
        }
        // Audio is missing before `present`. If `present` is already due, or right after
        // the one missing frame, everything before it is given up on at once (one
        // concealed frame, not one per packet).
        if lag >= self.target_us || missing == 1 {
            self.pass_over(present);
            self.expect_ts = Some(self.slots[Self::index(present)].ts);
            return Pop::Lost {
                fec_from_next: Some(self.payload(present)),
            };
        }
        // One frame of several missing is concealed now; the rest at the next pops.
        self.stats.lost += 1;
        self.next = next + 1;
        self.expect_ts = self.expect_ts.map(|t| t + self.step);
        Pop::Lost {
            fec_from_next: None,
        }
    }

    /// Moves `next` up to `present`: the sequence numbers passed over count as lost as far
    /// as audio is missing by the timestamps, as skipped (padding) for the rest.
    fn pass_over(&mut self, present: u64) {
        let missing = self.missing_before(present);
        self.stats.lost += missing;
        self.stats.skipped += present - self.next - missing;
        self.next = present;
    }

    /// Frames of audio missing before the ready packet `present` (after `next`): by
    /// timestamp since the last frame played or given up on, at most one per sequence
    /// number in between (a jump beyond that is a silence). By sequence numbers alone
    /// before the first play.
    fn missing_before(&self, present: u64) -> u64 {
        let seqs = present.saturating_sub(self.next);
        let Some(expect) = self.expect_ts else {
            return seqs;
        };
        let gap = self.slots[Self::index(present)].ts - expect;
        if gap <= self.step / 2 {
            return 0;
        }
        let frames = u64::try_from((gap + self.step / 2) / self.step).unwrap_or(u64::MAX);
        frames.min(seqs)
    }

    /// Measures the timestamp step of one packet from `ext` and its neighbours in
    /// sequence, when they are here (or were played).
    fn learn_step(&mut self, ext: u64) {
        let ts = self.slots[Self::index(ext)].ts;
        let held = |s: u64| {
            let slot = &self.slots[Self::index(s)];
            (slot.state != SlotState::Free && slot.seq == s).then_some(slot.ts)
        };
        let step = held(ext - 1)
            .map(|before| ts - before)
            .or_else(|| held(ext + 1).map(|after| after - ts));
        if let Some(step) = step.filter(|d| (1..=MAX_STEP).contains(d)) {
            self.step = step;
        }
    }

    /// Plays `self.next` (ready, with lag `lag`), or corrects the drift instead.
    fn play_next(&mut self, lag: i64, now_us: i64) -> Pop<'_> {
        let next = self.next;
        // The drift control watches the lowest lag of each tick (ticks with 10 ms packets
        // pop two, the second 10 ms closer to its deadline), counted once the tick is over.
        if now_us != self.watch_now {
            if let Some(tick_lag) = self.tick_lag.take() {
                let high = self.target_us + FRAME_US + us(DRIFT_BAND);
                let low = self.target_us - us(DRIFT_BAND);
                self.high_for = if tick_lag > high {
                    self.high_for + 1
                } else {
                    0
                };
                self.low_for = if tick_lag < low { self.low_for + 1 } else { 0 };
            }
            self.watch_now = now_us;
        }
        self.tick_lag = Some(self.tick_lag.map_or(lag, |l| l.min(lag)));
        let quiet = self.quiet;
        let due = |n: u32, window: u32, patience: u32| n >= window && (quiet || n >= patience);
        if due(self.high_for, DROP_WINDOW, DROP_PATIENCE) && self.is_ready(next + 1) {
            self.reset_lag_watch();
            self.stats.drift_drops += 1;
            self.mark_played(next);
            self.mark_played(next + 1);
            self.next = next + 2;
            return Pop::Merge {
                first: self.payload(next),
                second: self.payload(next + 1),
            };
        }
        if due(self.low_for, INSERT_WINDOW, INSERT_PATIENCE) {
            self.reset_lag_watch();
            self.stats.drift_inserts += 1;
            self.mark_played(next);
            self.next = next + 1;
            return Pop::Stretch(self.payload(next));
        }
        self.mark_played(next);
        self.next = next + 1;
        Pop::Packet(self.payload(next))
    }

    /// Tells the buffer whether the audio just played was quiet: drift corrections happen
    /// at quiet moments when there are some.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// True when packets came once but none for `timeout` (the publisher stopped sending).
    /// False before the first packet.
    pub fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        self.last_arrival
            .is_some_and(|a| now.saturating_duration_since(a) >= timeout)
    }

    /// When the last accepted packet arrived.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.last_arrival
    }

    /// True while playing (false before the first start and while re-buffering).
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Packets waiting to be played.
    pub fn buffered(&self) -> usize {
        self.ready
    }

    /// The current target lag (see the module doc).
    pub fn target(&self) -> Duration {
        Duration::from_micros(self.target_us.max(0) as u64)
    }

    /// The lag of the last packet considered for playout: how long after its earliest
    /// possible arrival it is played. `None` before the first pop that found a packet.
    pub fn lag(&self) -> Option<Duration> {
        self.last_lag
            .map(|l| Duration::from_micros(l.max(0) as u64))
    }

    /// The RTP timestamp (as sent) of the last packet played, for lip-sync: with the
    /// sender's reports it tells when the audio being played was captured.
    pub fn last_played_rtp(&self) -> Option<u32> {
        // Extended timestamps count from the first packet; the offset from the last one
        // accepted converts back (wrapping, as RTP timestamps do).
        self.last_played_ts
            .map(|ts| self.last_ts.wrapping_add((ts - self.last_ts_ext) as u32))
    }

    /// The counters. Frames concealed since the buffer ran dry count as
    /// [`JitterStats::trailing`] until a packet comes and plays after them.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.trailing += u64::from(self.dry);
        s
    }

    fn index(seq: u64) -> usize {
        (seq % CAPACITY as u64) as usize
    }

    fn unroll_seq(&self, seq: u16) -> u64 {
        let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        // SEQ_BASE keeps this positive through any realistic number of backward jumps.
        self.highest.saturating_add_signed(delta)
    }

    fn is_ready(&self, seq: u64) -> bool {
        let slot = &self.slots[Self::index(seq)];
        slot.state == SlotState::Ready && slot.seq == seq
    }

    fn payload(&self, seq: u64) -> &[u8] {
        let slot = &self.slots[Self::index(seq)];
        &slot.data[..usize::from(slot.len)]
    }

    fn mark_played(&mut self, seq: u64) {
        let slot = &mut self.slots[Self::index(seq)];
        if slot.state == SlotState::Ready && slot.seq == seq {
            self.last_played_ts = Some(slot.ts);
            self.expect_ts = Some(slot.ts + self.step);
            slot.state = SlotState::Played;
            self.ready -= 1;
            self.stats.played += 1;
        }
    }

    fn first_ready_after(&self, seq: u64) -> Option<u64> {
        (seq + 1..=self.highest).find(|&s| self.is_ready(s))
    }

    fn lag_of(&self, now_us: i64, seq: u64) -> i64 {
        now_us - self.min_transit - ts_us(self.slots[Self::index(seq)].ts)
    }

    /// Drops every ready packet below `limit` (counted as overflow) and moves `next` there.
    ///
    /// Every slot is looked at: a packet far ahead (`limit` more than [`CAPACITY`] above
    /// `next`) must free the ready slots of all the sequence numbers it jumps over, not only
    /// of the last [`CAPACITY`] below it. Scanning just those (as this once did) left the
    /// older packets marked ready below `next`: found by the `jitter` fuzz target, the
    /// buffer then said it held more than it can, and a publisher that left was never
    /// finished (`buffered()` never came back to 0).
    fn evict_below(&mut self, limit: u64) {
        for slot in self.slots.iter_mut() {
            if slot.state == SlotState::Ready && slot.seq < limit {
                slot.state = SlotState::Free;
                self.ready -= 1;
                self.stats.overflow += 1;
            }
        }
        self.next = self.next.max(limit);
    }

    fn dry_pop(&mut self) -> Pop<'_> {
        self.dry += 1;
        if self.dry > MAX_DRY_CONCEAL {
            // No packet came after these frames: they faded the audio out.
            self.stats.trailing += u64::from(MAX_DRY_CONCEAL);
            self.playing = false;
            self.dry = 0;
            self.reset_lag_watch();
            return Pop::Empty;
        }
        self.stats.underruns += 1;
        Pop::Lost {
            fec_from_next: None,
        }
    }

    fn reset_lag_watch(&mut self) {
        self.high_for = 0;
        self.low_for = 0;
        self.tick_lag = None;
    }

    /// Starts playout if a packet's turn has come: the first packet that is not stale by
    /// more than a frame (or the newest), once its lag reaches the target.
    fn try_start(&mut self, now_us: i64) -> bool {
        let stale = self.target_us + 2 * FRAME_US;
        let mut start = None;
        for s in self.next..=self.highest {
            if self.is_ready(s) {
                start = Some(s);
                if self.lag_of(now_us, s) <= stale {
                    break;
                }
            }
        }
        let Some(start) = start else {
            return false;
        };
        if self.lag_of(now_us, start) < self.target_us {
            return false;
        }
        self.evict_below(start);
        self.playing = true;
        self.dry = 0;
        self.reset_lag_watch();
        self.stats.starts += 1;
        true
    }

    /// Records an accepted packet's timing: transit window, jitter histogram, target.
    fn measure(&mut self, ts: u32, ts_ext: i64, transit: i64, arrival: Instant) {
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |a| a.max(arrival)));
        self.last_ts = ts;
        self.last_ts_ext = ts_ext;
        self.transits[self.transit_pos] = transit;
        self.transit_pos = (self.transit_pos + 1) % TRANSIT_WINDOW;
        self.transit_len = (self.transit_len + 1).min(TRANSIT_WINDOW);
        self.min_transit = self.transits[..self.transit_len]
            .iter()
            .copied()
            .min()
            .unwrap_or(transit); // never empty: one was just added
        let excess = transit - self.min_transit;
        let bucket = usize::try_from(excess / BUCKET_US)
            .unwrap_or(0)
            .min(BUCKETS - 1);
        for w in &mut self.hist {
            *w *= HIST_FORGET;
        }
        self.hist[bucket] += 1.0 - HIST_FORGET;
        self.hist_total = self.hist_total * HIST_FORGET + (1.0 - HIST_FORGET);
        self.measured += 1;

        let wanted = JITTER_QUANTILE * self.hist_total;
        let mut sum = 0.0;
        let mut quantile_bucket = BUCKETS - 1;
        for (i, w) in self.hist.iter().enumerate() {
            sum += w;
            if sum >= wanted {
                quantile_bucket = i;
                break;
            }
        }
        let jitter = (quantile_bucket as i64 + 1) * BUCKET_US;
        let mut target = jitter + us(TARGET_HEADROOM);
        if self.measured < WARMUP {
            target = target.max(us(START_TARGET));
        }
        self.target_us = target.clamp(us(MIN_TARGET), us(MAX_TARGET));
    }

    /// Starts over from the packet `ext` (a restarted sender): flushes the store and the
    /// timing, keeps the jitter histogram and the counters.
    fn resync(&mut self, ext: u64) {
        for slot in self.slots.iter_mut() {
            slot.state = SlotState::Free;
        }
        self.ready = 0;
        self.highest = ext;
        self.next = ext.saturating_sub(BACKFILL);
        self.transit_len = 0;
        self.transit_pos = 0;
        self.playing = false;
        // Frames concealed after the old stream's last packet faded it out.
        self.stats.trailing += u64::from(self.dry);
        self.dry = 0;
        self.last_lag = None;
        self.expect_ts = None;
        self.reset_lag_watch();
        self.stats.resyncs += 1;
    }
}

/// `t - epoch` in µs, negative when `t` is earlier.
fn signed_micros(epoch: Instant, t: Instant) -> i64 {
    match t.checked_duration_since(epoch) {
        Some(d) => us(d),
        None => -us(epoch.saturating_duration_since(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// One packet on the wire: arrival after the start, seq, ts, payload.
    #[derive(Clone)]
    struct Sent {
        at: Duration,
        seq: u16,
        ts: u32,
        payload: Vec<u8>,
    }

    /// What one pop gave, with packets named by the index written in their payload.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Got {
        Packet(u32),
        Lost(Option<u32>),
        Merge(u32, u32),
        Stretch(u32),
        /// No pop: the tick plays the second frame of a stretch.
        Held,
        Empty,
    }

    /// The `jitter` fuzz target's minimized input: 41 packets in order (across the
    /// sequence wrap), then one 9727 sequence numbers ahead. Every packet it jumps over is
    /// dropped and counted; none stays held below the playout point.
    #[test]
    fn a_far_jump_frees_every_slot_it_jumps_over() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        let mut ts = 4_294_902_272u32;
        for i in 0..42u16 {
            ts = ts.wrapping_add(960);
            let seq = 65_531u16.wrapping_add(i);
            let at = t0 + Duration::from_millis(14 * (u64::from(i) + 1).min(46));
            assert_eq!(jb.push(seq, ts, &[1; 200], at), Pushed::Stored);
        }
        assert_eq!(jb.buffered(), 42);
        let pushed = jb.push(9770, 4_294_900_160, &[2; 60], t0 + 909 * MS);
        assert_eq!(pushed, Pushed::Stored);
        assert_eq!(jb.buffered(), 1, "the packets jumped over are not held");
        assert_eq!(jb.stats().overflow, 42);
        jb.push(9771, 4_294_901_120, &[3; 39], t0 + 983 * MS);
        assert_eq!(jb.buffered(), 2);
        // They play (or are given up on as stale), and then nothing is held: a publisher
        // that left after this is finished.
        let mut now = t0 + 983 * MS;
        let mut played = 0;
        for _ in 0..20 {
            now += 20 * MS;
            if matches!(jb.pop(now), Pop::Packet(_)) {
                played += 1;
            }
        }
        assert!(played >= 1);
        assert_eq!(jb.buffered(), 0);
    }

    fn id(p: &[u8]) -> u32 {
        u32::from_le_bytes([p[0], p[1], p[2], p[3]])
    }

    /// `n` packets of 20 ms from `seq0`/`ts0`, sent every `period`, payload = index.
    fn stream(n: u32, seq0: u16, ts0: u32, period: Duration) -> Vec<Sent> {
        (0..n)
            .map(|i| Sent {
                at: period * i,
                seq: seq0.wrapping_add(i as u16),
                ts: ts0.wrapping_add(960 * i),
                payload: i.to_le_bytes().to_vec(),
            })
            .collect()
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Drives a buffer: every packet is pushed at its arrival, pops happen every 20 ms
    /// from `phase`, `ticks` times, by a caller that plays a merge as one frame and a
    /// stretch as two. Calls `each` after every tick (with the tick's time).
    fn run_with(
        jb: &mut JitterBuffer,
        t0: Instant,
        mut sent: Vec<Sent>,
        phase: Duration,
        ticks: u32,
        mut each: impl FnMut(&JitterBuffer, Duration, Got),
    ) -> Vec<Got> {
        sent.sort_by_key(|s| s.at);
        let mut sent = sent.into_iter().peekable();
        let mut got = Vec::new();
        let mut held = Duration::ZERO;
        for k in 0..ticks {
            let now = phase + FRAME_DURATION * k;
            while let Some(s) = sent.next_if(|s| s.at <= now) {
                jb.push(s.seq, s.ts, &s.payload, t0 + s.at);
            }
            let g = if held >= FRAME_DURATION {
                held -= FRAME_DURATION;
                Got::Held
            } else {
                match jb.pop(t0 + now + held) {
                    Pop::Packet(p) => Got::Packet(id(p)),
                    Pop::Lost { fec_from_next } => Got::Lost(fec_from_next.map(id)),
                    Pop::Merge { first, second } => Got::Merge(id(first), id(second)),
                    Pop::Stretch(p) => {
                        held += FRAME_DURATION;
                        Got::Stretch(id(p))
                    }
                    Pop::Empty => Got::Empty,
                }
            };
            each(jb, now, g);
            got.push(g);
        }
        got
    }

    fn run(jb: &mut JitterBuffer, sent: Vec<Sent>, phase: Duration, ticks: u32) -> Vec<Got> {
        run_with(jb, Instant::now(), sent, phase, ticks, |_, _, _| {})
    }

    /// The packet indices played, in order (both of a merge).
    fn played(got: &[Got]) -> Vec<u32> {
        got.iter()
            .flat_map(|g| match *g {
                Got::Packet(i) | Got::Stretch(i) => vec![i],
                Got::Merge(a, b) => vec![a, b],
                _ => vec![],
            })
            .collect()
    }

    fn is_played(g: &Got) -> bool {
        matches!(
            g,
            Got::Packet(_) | Got::Merge(..) | Got::Stretch(_) | Got::Held
        )
    }

    /// Ticks from the first played packet to the last, inclusive.
    fn playing_span(got: &[Got]) -> &[Got] {
        let first = got.iter().position(is_played).unwrap_or(0);
        let last = got.iter().rposition(is_played).unwrap_or(0);
        &got[first..=last]
    }

    /// Frames concealed after the last packet (the end of a test stream runs dry).
    fn trailing_dry(got: &[Got]) -> u64 {
        let last = got.iter().rposition(is_played).unwrap_or(0);
        got[last..]
            .iter()
            .filter(|g| **g == Got::Lost(None))
            .count() as u64
    }

    #[test]
    fn in_order_stream_plays_every_packet_once_in_order() {
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, stream(500, 1000, 0, 20 * MS), MS, 520);
        assert_eq!(played(&got), (0..500).collect::<Vec<_>>());
        let span = playing_span(&got);
        assert!(
            span.iter()
                .all(|g| matches!(g, Got::Packet(_) | Got::Merge(..))),
            "a gap: {span:?}"
        );
        let s = jb.stats();
        assert_eq!((s.received, s.played, s.lost, s.late), (500, 500, 0, 0));
        assert_eq!(s.underruns, trailing_dry(&got));
        assert_eq!((s.drift_inserts, s.starts), (0, 1));
        // A perfect network: the target comes down to the minimum.
        assert_eq!(jb.target(), MIN_TARGET);
    }

    #[test]
    fn first_packet_plays_within_three_ticks() {
        // Whatever the phase of our tick against its arrival.
        for phase_us in [0, 1, 5_000, 19_999] {
            let mut jb = JitterBuffer::new();
            let phase = Duration::from_micros(phase_us);
            let got = run(&mut jb, stream(10, 7, 1234, 20 * MS), phase, 10);
            let first = got.iter().position(|g| *g != Got::Empty).unwrap();
            assert!(first < 3, "phase {phase:?}: first played at tick {first}");
            assert_eq!(got[first], Got::Packet(0));
            // And not absurdly early: the start delay is there to absorb jitter.
            let delay = phase + FRAME_DURATION * first as u32;
            assert!(delay >= START_TARGET, "played after {delay:?}");
            assert!(
                delay <= START_TARGET + FRAME_DURATION,
                "played after {delay:?}"
            );
        }
    }

    #[test]
    fn reordered_arrivals_within_the_target_come_out_in_order() {
        let mut rng = Rng(7);
        let mut sent = stream(1000, 0, 0, 20 * MS);
        for s in &mut sent {
            // Up to 30 ms late: packets overtake each other.
            s.at += Duration::from_micros(rng.below(30_000));
        }
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, 3 * MS, 1030);
        assert_eq!(played(&got), (0..1000).collect::<Vec<_>>());
        assert!(playing_span(&got)
            .iter()
            .all(|g| matches!(g, Got::Packet(_) | Got::Merge(..))));
        let s = jb.stats();
        assert_eq!((s.lost, s.late), (0, 0), "{s:?}");
        assert_eq!(s.underruns, trailing_dry(&got));
        // The target grew to cover the jitter.
        assert!(jb.target() >= 30 * MS, "target {:?}", jb.target());
        assert!(jb.target() <= 50 * MS, "target {:?}", jb.target());
    }

    #[test]
    fn target_follows_the_jitter_and_stays_in_range() {
        for (jitter_ms, lo, hi) in [(0, 20, 20), (60, 60, 80), (400, 200, 200)] {
            let mut rng = Rng(11);
            let mut sent = stream(1500, 0, 0, 20 * MS);
            for s in &mut sent {
                s.at += Duration::from_micros(rng.below(jitter_ms * 1000 + 1));
            }
            let mut jb = JitterBuffer::new();
            run(&mut jb, sent, MS, 1500);
            let t = jb.target();
            assert!(
                t >= lo * MS && t <= hi * MS,
                "jitter {jitter_ms} ms: target {t:?}"
            );
        }
    }

    #[test]
    fn lost_packets_are_reported_with_the_next_one_for_fec() {
        let mut rng = Rng(3);
        let sent: Vec<Sent> = stream(1000, 60_000, 0, 20 * MS)
            .into_iter()
            .filter(|s| s.payload[0] < 8 || rng.below(20) != 0) // about 5 % lost
            .collect();
        let lost: Vec<u32> = (0..1000)
            .filter(|i| !sent.iter().any(|s| id(&s.payload) == *i))
            .collect();
        assert!(lost.len() > 25, "{} lost", lost.len());
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 1030);
        let span = playing_span(&got);
        // Exactly one frame per packet: played or reported lost, never silence.
        assert!(!span.contains(&Got::Empty));
        let mut expect = 0;
        for g in span {
            match *g {
                Got::Packet(i) => {
                    assert_eq!(i, expect);
                    expect += 1;
                }
                Got::Merge(a, b) => {
                    assert_eq!((a, b), (expect, expect + 1));
                    expect += 2;
                }
                Got::Stretch(i) => {
                    assert_eq!(i, expect);
                    expect += 1;
                }
                Got::Held => {}
                Got::Lost(fec) => {
                    assert!(lost.contains(&expect), "{expect} reported lost");
                    // The next packet comes with it when it is here.
                    if !lost.contains(&(expect + 1)) && expect + 1 < 1000 {
                        assert_eq!(fec, Some(expect + 1));
                    }
                    expect += 1;
                }
                Got::Empty => unreachable!(),
            }
        }
        assert_eq!(expect, 1000);
        let s = jb.stats();
        assert_eq!(s.lost, lost.len() as u64);
        assert_eq!(s.played + s.lost, 1000);
    }

    /// Moves the sequence numbers of `sent` on by `gaps[k]` before every `every`-th packet
    /// (from the `first`-th on): padding-only packets in between that never reach the
    /// buffer. Returns the sequence numbers skipped.
    fn with_padding(sent: &mut [Sent], first: usize, every: usize, gaps: &[u16]) -> u64 {
        let mut shift = 0u16;
        let mut k = 0;
        for (i, s) in sent.iter_mut().enumerate() {
            if i >= first && (i - first).is_multiple_of(every) {
                shift = shift.wrapping_add(gaps[k % gaps.len()]);
                k += 1;
            }
            s.seq = s.seq.wrapping_add(shift);
        }
        sent.iter()
            .zip(sent.iter().skip(1))
            .map(|(a, b)| u64::from(b.seq.wrapping_sub(a.seq)) - 1)
            .sum()
    }

    /// Pops that concealed a frame while packets were still coming (not the dry end).
    fn concealed_within(got: &[Got]) -> usize {
        playing_span(got)
            .iter()
            .filter(|g| matches!(g, Got::Lost(_)))
            .count()
    }

    #[test]
    fn padding_gaps_are_skipped_not_lost() {
        // Chromium's probes: seq gaps of 11, 8, 2, 2, 2, 3 (as seen on loopback) with the
        // timestamps on both sides 960 apart, with up to 5 ms of jitter.
        let mut rng = Rng(21);
        let mut sent = stream(1500, 25_000, 3_303_044_278, 20 * MS);
        for s in &mut sent {
            s.at += Duration::from_micros(rng.below(5_000));
        }
        let mut plain = JitterBuffer::new();
        run(&mut plain, sent.clone(), MS, 1530);
        let skipped = with_padding(&mut sent, 3, 40, &[10, 7, 1, 1, 1, 2]);
        assert!(skipped > 100, "{skipped}");
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 1530);
        assert_eq!(played(&got), (0..1500).collect::<Vec<_>>());
        assert_eq!(concealed_within(&got), 0, "{:?}", playing_span(&got));
        let s = jb.stats();
        assert_eq!((s.lost, s.skipped, s.late), (0, skipped, 0), "{s:?}");
        // No frame of delay per gap, so the drift control does what it does without the
        // padding (here one drop: the start delay coming down to the target).
        let p = plain.stats();
        assert_eq!(
            (s.drift_drops, s.drift_inserts),
            (p.drift_drops, p.drift_inserts)
        );
        assert!(s.drift_drops <= 1, "{s:?}");
        assert_eq!(
            (s.underruns, s.trailing),
            (trailing_dry(&got), trailing_dry(&got))
        );
    }

    #[test]
    fn padding_gaps_at_the_start_are_skipped() {
        // The first packets' gaps come before anything has played (gaps of 11 and 8 right
        // after the first packet, as Chromium's first probes do).
        let mut sent = stream(200, 100, 0, 20 * MS);
        let skipped = with_padding(&mut sent, 1, 1, &[10, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 220);
        assert_eq!(played(&got), (0..200).collect::<Vec<_>>());
        assert_eq!(concealed_within(&got), 0, "{:?}", playing_span(&got));
        let s = jb.stats();
        assert_eq!((s.lost, s.skipped), (0, skipped), "{s:?}");
        // The start delay (40..60 ms) and not a frame more per gap.
        assert!(jb.lag().unwrap() <= 60 * MS, "{:?}", jb.lag());
    }

    #[test]
    fn real_losses_next_to_padding_are_lost_and_concealed_with_fec() {
        let mut sent = stream(600, 65_000, u32::MAX - 960 * 300, 20 * MS);
        let skipped = with_padding(&mut sent, 10, 30, &[3, 1]);
        // Every 50th packet is lost, some of them right after a padding gap.
        let lost: Vec<u32> = (25..600).step_by(50).chain([40, 100, 160]).collect();
        sent.retain(|s| !lost.contains(&id(&s.payload)));
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 630);
        let span = playing_span(&got);
        let mut expect = 0;
        for g in span {
            match *g {
                Got::Packet(i) => {
                    assert_eq!(i, expect);
                    expect += 1;
                }
                Got::Lost(fec) => {
                    assert!(lost.contains(&expect), "{expect} reported lost");
                    // With the next packet for FEC, however many padding seqs are between.
                    assert_eq!(fec, Some(expect + 1));
                    expect += 1;
                }
                other => panic!("{other:?} at {expect}"),
            }
        }
        assert_eq!(expect, 600);
        let s = jb.stats();
        assert_eq!((s.lost, s.skipped), (lost.len() as u64, skipped), "{s:?}");
        assert_eq!(s.played, 600 - lost.len() as u64);
    }

    #[test]
    fn dtx_silences_are_not_losses() {
        // Opus DTX: during silence one packet every 400 ms (timestamps 19,200 apart,
        // sequence numbers consecutive), here for 2 s between two talk spurts; and a
        // silence of 1 s with padding in it (a seq gap of 3 across the timestamp jump).
        let mut sent = Vec::new();
        let (mut seq, mut ts, mut at) = (40_000u16, 7u32, Duration::ZERO);
        let mut i = 0u32;
        let mut add = |seq: &mut u16, ts: &mut u32, at: &mut Duration, step: u32, dt| {
            sent.push(Sent {
                at: *at,
                seq: *seq,
                ts: *ts,
                payload: i.to_le_bytes().to_vec(),
            });
            i += 1;
            *seq = seq.wrapping_add(1);
            *ts = ts.wrapping_add(step);
            *at += dt;
        };
        for _ in 0..100 {
            add(&mut seq, &mut ts, &mut at, 960, 20 * MS);
        }
        for _ in 0..5 {
            add(&mut seq, &mut ts, &mut at, 19_200, 400 * MS);
        }
        for _ in 0..100 {
            add(&mut seq, &mut ts, &mut at, 960, 20 * MS);
        }
        // One second of nothing, with three padding packets in it.
        ts = ts.wrapping_add(48_000);
        at += Duration::from_secs(1);
        seq = seq.wrapping_add(3);
        for _ in 0..100 {
            add(&mut seq, &mut ts, &mut at, 960, 20 * MS);
        }
        let n = i;
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 480);
        assert_eq!(played(&got), (0..n).collect::<Vec<_>>());
        let s = jb.stats();
        // Each silence ends with a restart from the packet that came (the padding before
        // it is passed over then, neither lost nor skipped).
        assert_eq!((s.lost, s.resyncs, s.starts), (0, 0, 7), "{s:?}");
        // Each silence ran the buffer dry: its concealment is a fade-out, all trailing.
        assert_eq!(s.trailing, s.underruns, "{s:?}");
    }

    #[test]
    fn padding_and_losses_across_a_resync() {
        let mut sent = stream(100, 40_000, 1_000_000, 20 * MS);
        let first_skipped = with_padding(&mut sent, 20, 20, &[2]);
        // The sender restarts with new bases; its stream has padding gaps too, and one loss.
        let mut second = stream(100, 123, 3_000_000_000, 20 * MS);
        for s in &mut second {
            s.at += Duration::from_millis(2100);
            let i = id(&s.payload) + 1000;
            s.payload = i.to_le_bytes().to_vec();
        }
        let second_skipped = with_padding(&mut second, 10, 25, &[4]);
        second.retain(|s| id(&s.payload) != 1050);
        sent.extend(second);
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 230);
        let p = played(&got);
        assert_eq!(&p[..100], &(0..100).collect::<Vec<_>>()[..]);
        // The new stream from its second packet (the first confirms the restart).
        let want: Vec<u32> = (1001..1100).filter(|&i| i != 1050).collect();
        assert_eq!(&p[100..], &want[..]);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.lost), (1, 1), "{s:?}");
        assert_eq!(s.skipped, first_skipped + second_skipped, "{s:?}");
        // The old stream's dry end before the restart faded it out.
        assert_eq!(s.trailing, s.underruns, "{s:?}");
    }

    #[test]
    fn ten_ms_packets_with_padding() {
        // 10 ms packets (timestamps 480 apart), two pops per tick, padding every 30.
        let mut sent: Vec<Sent> = (0..1000u32)
            .map(|i| Sent {
                at: 10 * MS * i,
                seq: 9u16.wrapping_add(i as u16),
                ts: 480 * i,
                payload: i.to_le_bytes().to_vec(),
            })
            .collect();
        let skipped = with_padding(&mut sent, 5, 30, &[2, 5]);
        sent.retain(|s| id(&s.payload) != 500);
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        let mut sent = sent.into_iter().peekable();
        let mut got = Vec::new();
        for k in 0..520u32 {
            let now = MS + FRAME_DURATION * k;
            while let Some(s) = sent.next_if(|s| s.at <= now) {
                jb.push(s.seq, s.ts, &s.payload, t0 + s.at);
            }
            for _ in 0..2 {
                got.push(match jb.pop(t0 + now) {
                    Pop::Packet(p) => Got::Packet(id(p)),
                    Pop::Lost { fec_from_next } => Got::Lost(fec_from_next.map(id)),
                    Pop::Merge { first, second } => Got::Merge(id(first), id(second)),
                    Pop::Stretch(p) => Got::Stretch(id(p)),
                    Pop::Empty => Got::Empty,
                });
            }
        }
        let want: Vec<u32> = (0..1000).filter(|&i| i != 500).collect();
        assert_eq!(played(&got), want);
        let s = jb.stats();
        assert_eq!((s.lost, s.skipped), (1, skipped), "{s:?}");
        assert!(got.contains(&Got::Lost(Some(501))));
    }

    #[test]
    fn a_late_packet_after_running_dry_is_not_trailing() {
        // Packet 40 comes 50 ms late: the buffer runs dry, then 40 comes and plays. Those
        // frames were concealment within the stream; only the end of the stream trails.
        let mut sent = stream(100, 0, 0, 20 * MS);
        for s in &mut sent[40..] {
            s.at += 50 * MS;
        }
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 120);
        assert_eq!(played(&got), (0..100).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!(s.lost, 0, "{s:?}");
        assert_eq!(s.trailing, trailing_dry(&got), "{s:?}");
        assert!(s.underruns > s.trailing, "{s:?}");
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut sent = stream(300, 100, 0, 20 * MS);
        // Every packet again 5 ms later, and every tenth once more 200 ms later (played by then).
        let again: Vec<Sent> = sent
            .iter()
            .map(|s| Sent {
                at: s.at + 5 * MS,
                ..s.clone()
            })
            .collect();
        let late: Vec<Sent> = sent
            .iter()
            .step_by(10)
            .map(|s| Sent {
                at: s.at + 200 * MS,
                ..s.clone()
            })
            .collect();
        sent.extend(again);
        sent.extend(late);
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 330);
        assert_eq!(played(&got), (0..300).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!(s.duplicates, 300 + 30, "{s:?}");
        assert_eq!((s.received, s.late, s.lost), (300, 0, 0));
        // A duplicate does not count as jitter: the target stays at the minimum.
        assert_eq!(jb.target(), MIN_TARGET);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        // Both counters wrap in the middle of the stream.
        let sent = stream(400, 65_400, u32::MAX - 960 * 150, 20 * MS);
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 420);
        assert_eq!(played(&got), (0..400).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.resyncs), (0, 0, 0));
        assert_eq!(s.underruns, trailing_dry(&got));
    }

    #[test]
    fn pushes_return_what_happened() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        assert_eq!(jb.pop(t0), Pop::Empty);
        assert_eq!(jb.push(10, 0, &[1], t0), Pushed::Stored);
        assert_eq!(jb.push(10, 0, &[1], t0), Pushed::Duplicate);
        assert_eq!(jb.push(11, 960, &[], t0), Pushed::Invalid);
        assert_eq!(jb.push(11, 960, &[0; MAX_PAYLOAD + 1], t0), Pushed::Invalid);
        assert_eq!(jb.push(11, 960, &[0; MAX_PAYLOAD], t0), Pushed::Stored);
        assert_eq!(jb.buffered(), 2);
        assert_eq!(jb.pop(t0 + 40 * MS), Pop::Packet(&[1]));
        assert_eq!(jb.push(10, 0, &[1], t0 + 41 * MS), Pushed::Duplicate);
        assert_eq!(jb.stats().invalid, 2);
    }

    /// 60 s from a sender whose clock is off by `ppm`, with up to 5 ms of jitter.
    fn drifting(ppm: i64) -> (JitterBuffer, Vec<Got>, Duration, Duration) {
        let period = Duration::from_nanos((20_000_000 * (1_000_000 - ppm) / 1_000_000) as u64);
        let mut rng = Rng(5);
        let mut sent = stream(3000, 0, 0, period);
        for s in &mut sent {
            s.at += Duration::from_micros(rng.below(5_000));
        }
        let mut jb = JitterBuffer::new();
        let (mut min_lag, mut max_lag) = (Duration::MAX, Duration::ZERO);
        let got = run_with(&mut jb, Instant::now(), sent, MS, 3100, |jb, now, _| {
            assert!(jb.buffered() <= 6, "{} buffered at {now:?}", jb.buffered());
            if now > Duration::from_secs(2) && now < Duration::from_secs(59) {
                let lag = jb.lag().unwrap();
                min_lag = min_lag.min(lag);
                max_lag = max_lag.max(lag);
            }
        });
        (jb, got, min_lag, max_lag)
    }

    #[test]
    fn fast_sender_is_kept_in_bounds_by_dropping_frames() {
        let (jb, got, min_lag, max_lag) = drifting(1000);
        let span = playing_span(&got);
        assert!(!span.contains(&Got::Empty));
        assert_eq!(played(&got), (0..3000).collect::<Vec<_>>());
        let s = jb.stats();
        // 60 ms gained in 60 s: three frames, plus one or two to come down from the start
        // target to a jitter of 5 ms.
        assert!((3..=5).contains(&s.drift_drops), "{s:?}");
        assert_eq!((s.lost, s.late, s.drift_inserts), (0, 0, 0), "{s:?}");
        assert_eq!(s.underruns, trailing_dry(&got));
        assert!(
            min_lag >= 5 * MS && max_lag <= 60 * MS,
            "lag {min_lag:?}..{max_lag:?}"
        );
    }

    #[test]
    fn slow_sender_is_kept_in_bounds_by_concealing_frames() {
        let (jb, got, min_lag, max_lag) = drifting(-1000);
        let span = playing_span(&got);
        assert!(!span.contains(&Got::Empty));
        assert_eq!(played(&got), (0..3000).collect::<Vec<_>>());
        let s = jb.stats();
        assert!((2..=4).contains(&s.drift_inserts), "{s:?}");
        assert_eq!((s.lost, s.late), (0, 0), "{s:?}");
        assert!(s.underruns <= trailing_dry(&got) + 1, "{s:?}");
        assert!(
            min_lag >= 5 * MS && max_lag <= 60 * MS,
            "lag {min_lag:?}..{max_lag:?}"
        );
    }

    #[test]
    fn drift_corrections_prefer_quiet_moments() {
        // A sender 0.5 % fast; the audio is quiet one tick in fifty.
        let sent = stream(1500, 0, 0, Duration::from_micros(19_900));
        let mut jb = JitterBuffer::new();
        let t0 = Instant::now();
        let mut sent_iter = sent.into_iter().peekable();
        let mut merges_when_quiet = 0;
        for k in 0..1500u32 {
            let now = MS + FRAME_DURATION * k;
            while let Some(s) = sent_iter.next_if(|s| s.at <= now) {
                jb.push(s.seq, s.ts, &s.payload, t0 + s.at);
            }
            let quiet = k % 50 == 0;
            jb.set_quiet(quiet);
            if let Pop::Merge { .. } = jb.pop(t0 + now) {
                merges_when_quiet += usize::from(quiet);
            }
        }
        let drops = jb.stats().drift_drops;
        assert!(drops >= 5, "{:?}", jb.stats());
        assert_eq!(merges_when_quiet as u64, drops);
    }

    #[test]
    fn idle_after_the_packets_stop() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        assert!(!jb.is_idle(t0 + Duration::from_secs(100), Duration::from_secs(2)));
        let got = run_with(
            &mut jb,
            t0,
            stream(50, 0, 0, 20 * MS),
            MS,
            200,
            |_, _, _| {},
        );
        let last = t0 + 49 * 20 * MS;
        assert!(!jb.is_idle(last + 1999 * MS, Duration::from_secs(2)));
        assert!(jb.is_idle(last + 2000 * MS, Duration::from_secs(2)));
        // Running dry: a few frames concealed, then silence until packets come again.
        let after = &got[got
            .iter()
            .rposition(|g| matches!(g, Got::Packet(_)))
            .unwrap()
            + 1..];
        let concealed = after.iter().take_while(|g| **g == Got::Lost(None)).count();
        assert_eq!(concealed, MAX_DRY_CONCEAL as usize);
        assert!(after[concealed..].iter().all(|g| *g == Got::Empty));
        assert!(!jb.is_playing());
    }

    #[test]
    fn silence_in_the_stream_is_waited_out_without_resync() {
        // DTX: the sender stops for 2 s and resumes with the next sequence number and a
        // timestamp 2 s later.
        let mut sent = stream(100, 500, 0, 20 * MS);
        for s in &mut sent[50..] {
            s.at += Duration::from_secs(2);
            s.ts = s.ts.wrapping_add(96_000);
        }
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 220);
        assert_eq!(played(&got), (0..100).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!((s.resyncs, s.lost, s.late, s.starts), (0, 0, 0, 2), "{s:?}");
        // The second talk spurt also starts within three ticks.
        let resume = got.iter().position(|g| *g == Got::Packet(50)).unwrap();
        let arrival_tick = (2000 + 50 * 20) / 20;
        assert!(resume <= arrival_tick + 3, "{resume}");
    }

    #[test]
    fn restarted_sender_is_resynced() {
        let mut sent = stream(100, 40_000, 1_000_000, 20 * MS);
        // The same publisher restarts 100 ms after its last packet: new seq and ts bases.
        let mut second = stream(100, 123, 3_000_000_000, 20 * MS);
        for s in &mut second {
            s.at += Duration::from_millis(2100);
            let i = id(&s.payload) + 1000;
            s.payload = i.to_le_bytes().to_vec();
        }
        sent.extend(second);
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 230);
        let p = played(&got);
        assert_eq!(&p[..100], &(0..100).collect::<Vec<_>>()[..]);
        // The first packet of the new stream confirms nothing yet; from the second on all
        // of it plays, in order.
        assert_eq!(&p[100..], &(1001..1100).collect::<Vec<_>>()[..]);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.suspects), (1, 1), "{s:?}");
    }

    #[test]
    fn a_stall_then_a_burst_does_not_leave_a_long_delay() {
        // The network holds 600 ms of packets and then delivers them at once.
        let mut sent = stream(500, 0, 0, 20 * MS);
        for s in &mut sent[200..230] {
            s.at = 230 * 20 * MS;
        }
        let mut jb = JitterBuffer::new();
        let mut lag_after = Duration::ZERO;
        run_with(&mut jb, Instant::now(), sent, MS, 520, |jb, now, g| {
            if now > Duration::from_millis(6000) && matches!(g, Got::Packet(_)) {
                lag_after = lag_after.max(jb.lag().unwrap());
            }
        });
        let s = jb.stats();
        // The stale part of the burst was skipped, not played 600 ms late.
        assert!(s.overflow > 0, "{s:?}");
        assert!(
            lag_after <= MAX_TARGET + FRAME_DURATION * 2,
            "{lag_after:?}"
        );
        assert!(jb.buffered() == 0);
    }

    #[test]
    fn a_packet_after_its_turn_is_late() {
        let mut sent = stream(100, 0, 0, 20 * MS);
        sent[40].at += 500 * MS;
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 110);
        let s = jb.stats();
        assert_eq!((s.lost, s.late), (1, 1), "{s:?}");
        assert!(got.contains(&Got::Lost(Some(41))));
    }

    #[test]
    fn a_loss_costs_one_frame_even_when_the_next_packet_is_slow() {
        // Packet 40 is lost and 41 comes 15 ms late: when 40's turn comes nothing later is
        // here yet, so the buffer conceals as if dry; that frame then stands for the lost one.
        let mut sent = stream(100, 0, 0, 20 * MS);
        sent.remove(40);
        sent[40].at += 15 * MS;
        let mut jb = JitterBuffer::new();
        let got = run(&mut jb, sent, MS, 110);
        let span = playing_span(&got);
        assert_eq!(span.len(), 100, "{span:?}");
        assert_eq!(span.iter().filter(|g| !is_played(g)).count(), 1);
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.played), (1, 0, 99), "{s:?}");
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded() {
        let t0 = Instant::now();
        let mut rng = Rng(99);
        let mut jb = JitterBuffer::new();
        let mut payload = [0u8; MAX_PAYLOAD + 10];
        let mut now = Duration::ZERO;
        for _ in 0..50_000 {
            match rng.below(10) {
                0 => {
                    now += Duration::from_micros(rng.below(40_000));
                    let _ = jb.pop(t0 + now);
                }
                1 => now = now.saturating_sub(Duration::from_micros(rng.below(100_000))),
                _ => {
                    let len = rng.below(payload.len() as u64 + 1) as usize;
                    for b in &mut payload[..len] {
                        *b = rng.next() as u8;
                    }
                    let arrival = t0 + Duration::from_micros(rng.below(10_000_000));
                    let seq = rng.next() as u16;
                    let ts = rng.next() as u32;
                    let _ = jb.push(seq, ts, &payload[..len], arrival);
                }
            }
            assert!(jb.buffered() <= CAPACITY);
            let t = jb.target();
            assert!(t >= MIN_TARGET && t <= MAX_TARGET);
        }
        // A sane stream afterwards still plays (after a resync).
        let base = now + Duration::from_secs(20);
        let sent: Vec<Sent> = stream(100, 9, 77, 20 * MS)
            .into_iter()
            .map(|s| Sent {
                at: s.at + base,
                ..s
            })
            .collect();
        let got = run_with(&mut jb, t0, sent, base + MS, 110, |_, _, _| {});
        assert!(played(&got).len() >= 95, "{:?}", jb.stats());
    }
}
