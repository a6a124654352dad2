//! Capped exponential backoff with jitter, for everything that retries Marathon.
//!
//! Many marathon-dns instances lose Marathon at the same moment (a leader election) and must
//! not come back in lockstep: each delay is drawn at random from the upper half of the
//! current step ("equal jitter"), so retries spread out while never coming faster than half
//! the nominal rate.

use std::time::Duration;

/// Delays that double from `min` up to `max`, each with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// The first delay is at most `min`; none is more than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            step: min,
        }
    }

    /// The delay before the next attempt, then the step doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        self.delay_with(random_fraction())
    }

    /// Back to the shortest step (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// The current nominal step: the next delay lies in `[step / 2, step]`.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// `next_delay` with the random draw given: `r` in `[0, 1)`.
    fn delay_with(&mut self, r: f64) -> Duration {
        let half = self.step / 2;
        let delay = half + (self.step - half).mul_f64(r.clamp(0.0, 1.0));
        self.step = (self.step * 2).min(self.max);
        delay
    }
}

/// A number in `[0, 1)`, different in every call and every process (the standard library's
/// randomly keyed hasher over a counter and the clock; no cryptographic quality needed).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // The top 53 bits: exactly representable, strictly below 1.
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(MIN, MAX);
        assert_eq!(b.delay_with(1.0), MIN);
        assert_eq!(b.delay_with(0.0), MIN * 2 / 2);
        assert_eq!(b.delay_with(0.5), Duration::from_millis(600));
        for _ in 0..20 {
            b.next_delay();
        }
        assert_eq!(b.step(), MAX);
        assert_eq!(b.delay_with(1.0), MAX);
        b.reset();
        assert_eq!(b.step(), MIN);
    }

    #[test]
    fn jitter_stays_within_the_upper_half_of_each_step() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..200 {
            let step = b.step();
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn instances_do_not_retry_in_lockstep() {
        // Fifty instances lose Marathon at once: their first retries are spread out.
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(10), MAX).next_delay())
            .collect();
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
        let spread =
            *delays.last().unwrap_or(&Duration::ZERO) - *delays.first().unwrap_or(&Duration::ZERO);
        assert!(spread > Duration::from_secs(2), "spread {spread:?}");
    }

    #[test]
    fn random_fractions_are_in_range() {
        for _ in 0..1000 {
            let r = random_fraction();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
