//! Publishers: their session options, what the engine keeps per publisher, adding one to
//! a stream's mix, and consent by media for ICE-lite publishers (FFmpeg).

use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use str0m::media::Mid;
use str0m::media::Pt;
use str0m::media::Rid;
use str0m::Rtc;

use super::viewer::Role;
use super::viewer::Viewer;
use super::Egress;
use super::Ended;
use crate::engine::sync::AvSync;
use crate::engine::EndReason;
use crate::engine::PeerKey;
use crate::engine::Transmitter;
use crate::media::mixer::InputId;
use crate::media::publisher::publisher_channel;
use crate::media::publisher::PublisherFeed;

/// A connected publisher that sends no media (audio or video) for this long is ended.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(10);

/// An ICE-lite publisher whose own STUN checks stopped this long ago, while its media keeps
/// arriving, gets its last check replayed to str0m (see [`Egress::handle_receive`]).
pub(super) const CONSENT_BY_MEDIA_AFTER: Duration = Duration::from_secs(4);

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
pub(super) struct Publisher {
    pub(super) feed: PublisherFeed,
    /// Its input in the stream's mix.
    pub(super) input: InputId,
    /// Its audio m-line and our Opus PT when its audio is `sendrecv` (two-way): it is sent
    /// its mix-minus on that m-line.
    pub(super) talkback: Option<(Mid, Pt)>,
    /// The audio and video m-lines, once str0m reports them.
    pub(super) audio: Option<Mid>,
    pub(super) video: Option<Mid>,
    /// The simulcast layers (rids) of its video, in the order of its `a=simulcast` line:
    /// the sender's order of preference (RFC 8853), the full-size layer first for OBS
    /// (rid "0") and for browsers that list their largest encoding first. Empty without
    /// simulcast.
    pub(super) video_layers: Vec<Rid>,
    /// Our ICE password, to give FFmpeg's checks the PRIORITY str0m requires.
    pub(super) local_pwd: String,
    pub(super) ice_lite: bool,
    /// When the peer last sent a STUN Binding request, and that request (already mended),
    /// from where, to where.
    pub(super) last_check: Option<(Instant, Vec<u8>, SocketAddr, SocketAddr)>,
    /// When media (audio or video) last arrived, and when the session connected.
    pub(super) last_media: Option<Instant>,
    pub(super) connected_at: Option<Instant>,
    /// Media arrived since the last replay decision.
    pub(super) media_seen: bool,
    pub(super) video_frames: u64,
    /// Maps its audio and video onto our clock for lip-sync.
    pub(super) sync: AvSync,
}

impl Egress {
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
                    tally: Default::default(),
                });
                return;
            }
        };
        let Some(sidx) = self.ensure_stream(stream) else {
            self.ended.push(Ended {
                key,
                reason: EndReason::Failed,
                tally: Default::default(),
            });
            return;
        };
        let local_pwd = rtc.direct_api().local_ice_credentials().pass;
        let s = self.stream_mut(sidx);
        let input = s.mixer.add(
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
                input,
                talkback: None,
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
            last_heard: now,
            sent_packets: 0,
            reported_lost: None,
            minus: None,
        });
        self.index.insert(key, idx);
        self.drain(idx, now, tx);
    }

    /// Viewer `viewer` (just added, on this mixing thread) hears the mix minus publisher
    /// `publisher` (a WHEP session that named its WHIP session, `?minus=`). False, and the
    /// viewer is ended, when that publisher is not here or not of the viewer's stream
    /// (it left between the check at the POST and now).
    pub fn hear_minus(&mut self, viewer: PeerKey, publisher: PeerKey) -> bool {
        let (Some(&vi), found) = (self.index.get(&viewer), self.index.get(&publisher)) else {
            return false;
        };
        let input = found.and_then(|&pi| match &self.viewers[pi].role {
            Role::Publisher(p) if self.viewers[pi].stream == self.viewers[vi].stream => {
                Some(p.input)
            }
            _ => None,
        });
        let Some(input) = input else {
            tracing::info!(
                key = viewer,
                publisher,
                "viewer's ?minus= publisher is gone: ended"
            );
            self.end(viewer, EndReason::Failed);
            return false;
        };
        if self.listen_minus(vi, input) {
            tracing::debug!(
                key = viewer,
                publisher,
                "viewer hears the mix minus its publisher"
            );
            true
        } else {
            self.end(viewer, EndReason::Failed);
            false
        }
    }

    /// Peer `idx` hears `input`'s mix-minus from now on. False when its encoder could not
    /// be made.
    pub(super) fn listen_minus(&mut self, idx: usize, input: InputId) -> bool {
        let v = &mut self.viewers[idx];
        let Some(s) = self.streams[v.stream].as_mut() else {
            return false;
        };
        match s.talkers.add(&mut s.mixer, input) {
            Ok(()) => {
                v.minus = Some(input);
                true
            }
            Err(e) => {
                tracing::warn!(key = v.key, "mix-minus encoder: {e}");
                false
            }
        }
    }

    /// See [`Egress::handle_receive`]: consent by media for ICE-lite publishers.
    pub(super) fn replay_check_if_due(
        &mut self,
        idx: usize,
        now: Instant,
        tx: &mut impl Transmitter,
    ) {
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
}
