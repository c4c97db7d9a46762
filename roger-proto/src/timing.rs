//! The timing rules of RFC 8628 §3.5 and PROTOCOL.md §6, §8 and §12 as small pure functions, so they are tested
//! alone and cited by the conformance suite. Every state machine in this crate computes its deadlines here.

use std::time::Duration;

/// RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// PROTOCOL.md §12: "values below 1 s count as 1 s".
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// RFC 8628 §3.5: on `slow_down` "the interval MUST be increased by 5 seconds for this and all subsequent requests".
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// PROTOCOL.md §5.4 / §12: a poll earlier than interval − 0.5 s after the previous poll of a code gets `slow_down`.
pub const SLOW_DOWN_TOLERANCE: Duration = Duration::from_millis(500);

/// PROTOCOL.md §8: with a healthy push connection the MFP may poll less, but at least every 30 s.
pub const MAX_PUSH_RELAXED_INTERVAL: Duration = Duration::from_secs(30);

/// Upper bound of the doubled wait after transport failures (a choice of this implementation; PROTOCOL.md §12
/// only says "doubles").
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// PROTOCOL.md §8 / R-QR-3: the MFP fetches the next session code 10 s before the current one expires.
pub const QR_RENEW_AHEAD: Duration = Duration::from_secs(10);

/// Largest polling interval this crate uses (a server sending more, or many `slow_down`s, is capped here so a
/// hostile answer cannot push time arithmetic out of range).
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Largest code or token lifetime this crate believes (a day for codes is already far beyond PROTOCOL.md §3;
/// tokens are capped at the 90-day refresh lifetime). Larger `expires_in` values are capped, never trusted to
/// overflow an `Instant`.
pub const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// A server's `expires_in`, capped at [`MAX_LIFETIME`]; `None` means the PROTOCOL.md §3 default of 1200 s.
pub fn lifetime(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(DEFAULT_ACCESS_LIFETIME_SECS)).min(MAX_LIFETIME)
}

/// PROTOCOL.md §3: the default access-token lifetime, assumed when a server omits `expires_in`
/// (RFC 6749 §5.1 makes it only RECOMMENDED).
pub const DEFAULT_ACCESS_LIFETIME_SECS: u64 = 1200;

/// R-TOK-1: "clients refresh ahead of expiry (at the latest when 10% of the lifetime is left)".
pub const REFRESH_LATEST_FRACTION: f64 = 0.9;

/// The interval a client uses for a device authorization response's `interval` member (RFC 8628 §3.2 and
/// PROTOCOL.md §12): absent → 5 s; below 1 s → 1 s.
pub fn effective_interval(interval_secs: Option<u64>) -> Duration {
    match interval_secs {
        None => DEFAULT_INTERVAL,
        Some(s) => Duration::from_secs(s).clamp(MIN_INTERVAL, MAX_INTERVAL),
    }
}

/// RFC 8628 §3.5 `slow_down`: the interval grows by 5 s for this and all subsequent requests (it never shrinks;
/// it stops growing at [`MAX_INTERVAL`]).
pub fn after_slow_down(interval: Duration) -> Duration {
    interval.saturating_add(SLOW_DOWN_STEP).min(MAX_INTERVAL.max(interval))
}

/// PROTOCOL.md §12: after a connection failure or a 5xx the client doubles its wait until the next answer.
/// `consecutive_failures` counts the failures since the last answer (1 for the first). Capped at
/// [`MAX_BACKOFF`], and never below the interval.
pub fn backoff_wait(interval: Duration, consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return interval;
    }
    let factor = 1u32.checked_shl(consecutive_failures.min(16)).unwrap_or(u32::MAX);
    interval.saturating_mul(factor).min(MAX_BACKOFF.max(interval))
}

/// PROTOCOL.md §12: "`429` + `Retry-After`: wait the longer of the two".
pub fn wait_with_retry_after(wait: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(ra) => wait.max(ra),
        None => wait,
    }
}

/// PROTOCOL.md §8: with push healthy the poll cadence may relax up to `relaxed` (at most 30 s); it is never
/// faster than the interval (R-POLL-1).
pub fn poll_cadence(interval: Duration, push_healthy: bool, relaxed: Duration) -> Duration {
    if push_healthy {
        interval.max(relaxed.min(MAX_PUSH_RELAXED_INTERVAL))
    } else {
        interval
    }
}

/// The judge's and the server's rule (PROTOCOL.md §5.4, §12): a poll that arrives `gap` after the previous poll of
/// the same code is too early iff `gap < interval − 0.5 s`.
pub fn is_too_early(gap: Duration, interval: Duration) -> bool {
    gap < interval.saturating_sub(SLOW_DOWN_TOLERANCE)
}

