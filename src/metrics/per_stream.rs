//! Per-stream media counters: audio sent to viewers (packets and payload bytes: a stream's
//! outgoing bitrate is the rate of its bytes), media received from its publishers, and the
//! loss its viewers report in their RTCP receiver reports.
//!
//! The TX thread adds to them once per tick per stream (or once per receiver report), never
//! per packet, so a short lock is fine. A stream's counters go when the stream does.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// One stream's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCount {
    /// Audio RTP packets sent to its viewers.
    pub sent_packets: u64,
    /// Their Opus payload bytes.
    pub sent_bytes: u64,
    /// Media payload bytes received from its publishers (audio and video).
    pub received_bytes: u64,
    /// Packets its viewers reported lost (the rise of each receiver report's cumulative
    /// count).
    pub viewer_lost: u64,
}

/// A counter's name, help text and value.
type Series = (&'static str, &'static str, fn(&StreamCount) -> u64);

/// Every stream's counts, by name.
#[derive(Debug, Default)]
pub struct PerStream(Mutex<BTreeMap<String, StreamCount>>);

impl PerStream {
    fn with(&self, stream: &str, f: impl FnOnce(&mut StreamCount)) {
        // A poisoned lock only means another thread panicked mid-update of a counter.
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(stream) {
            Some(c) => f(c),
            None => f(map.entry(stream.to_string()).or_default()),
        }
    }

    /// One tick's audio to `stream`'s viewers.
    pub fn sent(&self, stream: &str, packets: u64, bytes: u64) {
        self.with(stream, |c| {
            c.sent_packets += packets;
            c.sent_bytes += bytes;
        });
    }

    /// Media from `stream`'s publishers.
    pub fn received(&self, stream: &str, bytes: u64) {
        self.with(stream, |c| c.received_bytes += bytes);
    }

    /// A viewer of `stream` reported `lost` more packets lost.
    pub fn viewer_lost(&self, stream: &str, lost: u64) {
        self.with(stream, |c| c.viewer_lost += lost);
    }

    /// `stream`'s counts so far.
    pub fn get(&self, stream: &str) -> StreamCount {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(stream).copied().unwrap_or_default()
    }

    /// Forgets the streams not in `live` (their series end), and renders the others, each
    /// with a sample (0 for a stream without traffic yet).
    pub fn render(&self, live: &[String], out: &mut String) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !live.is_empty() {
            map.retain(|name, _| live.contains(name));
        }
        let mut all = map.clone();
        drop(map);
        for s in live {
            all.entry(s.clone()).or_default();
        }
        let series: [Series; 4] = [
            (
                "mixcast_stream_sent_packets_total",
                "Audio RTP packets sent to a stream's viewers.",
                |c| c.sent_packets,
            ),
            (
                "mixcast_stream_sent_bytes_total",
                "Opus payload bytes sent to a stream's viewers (rate: its outgoing bitrate).",
                |c| c.sent_bytes,
            ),
            (
                "mixcast_stream_received_bytes_total",
                "Media payload bytes received from a stream's publishers (rate: its incoming bitrate).",
                |c| c.received_bytes,
            ),
            (
                "mixcast_stream_viewer_lost_packets_total",
                "Packets a stream's viewers reported lost in their RTCP receiver reports.",
                |c| c.viewer_lost,
            ),
        ];
        for (name, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (stream, c) in &all {
                let _ = writeln!(
                    out,
                    "{name}{{stream=\"{}\"}} {}",
                    super::escape(stream),
                    value(c)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_go_with_their_stream() {
        let p = PerStream::default();
        p.sent("live", 10, 1600);
        p.sent("live", 10, 1600);
        p.received("mic", 500);
        p.viewer_lost("live", 3);
        assert_eq!(
            p.get("live"),
            StreamCount {
                sent_packets: 20,
                sent_bytes: 3200,
                received_bytes: 0,
                viewer_lost: 3
            }
        );
        let mut out = String::new();
        p.render(&["live".into(), "quiet".into()], &mut out);
        assert!(out.contains("mixcast_stream_sent_packets_total{stream=\"live\"} 20\n"));
        assert!(out.contains("mixcast_stream_sent_bytes_total{stream=\"quiet\"} 0\n"));
        assert!(out.contains("mixcast_stream_viewer_lost_packets_total{stream=\"live\"} 3\n"));
        assert!(!out.contains("\"mic\""), "a stream that is gone: {out}");
        assert_eq!(p.get("mic"), StreamCount::default());
    }
}
