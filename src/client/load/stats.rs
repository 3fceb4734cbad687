//! The pure arithmetic of the load tool: RTP sequence accounting, inter-arrival jitter,
//! a log-bucketed histogram, and reading Prometheus histograms from a `/metrics` scrape.
//!
//! No I/O and no clock here: every time is a number of nanoseconds the caller passes in.

/// Extends 16-bit RTP sequence numbers to 64 bits across wraparound (RFC 3550, A.1).
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqExtender {
    highest: Option<u64>,
}

/// The first packet's extended number starts one cycle in, so that a packet sent just
/// before it (arriving late) still has a number below it instead of wrapping to the top.
const FIRST_CYCLE: u64 = 1 << 16;

impl SeqExtender {
    /// The extended number of `seq`: the one nearest to the highest seen so far.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            let ext = FIRST_CYCLE + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        let ext = (highest as i64 + delta).max(0) as u64;
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    /// The highest extended number seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Packets received in a window and the span of their sequence numbers: the loss of the
/// window is the span minus what arrived (RFC 3550's "expected" minus "received").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    lowest: Option<u64>,
    highest: u64,
    received: u64,
}

impl WindowCount {
    /// Counts one packet by its extended sequence number.
    pub fn add(&mut self, ext: u64) {
        self.received += 1;
        match self.lowest {
            None => {
                self.lowest = Some(ext);
                self.highest = ext;
            }
            Some(low) => {
                self.lowest = Some(low.min(ext));
                self.highest = self.highest.max(ext);
            }
        }
    }

    /// Packets received (duplicates included: loopback does not make any).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets the sender numbered from the first to the last received.
    pub fn expected(&self) -> u64 {
        self.lowest.map_or(0, |low| self.highest - low + 1)
    }

    /// Packets numbered but never received.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// Inter-arrival jitter of one RTP stream: the difference D between two packets' spacing
/// at the receiver and their spacing in RTP time (RFC 3550, 6.4.1), both as one value per
/// packet and as the RFC's running estimate J.
#[derive(Debug, Default, Clone, Copy)]
pub struct Jitter {
    previous: Option<(u64, u32, i64)>,
    /// RFC 3550's J, in nanoseconds.
    estimate: f64,
    /// The largest |D| seen, in nanoseconds.
    max: u64,
}

impl Jitter {
    /// Takes the packet numbered `ext` with RTP time `rtp_time` (at `clock_rate` Hz) that
    /// arrived at `arrival_ns`; returns |D| against the previous packet in sequence order,
    /// or None for the first packet and for a packet older than the previous one (late
    /// packets do not move the reference).
    pub fn on_packet(
        &mut self,
        ext: u64,
        rtp_time: u32,
        arrival_ns: i64,
        clock_rate: u32,
    ) -> Option<u64> {
        let previous = self.previous;
        match previous {
            Some((prev_ext, _, _)) if ext <= prev_ext => return None,
            _ => self.previous = Some((ext, rtp_time, arrival_ns)),
        }
        let (_, prev_time, prev_arrival) = previous?;
        let rtp_ns = i64::from(rtp_time.wrapping_sub(prev_time) as i32) * 1_000_000_000
            / i64::from(clock_rate);
        let d = ((arrival_ns - prev_arrival) - rtp_ns).unsigned_abs();
        self.estimate += (d as f64 - self.estimate) / 16.0;
        self.max = self.max.max(d);
        Some(d)
    }

    /// RFC 3550's running estimate J, in nanoseconds.
    pub fn estimate_ns(&self) -> u64 {
        self.estimate as u64
    }

    /// The largest |D| seen, in nanoseconds.
    pub fn max_ns(&self) -> u64 {
        self.max
    }
}

/// Sub-buckets per power of two: values are kept to within 1/32 (about 3%).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// A histogram of non-negative integers (nanoseconds, here) with log-spaced buckets, exact
/// below 32 and within about 3% above; mergeable, and with the exact maximum.
#[derive(Clone)]
pub struct LogHistogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    max: u64,
}

impl Default for LogHistogram {
    fn default() -> LogHistogram {
        LogHistogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            max: 0,
        }
    }
}

impl std::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHistogram")
            .field("count", &self.count)
            .field("max", &self.max)
            .finish()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let top = 63 - v.leading_zeros();
    let shift = top - SUB_BITS;
    let sub = (v >> shift) - SUB;
    ((u64::from(shift) + 1) * SUB + sub) as usize
}

