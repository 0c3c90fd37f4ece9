//! The hybrid logical clock stamped on every event: milliseconds of the writer's wall clock in
//! the high 48 bits, a counter in the low 16, never going backwards on one device. It orders
//! display and audit, the judging of membership events (`membership.rs`) and the end of a
//! time-limited grant; merges never depend on it.

/// The next clock value after `last`, at wall-clock time `now_ms` (the engine never reads the
/// clock: the caller brings it).
pub fn next(now_ms: u64, last: u64) -> u64 {
    now_ms.saturating_mul(1 << 16).max(last.saturating_add(1))
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
    fn extreme_inputs_saturate_instead_of_overflowing() {
        assert_eq!(next(u64::MAX, 0), u64::MAX);
        assert_eq!(next(0, u64::MAX), u64::MAX);
    }
}
