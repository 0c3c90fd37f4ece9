//! Times on the command line and in output: an RFC 3339 / ISO 8601 timestamp such as
//! `2026-11-23T12:00:00Z`, a plain date `2026-11-23`, or milliseconds since the Unix epoch;
//! printed as UTC. The calendar is jiff's.

use anyhow::{anyhow, bail, Context};
use jiff::civil::Time;
use jiff::fmt::temporal::Pieces;
use jiff::tz::Offset;
use jiff::Timestamp;

const DAY_MS: u64 = 86_400_000;

/// What `--since`, `--until` and `--time` accept, for error messages.
const FORMS: &str = "use 2026-11-23T12:00:00Z, 2026-11-23 or ms since the epoch";

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
            self.ms.saturating_add(DAY_MS - 1)
        } else {
            self.ms
        }
    }
}

/// Parses milliseconds since the epoch, a date (`2026-11-23`, the whole UTC day) or a date and
/// time (`2026-11-23T12:00:00Z`; `t` or a space for `T`, seconds and fraction optional, `Z` or an
/// offset such as `+02:00` or `+0200`; no offset means UTC).
pub fn parse_time(text: &str) -> anyhow::Result<TimeArg> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let ms = text.parse().with_context(|| format!("{text:?} is too large for milliseconds since the epoch"))?;
        return Ok(TimeArg { ms, date_only: false });
    }
    let pieces = Pieces::parse(text).map_err(|e| anyhow!("{text:?} is not a time ({FORMS}): {e}"))?;
    if pieces.time_zone_annotation().is_some() {
        bail!("{text:?} names a time zone: give an offset instead (Z or +02:00)");
    }
    let date_only = pieces.time().is_none();
    let datetime = pieces.date().to_datetime(pieces.time().unwrap_or(Time::midnight()));
    let offset = pieces.to_numeric_offset().unwrap_or(Offset::UTC);
    let timestamp = offset.to_timestamp(datetime).with_context(|| format!("{text:?} is out of range"))?;
    let ms = u64::try_from(timestamp.as_millisecond())
        .map_err(|_| anyhow!("{text:?} is before 1970-01-01T00:00:00Z, the earliest time an event can carry"))?;
    Ok(TimeArg { ms, date_only })
}

/// `2026-11-23T12:00:00.000Z`; past jiff's last instant (9999-12-30T22:00:00Z), the milliseconds.
pub fn format_utc(ms: u64) -> String {
    match i64::try_from(ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()) {
        Some(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms} ms since the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T12:00:00Z.
    const NOON_MS: u64 = 1_795_435_200_000;
    /// 2026-11-23T00:00:00Z.
    const MIDNIGHT_MS: u64 = 1_795_392_000_000;

    fn check(text: &str, ms: u64, date_only: bool) {
        let parsed = parse_time(text).unwrap_or_else(|e| panic!("{text:?}: {e:#}"));
        assert_eq!(parsed, TimeArg { ms, date_only }, "{text:?}");
    }

    fn refused(text: &str) -> String {
        match parse_time(text) {
            Ok(parsed) => panic!("{text:?} was accepted as {parsed:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn accepts_every_documented_form() {
        check("2026-11-23T12:00:00Z", NOON_MS, false);
        check("2026-11-23", MIDNIGHT_MS, true);
        check("1795435200000", NOON_MS, false);
        check("0", 0, false);
        check("  2026-11-23T12:00:00Z  ", NOON_MS, false);
        // Offsets, with and without a colon, and no offset at all (UTC).
        check("2026-11-23T14:00:00+02:00", NOON_MS, false);
        check("2026-11-23T14:00:00+0200", NOON_MS, false);
        check("2026-11-23T09:30:00-02:30", NOON_MS, false);
        check("2026-11-23T12:00:00", NOON_MS, false);
        // Seconds and fraction optional; a fraction finer than ms is cut to ms.
        check("2026-11-23T12:00Z", NOON_MS, false);
        check("2026-11-23T12:00:00.25Z", NOON_MS + 250, false);
        check("2026-11-23T12:00:00.123456Z", NOON_MS + 123, false);
        // RFC 3339's lower case and the space separator.
        check("2026-11-23t12:00:00z", NOON_MS, false);
        check("2026-11-23 12:00:00Z", NOON_MS, false);
        // Calendar edges.
        check("2024-02-29", 1_709_164_800_000, true);
        check("1970-01-01T00:00:00Z", 0, false);
    }

    #[test]
    fn a_bare_date_names_the_whole_day() {
        let day = parse_time("2026-11-23").unwrap();
        assert_eq!(day.start(), MIDNIGHT_MS);
        assert_eq!(day.end(), MIDNIGHT_MS + DAY_MS - 1);
        let instant = parse_time("2026-11-23T00:00:00Z").unwrap();
        assert_eq!(instant.end(), MIDNIGHT_MS);
    }

    #[test]
    fn refuses_bad_input_clearly() {
        for text in
            ["", "yesterday", "2026-02-30", "2023-02-29", "2026-13-01", "2026-11-23T25:00:00Z", "2026-11-23T12:61Z"]
        {
            let error = refused(text);
            assert!(error.contains("is not a time") && error.contains("2026-11-23T12:00:00Z"), "{text:?}: {error}");
        }
        assert!(refused("1969-12-31T23:59:59Z").contains("before 1970"));
        assert!(refused("1970-01-01T00:30:00+01:00").contains("before 1970"));
        assert!(refused("99999999999999999999999").contains("too large"));
        assert!(refused("2026-11-23T12:00:00[Europe/Berlin]").contains("time zone"));
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0u64, 951_782_400_000, NOON_MS + 250, 4_102_444_799_999, 253_402_207_199_999] {
            assert_eq!(parse_time(&format_utc(ms)).unwrap().ms, ms, "{}", format_utc(ms));
        }
        assert_eq!(format_utc(NOON_MS + 250), "2026-11-23T12:00:00.250Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        // jiff's last instant is 9999-12-30T22:00:00Z; an event's clock can say anything.
        assert_eq!(format_utc(253_402_207_199_999), "9999-12-30T21:59:59.999Z");
        assert_eq!(format_utc(253_402_300_799_999), "253402300799999 ms since the epoch");
        assert_eq!(format_utc(u64::MAX), format!("{} ms since the epoch", u64::MAX));
    }
}
