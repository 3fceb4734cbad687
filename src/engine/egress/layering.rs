//! Simulcast layer choice per viewer, from the loss its receiver reports show.

use std::time::Duration;
use std::time::Instant;

use super::stream::StreamMix;
use super::video::VideoFrame;
use crate::engine::PeerKey;

/// A viewer whose receiver reports show at least this fraction of its packets lost, for
/// [`LAYER_DOWN_AFTER`] stats intervals in a row, moves to the next smaller simulcast
/// layer (str0m reports the loss every [`crate::engine::offer::VIEWER_STATS_INTERVAL`]).
pub const LAYER_DOWN_LOSS: f32 = 0.10;
/// Stats intervals in a row with [`LAYER_DOWN_LOSS`] before a viewer moves down.
pub const LAYER_DOWN_AFTER: u32 = 2;
/// A viewer on a smaller layer whose loss stays under [`LAYER_CLEAN_LOSS`] this long tries
/// the next larger layer again.
pub const LAYER_UP_AFTER: Duration = Duration::from_secs(10);
/// Loss below this counts as clean.
pub const LAYER_CLEAN_LOSS: f32 = 0.02;

/// Which simulcast layer a viewer takes (0: the largest), moved by the loss its receiver
/// reports show: down a layer after [`LAYER_DOWN_AFTER`] lossy intervals, up again after
/// [`LAYER_UP_AFTER`] clean. A move waits for a keyframe of the new layer, so the viewer's
/// decoder never gets a layer's delta frames without their keyframe.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Layering {
    pub(super) layer: usize,
    /// The layer it moves to at that layer's next keyframe.
    pub(super) want: Option<usize>,
    pub(super) lossy: u32,
    pub(super) clean_since: Option<Instant>,
}

impl Layering {
    /// The layer taken of `layers` (fewer layers than it was on: the smallest).
    pub(super) fn current(&self, layers: usize) -> usize {
        self.layer.min(layers.saturating_sub(1))
    }

    /// Whether to forward `f`; switches to the wanted layer at its keyframe.
    pub(super) fn takes(&mut self, f: &VideoFrame) -> bool {
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
    pub(super) fn on_loss(&mut self, loss: f32, now: Instant, layers: usize) -> bool {
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
    pub(super) fn keyframe_mask(&self, layers: usize) -> u32 {
        let mut mask = 1 << self.current(layers);
        if let Some(w) = self.want.filter(|&w| w < layers) {
            mask |= 1 << w;
        }
        mask
    }
}

impl StreamMix {
    /// A viewer's video loss over the last stats interval: may move it to another layer
    /// (asking the source for that layer's keyframe).
    pub(super) fn on_viewer_loss(
        &mut self,
        key: PeerKey,
        layering: &mut Layering,
        loss: f32,
        now: Instant,
    ) {
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
}
