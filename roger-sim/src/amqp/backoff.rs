//! Jittered exponential back-off between reconnects (PROTOCOL.md §12: "after a connection failure … the client
//! doubles its wait"; issue 5: receivers reconnect with jittered exponential backoff).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The wait before the next reconnect: the ceiling doubles with every failure from `base` up to `max`, and each
/// wait is drawn uniformly from the upper half of the ceiling ("equal jitter"), so it still grows while a fleet
/// that lost its broker at the same moment does not come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    rng: StdRng,
}

impl Backoff {
    /// Waits from `base` doubling up to `max` (a `max` below `base` is raised to `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::with_rng(base, max, StdRng::from_entropy())
    }

    /// As [`Backoff::new`] with a seeded jitter (reproducible tests and benchmarks).
    pub fn seeded(base: Duration, max: Duration, seed: u64) -> Self {
        Self::with_rng(base, max, StdRng::seed_from_u64(seed))
    }

    fn with_rng(base: Duration, max: Duration, rng: StdRng) -> Self {
        Self { base, max: max.max(base), failures: 0, rng }
    }

    /// The ceiling of the next wait: `base · 2^failures`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Counts a failure and returns how long to wait before the next attempt (within `[ceiling/2, ceiling]`).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.rng.gen_range(0..=spread))
    }

    /// A connection succeeded: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §12 doubling, capped, with jitter inside the upper half; reset starts over.
    #[test]
    fn doubles_with_jitter_and_resets() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::seeded(base, max, 1);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} within [{:?}, {ceiling:?}]", ceiling / 2);
            ceilings.push(ceiling);
        }
        let ms: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.ceiling(), base);
        assert!(Backoff::new(base, Duration::ZERO).ceiling() == base, "max is at least base");
    }

    /// Two receivers that fail together do not retry together.
    #[test]
    fn jitter_spreads_a_fleet() {
        let delays: Vec<Duration> = (0..20)
            .map(|seed| {
                let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), seed);
                b.next_delay();
                b.next_delay()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 15, "{delays:?}");
        // Saturation never panics.
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 3);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
