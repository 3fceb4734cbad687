//! One stream as a TX thread sees it: [`StreamMix`] (its mix, encoder and media clock),
//! the frames a mixing thread hands to the others ([`TickFrames`]), the mirrors of other
//! threads' streams, and the expiry of streams left without inputs.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use super::video::VideoFeed;
use super::viewer::Role;
use super::Egress;
use crate::engine::EndReason;
use crate::engine::PeerKey;
use crate::media::mix_encoder::{Encoded, MixEncoder};
use crate::media::mix_minus::{Pick, Talkers};
use crate::media::mixer::{InputId, Mixer};
use crate::media::opus::Encoder;
use crate::media::Frame;
use crate::media::FRAME_LEN;
use crate::streams::VideoSource;

/// An on-demand stream (created by a publisher) with no input for this long is removed,
/// and its viewers' sessions end. Long enough for a publisher to reconnect.
pub const STREAM_GRACE: Duration = Duration::from_secs(30);

/// An on-demand stream with no input and no viewer (on any TX thread) for this long is
/// removed: nobody would notice it go, and a publisher that comes back makes it again.
/// Not at once, so that a viewer whose POST is on its way to a TX thread (counted when it
/// gets there) finds the stream.
pub const UNWATCHED_STREAM_GRACE: Duration = Duration::from_secs(5);

/// A stream as the TX thread sees it: its mix, its encoder, its media clock.
///
/// On a TX thread other than the mixing one (see [`Egress::mirror`]) a stream is a mirror:
/// no encoder and an empty mixer; its frame comes from the mixing thread each tick
/// ([`Egress::take_frames`]).
pub struct StreamMix {
    /// The stream's name.
    pub name: Arc<str>,
    pub(super) mixer: Mixer,
    /// None on a mirror.
    pub(super) encoder: Option<MixEncoder>,
    /// When a mirror last got a frame from the mixing thread.
    pub(super) last_fed: Option<Instant>,
    /// RTP time (48 kHz) of the next frame.
    pub(super) media_time: u64,
    /// The wallclock this tick's frame is written with: the tick time, or, when the
    /// stream has video, the capture time of the video source's audio in the mix
    /// (see [`crate::engine::sync`]).
    pub(super) wallclock: Option<Instant>,
    pub(super) pcm: Box<Frame>,
    /// This tick's encoded frame, shared by reference with every viewer's `Rtc` (str0m
    /// takes `Arc<[u8]>`): one allocation per stream per tick, not one per viewer.
    pub(super) frame: Option<Arc<[u8]>>,
    /// From the configuration: never removed.
    pub(super) configured: bool,
    pub(super) publishers: usize,
    /// Since when the stream has had no input (on-demand streams only).
    pub(super) empty_since: Option<Instant>,
    /// How the stream picks its video publisher.
    pub(super) video_policy: VideoSource,
    /// The publisher whose video viewers get now.
    pub(super) video_source: Option<VideoFeed>,
    /// A viewer needs a keyframe (joined, or reported loss), and when we last asked.
    pub(super) keyframe_wanted: bool,
    pub(super) last_keyframe_request: Option<Instant>,
    /// The id of its recording, when it is recorded (see [`crate::record::Recorder`]).
    pub(super) recording: Option<u64>,
    /// Its talkers' mix-minus (two-way publishers, WHEP sessions naming a publisher).
    pub(super) talkers: Talkers,
}

impl StreamMix {
    /// A stream playing `mixer`, encoded at `bitrate` (0: the codec default).
    pub fn new(name: String, mixer: Mixer, encoder: Encoder) -> StreamMix {
        StreamMix {
            name: name.into(),
            mixer,
            encoder: Some(MixEncoder::new(encoder)),
            last_fed: None,
            media_time: 0,
            wallclock: None,
            pcm: Box::new([0.0; FRAME_LEN]),
            frame: None,
            configured: true,
            publishers: 0,
            empty_since: None,
            video_policy: VideoSource::default(),
            video_source: None,
            keyframe_wanted: false,
            last_keyframe_request: None,
            recording: None,
            talkers: Talkers::new(0),
        }
    }

    /// An on-demand stream (removed after [`STREAM_GRACE`] without inputs).
    pub fn on_demand(mut self) -> StreamMix {
        self.configured = false;
        self
    }

    /// A mirror of the mixing thread's stream `name`, fed since `now`.
    pub(super) fn mirror(name: &str, now: Instant) -> StreamMix {
        StreamMix {
            name: name.into(),
            mixer: Mixer::new(),
            encoder: None,
            last_fed: Some(now),
            media_time: 0,
            wallclock: None,
            pcm: Box::new([0.0; FRAME_LEN]),
            frame: None,
            configured: false,
            publishers: 0,
            empty_since: None,
            video_policy: VideoSource::None,
            video_source: None,
            keyframe_wanted: false,
            last_keyframe_request: None,
            recording: None,
            talkers: Talkers::new(0),
        }
    }

