//! The streams that exist right now, as signalling and the TX thread both see them.
//!
//! Configured streams are here from start to shutdown. A WHIP publisher creates a stream
//! that does not exist yet (as MediaMTX does); the TX thread removes such an on-demand
//! stream once it has had no input for a grace period. Signalling reads this directory to
//! answer 404 and to list streams; the TX thread, which owns the mixes, is the authority and
//! keeps it in step. A short lock per session start or end, never per packet.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::change_signal::ChangeSignal;

/// Which publisher's video a stream's viewers get (config: `[streams.X] video = "..."`,
/// flag: `--video X=...`). Only one publisher's video reaches viewers at a time; audio of
/// every publisher is mixed whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoSource {
    /// The first publisher that sends video keeps the stream until it leaves; then the
    /// next one that sends video takes over.
    #[default]
    First,
    /// The newest publisher that sends video takes over at once (with a keyframe request);
    /// when it leaves, the next one that sends video does.
    Latest,
    /// An audio-only stream: no publisher's video is forwarded, and viewers' answers
    /// reject their video m-section (port 0), so players show no video element.
    None,
}

impl VideoSource {
    /// The setting's name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            VideoSource::First => "first",
            VideoSource::Latest => "latest",
            VideoSource::None => "none",
        }
    }
}

impl std::fmt::Display for VideoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VideoSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "first" => Ok(VideoSource::First),
            "latest" => Ok(VideoSource::Latest),
            "none" => Ok(VideoSource::None),
            other => Err(format!(
                "video source {other:?}: expected first, latest or none"
            )),
        }
    }
}

/// What the directory knows of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// From the configuration (never removed), rather than created by a publisher.
    pub configured: bool,
    /// The configured sources, as text.
    pub sources: Vec<String>,
    /// WHIP publishers feeding the mix now.
    pub publishers: usize,
    /// The codec of the stream's video, while a publisher sends video.
    pub video: Option<str0m::format::Codec>,
    /// How the stream picks its video publisher.
    pub video_source: VideoSource,
}

/// The live streams, by name.
#[derive(Debug, Default)]
pub struct StreamDirectory {
    inner: Mutex<BTreeMap<String, StreamState>>,
    /// Most on-demand streams at once (`--max-streams`; None: no cap).
    max_on_demand: Option<usize>,
    /// Bumped when a stream comes or goes or its publishers or video change.
    changes: ChangeSignal,
}

/// [`StreamDirectory::create_on_demand`] refused: this many on-demand streams exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsFull {
    /// The cap.
    pub max: usize,
}

impl StreamDirectory {
    /// A directory holding the configured streams and their sources.
    pub fn new(configured: impl IntoIterator<Item = (String, Vec<String>)>) -> StreamDirectory {
        let map = configured
            .into_iter()
            .map(|(name, sources)| {
                (
                    name,
                    StreamState {
                        configured: true,
                        sources,
                        publishers: 0,
                        video: None,
                        video_source: VideoSource::default(),
                    },
                )
            })
            .collect();
        StreamDirectory {
            inner: Mutex::new(map),
            max_on_demand: None,
            changes: ChangeSignal::default(),
        }
    }

    /// At most `max` streams created on demand at once (configured ones do not count).
    pub fn with_max_on_demand(mut self, max: usize) -> StreamDirectory {
        self.max_on_demand = Some(max);
        self
    }

    /// Creates `name` as an on-demand stream unless it exists, within the cap: `Ok(true)`
    /// if it was created, `Ok(false)` if it existed, `Err` when it would be one too many.
    /// Check and insert under one lock, so concurrent POSTs cannot overshoot.
    pub fn create_on_demand(&self, name: &str) -> Result<bool, StreamsFull> {
        let mut map = self.lock();
        if map.contains_key(name) {
            return Ok(false);
        }
        if let Some(max) = self.max_on_demand {
            if map.values().filter(|s| !s.configured).count() >= max {
                return Err(StreamsFull { max });
            }
        }
        map.insert(name.to_string(), StreamState::default());
        drop(map);
        self.changes.bump();
        Ok(true)
    }

