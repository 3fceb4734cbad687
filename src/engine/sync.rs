//! Lip-sync between a stream's mixed audio and its forwarded video.
//!
//! A viewer lines audio up with video by the wallclock each stream's sender reports (RTCP
//! SR) carry: str0m derives them from the wallclock given with each write. Forwarded video
//! arrives and leaves at once, but the publisher's audio waits in its jitter buffer before
//! it is mixed, so writing both with "now" would make the viewer play the audio late by
//! that buffer's delay (and by the publisher's own capture offsets, which its reports
//! correct for).
//!
//! [`AvSync`] follows one publisher: its audio and video sender reports map RTP times to
//! its capture clock, and the earliest recent "arrival minus capture" of its video maps
//! that clock onto ours. Video is then written with the wallclock of its capture (moved
//! onto our clock), and the mix with the wallclock of the capture of the publisher audio
//! it is playing. The same offset serves both, so its exact value does not matter for the
//! sync, only that it keeps every wallclock in the past, as str0m requires.
//!
//! Pure arithmetic: no clock reads, no allocation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::media::MediaTime;
use str0m::rtp::rtcp::SenderInfo;

/// How long one window of the offset's running minimum lasts; the minimum covers the last
/// one to two windows, so it follows clock drift and a sender's clock steps within
/// seconds while ignoring one late frame.
const OFFSET_WINDOW: Duration = Duration::from_secs(2);

/// A mix wallclock further than this behind "now" is not trusted (a stale report, a
/// sender that restarted): the tick's own time is used instead.
const MAX_AUDIO_LAG: Duration = Duration::from_secs(2);

/// Simulcast layers followed; frames of further layers share the last slot.
pub const MAX_LAYERS: usize = 4;

/// An RTP time to sender-clock mapping from one sender report.
#[derive(Debug, Clone, Copy)]
struct Report {
    rtp: u32,
    /// The report's NTP time, seconds since the Unix epoch.
    ntp: f64,
    rate: f64,
}

impl Report {
    fn from_info(info: &SenderInfo) -> Option<Report> {
        let ntp = info.ntp_time.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        let rate = info.rtp_time.frequency().get() as f64;
        // Truncation keeps the 32 bits that were on the wire.
        let rtp = info.rtp_time.numer() as u32;
        (rate > 0.0).then_some(Report { rtp, ntp, rate })
    }

    /// Capture time (sender clock, seconds) of RTP time `rtp`.
    fn capture(&self, rtp: u32) -> f64 {
        // Within ±2^31 ticks of the report (hours at 90 kHz): wrapping difference.
        let delta = rtp.wrapping_sub(self.rtp) as i32;
        self.ntp + f64::from(delta) / self.rate
    }
}

/// The sync state of one publisher (see the module doc).
#[derive(Debug, Default)]
pub struct AvSync {
    /// Our clock is measured in seconds since this instant (the first frame seen).
    anchor: Option<Instant>,
    audio: Option<Report>,
    /// Per simulcast layer (each has its own SSRC, RTP clock origin and reports).
    video: [Option<Report>; MAX_LAYERS],
    /// Running minimum of (arrival, our clock) - (capture, sender clock), in seconds: the
    /// current window's and the previous one's, and when the current one started.
    min_now: Option<f64>,
    min_prev: Option<f64>,
    window_start: f64,
}

impl AvSync {
    /// Notes the sender report that came with an audio packet.
    pub fn on_audio(&mut self, info: Option<&SenderInfo>) {
        if let Some(r) = info.and_then(Report::from_info) {
            self.audio = Some(r);
        }
    }

    /// A video frame of simulcast layer `layer` (0 without simulcast) and RTP time `time`
    /// arrived at `arrival`, with the latest sender report of its RTP stream: returns the
    /// wallclock to forward it with (never after `arrival`). Before the first video report
    /// of its layer, that is the arrival time.
    pub fn on_video(
        &mut self,
        layer: usize,
        time: MediaTime,
        info: Option<&SenderInfo>,
        arrival: Instant,
    ) -> Instant {
        let slot = &mut self.video[layer.min(MAX_LAYERS - 1)];
        if let Some(r) = info.and_then(Report::from_info) {
            *slot = Some(r);
        }
        let Some(report) = *slot else {
            return arrival;
        };
        let anchor = *self.anchor.get_or_insert(arrival);
        let ours = arrival.saturating_duration_since(anchor).as_secs_f64();
        // Truncation keeps the wire's 32 bits.
        let capture = report.capture(time.numer() as u32);
        self.observe(ours, ours - capture);
        let offset = self.offset().unwrap_or(ours - capture);
        at(anchor, capture + offset).min(arrival)
    }

    /// The wallclock for a mix whose frame starts with this publisher's audio of RTP time
    /// `playout_rtp`, at tick time `now`: `None` until both sender reports and a video
    /// frame have been seen, or when the result is not plausible.
    pub fn audio_wallclock(&self, playout_rtp: Option<u32>, now: Instant) -> Option<Instant> {
        let (anchor, audio, offset) = (self.anchor?, self.audio?, self.offset()?);
        let capture = audio.capture(playout_rtp?);
        let wallclock = at(anchor, capture + offset);
        // str0m needs wallclocks in the past; audio played this tick cannot have been
        // captured later than now.
        let lag = now.saturating_duration_since(wallclock);
        (lag <= MAX_AUDIO_LAG).then_some(wallclock.min(now))
    }

