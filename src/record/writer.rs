//! The recording writer thread: takes [`Message`]s from the mixing TX thread and owns
//! every open file. One file per segment of [`RecordConfig::segment`] of stream time,
//! named `STREAM-YYYYMMDDTHHMMSSZ.opus` by its UTC start (`_2`, `_3`… if that name is
//! taken; nothing is overwritten). The timeline stays whole: silence is recorded like
//! any other packet, and packets the queue dropped are replaced by empty ones that a
//! decoder conceals. The stream's video, when it has some in a codec a file can hold
//! ([`VideoCodec`]), goes alongside from its first keyframe, under the same name with its
//! own extension; it moves to the next segment's file at the first keyframe after the
//! audio did, and to a new file when the codec changes. This thread may block on the
//! disk; nothing waits for it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::index::{Recording, Recordings};
use super::ogg_opus::{OggOpusWriter, PAGE_PACKETS};
use super::utc::UtcTime;
use super::video::{VideoCodec, VideoFile};
use super::{Message, RecordConfig};
use crate::media::{FRAME_DURATION, FRAME_SAMPLES};

/// The most missing packets filled in at once (a minute); a larger jump in the stream's
/// time is written as it comes.
const MAX_GAP_PACKETS: u64 = 3000;

/// A packet's Opus TOC byte with no frame data: the decoder conceals that 20 ms. CELT,
/// full band, 20 ms, stereo, one frame (RFC 6716 §3.1) unless a real packet said otherwise.
const LOST_TOC: u8 = 0xfc;

/// Starts the thread.
pub(super) fn spawn(
    rx: Receiver<Message>,
    config: RecordConfig,
    recordings: Arc<Recordings>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mixcast-record".into())
        .spawn(move || Writer::new(config, recordings).run(rx))
}

/// Bytes through a writer, counted.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type OpusFile = OggOpusWriter<Counting<BufWriter<File>>>;

/// One open audio file.
struct Segment {
    path: PathBuf,
    /// Its path without the extension: the video file's goes with it.
    stem: PathBuf,
    ogg: OpusFile,
    info: Recording,
}

/// One open video file.
struct VideoSegment {
    path: PathBuf,
    file: VideoFile<BufWriter<File>>,
    info: Recording,
}

/// Video frames between two updates of the listing (and flushes).
const VIDEO_FLUSH_FRAMES: u32 = 30;

/// One appearance of a recorded stream.
struct Take {
    stream: Arc<str>,
    segment: Option<Segment>,
    /// Packets of the current segment so far (also while no file could be opened).
    in_segment: u64,
    /// Whether the next file is the stream's first (its pre-skip is the encoder's delay).
    first_file: bool,
    /// Opening this segment's file failed: try again at the next one.
    open_failed: bool,
    /// The RTP time the next packet should have.
    next_time: Option<u64>,
    toc: u8,
    video: Option<VideoSegment>,
    /// The audio went on in a new file: the video follows at its next keyframe.
    video_rotate: bool,
    /// Opening or writing the video file failed: no more video until the next segment.
    video_failed: bool,
}

struct Writer {
    config: RecordConfig,
    segment_packets: u64,
    recordings: Arc<Recordings>,
    takes: HashMap<u64, Take>,
}

impl Writer {
    fn new(config: RecordConfig, recordings: Arc<Recordings>) -> Writer {
        let segment_packets = (config.segment.as_nanos() / FRAME_DURATION.as_nanos()).max(1) as u64;
        Writer {
            config,
            segment_packets,
            recordings,
            takes: HashMap::new(),
        }
    }

