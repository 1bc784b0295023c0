//! Fences, as plain data: the number `LOCK.ACQUIRE ... FENCE` replies is the larger of the last
//! fence issued for the name plus one and the server's clock, in microseconds since the Unix
//! epoch. The counter (`lock-fence:<name>`) makes fences grow on one server however fast they
//! are issued; the clock makes them grow across a loss of the counter (eviction, `FLUSHALL`,
//! `DEL`, a restart from an older RDB, a failover to a replica that missed the last fences) as
//! long as the clock has moved forward since the last fence. Microseconds keep every fence
//! below 2^53 (exact as a double: JSON, JavaScript, Lua) until the year 2255, and below
//! `i64::MAX` for 290,000 years.

use std::time::{SystemTime, UNIX_EPOCH};

/// The fence after `last` (0: none yet) at clock reading `now_us`; None when the counter is
/// exhausted (`last` is `i64::MAX`: only an operator can write that).
pub fn next(last: i64, now_us: i64) -> Option<i64> {
    last.checked_add(1).map(|after| after.max(now_us))
}

/// A stored counter as the server keeps it: a non-negative decimal integer.
pub fn parse(stored: &[u8]) -> Option<i64> {
    std::str::from_utf8(stored)
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|f| *f >= 0)
}

/// The server's clock in microseconds since the Unix epoch (0 for a clock set before it).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_or_one_above_the_last() {
        // (last, now, next)
        for (last, now, want) in [
            (0, 1_800_000_000_000_000, Some(1_800_000_000_000_000)),
            // Lost counter: the clock alone.
            (0, 5, Some(5)),
            // Several in one microsecond, or a clock set back: one above the last.
            (
                1_800_000_000_000_000,
                1_800_000_000_000_000,
                Some(1_800_000_000_000_001),
            ),
            (
                1_800_000_000_000_007,
                1_700_000_000_000_000,
                Some(1_800_000_000_000_008),
            ),
            // A counter from before (small numbers): the clock jumps over it.
            (17, 1_800_000_000_000_000, Some(1_800_000_000_000_000)),
            (i64::MAX - 1, 0, Some(i64::MAX)),
            (i64::MAX, 0, None),
            (i64::MAX, i64::MAX, None),
        ] {
            assert_eq!(next(last, now), want, "next({last}, {now})");
        }
    }

    #[test]
    fn fences_stay_exact_as_doubles_for_centuries() {
        let now = now_us();
        assert!(now > 1_700_000_000_000_000, "{now}");
        // Up to 2255-01-01 (in µs) consecutive fences are distinct doubles.
        for f in [now, 8_993_721_600_000_000] {
            assert_eq!(f as f64 as i64, f);
            assert_eq!((f + 1) as f64 as i64, f + 1);
            assert!((f as f64) < ((f + 1) as f64));
        }
    }

    #[test]
    fn stored_counters() {
        assert_eq!(parse(b"0"), Some(0));
        assert_eq!(parse(b"1800000000000000"), Some(1_800_000_000_000_000));
        assert_eq!(parse(b"-1"), None);
        assert_eq!(parse(b"x"), None);
        assert_eq!(parse(b"9223372036854775808"), None);
        assert_eq!(parse(b""), None);
    }
}
