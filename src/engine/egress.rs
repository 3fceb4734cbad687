//! The peers of one TX thread (viewers and publishers) and the streams they use: sans-IO.
//!
//! Owns every peer's `Rtc` and drives it by the single-mutation rule (each mutation is
//! followed by a drain of `poll_output` to `Timeout`). A publisher's audio goes, packet by
//! packet as str0m hands it over, into its [`PublisherFeed`], whose input sits in the
//! stream's mixer. Each [`Egress::tick`] mixes and encodes every stream once and writes
//! that one packet to each connected viewer. Streams that publishers created are removed
//! after [`STREAM_GRACE`] without inputs. Never reads the clock, never blocks, never
//! touches a socket.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Pt, Rid};
use str0m::net::Protocol;
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};

use super::sync::AvSync;
use super::{EndReason, PeerKey, Transmitter};
use crate::media::mixer::Mixer;
use crate::media::opus::{Encoder, MAX_PACKET};
use crate::media::publisher::{publisher_channel, PublisherFeed};
use crate::media::{Frame, FRAME_LEN, FRAME_SAMPLES};
use crate::metrics::Metrics;
use crate::net::dtls::SrtpKeys;
use crate::net::srtp::{write_rtp_header, RTP_HEADER_LEN};
use crate::net::stun;
use crate::streams::{StreamDirectory, VideoSource};

/// A peer that has not connected (ICE and DTLS) this long after its answer is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A connected publisher that sends no media (audio or video) for this long is ended.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(10);

/// An on-demand stream (created by a publisher) with no input for this long is removed,
/// and its viewers' sessions end. Long enough for a publisher to reconnect.
pub const STREAM_GRACE: Duration = Duration::from_secs(30);

/// At most one keyframe request (PLI) to a stream's video publisher per this interval,
/// however many viewers join or report loss: a crowd joining sends a handful, not
/// thousands.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A viewer whose receiver reports show at least this fraction of its packets lost, for
/// [`LAYER_DOWN_AFTER`] stats intervals in a row, moves to the next smaller simulcast
/// layer (str0m reports the loss every [`super::offer::VIEWER_STATS_INTERVAL`]).
pub const LAYER_DOWN_LOSS: f32 = 0.10;
/// Stats intervals in a row with [`LAYER_DOWN_LOSS`] before a viewer moves down.
pub const LAYER_DOWN_AFTER: u32 = 2;
/// A viewer on a smaller layer whose loss stays under [`LAYER_CLEAN_LOSS`] this long tries
/// the next larger layer again.
pub const LAYER_UP_AFTER: Duration = Duration::from_secs(10);
/// Loss below this counts as clean.
pub const LAYER_CLEAN_LOSS: f32 = 0.02;

/// An ICE-lite publisher whose own STUN checks stopped this long ago, while its media keeps
/// arriving, gets its last check replayed to str0m (see [`Egress::handle_receive`]).
const CONSENT_BY_MEDIA_AFTER: Duration = Duration::from_secs(4);

/// A stream as the TX thread sees it: its mix, its encoder, its media clock.
///
/// On a TX thread other than the mixing one (see [`Egress::mirror`]) a stream is a mirror:
/// no encoder and an empty mixer; its frame comes from the mixing thread each tick
/// ([`Egress::take_frames`]).
pub struct StreamMix {
    /// The stream's name.
    pub name: Arc<str>,
    mixer: Mixer,
    /// None on a mirror.
    encoder: Option<Encoder>,
    /// When a mirror last got a frame from the mixing thread.
    last_fed: Option<Instant>,
    /// RTP time (48 kHz) of the next frame.
    media_time: u64,
    /// The wallclock this tick's frame is written with: the tick time, or, when the
    /// stream has video, the capture time of the video source's audio in the mix
    /// (see [`crate::engine::sync`]).
    wallclock: Option<Instant>,
    pcm: Box<Frame>,
    packet: Vec<u8>,
    /// This tick's encoded frame, shared by reference with every viewer's `Rtc` (str0m
    /// takes `Arc<[u8]>`): one allocation per stream per tick, not one per viewer.
    frame: Option<Arc<[u8]>>,
    /// From the configuration: never removed.
    configured: bool,
    publishers: usize,
    /// Since when the stream has had no input (on-demand streams only).
    empty_since: Option<Instant>,
    /// How the stream picks its video publisher.
    video_policy: VideoSource,
    /// The publisher whose video viewers get now.
    video_source: Option<VideoFeed>,
    /// A viewer needs a keyframe (joined, or reported loss), and when we last asked.
    keyframe_wanted: bool,
    last_keyframe_request: Option<Instant>,
}

impl StreamMix {
    /// A stream playing `mixer`, encoded at `bitrate` (0: the codec default).
    pub fn new(name: String, mixer: Mixer, encoder: Encoder) -> StreamMix {
        StreamMix {
            name: name.into(),
            mixer,
            encoder: Some(encoder),
            last_fed: None,
            media_time: 0,
            wallclock: None,
            pcm: Box::new([0.0; FRAME_LEN]),
            packet: vec![0; MAX_PACKET],
            frame: None,
            configured: true,
            publishers: 0,
            empty_since: None,
            video_policy: VideoSource::default(),
            video_source: None,
            keyframe_wanted: false,
            last_keyframe_request: None,
        }
    }

    /// An on-demand stream (removed after [`STREAM_GRACE`] without inputs).
    pub fn on_demand(mut self) -> StreamMix {
        self.configured = false;
        self
    }

    /// A mirror of the mixing thread's stream `name`, fed since `now`.
    fn mirror(name: &str, now: Instant) -> StreamMix {
        StreamMix {
            name: name.into(),
            mixer: Mixer::new(),
            encoder: None,
            last_fed: Some(now),
            media_time: 0,
            wallclock: None,
            pcm: Box::new([0.0; FRAME_LEN]),
            packet: Vec::new(),
            frame: None,
            configured: false,
            publishers: 0,
            empty_since: None,
            video_policy: VideoSource::None,
            video_source: None,
            keyframe_wanted: false,
            last_keyframe_request: None,
        }
    }