    /// The stream picks its video publisher by `policy` (default: [`VideoSource::First`]).
    pub fn with_video_source(mut self, policy: VideoSource) -> StreamMix {
        self.video_policy = policy;
        self
    }
}

/// One tick's encoded frames, from the mixing TX thread to the others
/// ([`Egress::tick_frames`], [`Egress::take_frames`]).
#[derive(Debug)]
pub struct TickFrames {
    /// The deadline of the tick that made them: the other threads' lateness is measured
    /// from it.
    pub deadline: Instant,
    /// One entry per stream.
    pub streams: Vec<StreamFrame>,
}

/// One stream's frame in [`TickFrames`].
#[derive(Debug)]
pub struct StreamFrame {
    /// The stream.
    pub name: Arc<str>,
    /// The encoded Opus frame (None: the encoder failed this tick).
    pub frame: Option<Arc<[u8]>>,
    /// Its RTP time (48 kHz).
    pub media_time: u64,
    /// The wallclock viewers' `Rtc`s write it with (see [`StreamMix`]).
    pub wallclock: Option<Instant>,
}

/// A mirror stream that got no frame from the mixing thread for this long has ended there:
/// its viewers end too. The mixing thread sends every stream's frame every 20 ms while the
/// stream exists.
pub const MIRROR_GRACE: Duration = Duration::from_secs(2);

impl StreamMix {
    /// The frame a peer hearing `minus` (its mix-minus input, if any) gets this tick.
    pub(super) fn frame_for(&self, minus: Option<InputId>) -> Option<&Arc<[u8]>> {
        match minus.map(|id| self.talkers.pick(id)) {
            Some(Pick::Own(f)) => Some(f),
            Some(Pick::Nothing) => None,
            Some(Pick::Shared) | None => self.frame.as_ref(),
        }
    }
}

impl Egress {
    pub(super) fn stream(&self, idx: usize) -> &StreamMix {
        // Invariant: a peer's stream slot is occupied while the peer exists (a stream is
        // removed only after its peers have been ended).
        self.streams[idx].as_ref().expect("live stream slot")
    }

    pub(super) fn stream_mut(&mut self, idx: usize) -> &mut StreamMix {
        self.streams[idx].as_mut().expect("live stream slot")
    }

    /// The slot of mirror stream `name`, created (fed since `now`) if it does not exist.
    pub(super) fn ensure_mirror(&mut self, name: &str, now: Instant) -> usize {
        if let Some(i) = self.stream_index(name) {
            return i;
        }
        self.insert_stream(StreamMix::mirror(name, now))
    }

    /// Puts `mix` in a free slot.
    pub(super) fn insert_stream(&mut self, mut mix: StreamMix) -> usize {
        let name = mix.name.to_string();
        if let (false, Some(r)) = (self.mirror, &mut self.recorder) {
            mix.recording = r.begin(&name);
        }
        let slot = match self.streams.iter().position(Option::is_none) {
            Some(free) => {
                self.streams[free] = Some(mix);
                free
            }
            None => {
                self.streams.push(Some(mix));
                self.streams.len() - 1
            }
        };
        self.by_name.insert(name, slot);
        slot
    }

