//! Recording streams to disk: a recorded stream's mix as Ogg Opus, the very packets its
//! viewers get (never encoded a second time), rotated into segments by time, and its
//! video source's frames alongside, as they arrived (VP8 and VP9 in IVF, H264 and H265
//! as Annex B; other codecs are not recorded).
//!
//! Two halves, so that a slow disk never touches the mix:
//! - [`Recorder`], owned by the mixing TX thread: each tick it hands every recorded
//!   stream's packet (a reference count, no copy, no allocation) to a bounded queue of
//!   [`QUEUE_CAPACITY`] messages. It never blocks: when the queue is full the packet is
//!   dropped, counted in `mixcast_recording_dropped_total` and logged (throttled).
//! - the writer thread (`writer`), which owns the files: Ogg pages (`ogg_opus`), file
//!   names and rotation, the listing `GET /api/recordings` shows ([`Recordings`]), and the
//!   INFO lines when a recording starts and ends.
//!
//! What is recorded and where: [`RecordConfig`].

mod index;
mod ogg_opus;
mod utc;
mod video;
mod writer;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::log_throttle::{more_text, Throttle};
use crate::metrics::Metrics;

pub use index::{Recording, Recordings};
pub use ogg_opus::{OggOpusWriter, PAGE_PACKETS};
pub use utc::UtcTime;
pub use video::{VideoCodec, VideoFile};

/// Where recordings go when no `--record-dir` / `record_dir` is given (in the working
/// directory; created when a recording starts).
pub const DEFAULT_RECORD_DIR: &str = "recordings";

/// A recording is cut into a new file after this much of the stream (one file an hour).
pub const DEFAULT_SEGMENT: Duration = Duration::from_secs(3600);

/// Longest segment `record_segment_seconds` takes (a day).
pub const MAX_SEGMENT_SECONDS: u64 = 86_400;

/// Messages the writer thread may have waiting: 4,096 are 82 s of one stream's audio, so
/// the disk may stall that long before a packet is lost.
pub const QUEUE_CAPACITY: usize = 4096;

/// What is recorded, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    /// The folder the files go to.
    pub dir: PathBuf,
    /// The streams recorded, by name: each whenever it exists (a configured one from
    /// start-up, one a publisher creates from then on), a new file each time it appears.
    pub streams: BTreeSet<String>,
    /// A new file after this much of the stream.
    pub segment: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            dir: PathBuf::from(DEFAULT_RECORD_DIR),
            streams: BTreeSet::new(),
            segment: DEFAULT_SEGMENT,
        }
    }
}

impl RecordConfig {
    /// Whether any stream is recorded.
    pub fn any(&self) -> bool {
        !self.streams.is_empty()
    }
}

/// Whether recordings can be written to `dir`: it exists (or can be made: its nearest
/// existing ancestor is a folder) and a file can be created in that folder. Creates
/// nothing that it does not remove again. One line saying what is wrong otherwise.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let mut probe_in = dir;
    loop {
        match std::fs::metadata(probe_in) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(format!(
                    "recording folder {}: cannot be made, {} is not a folder",
                    dir.display(),
                    probe_in.display()
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match probe_in.parent() {
                    Some(p) if !p.as_os_str().is_empty() => probe_in = p,
                    _ => {
                        probe_in = Path::new(".");
                        break;
                    }
                }
            }
            Err(e) => return Err(format!("recording folder {}: {e}", dir.display())),
        }
    }
    let probe = probe_in.join(format!(".mixcast-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "recording folder {}: cannot write in {}: {e}",
            dir.display(),
            probe_in.display()
        )),
    }
}

/// Makes `dir` (and its parents) and checks a file can be written there: what start-up
/// does before it records anything.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    // First what --check-config says, so that both say the same.
    check_dir(dir)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("recording folder {}: cannot create it: {e}", dir.display()))?;
    check_dir(dir)
}

/// What the mixing TX thread sends the writer thread.
#[derive(Debug)]
pub(crate) enum Message {
    /// One tick's packet of a recorded stream.
    Audio {
        /// This appearance of the stream (a stream removed and created again gets a new
        /// id, and a new file).
        id: u64,
        /// Its name.
        stream: Arc<str>,
        /// The packet viewers got (None: the encoder failed this tick; the file gets a
        /// packet the decoder conceals, so the timeline stays whole).
        packet: Option<Arc<[u8]>>,
        /// Its RTP time (48 kHz): a gap means the queue dropped packets.
        media_time: u64,
        /// The encoder's delay in samples, for the file's pre-skip.
        pre_skip: u16,
    },
    /// A frame of the stream's video source (its largest simulcast layer).
    Video {
        /// As in `Audio`.
        id: u64,
        /// Its codec.
        codec: VideoCodec,
        /// Whether a decoder can start at it.
        keyframe: bool,
        /// Its RTP time, 90 kHz.
        time: u64,
        /// The frame as str0m depacketized it.
        data: Arc<[u8]>,
    },
    /// The stream is gone: close its files.
    End {
        /// As in `Audio`.
        id: u64,
    },
}

