//! `mixcast push URL --source SPEC`: sends a tone or audio files to any WHIP endpoint,
//! prints a progress line every few seconds, reconnects with backoff when the session ends
//! under it, and DELETEs the session on Ctrl-C or SIGTERM.
//!
//! Owns the command's loop only: each session is a [`Publisher`] (src/client/whip.rs),
//! all of them pulling from one source, so a reconnect goes on where the audio was.

use super::link_stats::LinkStats;
use super::progress::{clock, loss_text, rtt_text, Progress};
use super::signals::StopFlag;
use super::whip::{ClientError, PublishOptions, Publisher};
use super::{endpoint_address, local_address_for, CommandError};
use crate::media::sources::{self, Source, SourceSpec};
use crate::media::{Frame, FRAME_DURATION};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first wait before reconnecting; it doubles up to [`BACKOFF_MAX`] while attempts
/// fail, and starts over once a session connects.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the watching loop looks at the signal flag and the session.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// The options of `mixcast push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The WHIP endpoint, e.g. http://127.0.0.1:8889/mic/whip (a mixcast, MediaMTX,
    /// Broadcast Box or any WHIP server).
    pub url: String,

    /// What to send, as the server's --source takes it: `tone` (440 Hz left, 660 Hz right,
    /// beeping), `silence`, `file:PATH[,PATH...]` or a bare audio file path (MP3, FLAC,
    /// WAV, Ogg Vorbis, M4A/AAC); files play in order and loop.
    #[arg(long, value_name = "SPEC", default_value = "tone")]
    pub source: String,

    /// A Bearer token for the endpoint (a mixcast's --publish-token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MIXCAST_PUSH_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Stop after this many seconds of audio sent (across reconnects); without it, push
    /// until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "N")]
    pub seconds: Option<f64>,

    /// The local address to send media from and announce (default: 127.0.0.1 for a
    /// server on loopback, else the address the system routes to the server from).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,

    /// The Opus bitrate in kbit/s (6 to 510).
    #[arg(long, value_name = "KBPS", default_value_t = 128)]
    pub bitrate: u32,
}

/// One source shared by the publishers of successive sessions.
#[derive(Clone)]
struct SharedSource(Arc<Mutex<Box<dyn Source>>>);

impl Source for SharedSource {
    fn fill(&mut self, out: &mut Frame) {
        // Only one publisher pulls at a time; a poisoned lock means a panicked one, whose
        // source state is still a valid position in the audio.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).fill(out);
    }

    fn describe(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).describe()
    }
}

/// A checked `--seconds`.
pub(crate) fn parse_seconds(seconds: Option<f64>) -> Result<Option<Duration>, CommandError> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(CommandError::Usage(format!(
            "bad --seconds {s}: expected a positive number"
        ))),
    }
}

/// Whether a failed attempt is worth repeating: a refusal the server will repeat (bad
/// token, bad offer, wrong endpoint) is not; everything else (no answer, 5xx, a lost
/// connection, too many sessions) may pass.
fn is_permanent(e: &ClientError) -> bool {
    matches!(e.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 408 | 409 | 425 | 429))
}

/// Whether `e` is the failure of the DELETE that ends a session.
fn is_delete(e: &ClientError) -> bool {
    match e {
        ClientError::Status { method, .. } => *method == "DELETE",
        ClientError::Http(m) => m.starts_with("DELETE "),
        _ => false,
    }
}