    /// Whether creating `name` now would be refused (the stream does not exist and the cap
    /// is reached): a cheap early answer before negotiating.
    pub fn would_refuse(&self, name: &str) -> Option<StreamsFull> {
        let max = self.max_on_demand?;
        let map = self.lock();
        let full = !map.contains_key(name) && map.values().filter(|s| !s.configured).count() >= max;
        full.then_some(StreamsFull { max })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StreamState>> {
        // A poisoned lock only means a thread panicked between two plain field updates.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how configured stream `name` picks its video publisher.
    pub fn set_video_source(&self, name: &str, source: VideoSource) {
        if let Some(s) = self.lock().get_mut(name) {
            s.video_source = source;
        }
    }

    /// Resolves after the next change to the directory.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The state of `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<StreamState> {
        self.lock().get(name).cloned()
    }

    /// Creates `name` as an on-demand stream unless it exists, whatever the cap (the TX
    /// thread, for a publisher signalling let in). True if it was created.
    pub fn ensure(&self, name: &str) -> bool {
        let mut map = self.lock();
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.to_string(), StreamState::default());
        drop(map);
        self.changes.bump();
        true
    }

    /// Removes an on-demand stream (configured ones stay). True if it was removed.
    pub fn remove(&self, name: &str) -> bool {
        let mut map = self.lock();
        let removed = match map.get(name) {
            Some(s) if !s.configured => map.remove(name).is_some(),
            _ => false,
        };
        drop(map);
        if removed {
            self.changes.bump();
        }
        removed
    }

    /// Records how many publishers feed `name`.
    pub fn set_publishers(&self, name: &str, publishers: usize) {
        let changed = self
            .lock()
            .get_mut(name)
            .is_some_and(|s| std::mem::replace(&mut s.publishers, publishers) != publishers);
        if changed {
            self.changes.bump();
        }
    }

    /// Records the codec of `name`'s video (`None`: no video now).
    pub fn set_video(&self, name: &str, video: Option<str0m::format::Codec>) {
        let changed = self
            .lock()
            .get_mut(name)
            .is_some_and(|s| std::mem::replace(&mut s.video, video) != video);
        if changed {
            self.changes.bump();
        }
    }

    /// Every stream, sorted by name.
    pub fn list(&self) -> Vec<(String, StreamState)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of streams.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when there is no stream at all.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_streams_stay_on_demand_ones_go() {
        let d = StreamDirectory::new([("live".to_string(), vec!["tone".to_string()])]);
        assert!(d.contains("live"));
        assert!(!d.remove("live"), "a configured stream is never removed");
        assert!(d.ensure("mic"));
        assert!(
            !d.ensure("mic"),
            "ensure on an existing stream creates nothing"
        );
        d.set_publishers("mic", 2);
        assert_eq!(d.get("mic").map(|s| s.publishers), Some(2));
        assert_eq!(d.len(), 2);
        assert!(d.remove("mic"));
        assert!(!d.contains("mic"));
        assert_eq!(d.list().len(), 1);
    }

    #[test]
    fn on_demand_streams_are_capped() {
        let d = StreamDirectory::new([("live".to_string(), vec![])]).with_max_on_demand(2);
        assert_eq!(d.create_on_demand("a"), Ok(true));
        assert_eq!(d.create_on_demand("a"), Ok(false));
        assert_eq!(d.would_refuse("b"), None);
        assert_eq!(d.create_on_demand("b"), Ok(true));
        assert_eq!(d.would_refuse("c"), Some(StreamsFull { max: 2 }));
        assert_eq!(d.create_on_demand("c"), Err(StreamsFull { max: 2 }));
        assert_eq!(
            d.would_refuse("a"),
            None,
            "an existing stream takes publishers"
        );
        assert_eq!(d.would_refuse("live"), None);
        assert!(d.remove("a"));
        assert_eq!(d.create_on_demand("c"), Ok(true));
    }
}
