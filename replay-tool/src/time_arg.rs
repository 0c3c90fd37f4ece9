//! Times on the command line and in output: `2026-11-23T12:00:00Z`, `2026-11-23`, or milliseconds
//! since the Unix epoch; printed as UTC. A small civil-calendar conversion, no date library.

use anyhow::{bail, Context};

const DAY_MS: u64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        _ => 28,
    }
}

fn number(text: &str, what: &str, range: std::ops::RangeInclusive<u32>) -> anyhow::Result<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{what} {text:?} is not a number");
    }
    let n: u32 = text.parse().with_context(|| format!("{what} {text:?}"))?;
    if !range.contains(&n) {
        bail!("{what} {n} is out of range");
    }
    Ok(n)
}

/// A parsed time: milliseconds since the epoch, and whether only a date was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeArg {
    /// Milliseconds since the Unix epoch (UTC).
    pub ms: u64,
    /// Only a date (no time of day) was given.
    pub date_only: bool,
}

impl TimeArg {
    /// The first millisecond the argument names.
    pub fn start(self) -> u64 {
        self.ms
    }

    /// The last millisecond the argument names: the end of the day for a bare date.
    pub fn end(self) -> u64 {
        if self.date_only {
            self.ms + DAY_MS - 1
        } else {
            self.ms
        }
    }
}

/// Parses `2026-11-23T12:00:00Z` (seconds, fraction and a `+hh:mm` offset optional),
/// `2026-11-23` or milliseconds since the epoch.
pub fn parse_time(text: &str) -> anyhow::Result<TimeArg> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let ms = text.parse().with_context(|| format!("{text:?} is too large"))?;
        return Ok(TimeArg { ms, date_only: false });
    }
    let bad = || format!("{text:?} is not a time (use 2026-11-23T12:00:00Z, 2026-11-23 or ms since the epoch)");
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [year, month, day] = parts.as_slice() else { bail!(bad()) };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        bail!(bad());
    }
    let year = i64::from(number(year, "year", 1970..=9999).with_context(bad)?);
    let month = number(month, "month", 1..=12).with_context(bad)?;
    let day = number(day, "day", 1..=days_in_month(year, month)).with_context(bad)?;
    let days = days_from_civil(year, month, day);
    let mut ms = days as u64 * DAY_MS;
    let Some(rest) = rest else { return Ok(TimeArg { ms, date_only: true }) };
    // Split off the zone: Z, or +hh:mm / -hh:mm.
    let (clock, offset_minutes) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let zone = &rest[i + 1..];
        let (h, m) = zone.split_once(':').unwrap_or((zone.get(..2).unwrap_or(""), zone.get(2..).unwrap_or("")));
        let minutes = i64::from(number(h, "zone hours", 0..=23)?) * 60 + i64::from(number(m, "zone minutes", 0..=59)?);
        (&rest[..i], if &rest[i..i + 1] == "-" { -minutes } else { minutes })
    } else {
        (rest, 0)
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let fields: Vec<&str> = hms.split(':').collect();
    let (h, m, s) = match fields.as_slice() {
        [h, m] => (*h, *m, "0"),
        [h, m, s] => (*h, *m, *s),
        _ => bail!(bad()),
    };
    let seconds = u64::from(number(h, "hour", 0..=23)?) * 3600
        + u64::from(number(m, "minute", 0..=59)?) * 60
        + u64::from(number(s, "second", 0..=60)?);
    ms += seconds * 1000;
    if !fraction.is_empty() {
        let digits: String = fraction.chars().take(3).collect();
        let scale = 10u64.pow(3 - digits.len() as u32);
        ms += u64::from(number(&digits, "fraction", 0..=999)?) * scale;
    }
    let ms = (ms as i64 - offset_minutes * 60_000).max(0) as u64;
    Ok(TimeArg { ms, date_only: false })
}

/// `2026-11-23T12:00:00.000Z`.
pub fn format_utc(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let (year, month, day) = civil_from_days(days);
    let rem = ms % DAY_MS;
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let t = parse_time("2026-11-23T12:00:00Z").unwrap();
        assert_eq!(t.ms, 1_795_435_200_000);
        assert!(!t.date_only);
        let d = parse_time("2026-11-23").unwrap();
        assert_eq!(d.ms, 1_795_392_000_000);
        assert_eq!(d.end(), 1_795_392_000_000 + DAY_MS - 1);
        assert_eq!(parse_time("1795435200000").unwrap().ms, 1_795_435_200_000);
        assert_eq!(parse_time("2026-11-23T14:00:00+02:00").unwrap().ms, 1_795_435_200_000);
        assert_eq!(parse_time("2026-11-23T12:00:00.25Z").unwrap().ms, 1_795_435_200_250);
        assert_eq!(parse_time("2026-11-23T12:00Z").unwrap().ms, 1_795_435_200_000);
        assert!(parse_time("2026-02-30").is_err());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-11-23T25:00:00Z").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0u64, 951_782_400_000, 1_795_435_200_250, 4_102_444_799_999] {
            assert_eq!(parse_time(&format_utc(ms)).unwrap().ms, ms, "{}", format_utc(ms));
        }
        assert_eq!(format_utc(1_795_435_200_250), "2026-11-23T12:00:00.250Z");
    }
}