    /// The slot of stream `name`, created (on demand, empty) if it does not exist.
    pub(super) fn ensure_stream(&mut self, name: &str) -> Option<usize> {
        if let Some(i) = self.stream_index(name) {
            return Some(i);
        }
        let encoder = match Encoder::new(self.bitrate) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(stream = name, "encoder: {e}");
                return None;
            }
        };
        let mut mix = StreamMix::new(name.to_string(), Mixer::new(), encoder).on_demand();
        mix.talkers = Talkers::new(self.bitrate);
        let slot = self.insert_stream(mix);
        self.directory.ensure(name);
        // Signalling has said who created it (one INFO line per stream, not two).
        tracing::debug!(stream = name, "mix started for an on-demand stream");
        Some(slot)
    }

    /// The first half of [`Egress::tick`]: mixes and encodes each stream's frame for this
    /// tick (a mirror's streams keep the frame [`Egress::take_frames`] gave them).
    ///
    /// A stream with no input whose encoder has settled on silence is neither mixed nor
    /// encoded: its frame is the kept silence packet (see [`MixEncoder`]), so a stream left
    /// behind costs a reference count per tick. A silent mix is not encoded either.
    pub fn encode(&mut self, now: Instant) {
        let (mut fresh, mut reused) = (0u64, 0u64);
        let mut minus = crate::media::mix_minus::MinusTally::default();
        for s in self.streams.iter_mut().flatten() {
            let Some(encoder) = &mut s.encoder else {
                continue;
            };
            if let (true, Some(rest)) = (s.mixer.is_empty(), encoder.resting()) {
                s.frame = Some(rest.clone());
                reused += 1;
                minus.shared += s.talkers.all_shared().shared;
                continue;
            }
            // The talkers' decisions sit between the sum and the limiter: one switching to
            // its own mix takes the full mix's limiter state as it was before this frame.
            s.mixer.sum_at(&mut s.pcm, now);
            s.talkers.decide(&s.mixer);
            s.mixer.limit(&mut s.pcm);
            if !s.talkers.is_empty() {
                let t = s.talkers.encode(&s.mixer, &s.pcm);
                minus.own += t.own;
                minus.shared += t.shared;
                minus.switches += t.switches;
            }
            s.frame = match encoder.encode(&mut s.pcm) {
                Ok((frame, how)) => {
                    match how {
                        Encoded::Fresh => fresh += 1,
                        Encoded::Reused => reused += 1,
                    }
                    Some(frame)
                }
                Err(e) => {
                    tracing::warn!(stream = %s.name, "encode failed: {e}");
                    None
                }
            };
        }
        self.metrics.mixed(fresh, reused);
        if minus != Default::default() {
            self.metrics
                .mix_minus(minus.own, minus.shared, minus.switches);
        }
        self.record_frames();
        self.sync_wallclocks(now);
    }

    /// Hands each recorded stream's frame of this tick to the recorder (never blocks).
    fn record_frames(&mut self) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        for s in self.streams.iter_mut().flatten() {
            if let (Some(id), Some(encoder)) = (s.recording, &mut s.encoder) {
                let pre_skip = encoder.lookahead();
                recorder.audio(id, &s.name, s.frame.as_ref(), s.media_time, pre_skip);
            }
        }
    }

    /// This tick's frames (after [`Egress::encode`]), for the TX threads that do not mix.
    pub fn tick_frames(&self, deadline: Instant) -> TickFrames {
        TickFrames {
            deadline,
            streams: self
                .streams
                .iter()
                .flatten()
                .map(|s| StreamFrame {
                    name: s.name.clone(),
                    frame: s.frame.clone(),
                    media_time: s.media_time,
                    wallclock: s.wallclock,
                })
                .collect(),
        }
    }

    /// On a mirror ([`Egress::mirror`]): takes the mixing thread's frames for this tick,
    /// making the streams it has not seen. A stream missing from `frames` sends nothing.
    pub fn take_frames(&mut self, frames: &TickFrames, now: Instant) {
        for s in self.streams.iter_mut().flatten() {
            s.frame = None;
        }
        for f in &frames.streams {
            let slot = self.ensure_mirror(&f.name, now);
            let s = self.stream_mut(slot);
            s.frame = f.frame.clone();
            s.media_time = f.media_time;
            s.wallclock = f.wallclock;
            s.last_fed = Some(now);
        }
    }

    /// Sets each stream's [`StreamMix::wallclock`] for this tick: from its video source's
    /// audio, when that publisher's reports allow (see [`crate::engine::sync`]).
    pub(super) fn sync_wallclocks(&mut self, now: Instant) {
        for s in self.streams.iter_mut().flatten() {
            s.wallclock = s
                .video_source
                .as_ref()
                .and_then(|f| self.index.get(&f.key))
                .and_then(|&i| match &self.viewers[i].role {
                    Role::Publisher(p) => p
                        .sync
                        .audio_wallclock(p.feed.monitor().stats().playout_rtp, now),
                    Role::Viewer { .. } => None,
                });
        }
    }

    /// Removes on-demand streams that have had no input for [`STREAM_GRACE`], ending their
    /// viewers, or no input and no viewer for [`UNWATCHED_STREAM_GRACE`].
    pub(super) fn expire_streams(&mut self, now: Instant) {
        let metrics = self.metrics.clone();
        for slot in 0..self.streams.len() {
            let expired = match &mut self.streams[slot] {
                Some(s) if s.encoder.is_none() => s
                    .last_fed
                    .is_some_and(|t| now.saturating_duration_since(t) >= MIRROR_GRACE),
                Some(s) if !s.configured && s.publishers == 0 && s.mixer.is_empty() => {
                    let since = *s.empty_since.get_or_insert(now);
                    let empty = now.saturating_duration_since(since);
                    // The viewer count (a lock) is asked only once the short grace is over.
                    empty >= STREAM_GRACE
                        || (empty >= UNWATCHED_STREAM_GRACE && metrics.viewers_of(&s.name) == 0)
                }
                Some(s) => {
                    s.empty_since = None;
                    false
                }
                None => false,
            };
            if !expired {
                continue;
            }
            let doomed: Vec<PeerKey> = self
                .viewers
                .iter()
                .filter(|v| v.stream == slot)
                .map(|v| v.key)
                .collect();
            for key in doomed {
                self.end(key, EndReason::StreamEnded);
            }
            if let Some(s) = self.streams[slot].take() {
                self.by_name.remove(&*s.name);
                if let (Some(id), Some(r)) = (s.recording, &mut self.recorder) {
                    r.end(id);
                }
                if self.mirror {
                    tracing::debug!(stream = %s.name, "mirror stream removed: no frame for {MIRROR_GRACE:?}");
                } else {
                    self.directory.remove(&s.name);
                    tracing::info!(stream = %s.name, "stream {:?} removed: no input (and no viewer for {UNWATCHED_STREAM_GRACE:?}, or none for {STREAM_GRACE:?})", s.name);
                }
            }
        }
    }
}