    /// A viewer's video loss over the last stats interval: may move it to another layer
    /// (asking the source for that layer's keyframe).
    fn on_viewer_loss(&mut self, key: PeerKey, layering: &mut Layering, loss: f32, now: Instant) {
        let Some(feed) = &self.video_source else {
            return;
        };
        let from = layering.current(feed.layer_count());
        if layering.on_loss(loss, now, feed.layer_count()) {
            self.keyframe_wanted = true;
            if let Some(to) = layering.want {
                tracing::debug!(key, stream = %self.name, loss, from, to, "viewer changes layer at the next keyframe");
            }
        }
    }

    /// The stream picks its video publisher by `policy` (default: [`VideoSource::First`]).
    pub fn with_video_source(mut self, policy: VideoSource) -> StreamMix {
        self.video_policy = policy;
        self
    }
}

/// The video a stream's viewers get: one publisher, and of a simulcast publisher its
/// layers, largest first (each viewer takes one of them, see [`Layering`]).
#[derive(Debug, Clone)]
struct VideoFeed {
    key: PeerKey,
    /// The simulcast layers, in the publisher's order (empty: one stream without rid).
    layers: Vec<Rid>,
}

impl VideoFeed {
    /// How many layers viewers can choose from (1 without simulcast).
    fn layer_count(&self) -> usize {
        self.layers.len().max(1)
    }
}

/// Which simulcast layer a viewer takes (0: the largest), moved by the loss its receiver
/// reports show: down a layer after [`LAYER_DOWN_AFTER`] lossy intervals, up again after
/// [`LAYER_UP_AFTER`] clean. A move waits for a keyframe of the new layer, so the viewer's
/// decoder never gets a layer's delta frames without their keyframe.
#[derive(Debug, Clone, Copy, Default)]
struct Layering {
    layer: usize,
    /// The layer it moves to at that layer's next keyframe.
    want: Option<usize>,
    lossy: u32,
    clean_since: Option<Instant>,
}

impl Layering {
    /// The layer taken of `layers` (fewer layers than it was on: the smallest).
    fn current(&self, layers: usize) -> usize {
        self.layer.min(layers.saturating_sub(1))
    }

    /// Whether to forward `f`; switches to the wanted layer at its keyframe.
    fn takes(&mut self, f: &VideoFrame) -> bool {
        if f.layer == self.current(f.layers) {
            return true;
        }
        if self.want == Some(f.layer) && f.keyframe {
            self.layer = f.layer;
            self.want = None;
            return true;
        }
        false
    }

    /// Takes one stats interval's `loss` (0..=1); true if a keyframe of a layer it wants is
    /// needed.
    fn on_loss(&mut self, loss: f32, now: Instant, layers: usize) -> bool {
        if let Some(want) = self.want {
            if want >= layers {
                self.want = None;
            } else {
                return true; // still waiting for its keyframe: ask again
            }
        }
        let layer = self.current(layers);
        if loss >= LAYER_DOWN_LOSS {
            self.clean_since = None;
            self.lossy += 1;
            if self.lossy >= LAYER_DOWN_AFTER && layer + 1 < layers {
                self.lossy = 0;
                self.want = Some(layer + 1);
                return true;
            }
            return false;
        }
        self.lossy = 0;
        if loss >= LAYER_CLEAN_LOSS {
            self.clean_since = None;
            return false;
        }
        let since = *self.clean_since.get_or_insert(now);
        if layer > 0 && now.saturating_duration_since(since) >= LAYER_UP_AFTER {
            self.clean_since = None;
            self.want = Some(layer - 1);
            return true;
        }
        false
    }

    /// The layers (bits) this viewer needs keyframes of.
    fn keyframe_mask(&self, layers: usize) -> u32 {
        let mut mask = 1 << self.current(layers);
        if let Some(w) = self.want.filter(|&w| w < layers) {
            mask |= 1 << w;
        }
        mask
    }
}

/// How a publisher's session is set up.
#[derive(Debug, Clone, Copy)]
pub struct PublisherOptions {
    /// The gain of its input in the mix.
    pub gain: f32,
    /// Its `Rtc` is ICE-lite (FFmpeg): keep it alive by its media (see
    /// [`Egress::handle_receive`]).
    pub ice_lite: bool,
}

/// What a publisher needs beyond a viewer.
struct Publisher {
    feed: PublisherFeed,
    /// The audio and video m-lines, once str0m reports them.
    audio: Option<Mid>,
    video: Option<Mid>,
    /// The simulcast layers (rids) of its video, in the order of its `a=simulcast` line:
    /// the sender's order of preference (RFC 8853), the full-size layer first for OBS
    /// (rid "0") and for browsers that list their largest encoding first. Empty without
    /// simulcast.
    video_layers: Vec<Rid>,
    /// Our ICE password, to give FFmpeg's checks the PRIORITY str0m requires.
    local_pwd: String,
    ice_lite: bool,
    /// When the peer last sent a STUN Binding request, and that request (already mended),
    /// from where, to where.
    last_check: Option<(Instant, Vec<u8>, SocketAddr, SocketAddr)>,
    /// When media (audio or video) last arrived, and when the session connected.
    last_media: Option<Instant>,
    connected_at: Option<Instant>,
    /// Media arrived since the last replay decision.
    media_seen: bool,
    video_frames: u64,
    /// Maps its audio and video onto our clock for lip-sync.
    sync: AvSync,
}

enum Role {
    Viewer {
        /// The audio m-line and our Opus PT, known once str0m reports the media.
        audio: Option<(Mid, Pt)>,
        /// The video m-line, if the viewer takes video.
        video: Option<Mid>,
        /// The viewer's PT for the current video source's PT: (source, its PT, ours),
        /// or ours `None` when the viewer has no matching codec.
        video_pt: Option<(PeerKey, Pt, Option<Pt>)>,
        /// The simulcast layer it takes.
        layering: Layering,
    },
    Publisher(Box<Publisher>),
}

struct Viewer {
    key: PeerKey,
    rtc: Rtc,
    stream: usize,
    role: Role,
    connected: bool,
    /// When the viewer was added, to give up on one that never connects.
    added: Instant,
    /// The timeout str0m last asked for, while it has an entry in `timers`.
    next_timeout: Option<Instant>,
    /// Our SRTP sending keys, once its DTLS handshake has exported them (viewers only).
    srtp_keys: Option<SrtpKeys>,
    /// Where str0m sends its DTLS and RTCP: the nominated ICE pair (source, destination).
    media_path: Option<(SocketAddr, SocketAddr)>,
    /// Its audio stream when sent by the `direct` fan-out.
    direct: Option<DirectAudio>,
    /// An ICE restart moving its media to the peer's new ICE generation.
    restart: Option<super::restart::Restart>,
}

