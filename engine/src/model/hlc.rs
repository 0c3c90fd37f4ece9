//! The hybrid logical clock stamped on every event: milliseconds of the writer's wall clock in
//! the high 48 bits, a counter in the low 16, never going backwards on one device. It orders
//! display and audit, the judging of membership events (`membership.rs`) and the end of a
//! time-limited grant; merges never depend on it.

/// The next clock value after `last`, at wall-clock time `now_ms` (the engine never reads the
/// clock: the caller brings it).
pub fn next(now_ms: u64, last: u64) -> u64 {
    now_ms.saturating_mul(1 << 16).max(last.saturating_add(1))
}

/// How far ahead of this device's wall clock another device's clock may run and still move this
/// one: a day. A clock further ahead (a device with a wrong date, or a hostile one stamping
/// 2^64-1) does not drag this device's events into the future with it.
pub const AHEAD_MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// The next clock value for this device's event at `now_ms`: after its own last event
/// (`own_last`: its clock never goes backwards) and after every other event it holds
/// (`seen_max`), as far as those are plausible: at most [`AHEAD_MAX_MS`] ahead of `now_ms`.
pub fn next_plausible(now_ms: u64, own_last: u64, seen_max: u64) -> u64 {
    let ceiling = now_ms.saturating_add(AHEAD_MAX_MS).saturating_mul(1 << 16);
    next(now_ms, own_last.max(seen_max.min(ceiling)))
}

/// How far ahead of a node's wall clock a received event's clock may be: twice
/// [`AHEAD_MAX_MS`]. An honest device's clock runs at most a day ahead of its own wall clock
/// (dragged by others), and wall clocks of one practice differ by less than another day. An
/// event beyond it waits (refused now, taken once this node's clock is near), so no stamp far in
/// the future (2^64-1) wins the display of a field for ever or escapes an audit window.
pub const RECEIVED_AHEAD_MAX_MS: u64 = 2 * AHEAD_MAX_MS;

/// The highest clock a node whose wall clock reads `now_ms` takes from its peers.
pub fn received_ceiling(now_ms: u64) -> u64 {
    now_ms.saturating_add(RECEIVED_AHEAD_MAX_MS).saturating_mul(1 << 16) | 0xffff
}

/// Milliseconds since the Unix epoch of a clock value.
pub fn millis(hlc: u64) -> u64 {
    hlc >> 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_goes_backwards_under_clock_skew() {
        let a = next(1000, 0);
        assert_eq!(a, 1000 << 16);
        let b = next(900, a); // the wall clock went backwards
        assert_eq!(b, a + 1);
        assert!(next(2000, b) > b);
        assert_eq!(millis(next(2000, b)), 2000);
    }

    #[test]
    fn a_clock_far_ahead_elsewhere_does_not_drag_this_one_along() {
        let now = 1_000_000;
        // A plausible clock ahead (an hour): followed, as before.
        let hour_ahead = (now + 3_600_000) << 16;
        assert_eq!(next_plausible(now, 0, hour_ahead), hour_ahead + 1);
        // 2^64-1 or a year ahead: ignored beyond the ceiling; the clock keeps ticking.
        let a = next_plausible(now, 0, u64::MAX);
        assert_eq!(millis(a), now + AHEAD_MAX_MS);
        assert!(next_plausible(now, a, u64::MAX) > a);
        assert!(a < u64::MAX);
        // This device's own last event always orders before its next one.
        let own = (now + 10 * AHEAD_MAX_MS) << 16;
        assert_eq!(next_plausible(now, own, u64::MAX), own + 1);
        assert_eq!(next_plausible(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn extreme_inputs_saturate_instead_of_overflowing() {
        assert_eq!(next(u64::MAX, 0), u64::MAX);
        assert_eq!(next(0, u64::MAX), u64::MAX);
    }
}
