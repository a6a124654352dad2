//! SOA serial arithmetic (RFC 1982, SERIAL_BITS = 32): serials wrap, so "newer" means "ahead by
//! less than half the space", and two serials exactly half apart are not comparable.

/// `a` is older than `b`.
pub fn lt(a: u32, b: u32) -> bool {
    // b - a in (0, 2^31): ahead by less than half the space. Exactly 2^31 is undefined.
    let d = b.wrapping_sub(a);
    d != 0 && d < 1 << 31
}

/// `a` is newer than `b`.
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// The serial after `previous`: the current Unix time when that is newer (so that serials
/// also grow across restarts), else `previous + 1` (wrapping, as RFC 1982 §3.1 allows).
pub fn next(previous: u32, unix_now: u64) -> u32 {
    // Unix time fits 32 bits until 2106; past that, only +1 steps remain.
    let now = u32::try_from(unix_now).unwrap_or(u32::MAX);
    if previous == 0 || gt(now, previous) {
        now
    } else {
        previous.wrapping_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_follow_rfc_1982() {
        assert!(lt(1, 2));
        assert!(gt(2, 1));
        assert!(!lt(5, 5) && !gt(5, 5));
        // Wrapping: u32::MAX is older than 0 and 100.
        assert!(lt(u32::MAX, 0));
        assert!(lt(u32::MAX - 10, 100));
        assert!(gt(100, u32::MAX - 10));
        // Ahead by 2^31 - 1: newer; by 2^31: undefined (neither).
        assert!(lt(0, (1 << 31) - 1));
        assert!(!lt(0, 1 << 31) && !gt(0, 1 << 31));
        assert!(!lt(1 << 31, 0) && !gt(1 << 31, 0));
        // Ahead by more than half the space: older.
        assert!(gt(0, (1 << 31) + 1));
    }

    #[test]
    fn next_serial_moves_forward_in_serial_order() {
        assert_eq!(next(5, 1000), 1000);
        assert_eq!(next(2000, 1000), 2001);
        assert_eq!(next(1000, 1000), 1001, "same second, still grows");
        assert_eq!(next(0, 1000), 1000);
        // At the top of the space the serial wraps and is still newer.
        let top = next(u32::MAX, 1000);
        assert!(gt(top, u32::MAX), "{top}");
        // A clock behind the serial (restored from a file written by a faster clock).
        assert_eq!(next(4_000_000_000, 1_800_000_000), 1_800_000_000);
    }
}