/// A viewer's audio RTP stream built by the engine itself (the `direct` fan-out): str0m
/// announced the SSRC in the answer but never sends RTP on it. It still sends its periodic
/// sender report for the stream (every 5 s for audio), which does not match our packets:
/// counts of zero, its own RTP-time mapping. Audio-only players do not need sender
/// reports to play (lip-sync does, which is why viewers of video stay on str0m's path).
struct DirectAudio {
    ssrc: u32,
    pt: u8,
    /// The extended sequence number of the next packet (RFC 3711 index: ROC and SEQ).
    index: u64,
    /// The next packet is the stream's first: marker bit set.
    first: bool,
}

/// A publisher's video frame on its way to the stream's viewers.
struct VideoFrame {
    stream: usize,
    from: PeerKey,
    /// Its simulcast layer (0: the largest, or the only one), of how many, and whether it
    /// is a keyframe.
    layer: usize,
    layers: usize,
    keyframe: bool,
    params: PayloadParams,
    time: MediaTime,
    network_time: Instant,
    data: Arc<[u8]>,
}

/// A peer (viewer or publisher) that has ended, reported by [`Egress::take_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The session.
    pub key: PeerKey,
    /// Why.
    pub reason: EndReason,
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

/// The engine of one TX thread: its streams and their peers.
pub struct Egress {
    /// Stream slots; a viewer's or publisher's `stream` indexes this. Freed slots are
    /// `None` and reused.
    streams: Vec<Option<StreamMix>>,
    by_name: HashMap<String, usize>,
    viewers: Vec<Viewer>,
    index: HashMap<PeerKey, usize>,
    /// Earliest str0m timeouts, lazily pruned: an entry is live while it equals the
    /// peer's `next_timeout`.
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    ended: Vec<Ended>,
    directory: Arc<StreamDirectory>,
    /// Opus bitrate for streams created on demand.
    bitrate: u32,
    /// Room to mend a STUN request (FFmpeg's, see [`stun::add_missing_priority`]).
    stun_scratch: Vec<u8>,
    /// Video frames received and not yet forwarded (see [`Egress::forward_video`]).
    video_out: Vec<VideoFrame>,
    metrics: Arc<Metrics>,
    /// Whether [`Egress::tick`] releases each viewer's packet at once (see
    /// [`Egress::set_fanout`]).
    release_in_tick: bool,
    /// Whether [`Egress::tick`] builds audio-only viewers' packets itself (`direct`).
    direct: bool,
    /// Room to build one direct datagram.
    direct_buf: Vec<u8>,
    /// A TX thread that does not mix: its streams are mirrors (see [`Egress::mirror`]).
    mirror: bool,
}

