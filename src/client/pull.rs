//! `mixcast pull URL --out FILE`: plays a WHEP stream into a WAV file (decoded, 16-bit),
//! an Ogg Opus file (the packets as they came, not re-encoded) or raw s16le stereo 48 kHz
//! on stdout, with a progress line and per-channel levels on stderr. Ctrl-C or SIGTERM
//! ends it with a valid file and a DELETE.
//!
//! Owns the output side only: the session is [`play_into`] (src/client/whep.rs).

use super::progress::{clock, loss_text, rtt_text, Levels, Progress};
use super::push::parse_seconds;
use super::signals::StopFlag;
use super::wav_out::{s16le, WavWriter};
use super::whep::{play_into, PlayOptions, PlayReport, PlaySink};
use super::{endpoint_address, local_address_for, CommandError};
use crate::media::SAMPLE_RATE;
use crate::record::OggOpusWriter;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long past `--seconds` of wall time a pull waits for audio that does not come (a
/// stream with gaps) before it ends with what it has.
const STALL_GRACE: Duration = Duration::from_secs(10);
/// The serial number of the one Ogg stream of a pulled file.
const OGG_SERIAL: u32 = 0x6d69_7863; // "mixc"

/// The options of `mixcast pull`.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// The WHEP endpoint, e.g. http://127.0.0.1:8889/live/whep.
    pub url: String,

    /// Where the audio goes: `FILE.wav` (decoded, 16-bit stereo 48 kHz), `FILE.ogg` or
    /// `FILE.opus` (Ogg Opus: the received packets, not re-encoded), or `-` for raw s16le
    /// stereo 48 kHz PCM on stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: String,

    /// A Bearer token for the stream (a mixcast's --read-token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MIXCAST_PULL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Stop after this many seconds of audio; without it, play until Ctrl-C, SIGTERM or
    /// the end of the stream.
    #[arg(long, value_name = "N")]
    pub seconds: Option<f64>,

    /// The local address to receive media on and announce (default: 127.0.0.1 for a
    /// server on loopback, else the address the system routes to the server from).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
}

/// Where the audio is written.
enum Output {
    Wav(WavWriter<BufWriter<File>>),
    Ogg(OggOpusWriter<BufWriter<File>>),
    Raw(BufWriter<io::Stdout>, Vec<u8>),
}

impl Output {
    fn create(out: &str) -> Result<Output, CommandError> {
        if out == "-" {
            return Ok(Output::Raw(BufWriter::new(io::stdout()), Vec::new()));
        }
        let path = PathBuf::from(out);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let kind = match ext.as_deref() {
            Some("wav" | "wave") => "wav",
            Some("ogg" | "opus" | "oga") => "ogg",
            _ => {
                return Err(CommandError::Usage(format!(
                "bad --out {out:?}: expected a name ending in .wav, .ogg or .opus, or - for stdout"
            )))
            }
        };
        let file = File::create(&path)
            .map(BufWriter::new)
            .map_err(|e| CommandError::Usage(format!("--out {out}: {e}")))?;
        let made = match kind {
            "wav" => WavWriter::new(file).map(Output::Wav),
            // No pre-skip: the packets are a live stream's, long past its encoder's delay.
            _ => OggOpusWriter::new(file, OGG_SERIAL, 0, &[("ENCODER", "mixcast pull")])
                .map(Output::Ogg),
        };
        made.map_err(|e| CommandError::Failed(format!("--out {out}: {e}")))
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Output::Wav(w) => w.finish().map(drop),
            Output::Ogg(w) => w.finish().map(drop),
            Output::Raw(mut w, _) => w.flush(),
        }
    }
}

/// The sink of one pull: writes, counts, prints progress, and says when to stop.
struct Pull<'a> {
    out: Output,
    /// Stereo samples to write in all (from `--seconds`), if bounded.
    target_frames: Option<u64>,
    /// Stereo samples decoded so far (what a WAV holds, what an Ogg's packets hold).
    frames: u64,
    /// Samples the Ogg's packets hold (they are written before they are decoded).
    ogg_frames: u64,
    levels: Levels,
    progress: Progress,
    stop: &'a StopFlag,
    /// The first write error; it ends the pull.
    error: Option<io::Error>,
}

impl Pull<'_> {
    fn full(&self, frames: u64) -> bool {
        self.target_frames.is_some_and(|t| frames >= t)
    }

    fn media_time(&self) -> Duration {
        Duration::from_secs_f64(self.frames as f64 / f64::from(SAMPLE_RATE))
    }

    fn note(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }
}

