//! The peers of one TX thread (viewers and publishers) and the streams they use: sans-IO.
//!
//! Owns every peer's `Rtc` and drives it by the single-mutation rule (each mutation is
//! followed by a drain of `poll_output` to `Timeout`). A publisher's audio goes, packet by
//! packet as str0m hands it over, into its [`crate::media::publisher::PublisherFeed`],
//! whose input sits in the stream's mixer. Each [`Egress::tick`] mixes and encodes every
//! stream once and writes that one packet to each connected viewer. Streams that
//! publishers created are removed after [`STREAM_GRACE`] without inputs (sooner when
//! nobody watches them either). Never reads the
//! clock, never blocks, never touches a socket.
//!
//! This file holds the owner type and the calls the TX thread makes into it (input,
//! timers, trickle, ICE restart); each concern has its own file below it:
//! - `stream`: [`StreamMix`], the frames mirrored to other TX threads, stream expiry;
//! - `viewer`: the peer type, adding and removing viewers, the tick's fan-out;
//! - `direct`: our own RTP and SRTP for audio-only viewers (the `direct` fan-out);
//! - `publisher`: [`PublisherOptions`], adding publishers, consent by media;
//! - `video`: the video source, forwarding, keyframe requests;
//! - `layering`: each viewer's simulcast layer;
//! - `drive`: draining an `Rtc` after each mutation, ending a peer;
//! - `goodbye`: RTCP BYE and DTLS close_notify to a peer that is ended (DELETE, shutdown).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::net::Protocol;
use str0m::{Candidate, IceCreds, Input};

use super::{EndReason, PeerKey, Transmitter};
use crate::metrics::Metrics;
use crate::net::stun;
use crate::streams::StreamDirectory;

mod direct;
mod drive;
mod goodbye;
mod layering;
mod publisher;
mod stream;
mod video;
mod viewer;

pub use goodbye::Goodbyes;
pub use layering::{LAYER_CLEAN_LOSS, LAYER_DOWN_AFTER, LAYER_DOWN_LOSS, LAYER_UP_AFTER};
pub use publisher::{PublisherOptions, MEDIA_TIMEOUT};
pub use stream::{
    StreamFrame, StreamMix, TickFrames, MIRROR_GRACE, STREAM_GRACE, UNWATCHED_STREAM_GRACE,
};
pub use video::KEYFRAME_REQUEST_INTERVAL;
pub use viewer::{CONNECT_TIMEOUT, SILENT_PEER_TIMEOUT};

use video::VideoFrame;
use viewer::{Role, Viewer};

/// A peer (viewer or publisher) that has ended, reported by [`Egress::take_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The session.
    pub key: PeerKey,
    /// Why.
    pub reason: EndReason,
    /// What it sent or received, for its last log line.
    pub tally: Tally,
}

/// One stream's media in one tick: audio packets and payload bytes sent to its viewers,
/// payload bytes received from its publishers.
#[derive(Debug, Clone, Copy, Default)]
struct SentCount {
    packets: u64,
    bytes: u64,
    received: u64,
}

impl SentCount {
    fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// A session's media in its last log line: a viewer's packets sent to it and the loss it
/// reported (RTCP receiver reports), a publisher's packets received and those its jitter
/// buffer found missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Audio RTP packets sent (viewer) or received (publisher).
    pub packets: u64,
    /// Of those, lost: as the viewer last reported it (`None`: it sent no report yet), or as
    /// the publisher's jitter buffer counted.
    pub lost: Option<u64>,
}

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
    /// This tick's audio sent per stream slot, added to the metrics once per tick.
    tick_sent: Vec<SentCount>,
    /// Peers that connected since the last [`Egress::take_connected`].
    connected: Vec<PeerKey>,
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
    /// Where recorded streams' packets go (see [`Egress::set_recorder`]).
    recorder: Option<crate::record::Recorder>,
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
            tick_sent: Vec::new(),
            connected: Vec::new(),
            directory,
            bitrate,
            stun_scratch: vec![0; crate::net::MAX_DATAGRAM + stun::PRIORITY_GROWTH],
            video_out: Vec::new(),
            metrics,
            release_in_tick: true,
            direct: true,
            direct_buf: vec![0; crate::net::MAX_DATAGRAM],
            mirror: false,
            recorder: None,
        }
    }

    /// Records the streams `recorder` is for: those that exist now, and those that appear
    /// later (each appearance a recording of its own). Only on the mixing thread (a
    /// mirror's streams are the mixing thread's).
    pub fn set_recorder(&mut self, mut recorder: crate::record::Recorder) {
        if self.mirror {
            return;
        }
        for s in self.streams.iter_mut().flatten() {
            s.recording = recorder.begin(&s.name);
        }
        self.recorder = Some(recorder);
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
        self.viewers[idx].last_heard = now;
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

    /// Peers that ended since the last call.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Peers that connected (ICE and DTLS) since the last call: signalling stops counting
    /// them as pending. Bounded by the peers added in between; an embedder that never
    /// calls it keeps one key per connection.
    pub fn take_connected(&mut self) -> Vec<PeerKey> {
        std::mem::take(&mut self.connected)
    }
}