/// The mixing TX thread's side of recording (see the module doc). Never blocks.
pub struct Recorder {
    streams: BTreeSet<String>,
    queue: Sender<Message>,
    next_id: u64,
    metrics: Arc<Metrics>,
    full: Throttle,
    unsupported: Throttle,
}

impl Recorder {
    /// Starts the writer thread for `config`; the recorder hands it packets. The thread
    /// ends (closing every file) once the recorder is dropped.
    pub fn start(
        config: &RecordConfig,
        metrics: Arc<Metrics>,
        recordings: Arc<Recordings>,
    ) -> std::io::Result<(Recorder, std::thread::JoinHandle<()>)> {
        let (queue, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let join = writer::spawn(rx, config.clone(), recordings)?;
        Ok((
            Recorder {
                streams: config.streams.clone(),
                queue,
                next_id: 1,
                metrics,
                full: Throttle::default(),
                unsupported: Throttle::default(),
            },
            join,
        ))
    }

    /// A new recording id when stream `name` is recorded (it has just appeared).
    pub fn begin(&mut self, name: &str) -> Option<u64> {
        if !self.streams.contains(name) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    /// This tick's `packet` of recording `id` (stream `stream`), at RTP time `media_time`.
    pub fn audio(
        &mut self,
        id: u64,
        stream: &Arc<str>,
        packet: Option<&Arc<[u8]>>,
        media_time: u64,
        pre_skip: u32,
    ) {
        self.send(Message::Audio {
            id,
            stream: stream.clone(),
            packet: packet.cloned(),
            media_time,
            pre_skip: pre_skip.min(u32::from(u16::MAX)) as u16,
        });
    }

    /// A frame of recording `id`'s video source, in str0m's `codec`, at RTP time `time`
    /// (90 kHz). Codecs a file cannot hold ([`VideoCodec`]) are left out (logged).
    pub fn video(
        &mut self,
        id: u64,
        stream: &str,
        codec: str0m::format::Codec,
        keyframe: bool,
        time: str0m::media::MediaTime,
        data: &Arc<[u8]>,
    ) {
        let Some(video) = VideoCodec::from_str0m(codec) else {
            if let Some(left_out) = self.unsupported.tick() {
                tracing::warn!(
                    "recording stream {stream:?}: its video ({codec:?}) is not recorded (VP8, VP9, H264 and H265 are){}",
                    more_text(left_out)
                );
            }
            return;
        };
        self.send(Message::Video {
            id,
            codec: video,
            keyframe,
            time: time.rebase(str0m::media::Frequency::NINETY_KHZ).numer(),
            data: data.clone(),
        });
    }

    /// Recording `id`'s stream is gone.
    pub fn end(&mut self, id: u64) {
        self.send(Message::End { id });
    }

    fn send(&mut self, msg: Message) {
        let why = match self.queue.try_send(msg) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "the disk is falling behind",
            Err(TrySendError::Disconnected(_)) => "the recording writer has stopped",
        };
        self.metrics
            .recording_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(left_out) = self.full.tick() {
            tracing::warn!(
                "recording: a packet was dropped, {why} (queue of {QUEUE_CAPACITY}; counted in mixcast_recording_dropped_total){}",
                more_text(left_out)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_full_queue_drops_and_counts_and_never_blocks() {
        let metrics = Arc::new(Metrics::default());
        // A writer that never reads: the disk has stalled.
        let (queue, stalled) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let mut r = Recorder {
            streams: ["live".to_string()].into(),
            queue,
            next_id: 1,
            metrics: metrics.clone(),
            full: Throttle::default(),
            unsupported: Throttle::default(),
        };
        assert_eq!(r.begin("other"), None);
        let id = r.begin("live").unwrap();
        assert_ne!(r.begin("live"), Some(id), "each appearance its own id");
        let name: Arc<str> = "live".into();
        let packet: Arc<[u8]> = Arc::from(&[0xfc_u8, 1, 2][..]);
        for i in 0..QUEUE_CAPACITY as u64 + 25 {
            r.audio(id, &name, Some(&packet), i * 960, 312);
        }
        assert_eq!(stalled.len(), QUEUE_CAPACITY);
        assert_eq!(metrics.recording_dropped.load(Ordering::Relaxed), 25);
        let text = metrics.render_with(&[]);
        assert!(
            text.contains("mixcast_recording_dropped_total 25"),
            "{text}"
        );
        // The packet itself went by reference.
        assert!(Arc::strong_count(&packet) > QUEUE_CAPACITY);
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("recordings");
        let e = check_dir(&under_file).unwrap_err();
        assert!(e.contains("is not a folder"), "{e}");
        assert_eq!(prepare_dir(&under_file).unwrap_err(), e);
        assert!(!e.contains('\n'));
        // A folder that does not exist yet, under a writable one: fine, and not made.
        let later = dir.path().join("a/b");
        check_dir(&later).unwrap();
        assert!(!later.exists());
        prepare_dir(&later).unwrap();
        assert!(later.is_dir());
        assert_eq!(
            std::fs::read_dir(&later).unwrap().count(),
            0,
            "probe removed"
        );
    }
}
