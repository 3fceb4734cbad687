//! Counters and histograms, rendered as Prometheus text at `/metrics`.
//!
//! Written from the TX thread per packet with relaxed atomics only (no lock on the packet
//! path); the per-stream viewer gauge takes a lock, but only when a viewer comes or goes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::EndReason;

mod per_stream;
pub use per_stream::StreamCount;

/// Bucket upper bounds in seconds for the TX timing histograms. Fine below 1 ms and up to
/// 5 ms so that targets like "p99 under 1 ms, max under 5 ms" can be read from a scrape
/// (the load tool, examples/whep_load.rs, does); the coarser bounds of the first version
/// (50 µs, 100 µs, 250 µs, 500 µs, 1 ms, 2 ms, 5 ms, 10 ms and up) are all still there.
const BUCKETS: [f64; 28] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_25, 0.000_3,
    0.000_4, 0.000_5, 0.000_6, 0.000_7, 0.000_8, 0.000_9, 0.001, 0.001_5, 0.002, 0.003, 0.004,
    0.005, 0.007_5, 0.01, 0.015, 0.02, 0.05, 0.1, 1.0,
];

/// A fixed-bucket histogram of durations, with the largest observation since start.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        self.sum_nanos.fetch_add(nanos, Relaxed);
        self.max_nanos.fetch_max(nanos, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The largest observation since start.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos.load(Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
    }

    /// The largest observation as a gauge of its own (`max_name`), next to the histogram.
    fn render_max(&self, out: &mut String, max_name: &str, help: &str) {
        let max = self.max_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "# HELP {max_name} {help}\n# TYPE {max_name} gauge\n{max_name} {max}"
        );
    }
}

/// Every metric the server exports.
#[derive(Default)]
pub struct Metrics {
    viewers: Mutex<BTreeMap<String, u64>>,
    publishers: Mutex<BTreeMap<String, u64>>,
    /// Audio and video frames received from publishers.
    pub media_received: AtomicU64,
    sessions_created: AtomicU64,
    sessions_closed: AtomicU64,
    sessions_failed: AtomicU64,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    /// Datagrams the UDP loop could not route to a session.
    pub udp_unrouted: AtomicU64,
    /// STUN requests naming a session's ufrag, from an address it has not learned, whose
    /// MESSAGE-INTEGRITY did not verify: dropped by the demux.
    pub udp_stun_unauthenticated: AtomicU64,
    /// Datagrams dropped because an owner's queue was full.
    pub udp_queue_full: AtomicU64,
    /// How late each TX tick started after its deadline (every TX thread's ticks: on a
    /// thread that does not mix, from the deadline of the mixing thread's tick).
    pub tick_lateness: Histogram,
    /// How long each tick's mix, encode and fan-out took (every TX thread's ticks).
    pub fanout: Histogram,
    /// Ticks a TX thread that does not mix never got: its queue of ticks was full.
    pub tx_frames_dropped: AtomicU64,
    /// Datagrams the batched sender dropped: the kernel had no room after a few short
    /// waits, or refused that one (`net::batch`).
    pub udp_send_dropped: AtomicU64,
    /// Send system calls the batched sender made (`sendmmsg`, a few `sendto`).
    pub udp_send_calls: AtomicU64,
    /// Opus encodes of a stream's mix (one per stream per tick while it is audible).
    mixer_encodes: AtomicU64,
    /// Stream frames sent as the kept silence packet, not encoded.
    mixer_silence_reused: AtomicU64,
    mixminus_encodes: AtomicU64,
    mixminus_shared: AtomicU64,
    mixminus_switches: AtomicU64,
    /// Audio packets and video frames a recording lost because its writer thread's queue
    /// was full (the disk fell behind; `record`).
    pub recording_dropped: AtomicU64,
    /// Per-stream media counts.
    per_stream: per_stream::PerStream,
}

impl Metrics {
    /// A session was created (answer sent).
    pub fn session_created(&self) {
        self.sessions_created.fetch_add(1, Relaxed);
    }

    /// A viewer joined `stream`'s TX thread.
    pub fn viewer_added(&self, stream: &str) {
        // A poisoned lock only means another thread panicked mid-update of a gauge.
        let mut v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        *v.entry(stream.to_string()).or_default() += 1;
    }