    fn run(mut self, rx: Receiver<Message>) {
        // Ends when the recorder is dropped (the TX thread stopped): every file is closed.
        while let Ok(msg) = rx.recv() {
            match msg {
                Message::Audio {
                    id,
                    stream,
                    packet,
                    media_time,
                    pre_skip,
                } => self.audio(id, stream, packet, media_time, pre_skip),
                Message::Video {
                    id,
                    codec,
                    keyframe,
                    time,
                    data,
                } => {
                    if let Some(take) = self.takes.get_mut(&id) {
                        take.video(
                            codec,
                            keyframe,
                            time,
                            &data,
                            &self.config.dir,
                            &self.recordings,
                        );
                    }
                }
                Message::End { id } => {
                    if let Some(mut take) = self.takes.remove(&id) {
                        take.close(&self.recordings);
                        take.close_video(&self.recordings);
                    }
                }
            }
        }
        for (_, mut take) in self.takes.drain() {
            take.close(&self.recordings);
            take.close_video(&self.recordings);
        }
    }

    fn audio(
        &mut self,
        id: u64,
        stream: Arc<str>,
        packet: Option<Arc<[u8]>>,
        media_time: u64,
        pre_skip: u16,
    ) {
        if !self.takes.contains_key(&id) {
            // A new appearance of the stream: an earlier one whose end was lost with a full
            // queue is over too.
            let stale: Vec<u64> = self
                .takes
                .iter()
                .filter(|(_, t)| t.stream == stream)
                .map(|(&k, _)| k)
                .collect();
            for k in stale {
                if let Some(mut take) = self.takes.remove(&k) {
                    take.close(&self.recordings);
                    take.close_video(&self.recordings);
                }
            }
        }
        let take = self.takes.entry(id).or_insert_with(|| Take {
            stream,
            segment: None,
            in_segment: 0,
            first_file: true,
            open_failed: false,
            next_time: None,
            toc: LOST_TOC,
            video: None,
            video_rotate: false,
            video_failed: false,
        });
        // Packets the queue dropped: as many empty ones, so the file's time stays the
        // stream's.
        let missing = take
            .next_time
            .map_or(0, |t| media_time.saturating_sub(t) / FRAME_SAMPLES as u64);
        for _ in 0..missing.min(MAX_GAP_PACKETS) {
            let lost = [take.toc & 0xfc];
            take.put(
                &lost,
                pre_skip,
                &self.config.dir,
                self.segment_packets,
                &self.recordings,
            );
        }
        take.next_time = Some(media_time + FRAME_SAMPLES as u64);
        let lost;
        let bytes: &[u8] = match &packet {
            Some(p) if !p.is_empty() => {
                take.toc = p[0];
                p
            }
            _ => {
                lost = [take.toc & 0xfc];
                &lost
            }
        };
        take.put(
            bytes,
            pre_skip,
            &self.config.dir,
            self.segment_packets,
            &self.recordings,
        );
    }
}

impl Take {
    /// Writes one packet, opening the segment's file first and closing it when full.
    fn put(
        &mut self,
        packet: &[u8],
        pre_skip: u16,
        dir: &Path,
        segment_packets: u64,
        recordings: &Recordings,
    ) {
        if self.segment.is_none() && !self.open_failed {
            // Only the stream's first file starts with the encoder's first packet; the
            // next ones go on from where the last ended, so a player drops nothing.
            let skip = if self.first_file { pre_skip } else { 0 };
            match open(dir, &self.stream, skip) {
                Ok(s) => {
                    tracing::info!(
                        "recording stream {:?} to {}",
                        &*self.stream,
                        s.path.display()
                    );
                    recordings.update(&s.info);
                    self.segment = Some(s);
                }
                Err(e) => {
                    tracing::error!(
                        "recording stream {:?}: cannot open a file in {}: {e} (trying again at the next segment)",
                        &*self.stream,
                        dir.display()
                    );
                    self.open_failed = true;
                }
            }
            self.first_file = false;
        }
        if let Some(s) = &mut self.segment {
            match s.ogg.write(packet) {
                Ok(()) => {
                    if s.ogg.packets() % u64::from(PAGE_PACKETS) == 0 {
                        s.refresh();
                        recordings.update(&s.info);
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "recording {}: write failed: {e} (trying again at the next segment)",
                        s.path.display()
                    );
                    self.open_failed = true;
                    self.close(recordings);
                }
            }
        }
        self.in_segment += 1;
        if self.in_segment >= segment_packets {
            self.close(recordings);
            self.in_segment = 0;
            self.open_failed = false;
            self.video_rotate = true;
            self.video_failed = false;
        }
    }

