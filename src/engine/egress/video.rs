//! Video: picking a stream's video publisher, forwarding its frames to the viewers that
//! take video (each on its simulcast layer), and coalesced keyframe requests.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::KeyframeRequestKind;
use str0m::media::MediaData;
use str0m::media::MediaTime;
use str0m::media::Rid;

use super::publisher::Publisher;
use super::stream::StreamMix;
use super::viewer::Role;
use super::Egress;
use crate::engine::EndReason;
use crate::engine::PeerKey;
use crate::engine::Transmitter;
use crate::streams::StreamDirectory;
use crate::streams::VideoSource;

/// At most one keyframe request (PLI) to a stream's video publisher per this interval,
/// however many viewers join or report loss: a crowd joining sends a handful, not
/// thousands.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// The video a stream's viewers get: one publisher, and of a simulcast publisher its
/// layers, largest first (each viewer takes one of them, see [`Layering`]).
#[derive(Debug, Clone)]
pub(super) struct VideoFeed {
    pub(super) key: PeerKey,
    /// The simulcast layers, in the publisher's order (empty: one stream without rid).
    pub(super) layers: Vec<Rid>,
}

impl VideoFeed {
    /// How many layers viewers can choose from (1 without simulcast).
    pub(super) fn layer_count(&self) -> usize {
        self.layers.len().max(1)
    }
}

/// A publisher's video frame on its way to the stream's viewers.
pub(super) struct VideoFrame {
    pub(super) stream: usize,
    pub(super) from: PeerKey,
    /// Its simulcast layer (0: the largest, or the only one), of how many, and whether it
    /// is a keyframe.
    pub(super) layer: usize,
    pub(super) layers: usize,
    pub(super) keyframe: bool,
    pub(super) params: PayloadParams,
    pub(super) time: MediaTime,
    pub(super) network_time: Instant,
    pub(super) data: Arc<[u8]>,
}

impl Egress {
    /// Sends the video frames publishers delivered to every viewer of their stream that
    /// takes video, as they arrive (not on the audio tick), without re-encoding: str0m
    /// repacketizes each frame under the viewer's payload type for the same codec and
    /// parameters. Frames from a publisher other than the stream's video source are dropped.
    pub(super) fn forward_video(&mut self, now: Instant, tx: &mut impl Transmitter) {
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
    pub(super) fn request_keyframes(&mut self, now: Instant, tx: &mut impl Transmitter) {
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
}

/// Whether publisher `key`'s video frame `d` goes to the viewers of its stream `s`, and
/// then its layer and the number of layers: picks (or changes) the stream's video source
/// by the stream's [`VideoSource`] setting. Each viewer then takes one layer of a
/// simulcast source (see [`Layering`]), under its one video stream. A new source is asked
/// for a keyframe at once.
pub(super) fn forwards(
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
