//! The progress line `mixcast push` and `mixcast pull` write to stderr every few seconds:
//! media time, bitrate over the last interval, RTT and loss, and for pull the level of each
//! channel.
//!
//! Owns only the arithmetic and the wording; the commands decide when to print.

use std::time::{Duration, Instant};

/// How often the commands print their progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Level below which a channel reads as silent (dBFS).
const FLOOR_DBFS: f32 = -120.0;

/// Bitrate between two progress lines.
#[derive(Debug)]
pub struct Progress {
    last_at: Instant,
    last_bytes: u64,
    next_at: Instant,
}

impl Progress {
    /// A first line is due [`PROGRESS_EVERY`] from `now`.
    pub fn new(now: Instant) -> Progress {
        Progress {
            last_at: now,
            last_bytes: 0,
            next_at: now + PROGRESS_EVERY,
        }
    }

    /// Whether a line is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// The bitrate (kbit/s) since the last call, given the byte count so far, and starts
    /// the next interval.
    pub fn kbps(&mut self, now: Instant, bytes: u64) -> f64 {
        let secs = (now - self.last_at).as_secs_f64();
        let delta = bytes.saturating_sub(self.last_bytes);
        self.last_at = now;
        self.last_bytes = bytes;
        self.next_at = now + PROGRESS_EVERY;
        if secs > 0.0 {
            delta as f64 * 8.0 / secs / 1000.0
        } else {
            0.0
        }
    }
}

/// `h:mm:ss` of a media time.
pub fn clock(t: Duration) -> String {
    let s = t.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// "RTT 0.4 ms (ICE)" or "RTT ?" when not measured yet; the basis in brackets.
pub fn rtt_text(rtt: Option<(Duration, &str)>) -> String {
    match rtt {
        Some((d, basis)) => format!("RTT {:.1} ms ({basis})", d.as_secs_f64() * 1000.0),
        None => "RTT ?".into(),
    }
}

/// "loss 0.3 % (RR)" or "loss ?" when nothing says it; the basis in brackets.
pub fn loss_text(loss: Option<(f32, &str)>) -> String {
    match loss {
        Some((f, basis)) => format!("loss {:.1} % ({basis})", f * 100.0),
        None => "loss ?".into(),
    }
}

/// Per-channel RMS of interleaved stereo audio since the last [`take`](Self::take).
#[derive(Debug, Default)]
pub struct Levels {
    sum: [f64; 2],
    frames: u64,
}

impl Levels {
    /// Adds interleaved stereo samples.
    pub fn add(&mut self, pcm: &[f32]) {
        for pair in pcm.chunks_exact(2) {
            self.sum[0] += f64::from(pair[0]) * f64::from(pair[0]);
            self.sum[1] += f64::from(pair[1]) * f64::from(pair[1]);
        }
        self.frames += (pcm.len() / 2) as u64;
    }

    /// Left and right RMS in dBFS (a full-scale sine reads -3 dBFS), and starts over.
    pub fn take(&mut self) -> [f32; 2] {
        let frames = self.frames.max(1) as f64;
        let db = |sum: f64| {
            let rms = (sum / frames).sqrt();
            if rms > 0.0 {
                ((20.0 * rms.log10()) as f32).max(FLOOR_DBFS)
            } else {
                FLOOR_DBFS
            }
        };
        let out = [db(self.sum[0]), db(self.sum[1])];
        *self = Levels::default();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording() {
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(
            rtt_text(Some((Duration::from_micros(420), "ICE"))),
            "RTT 0.4 ms (ICE)"
        );
        assert_eq!(rtt_text(None), "RTT ?");
        assert_eq!(loss_text(Some((0.003, "RR"))), "loss 0.3 % (RR)");
    }

    #[test]
    fn levels_of_a_quarter_scale_sine() {
        let mut l = Levels::default();
        let pcm: Vec<f32> = (0..48_000)
            .flat_map(|i| {
                let x = 0.25 * (i as f32 * 0.1).sin();
                [x, 0.0]
            })
            .collect();
        l.add(&pcm);
        let [left, right] = l.take();
        // 0.25 peak: RMS 0.177, -15.1 dBFS.
        assert!((left + 15.05).abs() < 0.2, "{left}");
        assert_eq!(right, FLOOR_DBFS);
    }

    #[test]
    fn bitrate_per_interval() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        assert!(!p.due(t0));
        assert!(p.due(t0 + PROGRESS_EVERY));
        let k = p.kbps(t0 + Duration::from_secs(2), 32_000);
        assert!((k - 128.0).abs() < 1e-9);
    }
}