/// R-TOK-1: how long after issuance a token should be refreshed. `fraction` is the client's choice, clamped to
/// at most 0.9 ("at the latest when 10% of the lifetime is left") and at least 0.5.
pub fn refresh_after(lifetime: Duration, fraction: f64) -> Duration {
    let f = if fraction.is_finite() { fraction.clamp(0.5, REFRESH_LATEST_FRACTION) } else { REFRESH_LATEST_FRACTION };
    lifetime.mul_f64(f)
}

/// R-QR-3: how long after a session code was issued the MFP fetches the next one: 10 s before expiry, or at
/// half the lifetime if the code lives less than 20 s (so a short-lived test code still rotates before it dies).
pub fn qr_renew_after(lifetime: Duration) -> Duration {
    if lifetime >= QR_RENEW_AHEAD * 2 {
        lifetime - QR_RENEW_AHEAD
    } else {
        lifetime / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// RFC 8628 §3.2 default and PROTOCOL.md §12 floor.
    #[test]
    fn interval_default_and_floor() {
        assert_eq!(effective_interval(None), S(5));
        assert_eq!(effective_interval(Some(0)), S(1));
        assert_eq!(effective_interval(Some(1)), S(1));
        assert_eq!(effective_interval(Some(7)), S(7));
        assert_eq!(effective_interval(Some(u64::MAX)), MAX_INTERVAL);
        assert_eq!(lifetime(Some(u64::MAX)), MAX_LIFETIME);
        assert_eq!(lifetime(None), S(1200));
    }

    /// RFC 8628 §3.5: slow_down adds 5 s.
    #[test]
    fn slow_down_adds_5s() {
        assert_eq!(after_slow_down(S(5)), S(10));
        assert_eq!(after_slow_down(after_slow_down(S(5))), S(15));
    }

    /// PROTOCOL.md §12: doubling after failures, capped.
    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff_wait(S(5), 0), S(5));
        assert_eq!(backoff_wait(S(5), 1), S(10));
        assert_eq!(backoff_wait(S(5), 2), S(20));
        assert_eq!(backoff_wait(S(5), 20), MAX_BACKOFF);
        assert_eq!(backoff_wait(S(400), 3), S(400), "never below the interval");
    }

    /// PROTOCOL.md §12: 429 + Retry-After → the longer.
    #[test]
    fn retry_after_longer_wins() {
        assert_eq!(wait_with_retry_after(S(5), Some(S(30))), S(30));
        assert_eq!(wait_with_retry_after(S(50), Some(S(30))), S(50));
        assert_eq!(wait_with_retry_after(S(5), None), S(5));
    }

    /// PROTOCOL.md §8: relaxed cadence with push, capped at 30 s, never below the interval.
    #[test]
    fn push_cadence() {
        assert_eq!(poll_cadence(S(5), false, S(30)), S(5));
        assert_eq!(poll_cadence(S(5), true, S(30)), S(30));
        assert_eq!(poll_cadence(S(5), true, S(90)), S(30));
        assert_eq!(poll_cadence(S(40), true, S(30)), S(40));
    }

    /// PROTOCOL.md §12: interval − 0.5 s threshold.
    #[test]
    fn too_early_threshold() {
        assert!(is_too_early(Duration::from_millis(4499), S(5)));
        assert!(!is_too_early(Duration::from_millis(4500), S(5)));
        assert!(!is_too_early(S(6), S(5)));
    }

    /// R-TOK-1 refresh ahead.
    #[test]
    fn refresh_ahead() {
        assert_eq!(refresh_after(S(1200), 0.8), S(960));
        assert_eq!(refresh_after(S(1200), 0.99), S(1080));
        assert_eq!(refresh_after(S(1200), f64::NAN), S(1080));
        assert_eq!(refresh_after(S(10), 0.1), S(5));
    }

    /// R-QR-3 renewal 10 s ahead.
    #[test]
    fn qr_renewal() {
        assert_eq!(qr_renew_after(S(120)), S(110));
        assert_eq!(qr_renew_after(S(10)), S(5));
    }

    proptest! {
        #[test]
        fn slow_down_never_decreases(i in 0u64..1_000_000) {
            prop_assert!(after_slow_down(S(i)) >= S(i));
            if S(i) + SLOW_DOWN_STEP <= MAX_INTERVAL {
                prop_assert_eq!(after_slow_down(S(i)), S(i) + SLOW_DOWN_STEP);
            }
        }

        #[test]
        fn backoff_monotone(i in 1u64..100, n in 0u32..40) {
            prop_assert!(backoff_wait(S(i), n + 1) >= backoff_wait(S(i), n));
            prop_assert!(backoff_wait(S(i), n) >= S(i));
        }
    }
}
