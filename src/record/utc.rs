//! UTC calendar time for recordings' file names and listing: [`UtcTime`]. Owns only the
//! arithmetic (days since 1970 to a civil date, proleptic Gregorian).

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year, month (1..=12), day (1..=31), hour, minute, second.
    pub ymd_hms: (i64, u32, u32, u32, u32, u32),
}

impl UtcTime {
    /// The current time.
    pub fn now() -> UtcTime {
        UtcTime::from_system(SystemTime::now())
    }

    /// `t` in UTC (a time before 1970 counts as 1970-01-01).
    pub fn from_system(t: SystemTime) -> UtcTime {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        UtcTime {
            ymd_hms: (year, month, day, h as u32, m as u32, s as u32),
        }
    }

    /// `20261207T153012Z`: for file names (sorts by time, no `:`).
    pub fn compact(&self) -> String {
        let (y, mo, d, h, mi, s) = self.ymd_hms;
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }

    /// `2026-12-07T15:30:12Z` (RFC 3339).
    pub fn rfc3339(&self) -> String {
        let (y, mo, d, h, mi, s) = self.ymd_hms;
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        let at = |s: u64| UtcTime::from_system(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0).rfc3339(), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400`: the leap day of 2000.
        assert_eq!(at(951_782_400).rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_655_012).rfc3339(), "2026-12-07T14:50:12Z");
        assert_eq!(at(1_796_655_012).compact(), "20261207T145012Z");
        assert_eq!(at(4_102_444_799).rfc3339(), "2099-12-31T23:59:59Z");
    }
}
