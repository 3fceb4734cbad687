//! Log lines that a client can cause as often as it likes (refused connections, refused
//! publishers, full servers) are throttled: one line per interval, and the next line says
//! how many it left out. A flood then costs the log a line a minute, not a line a request.
//!
//! Owns: the timing and counting. The caller writes the line (it knows what to say).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval used by every throttled log line unless it says otherwise.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// One line per interval, counting what it left out. For a value owned by one task.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::every(LOG_EVERY)
    }
}

impl Throttle {
    /// At most one line per `every`.
    pub const fn every(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines left out since the last one)` when a line is due now, else `None` (and
    /// the line is counted as left out).
    pub fn tick(&mut self) -> Option<u64> {
        self.tick_at(Instant::now())
    }

    fn tick_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A [`Throttle`] shared by every request handler, usable as a `static`.
#[derive(Debug)]
pub struct SharedThrottle(Mutex<Throttle>);

impl SharedThrottle {
    /// At most one line per `every`.
    pub const fn every(every: Duration) -> SharedThrottle {
        SharedThrottle(Mutex::new(Throttle::every(every)))
    }

    /// See [`Throttle::tick`].
    pub fn tick(&self) -> Option<u64> {
        // A poisoned lock only means a logging caller panicked: keep counting.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).tick()
    }
}

/// `" (N more since the last such line)"`, or nothing when none were left out: the tail of
/// a throttled line.
pub fn more_text(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::every(Duration::from_secs(10));
        assert_eq!(t.tick_at(t0), Some(0));
        assert_eq!(t.tick_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.tick_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.tick_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.tick_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.tick_at(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn shared_between_threads() {
        static T: SharedThrottle = SharedThrottle::every(Duration::from_secs(3600));
        let due: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..100).filter(|_| T.tick().is_some()).count() as u32))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(due, 1, "one line for 400 events within the hour");
        assert_eq!(more_text(0), "");
        assert_eq!(more_text(3), " (3 more since the last such line)");
    }
}