    /// A viewer left `stream`.
    pub fn viewer_removed(&self, stream: &str, reason: EndReason) {
        let mut v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = v.get_mut(stream) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                v.remove(stream);
            }
        }
        self.ended(reason);
    }

    /// A publisher started feeding `stream`.
    pub fn publisher_added(&self, stream: &str) {
        let mut v = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
        *v.entry(stream.to_string()).or_default() += 1;
    }

    /// A publisher of `stream` ended.
    pub fn publisher_removed(&self, stream: &str, reason: EndReason) {
        let mut v = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = v.get_mut(stream) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                v.remove(stream);
            }
        }
        self.ended(reason);
    }

    fn ended(&self, reason: EndReason) {
        match reason {
            EndReason::Closed | EndReason::PeerClosed | EndReason::StreamEnded => {
                &self.sessions_closed
            }
            EndReason::IceFailed | EndReason::Failed | EndReason::Idle => &self.sessions_failed,
        }
        .fetch_add(1, Relaxed);
    }

    /// Viewers of `stream` now.
    pub fn viewers_of(&self, stream: &str) -> u64 {
        let v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        v.get(stream).copied().unwrap_or(0)
    }

    /// One tick's mixing thread work: `encoded` streams ran the Opus encoder, `reused` sent
    /// the kept silence packet.
    pub fn mixed(&self, encoded: u64, reused: u64) {
        self.mixer_encodes.fetch_add(encoded, Relaxed);
        self.mixer_silence_reused.fetch_add(reused, Relaxed);
    }

    /// One tick's mix-minus work: `own` talkers got a frame of their own (an encode each),
    /// `shared` got the stream's shared frame, `switches` went from shared to own.
    pub fn mix_minus(&self, own: u64, shared: u64, switches: u64) {
        self.mixminus_encodes.fetch_add(own, Relaxed);
        self.mixminus_shared.fetch_add(shared, Relaxed);
        self.mixminus_switches.fetch_add(switches, Relaxed);
    }

    /// Opus encodes of stream mixes so far.
    pub fn mixer_encodes(&self) -> u64 {
        self.mixer_encodes.load(Relaxed)
    }

    /// Stream frames sent as the kept silence packet so far.
    pub fn mixer_silence_reused(&self) -> u64 {
        self.mixer_silence_reused.load(Relaxed)
    }

    /// One tick's audio to `stream`'s viewers: `packets` of `bytes` payload in all.
    pub fn stream_sent(&self, stream: &str, packets: u64, bytes: u64) {
        self.per_stream.sent(stream, packets, bytes);
    }

    /// `bytes` of media payload from `stream`'s publishers.
    pub fn stream_received(&self, stream: &str, bytes: u64) {
        self.per_stream.received(stream, bytes);
    }

    /// A viewer of `stream` reported `lost` more packets lost.
    pub fn stream_viewer_loss(&self, stream: &str, lost: u64) {
        self.per_stream.viewer_lost(stream, lost);
    }

    /// `stream`'s media counts so far.
    pub fn stream_count(&self, stream: &str) -> StreamCount {
        self.per_stream.get(stream)
    }

    /// A datagram of `len` bytes went out.
    #[inline]
    pub fn transmit(&self, len: usize) {
        self.packets_sent.fetch_add(1, Relaxed);
        self.bytes_sent.fetch_add(len as u64, Relaxed);
    }

    /// Packets sent so far.
    pub fn packets_sent(&self) -> u64 {
        self.packets_sent.load(Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.render_with(&[])
    }

    /// [`Metrics::render`], with a `0` sample of the per-stream gauges for each of `streams`
    /// that has no viewer or publisher (a series that vanishes at zero reads as "no data"
    /// on a dashboard, not as "nobody").
    pub fn render_with(&self, streams: &[String]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP mixcast_viewers Viewers connected to a stream now.\n# TYPE mixcast_viewers gauge"
        );
        for (stream, n) in with_zeros(&self.viewers, streams) {
            let _ = writeln!(out, "mixcast_viewers{{stream=\"{}\"}} {n}", escape(&stream));
        }
        let _ = writeln!(
            out,
            "# HELP mixcast_publishers WHIP publishers feeding a stream now.\n# TYPE mixcast_publishers gauge"
        );
        for (stream, n) in with_zeros(&self.publishers, streams) {
            let _ = writeln!(
                out,
                "mixcast_publishers{{stream=\"{}\"}} {n}",
                escape(&stream)
            );
        }
        self.per_stream.render(streams, &mut out);
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "mixcast_media_received_total",
                "Audio and video frames received from publishers.",
                &self.media_received,
            ),
            (
                "mixcast_sessions_created_total",
                "WebRTC sessions created.",
                &self.sessions_created,
            ),
            (
                "mixcast_sessions_closed_total",
                "Sessions closed by DELETE, by the peer, or at shutdown.",
                &self.sessions_closed,
            ),
            (
                "mixcast_sessions_failed_total",
                "Sessions ended by ICE, consent or DTLS failure.",
                &self.sessions_failed,
            ),
            (
                "mixcast_packets_sent_total",
                "UDP datagrams sent.",
                &self.packets_sent,
            ),
            (
                "mixcast_bytes_sent_total",
                "UDP payload bytes sent.",
                &self.bytes_sent,
            ),
            (
                "mixcast_udp_unrouted_total",
                "Datagrams from unknown peers, dropped.",
                &self.udp_unrouted,
            ),
            (
                "mixcast_udp_stun_unauthenticated_total",
                "STUN requests naming a session from a new address with a wrong MESSAGE-INTEGRITY, dropped.",
                &self.udp_stun_unauthenticated,
            ),
            (
                "mixcast_udp_queue_full_total",
                "Datagrams dropped on a full owner queue.",
                &self.udp_queue_full,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.tick_lateness.render(
            &mut out,
            "mixcast_tx_tick_lateness_seconds",
            "How late each 20 ms TX tick started after its deadline (every TX thread).",
        );
        self.fanout.render(
            &mut out,
            "mixcast_tx_fanout_seconds",
            "Time per tick to mix, encode once and send to every viewer (per TX thread).",
        );
        for (name, help, v) in [
            (
                "mixcast_tx_frames_dropped_total",
                "Ticks a TX thread that does not mix missed because it was too far behind.",
                &self.tx_frames_dropped,
            ),
            (
                "mixcast_udp_send_dropped_total",
                "Datagrams the batched sender dropped (no room in the kernel, or refused).",
                &self.udp_send_dropped,
            ),
            (
                "mixcast_udp_send_calls_total",
                "Send system calls of the batched sender (sendmmsg).",
                &self.udp_send_calls,
            ),
            (
                "mixcast_mixer_encodes_total",
                "Opus encodes of stream mixes (one per audible stream per tick).",
                &self.mixer_encodes,
            ),
            (
                "mixcast_mixer_silence_reused_total",
                "Stream frames sent as the kept silence packet instead of encoded.",
                &self.mixer_silence_reused,
            ),
            (
                "mixcast_mixminus_encodes_total",
                "Mix-minus frames encoded for talkers (one per audible talker per tick).",
                &self.mixminus_encodes,
            ),
            (
                "mixcast_mixminus_shared_total",
                "Talkers' frames sent as the stream's shared frame (the talker was silent).",
                &self.mixminus_shared,
            ),
            (
                "mixcast_mixminus_switches_total",
                "Talkers switched from the shared frame to their own mix-minus.",
                &self.mixminus_switches,
            ),
            (
                "mixcast_recording_dropped_total",
                "Audio packets and video frames not recorded: the recording writer's queue was full.",
                &self.recording_dropped,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.tick_lateness.render_max(
            &mut out,
            "mixcast_tx_tick_lateness_max_seconds",
            "The latest a TX tick started after its deadline, since start.",
        );
        self.fanout.render_max(
            &mut out,
            "mixcast_tx_fanout_max_seconds",
            "The longest tick (mix, encode, send to every viewer), since start.",
        );
        out
    }
}

/// A per-stream gauge's samples: the counted streams, and 0 for each of `streams` not
/// among them, by name.
fn with_zeros(gauge: &Mutex<BTreeMap<String, u64>>, streams: &[String]) -> BTreeMap<String, u64> {
    // A poisoned lock only means another thread panicked mid-update of a gauge.
    let mut all = gauge.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for s in streams {
        all.entry(s.clone()).or_insert(0);
    }
    all
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.tick_lateness.observe(Duration::from_micros(30));
        m.tick_lateness.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_bucket{le=\"0.00005\"} 1"));
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_count 2"));
    }

    #[test]
    fn fine_buckets_below_5_ms_and_a_max_gauge() {
        let m = Metrics::default();
        m.tick_lateness.observe(Duration::from_micros(850));
        m.tick_lateness.observe(Duration::from_micros(3500));
        m.tick_lateness.observe(Duration::from_micros(120));
        let text = m.render();
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_bucket{le=\"0.0008\"} 1"));
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_bucket{le=\"0.0009\"} 2"));
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_bucket{le=\"0.003\"} 2"));
        assert!(text.contains("mixcast_tx_tick_lateness_seconds_bucket{le=\"0.004\"} 3"));
        assert!(text.contains("mixcast_tx_tick_lateness_max_seconds 0.0035\n"));
        assert!(text.contains("mixcast_tx_fanout_max_seconds 0\n"));
        assert_eq!(m.tick_lateness.max(), Duration::from_micros(3500));
    }

    #[test]
    fn viewer_gauge() {
        let m = Metrics::default();
        m.viewer_added("live");
        m.viewer_added("live");
        m.viewer_removed("live", EndReason::Closed);
        assert_eq!(m.viewers_of("live"), 1);
        assert!(m.render().contains("mixcast_viewers{stream=\"live\"} 1"));
        assert!(m.render().contains("mixcast_sessions_closed_total 1"));
    }

    #[test]
    fn every_stream_has_its_gauge_samples_zero_included() {
        let m = Metrics::default();
        m.viewer_added("live");
        m.viewer_removed("live", EndReason::Closed);
        m.publisher_added("mic");
        let text = m.render_with(&["live".into(), "mic".into(), "quiet".into()]);
        for sample in [
            "mixcast_viewers{stream=\"live\"} 0\n",
            "mixcast_viewers{stream=\"mic\"} 0\n",
            "mixcast_viewers{stream=\"quiet\"} 0\n",
            "mixcast_publishers{stream=\"live\"} 0\n",
            "mixcast_publishers{stream=\"mic\"} 1\n",
        ] {
            assert!(text.contains(sample), "{sample} missing in\n{text}");
        }
        // Without the list, only streams with someone (as before).
        assert!(!m.render().contains("stream=\"quiet\""));
    }
}