impl Egress {
    /// An engine for the configured `streams`; streams publishers create get an encoder
    /// at `bitrate`. `directory` is kept in step with the streams that exist.
    pub fn new(
        streams: Vec<StreamMix>,
        directory: Arc<StreamDirectory>,
        bitrate: u32,
        metrics: Arc<Metrics>,
    ) -> Egress {
        let by_name = streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.to_string(), i))
            .collect();
        for s in &streams {
            directory.set_video_source(&s.name, s.video_policy);
        }
        Egress {
            streams: streams.into_iter().map(Some).collect(),
            by_name,
            viewers: Vec::new(),
            index: HashMap::new(),
            timers: BinaryHeap::new(),
            ended: Vec::new(),
            directory,
            bitrate,
            stun_scratch: vec![0; crate::net::MAX_DATAGRAM + stun::PRIORITY_GROWTH],
            video_out: Vec::new(),
            metrics,
            release_in_tick: true,
            direct: true,
            direct_buf: vec![0; crate::net::MAX_DATAGRAM],
            mirror: false,
        }
    }

    /// An engine for a TX thread that does not mix: it owns viewers only, and each tick's
    /// frames come from the mixing thread's [`Egress::tick_frames`] through
    /// [`Egress::take_frames`]. Its streams are mirrors, made when a viewer or a frame
    /// first names them and ended [`MIRROR_GRACE`] after their last frame; it never
    /// touches the stream directory. Viewers of video stay on the mixing thread (video
    /// frames are not mirrored).
    pub fn mirror(directory: Arc<StreamDirectory>, metrics: Arc<Metrics>) -> Egress {
        let mut e = Egress::new(Vec::new(), directory, 0, metrics);
        e.mirror = true;
        e
    }

    /// How [`Egress::tick`] hands the frame to each viewer's `Rtc`.
    ///
    /// `Batched`: write, then give the `Rtc` its timeout for `now` at once,
    /// so str0m's pacer releases the packet (RTP, SRTP) in the same drain. Each viewer's
    /// packet then leaves during the tick, in viewer order, with one drain per viewer.
    ///
    /// `Naive`, the baseline (str0m's chat example): write and drain. str0m's pacer only
    /// sees the new packet on the `Rtc`'s next timeout, which the write schedules for
    /// `now`, so the packet leaves in the next [`Egress::handle_timeouts`]: two drains per
    /// viewer and a timer-heap push and pop for each.
    ///
    /// `Direct` (the default): as `Batched`, but a connected audio-only viewer whose DTLS exported GCM
    /// keys gets the frame without its `Rtc`: we write the RTP header (the SSRC str0m
    /// announced, our PT, our own sequence numbers, the stream's media time), protect it
    /// with [`crate::net::srtp::SrtpSender`] and send it to the nominated pair. No write,
    /// no drain: its `Rtc` runs only when its own timers are due or input arrives.
    pub fn set_fanout(&mut self, fanout: crate::config::Fanout) {
        use crate::config::Fanout;
        self.release_in_tick = matches!(fanout, Fanout::Batched | Fanout::Direct);
        self.direct = fanout == Fanout::Direct;
    }

    /// The index of the stream called `name`.
    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Viewers and publishers currently owned.
    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
    }

    fn stream(&self, idx: usize) -> &StreamMix {
        // Invariant: a peer's stream slot is occupied while the peer exists (a stream is
        // removed only after its peers have been ended).
        self.streams[idx].as_ref().expect("live stream slot")
    }

    fn stream_mut(&mut self, idx: usize) -> &mut StreamMix {
        self.streams[idx].as_mut().expect("live stream slot")
    }

    /// Takes ownership of a viewer's `Rtc` (fresh from `accept_offer`) and drains it. A
    /// viewer of a stream that no longer exists ends at once.
    pub fn add_viewer(
        &mut self,
        now: Instant,
        key: PeerKey,
        rtc: Rtc,
        srtp_keys: Option<SrtpKeys>,
        stream: &str,
        tx: &mut impl Transmitter,
    ) {
        let found = if self.mirror {
            Some(self.ensure_mirror(stream, now))
        } else {
            self.stream_index(stream)
        };
        let Some(stream) = found else {
            tracing::debug!(key, stream, "viewer of a stream that just ended");
            self.ended.push(Ended {
                key,
                reason: EndReason::StreamEnded,
            });
            return;
        };
        let idx = self.viewers.len();
        self.viewers.push(Viewer {
            key,
            rtc,
            stream,
            role: Role::Viewer {
                audio: None,
                video: None,
                video_pt: None,
                layering: Layering::default(),
            },
            connected: false,
            added: now,
            next_timeout: None,
            srtp_keys,
            media_path: None,
            direct: None,
            restart: None,
        });
        self.index.insert(key, idx);
        self.metrics.viewer_added(&self.stream(stream).name);
        self.drain(idx, now, tx);
    }

    /// Takes ownership of a publisher's `Rtc`: its audio becomes an input of `stream`'s
    /// mix, creating the stream if it does not exist.
    pub fn add_publisher(
        &mut self,
        now: Instant,
        key: PeerKey,
        mut rtc: Rtc,
        stream: &str,
        options: PublisherOptions,
        tx: &mut impl Transmitter,
    ) {
        let (feed, input) = match publisher_channel() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(key, "publisher input: {e}");
                self.ended.push(Ended {
                    key,
                    reason: EndReason::Failed,
                });
                return;
            }
        };
        let Some(sidx) = self.ensure_stream(stream) else {
            self.ended.push(Ended {
                key,
                reason: EndReason::Failed,
            });
            return;
        };
        let local_pwd = rtc.direct_api().local_ice_credentials().pass;
        let s = self.stream_mut(sidx);
        s.mixer.add(
            Box::new(input.named(format!("publisher {key}"))),
            options.gain,
        );
        s.publishers += 1;
        s.empty_since = None;
        let (name, publishers) = (s.name.clone(), s.publishers);
        self.directory.set_publishers(&name, publishers);
        self.metrics.publisher_added(&name);
        tracing::info!(key, stream = %name, "publisher joined");

        let idx = self.viewers.len();
        self.viewers.push(Viewer {
            key,
            rtc,
            stream: sidx,
            role: Role::Publisher(Box::new(Publisher {
                feed,
                audio: None,
                video: None,
                video_layers: Vec::new(),
                local_pwd,
                ice_lite: options.ice_lite,
                last_check: None,
                last_media: None,
                connected_at: None,
                media_seen: false,
                video_frames: 0,
                sync: AvSync::default(),
            })),
            connected: false,
            added: now,
            next_timeout: None,
            srtp_keys: None,
            media_path: None,
            direct: None,
            restart: None,
        });
        self.index.insert(key, idx);
        self.drain(idx, now, tx);
    }

    /// The slot of mirror stream `name`, created (fed since `now`) if it does not exist.
    fn ensure_mirror(&mut self, name: &str, now: Instant) -> usize {
        if let Some(i) = self.stream_index(name) {
            return i;
        }
        self.insert_stream(StreamMix::mirror(name, now))
    }

    /// Puts `mix` in a free slot.
    fn insert_stream(&mut self, mix: StreamMix) -> usize {
        let name = mix.name.to_string();
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
    fn ensure_stream(&mut self, name: &str) -> Option<usize> {
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
        let mix = StreamMix::new(name.to_string(), Mixer::new(), encoder).on_demand();
        let slot = self.insert_stream(mix);
        self.directory.ensure(name);
        tracing::info!(stream = name, "stream created by a publisher");
        Some(slot)
    }

    /// Ends a viewer or publisher by request (DELETE or shutdown).
    pub fn remove_viewer(&mut self, key: PeerKey, tx: &mut impl Transmitter) {
        if let Some(&idx) = self.index.get(&key) {
            let v = &mut self.viewers[idx];
            v.rtc.disconnect();
            // Send what closing produces (DTLS close_notify); the session is over either way.
            while let Ok(out) = v.rtc.poll_output() {
                match out {
                    Output::Transmit(t) => tx.send(t.source, t.destination, &t.contents),
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
            }
            self.end(key, EndReason::Closed);
        }
    }

    /// Adds a trickled remote candidate (WHIP/WHEP PATCH).
    pub fn add_remote_candidate(
        &mut self,
        key: PeerKey,
        candidate: Candidate,
        now: Instant,
        tx: &mut impl Transmitter,
    ) {
        if let Some(&idx) = self.index.get(&key) {
            self.viewers[idx].rtc.add_remote_candidate(candidate);
            self.drain(idx, now, tx);
        }
    }

    /// ICE restart (PATCH with new credentials): new local credentials, the client's
    /// new ones; the selected pair keeps carrying media while checks run again. Returns our
    /// new credentials, or None if `key` is unknown.
    pub fn restart_ice(
        &mut self,
        key: PeerKey,
        remote: IceCreds,
        now: Instant,
        tx: &mut impl Transmitter,
    ) -> Option<IceCreds> {
        let &idx = self.index.get(&key)?;
        let local = IceCreds::new();
        {
            let v = &mut self.viewers[idx];
            let mut api = v.rtc.direct_api();
            api.set_local_ice_credentials(local.clone());
            api.set_remote_ice_credentials(remote);
            if let Role::Publisher(p) = &mut v.role {
                p.local_pwd = local.pass.clone();
                p.last_check = None;
            }
            v.restart = super::restart::Restart::new(local.ufrag.clone(), v.media_path);
        }
        self.drain(idx, now, tx).then_some(local)
    }

    /// Feeds a datagram that the UDP loop routed to `key`.
    ///
    /// Two mends for FFmpeg 8's WHIP muxer, the only way to make it work with str0m 0.25
    /// short of patching str0m (chosen because they are small, local and tested, and need no
    /// fork to maintain):
    /// - its Binding requests lack PRIORITY, which str0m refuses: [`stun::add_missing_priority`]
    ///   adds one (only to a request that authenticates with our password);
    /// - it stops sending STUN once DTLS is up, so an ICE-lite str0m agent would drop the
    ///   pair after 15 s. For an ICE-lite publisher whose checks stopped while its SRTP
    ///   media (authenticated by its DTLS keys) keeps arriving, its last check is replayed
    ///   to str0m every few seconds: the peer's media stands in for its consent (RFC 7675
    ///   protects whom we *send* to; a publisher receives only our RTCP).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        key: PeerKey,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        tx: &mut impl Transmitter,
    ) {
        let Some(&idx) = self.index.get(&key) else {
            return;
        };
        tracing::trace!(key, %source, %destination, len = data.len(), "datagram in");
        // The scratch buffer is moved out while `data` may point into it.
        let mut scratch = std::mem::take(&mut self.stun_scratch);
        let mut data = data;
        if stun::is_binding_request(data) {
            if let Role::Publisher(p) = &mut self.viewers[idx].role {
                if let Some(n) = stun::add_missing_priority(data, &p.local_pwd, &mut scratch) {
                    data = &scratch[..n];
                }
                p.last_check = Some((now, data.to_vec(), source, destination));
            }
        }
        let mut alive = self.feed(idx, now, source, destination, data, tx);
        if alive {
            let v = &mut self.viewers[idx];
            if let Some(r) = &mut v.restart {
                if r.first_new_check(source, destination, data) {
                    // str0m now has a pair of the new generation: the old one can go.
                    let retired = r.retire(&mut v.rtc);
                    tracing::debug!(key, %source, retired, "ICE restart: the peer checks from a new address");
                    alive = self.drain(idx, now, tx);
                }
            }
        }
        self.stun_scratch = scratch;
        self.forward_video(now, tx);
        if !alive {
            return;
        }
        self.replay_check_if_due(idx, now, tx);
    }

    /// Gives str0m one datagram and drains. False if the peer ended.
    fn feed(
        &mut self,
        idx: usize,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        tx: &mut impl Transmitter,
    ) -> bool {
        let key = self.viewers[idx].key;
        let Ok(contents) = data.try_into() else {
            return true; // not a datagram str0m knows (neither STUN, DTLS nor RTP)
        };
        let input = Input::Receive(
            now,
            str0m::net::Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = self.viewers[idx].rtc.handle_input(input) {
            tracing::debug!(key, "input refused: {e}");
            self.end(key, EndReason::Failed);
            return false;
        }
        self.drain(idx, now, tx)
    }

    /// See [`Egress::handle_receive`]: consent by media for ICE-lite publishers.
    fn replay_check_if_due(&mut self, idx: usize, now: Instant, tx: &mut impl Transmitter) {
        let replay = match &mut self.viewers[idx].role {
            Role::Publisher(p) if p.ice_lite && p.media_seen => {
                p.media_seen = false;
                match &mut p.last_check {
                    Some((at, packet, src, dst))
                        if now.saturating_duration_since(*at) >= CONSENT_BY_MEDIA_AFTER =>
                    {
                        *at = now;
                        Some((packet.clone(), *src, *dst))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((packet, source, destination)) = replay {
            tracing::trace!(
                key = self.viewers[idx].key,
                "consent by media: check replayed"
            );
            self.feed(idx, now, source, destination, &packet, tx);
        }
    }

    /// The earliest instant at which some peer wants [`Egress::handle_timeouts`].
    pub fn next_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            match self.index.get(&key) {
                Some(&idx) if self.viewers[idx].next_timeout == Some(at) => return Some(at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Gives every peer whose timeout has come its `Input::Timeout`.
    pub fn handle_timeouts(&mut self, now: Instant, tx: &mut impl Transmitter) {
        while let Some(at) = self.next_timeout() {
            if at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.timers.pop() else {
                break;
            };
            let Some(&idx) = self.index.get(&key) else {
                continue;
            };
            self.viewers[idx].next_timeout = None;
            if let Err(e) = self.viewers[idx].rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(key, "timeout refused: {e}");
                self.end(key, EndReason::Failed);
                continue;
            }
            self.drain(idx, now, tx);
        }
        self.forward_video(now, tx);
    }

    /// Sends the video frames publishers delivered to every viewer of their stream that
    /// takes video, as they arrive (not on the audio tick), without re-encoding: str0m
    /// repacketizes each frame under the viewer's payload type for the same codec and
    /// parameters. Frames from a publisher other than the stream's video source are dropped.
    fn forward_video(&mut self, now: Instant, tx: &mut impl Transmitter) {
        // Draining a viewer never yields video, but loop anyway until nothing is queued.
        while !self.video_out.is_empty() {
            let frames = std::mem::take(&mut self.video_out);
            for f in &frames {
                let mut idx = 0;
                while idx < self.viewers.len() {
                    let v = &mut self.viewers[idx];
                    let Role::Viewer {
                        video: Some(mid),
                        video_pt,
                        layering,
                        ..
                    } = &mut v.role
                    else {
                        idx += 1;
                        continue;
                    };
                    if v.stream != f.stream || !v.connected || !layering.takes(f) {
                        idx += 1;
                        continue;
                    }
                    let pt = match *video_pt {
                        Some((from, their, ours)) if from == f.from && their == f.params.pt() => {
                            ours
                        }
                        _ => {
                            let ours = v.rtc.writer(*mid).and_then(|w| w.match_params(f.params));
                            if ours.is_none() {
                                tracing::debug!(
                                    key = v.key,
                                    codec = ?f.params.spec().codec,
                                    "viewer has no matching video codec"
                                );
                            }
                            *video_pt = Some((f.from, f.params.pt(), ours));
                            ours
                        }
                    };
                    let Some(pt) = pt else {
                        idx += 1;
                        continue;
                    };
                    let written = match v.rtc.writer(*mid) {
                        Some(w) => w.write(pt, f.network_time, f.time, f.data.clone()),
                        None => Ok(()),
                    };
                    if let Err(e) = written {
                        let key = v.key;
                        tracing::debug!(key, "video write failed: {e}");
                        self.end(key, EndReason::Failed);
                        continue;
                    }
                    if self.drain(idx, now, tx) {
                        idx += 1;
                    }
                }
            }
        }
    }

    /// Asks each stream's video publisher for a keyframe when a viewer needs one, at most
    /// once per [`KEYFRAME_REQUEST_INTERVAL`].
    fn request_keyframes(&mut self, now: Instant, tx: &mut impl Transmitter) {
        for slot in 0..self.streams.len() {
            let Some(s) = self.streams[slot].as_mut() else {
                continue;
            };
            let Some(feed) = &s.video_source else {
                continue;
            };
            let due = s
                .last_keyframe_request
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_INTERVAL);
            if !s.keyframe_wanted || !due {
                continue;
            }
            let (source, layers) = (feed.key, feed.layers.clone());
            s.keyframe_wanted = false;
            s.last_keyframe_request = Some(now);
            // The layers the stream's viewers take or move to (the largest if none).
            let count = layers.len().max(1);
            let mut mask = 0u32;
            for v in &self.viewers {
                if let (true, Role::Viewer { layering, .. }) = (v.stream == slot, &v.role) {
                    mask |= layering.keyframe_mask(count);
                }
            }
            let rids: Vec<Option<Rid>> = (0..count)
                .filter(|i| mask == 0 && *i == 0 || mask & (1 << i) != 0)
                .map(|i| layers.get(i).copied())
                .collect();
            let Some(&idx) = self.index.get(&source) else {
                continue;
            };
            let v = &mut self.viewers[idx];
            let Role::Publisher(p) = &v.role else {
                continue;
            };
            let Some(mid) = p.video else { continue };
            for rid in rids {
                if let Some(mut w) = v.rtc.writer(mid) {
                    let kind = if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                        KeyframeRequestKind::Pli
                    } else {
                        KeyframeRequestKind::Fir
                    };
                    match w.request_keyframe(rid, kind) {
                        Ok(()) => tracing::debug!(key = source, ?kind, ?rid, "keyframe requested"),
                        Err(e) => tracing::debug!(key = source, "keyframe request refused: {e}"),
                    }
                }
            }
            self.drain(idx, now, tx);
        }
    }

    /// One 20 ms tick: mix and encode each stream once, then write that packet to every
    /// connected viewer of the stream; end peers that never connected and publishers that
    /// stopped sending; remove on-demand streams left without inputs.
    pub fn tick(&mut self, now: Instant, tx: &mut impl Transmitter) {
        self.encode(now);
        self.fan_out(now, tx);
    }

    /// The first half of [`Egress::tick`]: mixes and encodes each stream's frame for this
    /// tick (a mirror's streams keep the frame [`Egress::take_frames`] gave them).
    pub fn encode(&mut self, now: Instant) {
        for s in self.streams.iter_mut().flatten() {
            let Some(encoder) = &mut s.encoder else {
                continue;
            };
            s.mixer.mix_at(&mut s.pcm, now);
            s.frame = match encoder.encode(&s.pcm, &mut s.packet) {
                Ok(n) => Some(Arc::from(&s.packet[..n])),
                Err(e) => {
                    tracing::warn!(stream = %s.name, "encode failed: {e}");
                    None
                }
            };
        }
        self.sync_wallclocks(now);
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

    /// The second half of [`Egress::tick`]: sends this tick's frame to every connected
    /// viewer, ends peers that never connected and publishers that stopped sending, removes
    /// streams that ended.
    pub fn fan_out(&mut self, now: Instant, tx: &mut impl Transmitter) {
        let mut idx = 0;
        while idx < self.viewers.len() {
            let v = &mut self.viewers[idx];
            if !v.connected && now.saturating_duration_since(v.added) > CONNECT_TIMEOUT {
                let key = v.key;
                tracing::debug!(key, "peer did not connect in {CONNECT_TIMEOUT:?}");
                self.end(key, EndReason::IceFailed);
                continue;
            }
            let s = self.streams[v.stream].as_ref().expect("live stream slot");
            if let (true, true, Some(frame)) = (self.direct, v.connected, &s.frame) {
                let rtp_time = s.media_time as u32; // RTP timestamps wrap (RFC 3550)
                if let Some(n) = send_direct(v, frame, rtp_time, &mut self.direct_buf, tx) {
                    self.metrics.transmit(n);
                    idx += 1;
                    continue;
                }
            }
            match &v.role {
                Role::Viewer { audio, .. } => {
                    if let (true, Some((mid, pt)), Some(frame)) = (v.connected, *audio, &s.frame) {
                        let rtp_time = MediaTime::new(s.media_time, Frequency::FORTY_EIGHT_KHZ);
                        let written = match v.rtc.writer(mid) {
                            Some(w) => {
                                w.write(pt, s.wallclock.unwrap_or(now), rtp_time, frame.clone())
                            }
                            None => Ok(()),
                        };
                        let written = written.map_err(|e| e.to_string()).and_then(|()| {
                            if self.release_in_tick {
                                v.rtc
                                    .handle_input(Input::Timeout(now))
                                    .map_err(|e| e.to_string())
                            } else {
                                Ok(())
                            }
                        });
                        if let Err(e) = written {
                            let key = v.key;
                            tracing::debug!(key, "write failed: {e}");
                            self.end(key, EndReason::Failed);
                            continue; // `end` swapped another peer into `idx`
                        }
                        if !self.drain(idx, now, tx) {
                            continue;
                        }
                    }
                }
                Role::Publisher(p) => {
                    if let Some(since) = p.last_media.or(p.connected_at) {
                        if now.saturating_duration_since(since) > MEDIA_TIMEOUT {
                            let key = v.key;
                            tracing::info!(key, "publisher sent no media for {MEDIA_TIMEOUT:?}");
                            self.end(key, EndReason::Idle);
                            continue;
                        }
                    }
                }
            }
            idx += 1;
        }
        for s in self.streams.iter_mut().flatten() {
            s.media_time += FRAME_SAMPLES as u64;
        }
        self.request_keyframes(now, tx);
        self.forward_video(now, tx);
        self.expire_streams(now);
    }

    /// Sets each stream's [`StreamMix::wallclock`] for this tick: from its video source's
    /// audio, when that publisher's reports allow (see [`crate::engine::sync`]).
    fn sync_wallclocks(&mut self, now: Instant) {
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
    /// viewers.
    fn expire_streams(&mut self, now: Instant) {
        for slot in 0..self.streams.len() {
            let expired = match &mut self.streams[slot] {
                Some(s) if s.encoder.is_none() => s
                    .last_fed
                    .is_some_and(|t| now.saturating_duration_since(t) >= MIRROR_GRACE),
                Some(s) if !s.configured && s.publishers == 0 && s.mixer.is_empty() => {
                    let since = *s.empty_since.get_or_insert(now);
                    now.saturating_duration_since(since) >= STREAM_GRACE
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
                if self.mirror {
                    tracing::debug!(stream = %s.name, "mirror stream removed: no frame for {MIRROR_GRACE:?}");
                } else {
                    self.directory.remove(&s.name);
                    tracing::info!(stream = %s.name, "stream removed: no input for {STREAM_GRACE:?}");
                }
            }
        }
    }

    /// Peers that ended since the last call.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Ends every peer (shutdown).
    pub fn close_all(&mut self, tx: &mut impl Transmitter) {
        while let Some(v) = self.viewers.last() {
            let key = v.key;
            self.remove_viewer(key, tx);
        }
    }

    /// Drains peer `idx` to `Timeout`. Returns false if the peer ended (and was removed,
    /// so `idx` now holds another peer or is past the end).
    fn drain(&mut self, idx: usize, now: Instant, tx: &mut impl Transmitter) -> bool {
        let v = &mut self.viewers[idx];
        let key = v.key;
        let mut end = None;
        loop {
            match v.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // str0m may return a timeout in the past; never schedule before `now`.
                    let t = t.max(now);
                    if v.next_timeout != Some(t) {
                        v.next_timeout = Some(t);
                        self.timers.push(Reverse((t, key)));
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    self.metrics.transmit(t.contents.len());
                    // str0m sends DTLS and RTCP (never STUN, first byte 0..=3) only on the
                    // nominated pair: where direct audio goes too.
                    if t.contents.first().is_some_and(|&b| b > 3) {
                        v.media_path = Some((t.source, t.destination));
                    }
                    tx.send(t.source, t.destination, &t.contents);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        v.connected = true;
                        match &mut v.role {
                            Role::Publisher(p) => p.connected_at = Some(now),
                            Role::Viewer { video: Some(_), .. } => {
                                // A new viewer of video needs a keyframe to start.
                                if let Some(s) = self.streams[v.stream].as_mut() {
                                    s.keyframe_wanted = true;
                                }
                            }
                            Role::Viewer { .. } => {}
                        }
                        tracing::debug!(key, "peer connected");
                    }
                    Event::MediaEgressStats(st) => {
                        // A viewer's receiver reports: its simulcast layer follows its loss.
                        if let (
                            Role::Viewer {
                                video: Some(mid),
                                layering,
                                ..
                            },
                            Some(loss),
                        ) = (&mut v.role, st.loss)
                        {
                            if st.mid == *mid {
                                if let Some(s) = self.streams[v.stream].as_mut() {
                                    s.on_viewer_loss(key, layering, loss, now);
                                }
                            }
                        }
                    }
                    Event::KeyframeRequest(_) => {
                        // A viewer lost video: coalesced into one request to the source.
                        if let Some(s) = self.streams[v.stream].as_mut() {
                            s.keyframe_wanted = true;
                        }
                    }
                    Event::MediaAdded(m) => match &mut v.role {
                        Role::Viewer { video, .. } if m.kind == MediaKind::Video => {
                            *video = Some(m.mid);
                            // str0m may report the media after Connected: a connected
                            // viewer of video needs a keyframe to start either way.
                            if v.connected {
                                if let Some(s) = self.streams[v.stream].as_mut() {
                                    s.keyframe_wanted = true;
                                }
                            }
                        }
                        Role::Publisher(p) if m.kind == MediaKind::Video => {
                            p.video = Some(m.mid);
                            p.video_layers = m
                                .simulcast
                                .map(|s| s.recv.iter().map(|l| l.rid).collect())
                                .unwrap_or_default();
                        }
                        Role::Viewer { audio, .. } if m.kind == MediaKind::Audio => {
                            let pt = v.rtc.writer(m.mid).and_then(|w| {
                                w.payload_params()
                                    .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                                    .map(|p| p.pt())
                            });
                            *audio = pt.map(|pt| (m.mid, pt));
                        }
                        Role::Publisher(p) if m.kind == MediaKind::Audio => {
                            p.audio = Some(m.mid);
                        }
                        _ => {}
                    },
                    Event::MediaData(d) => {
                        if let Role::Publisher(p) = &mut v.role {
                            p.last_media = Some(now);
                            p.media_seen = true;
                            self.metrics
                                .media_received
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if Some(d.mid) == p.audio {
                                // Opus: one packet per MediaData (str0m's audio reordering
                                // is off; the jitter buffer orders and conceals).
                                let seq = d.seq_range.start().as_u16();
                                let ts = d.time.numer() as u32;
                                p.feed.push(seq, ts, &d.data, now);
                                p.sync.on_audio(d.last_sender_info.as_ref());
                            } else if Some(d.mid) == p.video {
                                let s = self.streams[v.stream].as_mut().expect("live stream slot");
                                let forwarded = forwards(s, key, p, &d, &self.directory);
                                // Every video publisher is followed, so that one taking over
                                // as the source is in sync from its first frame. Each
                                // simulcast layer has its own RTP clock and reports.
                                let slot = p
                                    .video_layers
                                    .iter()
                                    .position(|r| Some(*r) == d.rid)
                                    .unwrap_or(0);
                                let wallclock = p.sync.on_video(
                                    slot,
                                    d.time,
                                    d.last_sender_info.as_ref(),
                                    d.network_time,
                                );
                                if let Some((layer, layers)) = forwarded {
                                    self.video_out.push(VideoFrame {
                                        stream: v.stream,
                                        from: key,
                                        layer,
                                        layers,
                                        keyframe: d.is_keyframe(),
                                        params: d.params,
                                        time: d.time,
                                        network_time: wallclock,
                                        data: d.data,
                                    });
                                }
                                p.video_frames += 1;
                            }
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        end = Some(EndReason::IceFailed);
                    }
                    Event::IceConnectionStateChange(
                        IceConnectionState::Connected | IceConnectionState::Completed,
                    ) => {
                        // After an ICE restart's retirement, up again means str0m sends on
                        // the new pair: direct audio follows it now rather than at str0m's
                        // next DTLS or RTCP packet.
                        if let Some(path) = v.restart.as_ref().and_then(|r| r.new_path()) {
                            v.media_path = Some(path);
                            v.restart = None;
                            tracing::debug!(key, to = %path.1, "ICE restart: media on the new pair");
                        }
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(key, "rtc error: {e}");
                    end = Some(EndReason::Failed);
                    break;
                }
            }
        }
        if end.is_none() && !v.rtc.is_alive() {
            // No error, yet closed: the peer ended DTLS (a player that closes first).
            end = Some(EndReason::PeerClosed);
        }
        match end {
            Some(reason) => {
                self.end(key, reason);
                false
            }
            None => true,
        }
    }

    fn end(&mut self, key: PeerKey, reason: EndReason) {
        let Some(idx) = self.index.remove(&key) else {
            return;
        };
        let v = self.viewers.swap_remove(idx);
        if let Some(moved) = self.viewers.get(idx) {
            self.index.insert(moved.key, idx);
        }
        // Dropping a publisher drops its feed: its input fades out and leaves the mix.
        let s = self.streams[v.stream].as_mut().expect("live stream slot");
        match &v.role {
            Role::Viewer { .. } => self.metrics.viewer_removed(&s.name, reason),
            Role::Publisher(p) => {
                if s.video_source.as_ref().is_some_and(|f| f.key == key) {
                    s.video_source = None;
                    self.directory.set_video(&s.name, None);
                }
                s.publishers = s.publishers.saturating_sub(1);
                self.directory.set_publishers(&s.name, s.publishers);
                self.metrics.publisher_removed(&s.name, reason);
                let st = p.feed.monitor().stats();
                tracing::info!(
                    key,
                    stream = %s.name,
                    reason = reason.as_str(),
                    packets = st.packets,
                    lost = st.lost,
                    fec_recovered = st.fec_recovered,
                    concealed = st.concealed,
                    late = st.late,
                    drift_fixes = st.dropped_for_drift + st.inserted_for_drift,
                    delay_ms = st.target_delay.as_millis() as u64,
                    video_frames = p.video_frames,
                    "publisher left"
                );
            }
        }
        tracing::debug!(key, reason = reason.as_str(), "peer ended");
        self.ended.push(Ended { key, reason });
    }
}

/// Whether publisher `key`'s video frame `d` goes to the viewers of its stream `s`, and
/// then its layer and the number of layers: picks (or changes) the stream's video source
/// by the stream's [`VideoSource`] setting. Each viewer then takes one layer of a
/// simulcast source (see [`Layering`]), under its one video stream. A new source is asked
/// for a keyframe at once.
fn forwards(
    s: &mut StreamMix,
    key: PeerKey,
    p: &Publisher,
    d: &MediaData,
    directory: &StreamDirectory,
) -> Option<(usize, usize)> {
    let take = match (s.video_policy, &s.video_source) {
        (VideoSource::None, _) => return None,
        (_, None) => true,
        // The newest publisher to start sending video takes over.
        (VideoSource::Latest, Some(f)) => f.key != key && p.video_frames == 0,
        (VideoSource::First, Some(_)) => false,
    };
    if take {
        let codec = d.params.spec().codec;
        // Its layers as it listed them, the largest first; with rids but no `a=simulcast`
        // line, the first rid seen alone.
        let layers = if p.video_layers.is_empty() {
            d.rid.into_iter().collect()
        } else {
            p.video_layers.clone()
        };
        tracing::info!(key, stream = %s.name, ?codec, ?layers, policy = %s.video_policy, "video source");
        s.video_source = Some(VideoFeed { key, layers });
        s.keyframe_wanted = true;
        s.last_keyframe_request = None;
        directory.set_video(&s.name, Some(codec));
    }
    let feed = s.video_source.as_ref().filter(|f| f.key == key)?;
    let layer = match feed.layers.as_slice() {
        [] => 0,
        layers => layers.iter().position(|r| Some(*r) == d.rid)?,
    };
    Some((layer, feed.layer_count()))
}

/// Sends `frame` to audio-only viewer `v` without its `Rtc` (the `direct` fan-out, see
/// [`Egress::set_fanout`]), built in `buf`. Returns the datagram's length, or `None` when
/// the viewer is not (yet) served this way: it takes video, its keys or nominated pair are
/// not known, or str0m has no send stream for its audio.
fn send_direct(
    v: &mut Viewer,
    frame: &[u8],
    rtp_time: u32,
    buf: &mut [u8],
    tx: &mut impl Transmitter,
) -> Option<usize> {
    let Role::Viewer {
        audio: Some((mid, pt)),
        video: None,
        ..
    } = &v.role
    else {
        return None;
    };
    let sender = v.srtp_keys.as_ref()?.get()?;
    let (source, destination) = v.media_path?;
    if v.direct.is_none() {
        let ssrc = *v.rtc.direct_api().stream_tx_by_mid(*mid, None)?.ssrc();
        tracing::debug!(key = v.key, ssrc, "audio on the direct path");
        v.direct = Some(DirectAudio {
            ssrc,
            pt: **pt,
            // A random start (RFC 3550 §5.1), low enough that the first packets do not
            // wrap: ROC 0 at the receiver's first guess.
            index: u64::from(rand::random::<u16>() & 0x7fff),
            first: true,
        });
    }
    // Invariant: set just above.
    let d = v.direct.as_mut().expect("direct stream");
    let len = RTP_HEADER_LEN + frame.len();
    if len + crate::net::srtp::TAG_LEN > buf.len() {
        return None;
    }
    write_rtp_header(buf, d.first, d.pt, d.index as u16, rtp_time, d.ssrc);
    buf[RTP_HEADER_LEN..len].copy_from_slice(frame);
    let n = sender.protect(buf, len, RTP_HEADER_LEN, (d.index >> 16) as u32)?;
    d.index += 1;
    d.first = false;
    tx.send(source, destination, &buf[..n]);
    Some(n)
}
