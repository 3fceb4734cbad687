//! The recording writer thread: takes [`Message`]s from the mixing TX thread and owns
//! every open file. One file per segment of [`RecordConfig::segment`] of stream time,
//! named `STREAM-YYYYMMDDTHHMMSSZ.opus` by its UTC start (`_2`, `_3`… if that name is
//! taken; nothing is overwritten). The timeline stays whole: silence is recorded like
//! any other packet, and packets the queue dropped are replaced by empty ones that a
//! decoder conceals. This thread may block on the disk; nothing waits for it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::index::{Recording, Recordings};
use super::ogg_opus::{OggOpusWriter, PAGE_PACKETS};
use super::utc::UtcTime;
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

/// One open file.
struct Segment {
    path: PathBuf,
    ogg: OpusFile,
    info: Recording,
}

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
                Message::End { id } => {
                    if let Some(mut take) = self.takes.remove(&id) {
                        take.close(&self.recordings);
                    }
                }
            }
        }
        for (_, mut take) in self.takes.drain() {
            take.close(&self.recordings);
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
        let take = self.takes.entry(id).or_insert_with(|| Take {
            stream,
            segment: None,
            in_segment: 0,
            first_file: true,
            open_failed: false,
            next_time: None,
            toc: LOST_TOC,
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
        }
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

impl Segment {
    fn refresh(&mut self) {
        self.info.bytes = self.ogg.inner().bytes;
        self.info.duration_seconds = self.ogg.seconds();
    }
}

/// Opens a new file for `stream` in `dir` (made if missing), named by the time now.
fn open(dir: &Path, stream: &str, pre_skip: u16) -> io::Result<Segment> {
    std::fs::create_dir_all(dir)?;
    let started = UtcTime::now();
    let stem = format!("{stream}-{}", started.compact());
    let mut n = 1;
    let (path, file) = loop {
        let name = match n {
            1 => format!("{stem}.opus"),
            // `_` sorts after `.`: the names still sort in the order the files started.
            n => format!("{stem}_{n}.opus"),
        };
        let path = dir.join(&name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => break (path, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    };
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
        file: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        stream: stream.to_string(),
        bytes: ogg.inner().bytes,
        started: date,
        duration_seconds: 0.0,
        recording: true,
    };
    Ok(Segment { path, ogg, info })
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
        tx.send(Message::End { id: 1 }).unwrap();
        // The stream appears again: a new file.
        tx.send(Message::Audio {
            id: 2,
            stream: live.clone(),
            packet: packet(0),
            media_time: 0,
            pre_skip: 312,
        })
        .unwrap();
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