    /// Writes one video frame (from the first keyframe on), opening or moving the file.
    fn video(
        &mut self,
        codec: VideoCodec,
        keyframe: bool,
        time: u64,
        frame: &[u8],
        dir: &Path,
        recordings: &Recordings,
    ) {
        let new_file = self
            .video
            .as_ref()
            .is_some_and(|v| v.file.codec() != codec || (self.video_rotate && keyframe));
        if new_file {
            self.close_video(recordings);
        }
        if self.video.is_none() {
            if !keyframe || self.video_failed {
                return;
            }
            self.video_rotate = false;
            let stem = match &self.segment {
                Some(s) => s.stem.clone(),
                None => dir.join(format!("{}-{}", self.stream, UtcTime::now().compact())),
            };
            match open_video(&stem, codec, &self.stream) {
                Ok(v) => {
                    tracing::info!(
                        "recording the video ({codec:?}) of stream {:?} to {}",
                        &*self.stream,
                        v.path.display()
                    );
                    recordings.update(&v.info);
                    self.video = Some(v);
                }
                Err(e) => {
                    tracing::error!(
                        "recording the video of stream {:?}: cannot open a file in {}: {e} (trying again at the next segment)",
                        &*self.stream,
                        dir.display()
                    );
                    self.video_failed = true;
                    return;
                }
            }
        }
        let Some(v) = &mut self.video else { return };
        let written = v.file.write(frame, time, keyframe).and_then(|wrote| {
            if wrote && v.file.frames() % VIDEO_FLUSH_FRAMES == 0 {
                v.file.flush()?;
                v.refresh();
                recordings.update(&v.info);
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::error!(
                "recording {}: write failed: {e} (trying again at the next segment)",
                v.path.display()
            );
            self.close_video(recordings);
            self.video_failed = true;
        }
    }

    /// Finishes the current video file, logs and lists it as done.
    fn close_video(&mut self, recordings: &Recordings) {
        let Some(mut v) = self.video.take() else {
            return;
        };
        v.refresh();
        let frames = v.file.frames();
        let done = v.file.finish().and_then(|out| {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        });
        match done {
            Ok(()) => tracing::info!(
                "recording {} of stream {:?} ended: {:.2} s, {frames} frames, {} bytes",
                v.path.display(),
                &*self.stream,
                v.info.duration_seconds,
                v.info.bytes
            ),
            Err(e) => tracing::error!("recording {}: closing it failed: {e}", v.path.display()),
        }
        v.info.recording = false;
        recordings.update(&v.info);
    }

    /// Finishes the current file (end of stream), logs and lists it as done.
    fn close(&mut self, recordings: &Recordings) {
        let Some(mut s) = self.segment.take() else {
            return;
        };
        let seconds = s.ogg.seconds();
        let done = s.ogg.finish().and_then(|c| {
            let bytes = c.bytes;
            let file = c.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(bytes)
        });
        match done {
            Ok(bytes) => {
                s.info.bytes = bytes;
                s.info.duration_seconds = seconds;
                tracing::info!(
                    "recording {} of stream {:?} ended: {seconds:.2} s, {bytes} bytes",
                    s.path.display(),
                    &*self.stream
                );
            }
            Err(e) => tracing::error!("recording {}: closing it failed: {e}", s.path.display()),
        }
        s.info.recording = false;
        recordings.update(&s.info);
    }
}

impl VideoSegment {
    fn refresh(&mut self) {
        self.info.bytes = self.file.bytes();
        self.info.duration_seconds = self.file.seconds();
    }
}

impl Segment {
    fn refresh(&mut self) {
        self.info.bytes = self.ogg.inner().bytes;
        self.info.duration_seconds = self.ogg.seconds();
    }
}

/// Creates `stem.ext`, or `stem_2.ext`, `stem_3.ext`… when it exists (never
/// overwriting). `_` sorts after `.`: the names still sort in the order they started.
fn create(stem: &Path, ext: &str) -> io::Result<(PathBuf, PathBuf, File)> {
    let mut n = 1;
    loop {
        let this = match n {
            1 => stem.to_path_buf(),
            n => PathBuf::from(format!("{}_{n}", stem.display())),
        };
        let path = PathBuf::from(format!("{}.{ext}", this.display()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, this, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens a video file next to the audio file `stem`.
fn open_video(stem: &Path, codec: VideoCodec, stream: &str) -> io::Result<VideoSegment> {
    let (path, _, file) = create(stem, codec.extension())?;
    let file = VideoFile::new(BufWriter::new(file), codec)?;
    let info = Recording {
        file: file_name(&path),
        stream: stream.to_string(),
        media: "video",
        bytes: file.bytes(),
        started: UtcTime::now().rfc3339(),
        duration_seconds: 0.0,
        recording: true,
    };
    Ok(VideoSegment { path, file, info })
}

/// Opens a new file for `stream` in `dir` (made if missing), named by the time now.
fn open(dir: &Path, stream: &str, pre_skip: u16) -> io::Result<Segment> {
    std::fs::create_dir_all(dir)?;
    let started = UtcTime::now();
    let (path, stem, file) = create(&dir.join(format!("{stream}-{}", started.compact())), "opus")?;
    let out = Counting {
        inner: BufWriter::new(file),
        bytes: 0,
    };
    let date = started.rfc3339();
    let ogg = OggOpusWriter::new(
        out,
        rand::random(),
        pre_skip,
        &[("TITLE", stream), ("DATE", &date)],
    )?;
    let info = Recording {
        file: file_name(&path),
        stream: stream.to_string(),
        media: "audio",
        bytes: ogg.inner().bytes,
        started: date,
        duration_seconds: 0.0,
        recording: true,
    };
    Ok(Segment {
        path,
        stem,
        ogg,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(i: u64) -> Option<Arc<[u8]>> {
        Some(Arc::from(&[0xfc, (i % 251) as u8, 7][..]))
    }

    #[test]
    fn rotation_gaps_and_a_new_file_per_appearance() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            dir: dir.path().join("rec"),
            streams: ["live".to_string()].into(),
            segment: Duration::from_secs(2),
        };
        let recordings = Arc::new(Recordings::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let join = spawn(rx, config, recordings.clone()).unwrap();
        let live: Arc<str> = "live".into();
        // 5 s of stream, 10 packets of it dropped by the queue in the middle.
        for i in 0..250u64 {
            if (120..130).contains(&i) {
                continue;
            }
            tx.send(Message::Audio {
                id: 1,
                stream: live.clone(),
                packet: packet(i),
                media_time: 1000 + i * 960,
                pre_skip: 312,
            })
            .unwrap();
        }
        // The stream appears again (its end lost with a full queue): a new file, and the
        // last one closed all the same.
        tx.send(Message::Audio {
            id: 2,
            stream: live.clone(),
            packet: packet(0),
            media_time: 0,
            pre_skip: 312,
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while recordings.list().iter().filter(|r| r.recording).count() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:#?}",
                recordings.list()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(tx);
        join.join().unwrap();
        let list = recordings.list();
        assert_eq!(list.len(), 4, "{list:#?}");
        assert!(list.iter().all(|r| !r.recording && r.stream == "live"));
        let secs: Vec<f64> = list.iter().map(|r| r.duration_seconds).collect();
        let first = 2.0 - 312.0 / 48_000.0;
        assert!((secs[0] - first).abs() < 1e-9, "{secs:?}");
        assert_eq!(
            &secs[1..3],
            &[2.0, 1.0],
            "gap filled, no pre-skip after the first"
        );
        assert!((secs[3] - (0.02 - 312.0 / 48_000.0)).abs() < 1e-9);
        for r in &list {
            assert!(
                r.file.starts_with("live-") && r.file.ends_with(".opus"),
                "{r:?}"
            );
            let len = std::fs::metadata(dir.path().join("rec").join(&r.file))
                .unwrap()
                .len();
            assert_eq!(len, r.bytes);
        }
    }
}