/// The smallest value of bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    (SUB + i % SUB) << shift
}

impl LogHistogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LogHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q` quantile (0..=1), as the upper end of its bucket (never above the maximum):
    /// "`q` of the values are at most this". None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = if i + 1 < BUCKETS {
                    bucket_floor(i + 1) - 1
                } else {
                    u64::MAX
                };
                return Some(upper.min(self.max));
            }
        }
        Some(self.max)
    }
}

/// One Prometheus histogram from a text scrape: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromHistogram {
    /// (upper bound in the metric's unit, cumulative count), in scrape order; the last
    /// bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the observations.
    pub sum: f64,
    /// The number of observations.
    pub count: u64,
}

impl PromHistogram {
    /// Finds the histogram `name` (without `_bucket`) in a text exposition.
    pub fn parse(text: &str, name: &str) -> Option<PromHistogram> {
        let bucket_prefix = format!("{name}_bucket{{le=\"");
        let mut h = PromHistogram::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                let (le, value) = rest.split_once("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                h.buckets.push((le, value.trim().parse().ok()?));
            } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
                h.sum = v.trim().parse().ok()?;
            } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
                h.count = v.trim().parse().ok()?;
            }
        }
        (!h.buckets.is_empty()).then_some(h)
    }

    /// The observations made after `earlier` (a scrape of the same histogram).
    pub fn since(&self, earlier: &PromHistogram) -> PromHistogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0, |&(_, c)| c);
                (le, n.saturating_sub(before))
            })
            .collect();
        PromHistogram {
            buckets,
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The upper bound of the bucket that holds the `q` quantile: "`q` of the observations
    /// are at most this". None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|(_, cum)| *cum >= rank)
            .map(|&(le, _)| le)
    }

    /// The upper bound of the highest non-empty bucket: every observation is at most this.
    pub fn max_bound(&self) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        self.quantile(1.0)
    }
}

/// A gauge or counter `name` (no labels) from a text exposition.
pub fn prom_value(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_wraparound() {
        let mut s = SeqExtender::default();
        let first = s.extend(65534);
        assert_eq!(s.extend(65535), first + 1);
        assert_eq!(s.extend(0), first + 2);
        assert_eq!(s.extend(1), first + 3);
        // A late packet from before the wrap keeps its place and does not move the top.
        assert_eq!(s.extend(65535), first + 1);
        assert_eq!(s.highest(), Some(first + 3));
        // A gap across the wrap.
        assert_eq!(s.extend(10), first + 12);
    }

    #[test]
    fn a_packet_older_than_the_first_does_not_wrap_to_the_top() {
        let mut s = SeqExtender::default();
        let first = s.extend(3);
        assert_eq!(s.extend(2), first - 1);
        assert_eq!(s.extend(65535), first - 4);
        assert_eq!(s.highest(), Some(first));
    }

    #[test]
    fn window_loss_is_the_span_minus_the_received() {
        let mut s = SeqExtender::default();
        let mut w = WindowCount::default();
        assert_eq!((w.expected(), w.lost()), (0, 0));
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 4] {
            w.add(s.extend(seq));
        }
        // 65530..=4 across the wrap is 11 numbers; 7 arrived.
        assert_eq!(w.expected(), 11);
        assert_eq!(w.received(), 7);
        assert_eq!(w.lost(), 4);
        // A late one fills a hole.
        w.add(s.extend(65532));
        assert_eq!(w.lost(), 3);
    }

    #[test]
    fn jitter_is_zero_for_perfect_spacing_and_sees_a_late_packet() {
        let mut j = Jitter::default();
        let ms = 1_000_000i64;
        // 20 ms of 48 kHz RTP time is 960 ticks; the RTP time wraps in the middle.
        let start = u32::MAX - 960;
        assert_eq!(j.on_packet(1, start, 0, 48_000), None);
        assert_eq!(
            j.on_packet(2, start.wrapping_add(960), 20 * ms, 48_000),
            Some(0)
        );
        assert_eq!(
            j.on_packet(3, start.wrapping_add(1920), 40 * ms, 48_000),
            Some(0)
        );
        // 3 ms late, then back on time: |D| is 3 ms twice.
        assert_eq!(
            j.on_packet(4, start.wrapping_add(2880), 63 * ms, 48_000),
            Some(3_000_000)
        );
        assert_eq!(
            j.on_packet(5, start.wrapping_add(3840), 80 * ms, 48_000),
            Some(3_000_000)
        );
        assert_eq!(j.max_ns(), 3_000_000);
        // J after two 3 ms samples: 3/16 + (3 - 3/16)/16 ms.
        let expected = 3e6 / 16.0 + (3e6 - 3e6 / 16.0) / 16.0;
        assert!((j.estimate_ns() as f64 - expected).abs() < 2.0);
        // An older packet is ignored.
        assert_eq!(
            j.on_packet(4, start.wrapping_add(2880), 90 * ms, 48_000),
            None
        );
        // A gap: RTP time explains the spacing, no jitter.
        assert_eq!(
            j.on_packet(7, start.wrapping_add(5760), 120 * ms, 48_000),
            Some(0)
        );
    }

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut previous = None;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(bucket_floor(b) <= v, "{v}: floor {}", bucket_floor(b));
            if b + 1 < BUCKETS {
                assert!(v < bucket_floor(b + 1), "{v}");
                // Width within 1/32 of the value.
                assert!(bucket_floor(b + 1) - bucket_floor(b) <= (v / 32).max(1));
            }
            if let Some(p) = previous {
                if v < 5000 {
                    assert!(b == p || b == p + 1);
                }
            }
            previous = Some(b);
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = LogHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).expect("values");
        assert!((500_000..=500_000 + 500_000 / 32).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).expect("values");
        assert!((990_000..=990_000 + 990_000 / 32).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(1_000_000));
        assert_eq!(h.max(), 1_000_000);

        let mut other = LogHistogram::default();
        other.record(7);
        other.record(5_000_000);
        h.merge(&other);
        assert_eq!(h.count(), 1002);
        assert_eq!(h.max(), 5_000_000);
        assert_eq!(h.quantile(0.0), Some(7));
    }

    const SCRAPE: &str = "\
# TYPE mixcast_tx_tick_lateness_seconds histogram
mixcast_tx_tick_lateness_seconds_bucket{le=\"0.0001\"} 90
mixcast_tx_tick_lateness_seconds_bucket{le=\"0.001\"} 99
mixcast_tx_tick_lateness_seconds_bucket{le=\"0.005\"} 100
mixcast_tx_tick_lateness_seconds_bucket{le=\"+Inf\"} 100
mixcast_tx_tick_lateness_seconds_sum 0.01
mixcast_tx_tick_lateness_seconds_count 100
mixcast_tx_tick_lateness_max_seconds 0.0042
mixcast_packets_sent_total 12345
";

    #[test]
    fn prometheus_histogram_parse_delta_and_quantiles() {
        let h = PromHistogram::parse(SCRAPE, "mixcast_tx_tick_lateness_seconds").expect("found");
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.count, 100);
        assert_eq!(h.quantile(0.5), Some(0.0001));
        assert_eq!(h.quantile(0.99), Some(0.001));
        assert_eq!(h.max_bound(), Some(0.005));
        assert_eq!(
            prom_value(SCRAPE, "mixcast_tx_tick_lateness_max_seconds"),
            Some(0.0042)
        );
        assert_eq!(
            prom_value(SCRAPE, "mixcast_packets_sent_total"),
            Some(12345.0)
        );
        assert!(PromHistogram::parse(SCRAPE, "nope").is_none());

        let later = SCRAPE
            .replace("{le=\"0.0001\"} 90", "{le=\"0.0001\"} 190")
            .replace("{le=\"0.001\"} 99", "{le=\"0.001\"} 199")
            .replace("{le=\"0.005\"} 100", "{le=\"0.005\"} 200")
            .replace("{le=\"+Inf\"} 100", "{le=\"+Inf\"} 210")
            .replace("_count 100", "_count 210");
        let later =
            PromHistogram::parse(&later, "mixcast_tx_tick_lateness_seconds").expect("found");
        let window = later.since(&h);
        assert_eq!(window.count, 110);
        assert_eq!(window.quantile(0.5), Some(0.0001));
        assert_eq!(window.max_bound(), Some(f64::INFINITY));
        let empty = h.since(&h);
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(empty.max_bound(), None);
    }
}