/// Runs `mixcast push` until its `--seconds` are sent or `stop` is set.
pub fn run(args: &PushArgs, stop: &StopFlag) -> Result<(), CommandError> {
    let server = endpoint_address(&args.url)?;
    let spec: SourceSpec = args
        .source
        .parse()
        .map_err(|e: sources::SourceError| CommandError::Usage(e.to_string()))?;
    let total = parse_seconds(args.seconds)?;
    let bitrate = args.bitrate.saturating_mul(1000);
    if !crate::media::opus::BITRATE_RANGE.contains(&bitrate) {
        return Err(CommandError::Usage(format!(
            "bad --bitrate {}: expected 6 to 510 (kbit/s)",
            args.bitrate
        )));
    }
    let bind = match args.bind {
        Some(b) if b.is_unspecified() => {
            return Err(CommandError::Usage(format!(
                "bad --bind {b}: give the address to send from"
            )))
        }
        Some(b) => b,
        None => local_address_for(server)?,
    };
    let source = sources::open(&spec)
        .map_err(|e| CommandError::Usage(format!("--source {}: {e}", args.source)))?;
    let source = SharedSource(Arc::new(Mutex::new(source)));
    let stats = Arc::new(LinkStats::default());
    let sent =
        |stats: &LinkStats| FRAME_DURATION * u32::try_from(stats.packets()).unwrap_or(u32::MAX);
    let mut backoff = BACKOFF_START;
    let mut progress = Progress::new(Instant::now());

    loop {
        if stop.is_set() {
            return Ok(());
        }
        let remaining = total.map(|t| t.saturating_sub(sent(&stats)));
        if remaining == Some(Duration::ZERO) {
            eprintln!("push: sent {}; done", clock(sent(&stats)));
            return Ok(());
        }
        let mut opts = PublishOptions::new(
            args.url.clone(),
            Box::new(source.clone()),
            remaining.unwrap_or(Duration::MAX),
        );
        opts.token = args.token.clone();
        opts.bind = bind;
        opts.bitrate = bitrate;
        opts.stats = Some(stats.clone());
        opts.keep_send_times = false;
        let publisher = match Publisher::start(opts) {
            Ok(p) => p,
            Err(e) if is_permanent(&e) => {
                return Err(CommandError::Failed(format!("push: {e}")));
            }
            Err(e) => {
                eprintln!("push: {e}; retrying in {} s", backoff.as_secs_f32());
                if stop.sleep(backoff) {
                    return Ok(());
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_START;
        eprintln!(
            "push: connected to {} (session {}), sending {}",
            args.url,
            publisher.session_url(),
            source.describe()
        );
        while !publisher.is_finished() && !stop.is_set() {
            let now = Instant::now();
            if progress.due(now) {
                let kbps = progress.kbps(now, stats.bytes());
                eprintln!(
                    "push: {} sent, {kbps:.0} kbit/s, {}, {}",
                    clock(sent(&stats)),
                    rtt_text(stats.rtt().map(|(d, b)| (d, b.as_str()))),
                    loss_text(stats.loss().map(|(f, b)| (f, b.as_str()))),
                );
            }
            std::thread::sleep(WATCH_EVERY);
        }
        if stop.is_set() {
            let url = publisher.session_url().to_owned();
            match publisher.stop() {
                Ok(_) => eprintln!(
                    "push: stopped after {}; session {url} deleted",
                    clock(sent(&stats))
                ),
                Err(e) => eprintln!("push: stopped after {}; {e}", clock(sent(&stats))),
            }
            return Ok(());
        }
        let ended = publisher.wait();
        match ended {
            Ok(report) if !report.disconnected => continue,
            Ok(_) => eprintln!(
                "push: the session ended (the server closed it or stopped answering); \
                 reconnecting in {} s",
                backoff.as_secs_f32()
            ),
            // The media stopped and the DELETE after it failed too: the server is gone.
            Err(e) if is_delete(&e) => eprintln!(
                "push: the session ended (the server is gone; {e}); \
                 reconnecting in {} s",
                backoff.as_secs_f32()
            ),
            Err(e) => eprintln!(
                "push: the session ended ({e}); reconnecting in {} s",
                backoff.as_secs_f32()
            ),
        }
        if stop.sleep(backoff) {
            return Ok(());
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_positive() {
        assert!(parse_seconds(None).unwrap().is_none());
        assert_eq!(
            parse_seconds(Some(1.5)).unwrap(),
            Some(Duration::from_millis(1500))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(parse_seconds(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_that_repeat_are_permanent() {
        let status = |status| ClientError::Status {
            method: "POST",
            url: "http://x/y".into(),
            status,
            body: String::new(),
        };
        assert!(is_permanent(&status(401)));
        assert!(is_permanent(&status(404)));
        assert!(!is_permanent(&status(429)));
        assert!(!is_permanent(&status(503)));
        assert!(!is_permanent(&ClientError::Http("refused".into())));
    }
}
