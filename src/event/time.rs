//! Event times: RFC 3339 in, seconds and UTC hours out.
//!
//! Almost every `ts` has the one shape `2025-04-10T01:24:56Z`; [`utc_seconds`] reads that
//! shape directly and leaves every other one (offsets, fractions, leap seconds, lower-case
//! letters, and every mistake) to chrono, which a property test checks it agrees with.

use super::{Reason, Rejection};

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` with a real date; `None` for anything
/// else, valid or not.
fn utc_seconds(b: &[u8]) -> Option<i64> {
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |at: usize, len: usize| -> Option<i64> {
        b[at..at + len].iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since the epoch of an RFC 3339 time.
pub(super) fn parse_ts(ts: &str) -> Result<i64, Rejection> {
    if let Some(seconds) = utc_seconds(ts.as_bytes()) {
        return Ok(seconds);
    }
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| t.timestamp())
        .map_err(|e| Rejection::new(Reason::BadTs, format!("ts {ts:?} is not RFC 3339: {e}")))
}

/// The UTC hour (hours since the epoch) of an RFC 3339 time.
fn parse_hour(ts: &str) -> Result<i64, Rejection> {
    parse_ts(ts).map(hour_of)
}

/// The UTC hour (hours since the epoch) of a time in seconds since the epoch.
pub fn hour_of(seconds: i64) -> i64 {
    seconds.div_euclid(3600)
}

/// Formats an hour number as the RFC 3339 time of its start, `2025-01-01T13:00:00Z`.
pub fn format_hour(hour: i64) -> String {
    match chrono::DateTime::from_timestamp(hour.saturating_mul(3600), 0) {
        Some(t) => t.format("%Y-%m-%dT%H:00:00Z").to_string(),
        None => format!("hour {hour}"),
    }
}

/// Parses an hour bound given by a user: an RFC 3339 time, or a date-hour `2025-01-01T13`.
pub fn parse_hour_bound(text: &str) -> Option<i64> {
    if let Ok(h) = parse_hour(text) {
        return Some(h);
    }
    for suffix in [":00:00Z", ":00Z", "Z"] {
        if let Ok(h) = parse_hour(&format!("{text}{suffix}")) {
            return Some(h);
        }
    }
    parse_hour(&format!("{text}T00:00:00Z")).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reads_the_common_shape() {
        assert_eq!(utc_seconds(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(utc_seconds(b"2025-04-10T01:24:56Z"), Some(1_744_248_296));
        assert_eq!(utc_seconds(b"2024-02-29T23:59:59Z"), Some(1_709_251_199));
        for other in
            ["2023-02-29T00:00:00Z", "2025-04-10T01:24:60Z", "2025-04-10t01:24:56Z", "2025-04-10T01:24:56+00:00"]
        {
            assert_eq!(utc_seconds(other.as_bytes()), None, "{other}");
        }
        assert_eq!(parse_ts("2025-04-10T03:24:56+02:00"), Ok(1_744_248_296));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// Whatever the fast path reads, chrono reads the same.
        #[test]
        fn agrees_with_chrono(ts in "[0-9]{4}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-6][0-9]:[0-6][0-9][Zz]") {
            if let Some(fast) = utc_seconds(ts.as_bytes()) {
                let slow = chrono::DateTime::parse_from_rfc3339(&ts).map(|t| t.timestamp());
                prop_assert_eq!(Ok(fast), slow, "{}", ts);
            }
        }
    }
}
