//! The peers of an [`Egress`] ([`Viewer`], a viewer or a publisher by its [`Role`]): adding
//! and removing viewers, and the fan-out of each tick's frame to them.

use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use str0m::media::Frequency;
use str0m::media::MediaTime;
use str0m::media::Mid;
use str0m::media::Pt;
use str0m::Input;
use str0m::Rtc;

use super::direct::send_direct;
use super::direct::DirectAudio;
use super::layering::Layering;
use super::publisher::Publisher;
use super::publisher::MEDIA_TIMEOUT;
use super::Egress;
use super::Ended;
use crate::engine::EndReason;
use crate::engine::PeerKey;
use crate::engine::Transmitter;
use crate::media::mixer::InputId;
use crate::media::FRAME_SAMPLES;
use crate::net::dtls::SrtpKeys;

/// A peer that has not connected (ICE and DTLS) this long after its answer is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A connected viewer from which nothing at all has arrived for this long is ended: its
/// consent is lost. A live viewer answers our consent checks, which str0m sends at most
/// 3 s apart (its largest STUN retransmit interval), and sends its own (RFC 7675: every
/// 4 to 6 s) and its receiver reports (every second from browsers and our client), so
/// 5 s of silence means our checks went unanswered for at least 2 s and the peer sent none
/// of its own. RFC 7675 lets consent last 30 s; str0m alone took about 23 s to give up on a
/// killed viewer (15 s after the peer's last check, then its own retransmits), holding a
/// viewer slot and sending to a dead port meanwhile. The price: a viewer whose path is
/// cut for 5 s is dropped rather than resumed.
pub const SILENT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) enum Role {
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

pub(super) struct Viewer {
    pub(super) key: PeerKey,
    pub(super) rtc: Rtc,
    pub(super) stream: usize,
    pub(super) role: Role,
    pub(super) connected: bool,
    /// When the viewer was added, to give up on one that never connects.
    pub(super) added: Instant,
    /// The timeout str0m last asked for, while it has an entry in `timers`.
    pub(super) next_timeout: Option<Instant>,
    /// Our SRTP sending keys, once its DTLS handshake has exported them (viewers only).
    pub(super) srtp_keys: Option<SrtpKeys>,
    /// Where str0m sends its DTLS and RTCP: the nominated ICE pair (source, destination).
    pub(super) media_path: Option<(SocketAddr, SocketAddr)>,
    /// Its audio stream when sent by the `direct` fan-out.
    pub(super) direct: Option<DirectAudio>,
    /// An ICE restart moving its media to the peer's new ICE generation.
    pub(super) restart: Option<crate::engine::restart::Restart>,
    /// When a datagram from the peer last arrived (any kind: STUN, DTLS, RTP, RTCP), to
    /// free a connected viewer's slot once it has gone silent ([`SILENT_PEER_TIMEOUT`]).
    pub(super) last_heard: Instant,
    /// Audio packets sent to a viewer, and their payload bytes.
    pub(super) sent_packets: u64,
    /// The cumulative loss a viewer's last receiver report gave for its audio.
    pub(super) reported_lost: Option<u64>,
    /// The mix input whose mix-minus it hears: a two-way publisher's own input, or the
    /// publisher a WHEP session named (`?minus=`). `None`: the shared mix.
    pub(super) minus: Option<InputId>,
}

impl Egress {
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
                tally: Default::default(),
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
            last_heard: now,
            sent_packets: 0,
            reported_lost: None,
            minus: None,
        });
        self.index.insert(key, idx);
        self.metrics.viewer_added(&self.stream(stream).name);
        self.drain(idx, now, tx);
    }

    /// Ends a viewer or publisher by request (DELETE), with a goodbye (RTCP BYE, DTLS
    /// close_notify): the session is over either way.
    pub fn remove_viewer(&mut self, key: PeerKey, tx: &mut impl Transmitter) {
        if self.index.contains_key(&key) {
            self.say_goodbye(key, tx);
            self.end(key, EndReason::Closed);
        }
    }

    /// One 20 ms tick: mix and encode each stream once, then write that packet to every
    /// connected viewer of the stream; end peers that never connected and publishers that
    /// stopped sending; remove on-demand streams left without inputs.
    pub fn tick(&mut self, now: Instant, tx: &mut impl Transmitter) {
        self.encode(now);
        self.fan_out(now, tx);
    }

    /// The second half of [`Egress::tick`]: sends this tick's frame to every connected
    /// viewer, ends peers that never connected and publishers that stopped sending, removes
    /// streams that ended.
    pub fn fan_out(&mut self, now: Instant, tx: &mut impl Transmitter) {
        self.tick_sent
            .resize(self.streams.len(), Default::default());
        let mut idx = 0;
        while idx < self.viewers.len() {
            let v = &mut self.viewers[idx];
            if !v.connected && now.saturating_duration_since(v.added) > CONNECT_TIMEOUT {
                let key = v.key;
                tracing::debug!(key, "peer did not connect in {CONNECT_TIMEOUT:?}");
                self.end(key, EndReason::IceFailed);
                continue;
            }
            let silent = now.saturating_duration_since(v.last_heard);
            if v.connected && matches!(v.role, Role::Viewer { .. }) && silent > SILENT_PEER_TIMEOUT
            {
                let key = v.key;
                let stream = &self.streams[v.stream]
                    .as_ref()
                    .expect("live stream slot")
                    .name;
                tracing::info!(
                    key,
                    stream = %stream,
                    peer = ?v.media_path.map(|p| p.1),
                    silent_ms = silent.as_millis() as u64,
                    "viewer sent nothing for {SILENT_PEER_TIMEOUT:?} (consent lost): ended"
                );
                self.end(key, EndReason::IceFailed);
                continue;
            }
            let s = self.streams[v.stream].as_ref().expect("live stream slot");
            // A talker's mix-minus while it is audible, the shared frame otherwise: either
            // way one packet on the peer's one send stream (see `media::mix_minus`).
            let frame = s.frame_for(v.minus);
            if let (true, true, Some(frame)) = (self.direct, v.connected, frame) {
                let rtp_time = s.media_time as u32; // RTP timestamps wrap (RFC 3550)
                if let Some(n) = send_direct(v, frame, rtp_time, &mut self.direct_buf, tx) {
                    self.metrics.transmit(n);
                    v.sent_packets += 1;
                    self.tick_sent[v.stream].add(frame.len());
                    idx += 1;
                    continue;
                }
            }
            let talkback = match &v.role {
                Role::Viewer { audio, .. } => *audio,
                Role::Publisher(p) => p.talkback,
            };
            if let Role::Publisher(p) = &v.role {
                if let Some(since) = p.last_media.or(p.connected_at) {
                    if now.saturating_duration_since(since) > MEDIA_TIMEOUT {
                        let key = v.key;
                        tracing::info!(key, "publisher sent no media for {MEDIA_TIMEOUT:?}");
                        self.end(key, EndReason::Idle);
                        continue;
                    }
                }
            }
            if let (true, Some((mid, pt)), Some(frame)) = (v.connected, talkback, frame) {
                let rtp_time = MediaTime::new(s.media_time, Frequency::FORTY_EIGHT_KHZ);
                let written = match v.rtc.writer(mid) {
                    Some(w) => w.write(pt, s.wallclock.unwrap_or(now), rtp_time, frame.clone()),
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
                v.sent_packets += 1;
                self.tick_sent[v.stream].add(frame.len());
                if !self.drain(idx, now, tx) {
                    continue;
                }
            }
            idx += 1;
        }
        for s in self.streams.iter_mut().flatten() {
            s.media_time += FRAME_SAMPLES as u64;
        }
        // Per-stream counts once per tick, not per packet.
        for (slot, sent) in self.tick_sent.iter_mut().enumerate() {
            if sent.packets > 0 || sent.received > 0 {
                if let Some(s) = self.streams.get(slot).and_then(|s| s.as_ref()) {
                    if sent.packets > 0 {
                        self.metrics.stream_sent(&s.name, sent.packets, sent.bytes);
                    }
                    if sent.received > 0 {
                        self.metrics.stream_received(&s.name, sent.received);
                    }
                }
                *sent = Default::default();
            }
        }
        self.request_keyframes(now, tx);
        self.forward_video(now, tx);
        self.expire_streams(now);
    }
}