    fn observe(&mut self, ours: f64, sample: f64) {
        if ours - self.window_start >= OFFSET_WINDOW.as_secs_f64() || self.min_now.is_none() {
            self.min_prev = self.min_now;
            self.min_now = None;
            self.window_start = ours;
        }
        self.min_now = Some(self.min_now.map_or(sample, |m| m.min(sample)));
    }

    fn offset(&self) -> Option<f64> {
        match (self.min_now, self.min_prev) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `anchor` plus `secs` (which may be negative); `anchor` itself for a value that is not
/// finite or reaches before the clock's origin.
fn at(anchor: Instant, secs: f64) -> Instant {
    if !secs.is_finite() {
        return anchor;
    }
    let d = Duration::from_secs_f64(secs.abs().min(1e9));
    if secs >= 0.0 {
        anchor + d
    } else {
        anchor.checked_sub(d).unwrap_or(anchor)
    }
}

/// Seconds since the Unix epoch of a sender clock time (for tests and logs).
pub fn ntp_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Frequency;
    use str0m::rtp::Ssrc;

    fn info(ntp: f64, rtp: u64, rate: Frequency) -> SenderInfo {
        SenderInfo {
            ssrc: Ssrc::from(1),
            ntp_time: UNIX_EPOCH + Duration::from_secs_f64(ntp),
            rtp_time: MediaTime::new(rtp, rate),
            sender_packet_count: 0,
            sender_octet_count: 0,
        }
    }

    /// Audio and video captured at the same instant get the same wallclock, whatever the
    /// two streams' RTP origins, and however long the audio waited before the mix.
    #[test]
    fn same_capture_same_wallclock() {
        let t0 = Instant::now();
        let mut s = AvSync::default();
        // Sender clock 1000.0 s = video RTP 90_000 = audio RTP 5_000.
        let v = info(1000.0, 90_000, Frequency::NINETY_KHZ);
        let a = info(1000.0, 5_000, Frequency::FORTY_EIGHT_KHZ);
        s.on_audio(Some(&a));
        // A video frame captured at 1000.5 s arrives 30 ms later, at t0 + 0.5 s + 30 ms.
        let arrival = t0 + Duration::from_millis(530);
        let w = s.on_video(
            0,
            MediaTime::new(90_000 + 45_000, Frequency::NINETY_KHZ),
            Some(&v),
            arrival,
        );
        assert_eq!(w, arrival, "the first frame defines the offset");
        // The audio captured at 1000.5 s is mixed 80 ms after it arrived.
        let now = arrival + Duration::from_millis(80);
        let wa = s.audio_wallclock(Some(5_000 + 24_000), now).unwrap();
        let diff = wa.max(w) - wa.min(w);
        assert!(diff < Duration::from_micros(10), "{diff:?}");
    }

    /// The offset is the minimum transit: a late frame keeps its capture-based wallclock,
    /// earlier than its arrival.
    #[test]
    fn late_frames_keep_their_capture_time() {
        let t0 = Instant::now();
        let mut s = AvSync::default();
        let v = info(50.0, 0, Frequency::NINETY_KHZ);
        for n in 0..30u64 {
            // Frames every 33 ms; every third one 40 ms late.
            let late = if n % 3 == 2 { 40 } else { 0 };
            let arrival = t0 + Duration::from_millis(33 * n + 10 + late);
            let w = s.on_video(
                0,
                MediaTime::new(n * 2970, Frequency::NINETY_KHZ),
                Some(&v),
                arrival,
            );
            let expected = t0 + Duration::from_millis(33 * n + 10);
            let err = w.max(expected) - w.min(expected);
            assert!(err < Duration::from_millis(1), "frame {n}: {err:?}");
        }
    }

    /// Nothing to go by before the reports: audio keeps the tick time (None), video its
    /// arrival; a stale audio mapping is refused.
    #[test]
    fn without_reports_nothing_changes() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut s = AvSync::default();
        let w = s.on_video(0, MediaTime::new(1, Frequency::NINETY_KHZ), None, t0);
        assert_eq!(w, t0);
        assert!(s.audio_wallclock(Some(0), t0).is_none());
        s.on_audio(Some(&info(10.0, 0, Frequency::FORTY_EIGHT_KHZ)));
        assert!(
            s.audio_wallclock(Some(0), t0).is_none(),
            "no video report yet"
        );
        let v = info(10.0, 0, Frequency::NINETY_KHZ);
        s.on_video(0, MediaTime::new(0, Frequency::NINETY_KHZ), Some(&v), t0);
        assert!(s.audio_wallclock(Some(0), t0).is_some());
        // Audio from 5 s before the video: implausible, refused.
        let stale = 0u32.wrapping_sub(5 * 48_000);
        assert!(s.audio_wallclock(Some(stale), t0).is_none());
        assert!(s.audio_wallclock(None, t0).is_none(), "no audio playing");
    }
}