impl PlaySink for Pull<'_> {
    fn opus(&mut self, packet: &[u8], lost_before: u64) {
        if self.full(self.ogg_frames) || self.error.is_some() {
            return;
        }
        if let Output::Ogg(w) = &mut self.out {
            let written = w.write_after_loss(packet, lost_before);
            self.ogg_frames = (w.seconds() * f64::from(SAMPLE_RATE)).round() as u64;
            self.note(written);
        }
    }

    fn pcm(&mut self, pcm: &[f32]) {
        let mut take = pcm.len() / 2;
        if let Some(target) = self.target_frames {
            take = take.min(usize::try_from(target.saturating_sub(self.frames)).unwrap_or(0));
        }
        let pcm = &pcm[..take * 2];
        self.levels.add(pcm);
        self.frames += take as u64;
        if self.error.is_some() || pcm.is_empty() {
            return;
        }
        let written = match &mut self.out {
            Output::Wav(w) => w.write(pcm),
            Output::Ogg(_) => Ok(()),
            Output::Raw(w, buf) => {
                buf.clear();
                s16le(pcm, buf);
                w.write_all(buf)
            }
        };
        self.note(written);
    }

    fn keep_going(&mut self, report: &PlayReport) -> bool {
        let now = Instant::now();
        if self.progress.due(now) {
            let kbps = self.progress.kbps(now, report.bytes);
            let expected = report.packets + report.lost_packets;
            let loss = (expected > 0).then(|| report.lost_packets as f32 / expected as f32);
            let [l, r] = self.levels.take();
            eprintln!(
                "pull: {} received, {kbps:.0} kbit/s, {}, {} ({} packets), L {l:.1} dBFS, R {r:.1} dBFS",
                clock(self.media_time()),
                rtt_text(report.rtt.map(|d| (d, "ICE"))),
                loss_text(loss.map(|f| (f, "seq"))),
                report.lost_packets,
            );
        }
        self.error.is_none() && !self.stop.is_set() && !self.full(self.frames)
    }
}

/// Runs `mixcast pull` until its `--seconds` are written, `stop` is set or the stream
/// ends.
pub fn run(args: &PullArgs, stop: &StopFlag) -> Result<(), CommandError> {
    let server = endpoint_address(&args.url)?;
    let seconds = parse_seconds(args.seconds)?;
    let bind = match args.bind {
        Some(b) if b.is_unspecified() => {
            return Err(CommandError::Usage(format!(
                "bad --bind {b}: give the address to receive on"
            )))
        }
        Some(b) => b,
        None => local_address_for(server)?,
    };
    let out = Output::create(&args.out)?;
    let opts = PlayOptions {
        url: args.url.clone(),
        token: args.token.clone(),
        duration: seconds.map_or(Duration::MAX, |s| s + STALL_GRACE),
        bind,
        decode: true,
    };
    let mut pull = Pull {
        out,
        target_frames: seconds.map(|s| (s.as_secs_f64() * f64::from(SAMPLE_RATE)).round() as u64),
        frames: 0,
        ogg_frames: 0,
        levels: Levels::default(),
        progress: Progress::new(Instant::now()),
        stop,
        error: None,
    };
    let played = play_into(&opts, &mut pull);
    let media = clock(pull.media_time());
    let secs = pull.frames as f64 / f64::from(SAMPLE_RATE);
    let (write_error, full) = (pull.error.take(), pull.full(pull.frames));
    let finished = pull.out.finish();
    let name = if args.out == "-" { "stdout" } else { &args.out };
    // A reader that went away (`| head`) ends a pull to stdout as a finished one.
    let broken_pipe = |e: &io::Error| args.out == "-" && e.kind() == io::ErrorKind::BrokenPipe;
    let reader_gone = write_error.as_ref().is_some_and(broken_pipe);
    if let Some(e) = write_error.filter(|e| !broken_pipe(e)) {
        return Err(CommandError::Failed(format!("pull: writing {name}: {e}")));
    }
    if let Err(e) = finished.as_ref() {
        if !broken_pipe(e) {
            return Err(CommandError::Failed(format!("pull: finishing {name}: {e}")));
        }
    }
    let report = played.map_err(|e| CommandError::Failed(format!("pull: {e}")))?;
    eprintln!("pull: wrote {secs:.2} s ({media}) to {name}");
    if report.disconnected && !stop.is_set() && !full && !reader_gone {
        if report.closed_by_server && seconds.is_none() {
            eprintln!("pull: the server ended the stream");
            return Ok(());
        }
        return Err(CommandError::Failed(format!(
            "pull: the session ended after {secs:.2} s ({})",
            if report.closed_by_server {
                "the server closed it"
            } else {
                "the server stopped answering"
            }
        )));
    }
    if seconds.is_some() && !full && !stop.is_set() && !reader_gone {
        return Err(CommandError::Failed(format!(
            "pull: only {secs:.2} s of audio arrived in {} s",
            opts.duration.as_secs()
        )));
    }
    Ok(())
}
