//! Audio files (MP3, FLAC, WAV, Ogg Vorbis, AAC/M4A) played in order and looping, decoded
//! with symphonia on a decoder thread of their own.
//!
//! ```text
//!  decoder thread (one per FileSource)                       TX thread
//!  open → decode packet → to stereo → resample to 48 kHz ─► ring ─► fill(): pop 1920 samples
//!         (next file at end; first again after the last)    (RING_SAMPLES: 1 s of audio)
//! ```
//!
//! `fill` never blocks, allocates or touches a file: it pops what the ring holds and pads
//! with silence (counting an underrun) when the decoder is behind. The decoder thread sleeps
//! while the ring is full, and stops when its [`FileSource`] is dropped (the drop only sets a
//! flag and wakes the thread, so dropping never blocks either).
//!
//! Errors: [`FileSource::open`] probes every file of the playlist first and fails with the
//! first bad file's path. A file that fails later (deleted, corrupt) is logged once and
//! skipped; if no file of the playlist yields any audio the source plays silence, logs an
//! error and retries every [`RETRY_INTERVAL`].

use super::resample::Resampler;
use super::{Source, SourceError};
use crate::media::{Frame, CHANNELS, FRAME_LEN, SAMPLE_RATE};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use symphonia::core::audio::{AudioBufferRef, Channels, SampleBuffer, SignalSpec};
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Capacity of the ring between the decoder thread and `fill`, in interleaved samples:
/// 1 s of 48 kHz stereo. Enough to ride out a slow disk or a long decode; small enough
/// that memory per file source stays at 384 KiB.
pub const RING_SAMPLES: usize = SAMPLE_RATE as usize * CHANNELS;
/// How much decoded audio `open` waits for before returning (200 ms), so the first ticks
/// do not underrun.
pub const PREFILL_SAMPLES: usize = RING_SAMPLES / 5;
/// The longest `open` waits for the prefill.
pub const PREFILL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the decoder sleeps when the ring is full (it holds 1 s, so this is far from
/// starving `fill`). Dropping the source wakes it at once.
const FULL_WAIT: Duration = Duration::from_millis(50);
/// How long the decoder waits before trying the playlist again when no file yielded audio.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Consecutive undecodable packets after which a file is given up on.
const MAX_DECODE_ERRORS: u32 = 100;

/// Files played in order, looping, resampled to 48 kHz stereo. See the module doc.
pub struct FileSource {
    cons: HeapCons<f32>,
    underruns: u64,
    name: String,
    shared: Arc<Shared>,
    decoder: std::thread::Thread,
}

/// State shared between a [`FileSource`] and its decoder thread (never touched by `fill`).
#[derive(Debug, Default)]
struct Shared {
    /// Set by the source's drop: the thread must exit.
    stop: AtomicBool,
    /// Cleared by the thread as it exits.
    running: AtomicBool,
    /// Set while a whole pass over the playlist yielded no audio (the thread is waiting to
    /// retry). With the first failure, for `open` to report.
    all_failed: AtomicBool,
    first_failure: Mutex<Option<(PathBuf, String)>>,
}

impl FileSource {
    /// Probes every file of `paths` (failing at once on a missing, unreadable or
    /// unsupported one), starts the decoder thread and waits up to [`PREFILL_TIMEOUT`] for
    /// [`PREFILL_SAMPLES`] of audio. Fails too if no audio at all can be decoded.
    pub fn open(paths: &[PathBuf]) -> Result<Self, SourceError> {
        if paths.is_empty() {
            return Err(SourceError::BadSpec("file:".to_string()));
        }
        let mut first = None;
        for path in paths {
            let file = OpenFile::open(path)?;
            if first.is_none() {
                first = Some(file);
            }
        }
        let (prod, cons) = HeapRb::<f32>::new(RING_SAMPLES).split();
        let shared = Arc::new(Shared::default());
        shared.running.store(true, Ordering::Release);
        let worker = DecodeLoop {
            paths: paths.to_vec(),
            failing: vec![false; paths.len()],
            prod,
            shared: shared.clone(),
            resampler: None,
            sample_buf: None,
            downmix: Downmix::default(),
            stereo: Vec::new(),
            resampled: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("mixcast-decode".to_string())
            .spawn(move || worker.run(first))
            .map_err(|e| SourceError::Thread(e.to_string()))?;
        let source = FileSource {
            cons,
            underruns: 0,
            name: describe_paths(paths),
            shared,
            decoder: handle.thread().clone(),
        };
        // The thread is detached: it exits on its own once `stop` is set.
        drop(handle);

        let deadline = Instant::now() + PREFILL_TIMEOUT;
        while source.cons.occupied_len() < PREFILL_SAMPLES && Instant::now() < deadline {
            if source.shared.all_failed.load(Ordering::Acquire) {
                let failure = source
                    .shared
                    .first_failure
                    .lock()
                    .ok()
                    .and_then(|mut f| f.take());
                let (path, reason) = failure
                    .unwrap_or_else(|| (paths[0].clone(), "no audio could be decoded".to_string()));
                // Dropping `source` stops the thread.
                return Err(SourceError::File { path, reason });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(source)
    }

    /// Decoded audio ready for `fill`, in 48 kHz stereo frames (samples per channel).
    pub fn buffered_frames(&self) -> usize {
        self.cons.occupied_len() / CHANNELS
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.decoder.unpark();
    }
}

impl Source for FileSource {
    fn fill(&mut self, out: &mut Frame) {
        let n = self.cons.pop_slice(out);
        if n < FRAME_LEN {
            out[n..].fill(0.0);
            self.underruns += 1;
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn underruns(&self) -> u64 {
        self.underruns
    }
}

fn describe_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string())
        })
        .collect();
    format!("file:{}", names.join(","))
}

/// A probed file with its decoder, ready to decode packets.
struct OpenFile {
    path: PathBuf,
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
}

impl OpenFile {
    fn open(path: &Path) -> Result<Self, SourceError> {
        let fail = |reason: String| SourceError::File {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let format_opts = FormatOptions {
            // Trim MP3/AAC encoder delay and padding so loops are seamless.
            enable_gapless: true,
            ..Default::default()
        };
        let probed = symphonia::default::get_probe()
            .format(&hint, mss, &format_opts, &MetadataOptions::default())
            .map_err(|e| fail(format!("not a supported audio file: {e}")))?;
        let reader = probed.format;
        let track = reader
            .tracks()
            .iter()
            .find(|t| {
                t.codec_params.codec != CODEC_TYPE_NULL && t.codec_params.sample_rate.is_some()
            })
            .or_else(|| {
                reader
                    .tracks()
                    .iter()
                    .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            })
            .ok_or_else(|| fail("no audio track".to_string()))?;
        let track_id = track.id;
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(|e| fail(format!("unsupported codec: {e}")))?;
        Ok(OpenFile {
            path: path.to_path_buf(),
            reader,
            decoder,
            track_id,
        })
    }
}

/// Gains of each input channel into (left, right), for one channel layout.
#[derive(Debug, Default)]
struct Downmix {
    layout: Option<(u32, usize)>,
    gains: Vec<(f32, f32)>,
}

impl Downmix {
    /// Mono goes to both sides; stereo is kept; more channels are folded down with the usual
    /// ITU-style weights (centre and surrounds at -3 dB, LFE dropped), then each side is
    /// scaled so its weights sum to at most 1: a downmix can never clip.
    fn for_layout(&mut self, channels: Channels) {
        let count = channels.count();
        if self.layout == Some((channels.bits(), count)) {
            return;
        }
        self.layout = Some((channels.bits(), count));
        self.gains.clear();
        const H: f32 = std::f32::consts::FRAC_1_SQRT_2;
        match count {
            0 => {}
            1 => self.gains.push((1.0, 1.0)),
            2 => self.gains.extend([(1.0, 0.0), (0.0, 1.0)]),
            _ => {
                for ch in channels.iter() {
                    let left = Channels::FRONT_LEFT
                        | Channels::FRONT_LEFT_CENTRE
                        | Channels::FRONT_LEFT_WIDE
                        | Channels::FRONT_LEFT_HIGH
                        | Channels::TOP_FRONT_LEFT;
                    let right = Channels::FRONT_RIGHT
                        | Channels::FRONT_RIGHT_CENTRE
                        | Channels::FRONT_RIGHT_WIDE
                        | Channels::FRONT_RIGHT_HIGH
                        | Channels::TOP_FRONT_RIGHT;
                    let centre = Channels::FRONT_CENTRE
                        | Channels::TOP_CENTRE
                        | Channels::TOP_FRONT_CENTRE
                        | Channels::FRONT_CENTRE_HIGH;
                    let surround_left = Channels::REAR_LEFT
                        | Channels::SIDE_LEFT
                        | Channels::TOP_REAR_LEFT
                        | Channels::REAR_LEFT_CENTRE;
                    let surround_right = Channels::REAR_RIGHT
                        | Channels::SIDE_RIGHT
                        | Channels::TOP_REAR_RIGHT
                        | Channels::REAR_RIGHT_CENTRE;
                    let rear_centre = Channels::REAR_CENTRE | Channels::TOP_REAR_CENTRE;
                    let g = if left.contains(ch) {
                        (1.0, 0.0)
                    } else if right.contains(ch) {
                        (0.0, 1.0)
                    } else if centre.contains(ch) {
                        (H, H)
                    } else if surround_left.contains(ch) {
                        (H, 0.0)
                    } else if surround_right.contains(ch) {
                        (0.0, H)
                    } else if rear_centre.contains(ch) {
                        (0.5, 0.5)
                    } else {
                        (0.0, 0.0) // LFE
                    };
                    self.gains.push(g);
                }
                let sum_l: f32 = self.gains.iter().map(|g| g.0).sum();
                let sum_r: f32 = self.gains.iter().map(|g| g.1).sum();
                let (kl, kr) = (1.0 / sum_l.max(1.0), 1.0 / sum_r.max(1.0));
                for g in &mut self.gains {
                    *g = (g.0 * kl, g.1 * kr);
                }
            }
        }
    }

    /// Appends `interleaved` (in this layout) to `out` as interleaved stereo.
    fn apply(&self, interleaved: &[f32], out: &mut Vec<f32>) {
        let n = self.gains.len();
        if n == 0 {
            return;
        }
        out.reserve(interleaved.len() / n * 2);
        for frame in interleaved.chunks_exact(n) {
            let (mut l, mut r) = (0.0, 0.0);
            for (x, g) in frame.iter().zip(&self.gains) {
                l += x * g.0;
                r += x * g.1;
            }
            out.push(l);
            out.push(r);
        }
    }
}

/// Why playing a file ended early.
enum Interrupt {
    /// The source was dropped.
    Stopped,
    /// The file failed before yielding any audio.
    Failed(String),
}

/// The decoder thread's state.
struct DecodeLoop {
    paths: Vec<PathBuf>,
    /// Per file: did it fail last time (so each failure is logged once, not every loop).
    failing: Vec<bool>,
    prod: HeapProd<f32>,
    shared: Arc<Shared>,
    resampler: Option<Resampler>,
    sample_buf: Option<SampleBuffer<f32>>,
    downmix: Downmix,
    stereo: Vec<f32>,
    resampled: Vec<f32>,
}

impl DecodeLoop {
    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    fn run(mut self, mut first: Option<OpenFile>) {
        let mut index = 0;
        let mut pass_frames = 0u64;
        let mut reported_all_failed = false;
        while !self.stopped() {
            let path = self.paths[index].clone();
            let outcome = match first.take() {
                Some(file) => Ok(file),
                None => OpenFile::open(&path).map_err(|e| match e {
                    SourceError::File { reason, .. } => reason,
                    other => other.to_string(),
                }),
            }
            .map_err(Interrupt::Failed)
            .and_then(|file| self.play(file));
            match outcome {
                Ok(frames) => {
                    pass_frames += frames;
                    if std::mem::take(&mut self.failing[index]) {
                        tracing::info!(path = %path.display(), "audio file plays again");
                    }
                }
                Err(Interrupt::Stopped) => break,
                Err(Interrupt::Failed(reason)) => {
                    if !std::mem::replace(&mut self.failing[index], true) {
                        tracing::warn!(path = %path.display(), %reason, "skipping audio file");
                    }
                    if let Ok(mut f) = self.shared.first_failure.lock() {
                        f.get_or_insert((path, reason));
                    }
                }
            }
            index += 1;
            if index == self.paths.len() {
                index = 0;
                if pass_frames == 0 {
                    if !reported_all_failed {
                        tracing::error!(
                            files = self.paths.len(),
                            "no audio file of the playlist could be played; silence until one can"
                        );
                        reported_all_failed = true;
                    }
                    self.shared.all_failed.store(true, Ordering::Release);
                    self.wait(RETRY_INTERVAL);
                } else {
                    reported_all_failed = false;
                    self.shared.all_failed.store(false, Ordering::Release);
                }
                pass_frames = 0;
            }
        }
        self.shared.running.store(false, Ordering::Release);
    }

    /// Sleeps up to `d`, waking early when the source is dropped.
    fn wait(&self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let now = Instant::now();
            if self.stopped() || now >= deadline {
                return;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    /// Decodes `file` to its end into the ring; returns the 48 kHz frames produced.
    fn play(&mut self, mut file: OpenFile) -> Result<u64, Interrupt> {
        let mut frames = 0u64;
        let mut decode_errors = 0u32;
        loop {
            if self.stopped() {
                return Err(Interrupt::Stopped);
            }
            let packet = match file.reader.next_packet() {
                Ok(p) => p,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    break
                }
                // A chained stream (new track list): we play the first one only.
                Err(SymphoniaError::ResetRequired) => break,
                Err(e) if frames == 0 => return Err(Interrupt::Failed(e.to_string())),
                Err(e) => {
                    tracing::warn!(path = %file.path.display(), error = %e, "audio file ends early");
                    break;
                }
            };
            if packet.track_id() != file.track_id {
                continue;
            }
            match file.decoder.decode(&packet) {
                Ok(buf) => {
                    decode_errors = 0;
                    self.convert_to_stereo(buf);
                }
                Err(SymphoniaError::DecodeError(msg)) => {
                    decode_errors += 1;
                    if decode_errors >= MAX_DECODE_ERRORS {
                        let reason = format!("too many decode errors, last: {msg}");
                        if frames == 0 {
                            return Err(Interrupt::Failed(reason));
                        }
                        tracing::warn!(path = %file.path.display(), %reason, "audio file ends early");
                        break;
                    }
                    continue;
                }
                Err(SymphoniaError::IoError(_)) => break,
                Err(e) if frames == 0 => return Err(Interrupt::Failed(e.to_string())),
                Err(e) => {
                    tracing::warn!(path = %file.path.display(), error = %e, "audio file ends early");
                    break;
                }
            }
            frames += self.push_resampled()?;
        }
        Ok(frames)
    }

    /// Converts one decoded buffer to interleaved stereo at its own rate in `self.stereo`,
    /// and makes sure the resampler matches that rate.
    fn convert_to_stereo(&mut self, buf: AudioBufferRef<'_>) {
        let spec: SignalSpec = *buf.spec();
        let needed = buf.frames() * spec.channels.count();
        let reuse = self
            .sample_buf
            .as_ref()
            .is_some_and(|b| b.capacity() >= needed);
        if !reuse {
            let duration = buf.capacity().max(buf.frames()) as u64;
            self.sample_buf = Some(SampleBuffer::new(duration, spec));
        }
        self.stereo.clear();
        if let Some(sb) = self.sample_buf.as_mut() {
            sb.copy_interleaved_ref(buf);
            self.downmix.for_layout(spec.channels);
            self.downmix.apply(sb.samples(), &mut self.stereo);
        }
        if self.resampler.as_ref().map(|r| r.in_rate()) != Some(spec.rate) {
            self.resampler = Some(Resampler::new(spec.rate, SAMPLE_RATE));
        }
    }

    /// Resamples `self.stereo` and pushes the result into the ring, waiting while it is
    /// full. Returns the frames pushed.
    fn push_resampled(&mut self) -> Result<u64, Interrupt> {
        self.resampled.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.process(&self.stereo, &mut self.resampled);
        }
        let mut off = 0;
        while off < self.resampled.len() {
            if self.stopped() {
                return Err(Interrupt::Stopped);
            }
            // Whole stereo frames only, so `fill` always pops whole frames.
            let n = (self.prod.vacant_len() & !1).min(self.resampled.len() - off);
            if n == 0 {
                std::thread::park_timeout(FULL_WAIT);
                continue;
            }
            off += self.prod.push_slice(&self.resampled[off..off + n]);
        }
        Ok((self.resampled.len() / CHANNELS) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency, peak, rms, Spectrum};
    use std::process::Command;

    /// Writes a 16-bit WAV with one sine per channel (`freqs[c]`, 0 for silence).
    fn write_wav(path: &Path, rate: u32, freqs: &[f32], amp: f32, secs: f32) {
        let spec = hound::WavSpec {
            channels: freqs.len() as u16,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).expect("create wav");
        for i in 0..(rate as f32 * secs) as usize {
            for &f in freqs {
                let t = i as f32 / rate as f32;
                let x = amp * (2.0 * std::f32::consts::PI * f * t).sin();
                w.write_sample((x * 32767.0) as i16).expect("write sample");
            }
        }
        w.finalize().expect("finalize wav");
    }

    /// Pulls `frames` frames, giving the decoder thread time to keep up (debug builds are
    /// slow), so the content is checked without underruns.
    fn pull(src: &mut FileSource, frames: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(frames * FRAME_LEN);
        let mut f = [0.0; FRAME_LEN];
        for _ in 0..frames {
            let deadline = Instant::now() + Duration::from_secs(10);
            while src.buffered_frames() < FRAME_LEN / 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            src.fill(&mut f);
            out.extend_from_slice(&f);
        }
        out
    }

    fn open(paths: &[&Path]) -> FileSource {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        FileSource::open(&paths).expect("file source opens")
    }

    /// Samples `from..to` seconds of one channel at 48 kHz.
    fn secs(channel: &[f32], from: f32, to: f32) -> &[f32] {
        &channel[(from * 48_000.0) as usize..(to * 48_000.0) as usize]
    }

    fn assert_freq(samples: &[f32], want: f32, what: &str) {
        let got = dominant_frequency(samples, SAMPLE_RATE);
        assert!(
            (got - want).abs() < 2.0,
            "{what}: want {want} Hz, got {got}"
        );
    }

    /// Waits up to `limit` for `cond`.
    fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    /// Runs an encoder from Debian's packages (flac, lame, vorbis-tools). Without it the
    /// test is skipped, except under CI (`CI` set), where it fails.
    fn encode(tool: &str, args: &[&std::ffi::OsStr]) -> bool {
        match Command::new(tool).args(args).status() {
            Ok(s) if s.success() => true,
            Ok(s) => panic!("{tool} failed: {s}"),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{tool} is needed by this test under CI: {e}")
            }
            Err(e) => {
                // Past the test harness's capture, so that a plain `cargo test` shows it.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {tool} not available ({e}); install flac, lame, vorbis-tools"
                );
                false
            }
        }
    }

    #[test]
    fn wav_44k1_mono_plays_on_both_channels_at_48k() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mono.wav");
        write_wav(&path, 44_100, &[440.0], 0.5, 1.0);
        let mut src = open(&[&path]);
        let (l, r) = deinterleave(&pull(&mut src, 40));
        assert_eq!(l, r);
        let l = secs(&l, 0.05, 0.75);
        assert_freq(l, 440.0, "left");
        assert!(
            (rms(l) - 0.5 / 2f32.sqrt()).abs() < 0.01,
            "level {}",
            rms(l)
        );
        assert_eq!(src.underruns(), 0);
        assert_eq!(src.describe(), "file:mono.wav");
    }

    #[test]
    fn wav_22k05_stereo_keeps_its_channels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stereo.wav");
        write_wav(&path, 22_050, &[440.0, 660.0], 0.3, 1.0);
        let mut src = open(&[&path]);
        let (l, r) = deinterleave(&pull(&mut src, 40));
        assert_freq(secs(&l, 0.05, 0.75), 440.0, "left");
        assert_freq(secs(&r, 0.05, 0.75), 660.0, "right");
        assert!(Spectrum::new(secs(&l, 0.05, 0.75), SAMPLE_RATE).band_fraction(660.0, 20.0) < 1e-4);
        assert_eq!(src.underruns(), 0);
    }

    #[test]
    fn short_file_loops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("short.wav");
        write_wav(&path, 44_100, &[1000.0], 0.5, 0.25);
        let mut src = open(&[&path]);
        // 1.5 s from a 0.25 s file: sound all along.
        let (l, _) = deinterleave(&pull(&mut src, 75));
        for w in l.chunks(2400) {
            assert!(rms(w) > 0.3, "a gap in the loop: {}", rms(w));
        }
        assert_freq(&l, 1000.0, "looped");
        assert_eq!(src.underruns(), 0);
    }

    #[test]
    fn playlist_plays_in_order_and_loops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.wav");
        let b = dir.path().join("b.wav");
        write_wav(&a, 44_100, &[440.0], 0.4, 0.5);
        write_wav(&b, 32_000, &[880.0, 880.0], 0.4, 0.5);
        let mut src = open(&[&a, &b]);
        let (l, r) = deinterleave(&pull(&mut src, 100));
        for (i, want) in [440.0, 880.0, 440.0, 880.0].into_iter().enumerate() {
            let start = i as f32 * 0.5;
            assert_freq(secs(&l, start + 0.05, start + 0.45), want, "left");
            assert_freq(secs(&r, start + 0.05, start + 0.45), want, "right");
        }
        assert_eq!(src.describe(), "file:a.wav,b.wav");
    }

    #[test]
    fn surround_is_folded_down_per_side() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("5.1.wav");
        // hound marks 6 channels as FL FR FC LFE BL BR.
        write_wav(
            &path,
            48_000,
            &[440.0, 660.0, 1000.0, 60.0, 300.0, 500.0],
            0.5,
            0.6,
        );
        let mut src = open(&[&path]);
        let out = pull(&mut src, 25);
        assert!(
            peak(&out) <= 0.5 + 1e-3,
            "the downmix must not raise the level"
        );
        let (l, r) = deinterleave(&out);
        let left = Spectrum::new(secs(&l, 0.02, 0.48), SAMPLE_RATE);
        let right = Spectrum::new(secs(&r, 0.02, 0.48), SAMPLE_RATE);
        for f in [440.0, 1000.0, 300.0] {
            assert!(left.band_fraction(f, 20.0) > 0.1, "left lacks {f}");
        }
        for f in [660.0, 1000.0, 500.0] {
            assert!(right.band_fraction(f, 20.0) > 0.1, "right lacks {f}");
        }
        for f in [660.0, 500.0, 60.0] {
            assert!(left.band_fraction(f, 20.0) < 1e-3, "left has {f}");
        }
        for f in [440.0, 300.0, 60.0] {
            assert!(right.band_fraction(f, 20.0) < 1e-3, "right has {f}");
        }
        assert_freq(secs(&l, 0.02, 0.48), 440.0, "front left dominates left");
    }

    #[test]
    fn open_fails_fast_on_missing_or_garbage_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.wav");
        write_wav(&good, 48_000, &[440.0], 0.5, 0.1);
        let garbage = dir.path().join("garbage.mp3");
        std::fs::write(
            &garbage,
            b"this is not audio at all, not even close".repeat(100),
        )
        .expect("write garbage");
        let empty = dir.path().join("empty.wav");
        write_wav(&empty, 48_000, &[440.0], 0.5, 0.0);
        let missing = dir.path().join("missing.flac");
        for (paths, bad) in [
            (vec![missing.clone()], &missing),
            (vec![good.clone(), missing.clone()], &missing),
            (vec![garbage.clone(), good.clone()], &garbage),
            (vec![empty.clone()], &empty),
        ] {
            let started = Instant::now();
            match FileSource::open(&paths) {
                Err(SourceError::File { path, reason }) => {
                    assert_eq!(&path, bad, "{reason}");
                    assert!(!reason.is_empty());
                }
                Err(e) => panic!("wrong error: {e}"),
                Ok(_) => panic!("{paths:?} opened"),
            }
            assert!(started.elapsed() < Duration::from_secs(1), "slow failure");
        }
        assert!(matches!(
            FileSource::open(&[]),
            Err(SourceError::BadSpec(_))
        ));
    }

    #[test]
    fn a_file_failing_mid_playlist_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.wav");
        let b = dir.path().join("b.wav");
        let c = dir.path().join("c.wav");
        // `a` is longer than the ring, so the decoder is still in it when `b` goes away.
        write_wav(&a, 48_000, &[440.0], 0.4, 1.6);
        write_wav(&b, 48_000, &[550.0], 0.4, 0.4);
        write_wav(&c, 48_000, &[880.0], 0.4, 0.5);
        let mut src = open(&[&a, &b, &c]);
        std::fs::remove_file(&b).expect("remove b");
        let (l, _) = deinterleave(&pull(&mut src, 125));
        assert_freq(secs(&l, 0.1, 1.5), 440.0, "a");
        assert_freq(secs(&l, 1.65, 2.05), 880.0, "c right after a");
        assert_freq(secs(&l, 2.15, 2.45), 440.0, "a again");
        assert_eq!(src.underruns(), 0);
    }

    #[test]
    fn all_files_failing_gives_silence_then_drop_stops_the_idle_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.wav");
        // Longer than the ring: the decoder is still in its first pass when `a` goes away.
        write_wav(&a, 48_000, &[440.0], 0.4, 1.5);
        let mut src = open(&[&a]);
        std::fs::remove_file(&a).expect("remove a");
        let (l, _) = deinterleave(&pull(&mut src, 75));
        assert_freq(&l, 440.0, "the one pass");
        assert_eq!(src.underruns(), 0);
        let shared = src.shared.clone();
        assert!(eventually(Duration::from_secs(5), || shared
            .all_failed
            .load(Ordering::Acquire)));
        let mut f = [0.0; FRAME_LEN];
        for _ in 0..10 {
            src.fill(&mut f);
            assert_eq!(peak(&f), 0.0);
        }
        assert_eq!(src.underruns(), 10);
        // The thread waits out RETRY_INTERVAL (5 s) parked; dropping wakes and ends it.
        assert!(shared.running.load(Ordering::Acquire));
        let dropped = Instant::now();
        drop(src);
        assert!(eventually(Duration::from_secs(2), || !shared
            .running
            .load(Ordering::Acquire)));
        assert!(dropped.elapsed() < RETRY_INTERVAL);
    }

    #[test]
    fn drop_stops_a_busy_decoder_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("long.wav");
        write_wav(&a, 44_100, &[440.0, 660.0], 0.4, 3.0);
        let src = open(&[&a]);
        let shared = src.shared.clone();
        // Let it fill the ring and park on it.
        assert!(eventually(Duration::from_secs(10), || src
            .buffered_frames()
            >= RING_SAMPLES / 2 - 2048));
        drop(src);
        assert!(eventually(Duration::from_secs(2), || !shared
            .running
            .load(Ordering::Acquire)));
    }

    #[test]
    fn underrun_pads_with_silence_and_counts() {
        let (mut prod, cons) = HeapRb::<f32>::new(RING_SAMPLES).split();
        let mut src = FileSource {
            cons,
            underruns: 0,
            name: "test".into(),
            shared: Arc::new(Shared::default()),
            decoder: std::thread::current(),
        };
        let mut f = [0.5; FRAME_LEN];
        src.fill(&mut f);
        assert!(f.iter().all(|&x| x == 0.0));
        assert_eq!(src.underruns(), 1);
        prod.push_slice(&[0.25; 1000]);
        src.fill(&mut f);
        assert!(f[..1000].iter().all(|&x| x == 0.25));
        assert!(f[1000..].iter().all(|&x| x == 0.0));
        assert_eq!(src.underruns(), 2);
        prod.push_slice(&[0.125; FRAME_LEN + 10]);
        src.fill(&mut f);
        assert!(f.iter().all(|&x| x == 0.125));
        assert_eq!(src.underruns(), 2);
        assert_eq!(src.buffered_frames(), 5);
    }

    #[test]
    fn flac_96k_stereo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = dir.path().join("in.wav");
        let flac = dir.path().join("out.flac");
        write_wav(&wav, 96_000, &[440.0, 660.0], 0.4, 0.8);
        if !encode(
            "flac",
            &[
                "--silent".as_ref(),
                "-f".as_ref(),
                "-o".as_ref(),
                flac.as_os_str(),
                wav.as_os_str(),
            ],
        ) {
            return;
        }
        let mut src = open(&[&flac]);
        let (l, r) = deinterleave(&pull(&mut src, 35));
        assert_freq(secs(&l, 0.05, 0.7), 440.0, "flac left");
        assert_freq(secs(&r, 0.05, 0.7), 660.0, "flac right");
        assert!((rms(secs(&l, 0.05, 0.7)) - 0.4 / 2f32.sqrt()).abs() < 0.01);
    }

    #[test]
    fn mp3_44k1_stereo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = dir.path().join("in.wav");
        let mp3 = dir.path().join("out.mp3");
        write_wav(&wav, 44_100, &[440.0, 660.0], 0.4, 1.0);
        if !encode(
            "lame",
            &[
                "--quiet".as_ref(),
                "-b".as_ref(),
                "192".as_ref(),
                wav.as_os_str(),
                mp3.as_os_str(),
            ],
        ) {
            return;
        }
        let mut src = open(&[&mp3]);
        let (l, r) = deinterleave(&pull(&mut src, 45));
        assert_freq(secs(&l, 0.1, 0.8), 440.0, "mp3 left");
        assert_freq(secs(&r, 0.1, 0.8), 660.0, "mp3 right");
        let left = Spectrum::new(secs(&l, 0.1, 0.8), SAMPLE_RATE);
        assert!(left.band_fraction(440.0, 20.0) > 0.99);
    }

    #[test]
    fn ogg_vorbis_32k_mono() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = dir.path().join("in.wav");
        let ogg = dir.path().join("out.ogg");
        write_wav(&wav, 32_000, &[1000.0], 0.4, 1.0);
        if !encode(
            "oggenc",
            &[
                "-Q".as_ref(),
                "-q".as_ref(),
                "5".as_ref(),
                "-o".as_ref(),
                ogg.as_os_str(),
                wav.as_os_str(),
            ],
        ) {
            return;
        }
        let mut src = open(&[&ogg]);
        let (l, r) = deinterleave(&pull(&mut src, 45));
        assert_freq(secs(&l, 0.1, 0.8), 1000.0, "vorbis left");
        assert_freq(secs(&r, 0.1, 0.8), 1000.0, "vorbis right");
        assert!((rms(secs(&l, 0.1, 0.8)) - 0.4 / 2f32.sqrt()).abs() < 0.02);
    }
}
