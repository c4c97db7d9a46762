//! The server's clock: one trait, system or virtual (DESIGN.md, roger-sim: "Clock: one trait, system or virtual").
//!
//! `roger-proto` never reads a clock (DESIGN.md "Time is always a parameter"); the simulator reads **this** one and
//! passes `now` into the server core. Every lifetime of PROTOCOL.md §3 (access tokens, refresh tokens, codes,
//! queued jobs, lock-outs) is therefore measured on a [`Clock`], never on `Instant::now()` or
//! `OffsetDateTime::now_utc()` directly.
//!
//! * [`SystemClock`]: wall-clock UTC time.
//! * [`VirtualClock`]: real time plus an offset that only moves forward ([`Clock::advance`], the `/sim/clock/advance`
//!   control endpoint). Real time keeps flowing, so a real client's polling cadence is still measured truthfully
//!   (PROTOCOL.md §12), while 90 days of refresh-token lifetime (PROTOCOL.md §3) pass in an instant. The offset is
//!   persisted by the store (`store::META_CLOCK_OFFSET`) so a restarted server resumes with
//!   [`VirtualClock::starting_at_offset`] and time never runs backwards across a restart.
//!
//! Both clocks are monotone: [`Clock::now`] never returns a value earlier than one it returned before, even if the
//! host's wall clock is stepped back (an expiry that already fired must not "un-fire").

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Which kind of clock a server runs on (the `--clock` option; shown by `/sim/clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    /// Wall-clock time ([`SystemClock`]).
    #[default]
    System,
    /// Real time plus a forward-only offset ([`VirtualClock`]).
    Virtual,
}

impl ClockKind {
    /// The lower-case name (`system`, `virtual`), as in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::System => "system",
            ClockKind::Virtual => "virtual",
        }
    }
}

impl fmt::Display for ClockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`ClockKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown clock kind {0:?} (expected \"system\" or \"virtual\")")]
pub struct ParseClockKindError(pub String);

impl FromStr for ClockKind {
    type Err = ParseClockKindError;

    /// Parses `system` or `virtual` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("system") {
            Ok(ClockKind::System)
        } else if s.eq_ignore_ascii_case("virtual") {
            Ok(ClockKind::Virtual)
        } else {
            Err(ParseClockKindError(s.to_owned()))
        }
    }
}

/// Why a clock refused to advance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// Only a virtual clock can be advanced (the `/sim/clock/advance` endpoint answers this with an error).
    #[error("the system clock cannot be advanced; start the server with a virtual clock")]
    NotVirtual,
    /// The offset or the resulting time would leave the representable range.
    #[error("advancing the clock by {0:?} would overflow the representable time range")]
    Overflow(Duration),
}

/// A source of the current time for the server (DESIGN.md, roger-sim "Clock").
pub trait Clock: Send + Sync {
    /// The current time, UTC. Monotone: never earlier than a value returned before.
    fn now(&self) -> OffsetDateTime;

    /// Which kind of clock this is.
    fn kind(&self) -> ClockKind;

    /// Moves a virtual clock forward by `by` and returns the new current time. The server then sweeps what expired
    /// in between ("due expiries fire at once, in time order", DESIGN.md). A [`SystemClock`] answers
    /// [`ClockError::NotVirtual`].
    fn advance(&self, by: Duration) -> Result<OffsetDateTime, ClockError>;

    /// How far the clock runs ahead of real time (zero for the system clock); persisted by the store so a restart
    /// resumes at the same virtual time.
    fn offset(&self) -> Duration;
}

/// A clock shared by every part of one server instance.
pub type SharedClock = Arc<dyn Clock>;

/// Converts a `Duration` to a `time::Duration`, or `None` if it does not fit.
fn to_time(d: Duration) -> Option<time::Duration> {
    time::Duration::try_from(d).ok()
}

/// Nanoseconds since the Unix epoch, saturated to `i64` (enough until the year 2262).
fn unix_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.year() < 1970 { i64::MIN } else { i64::MAX })
}

fn from_unix_nanos(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Wall-clock UTC time, clamped so it never goes backwards when the host's clock is stepped back (the clamp is
/// process-wide: every system clock reads the same wall clock).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The latest value any [`SystemClock`] handed out, in Unix nanoseconds.
static SYSTEM_LAST: AtomicI64 = AtomicI64::new(i64::MIN);

impl SystemClock {
    /// A system clock behind an [`Arc`], ready to share.
    pub fn shared() -> SharedClock {
        Arc::new(Self)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let wall = OffsetDateTime::now_utc();
        let n = unix_nanos(wall);
        let prev = SYSTEM_LAST.fetch_max(n, Ordering::AcqRel);
        if prev > n {
            from_unix_nanos(prev)
        } else {
            wall
        }
    }

    fn kind(&self) -> ClockKind {
        ClockKind::System
    }

    fn advance(&self, _by: Duration) -> Result<OffsetDateTime, ClockError> {
        Err(ClockError::NotVirtual)
    }

    fn offset(&self) -> Duration {
        Duration::ZERO
    }
}

/// Real time plus a forward-only offset (DESIGN.md: "The virtual clock runs at real speed plus an offset that only
/// moves forward").
///
/// Real time is measured from a wall-clock anchor taken at construction plus the monotone [`Instant`] elapsed since,
/// so the clock is monotone even if the host's wall clock is stepped back. Thread-safe without a lock (every request
/// reads the clock): the offset is an atomic count of nanoseconds, so it reaches at most about 584 years, and
/// [`Clock::advance`] returns the time that includes its own step.
#[derive(Debug)]
pub struct VirtualClock {
    anchor_wall: OffsetDateTime,
    anchor: Instant,
    /// The offset in nanoseconds.
    offset: AtomicU64,
}

/// `offset` in nanoseconds, if it fits the atomic.
fn offset_nanos(offset: Duration) -> Option<u64> {
    u64::try_from(offset.as_nanos()).ok()
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    /// A virtual clock that starts at real time (offset zero).
    pub fn new() -> Self {
        Self::starting_at_offset(Duration::ZERO)
    }

    /// A virtual clock that starts `offset` ahead of real time: a restarted server passes the offset the store kept
    /// (`store::META_CLOCK_OFFSET`), so time never runs backwards across a restart.
    pub fn starting_at_offset(offset: Duration) -> Self {
        // A stored offset beyond the atomic's range cannot have been written by `advance`; the furthest it allows.
        let offset = AtomicU64::new(offset_nanos(offset).unwrap_or(u64::MAX));
        Self { anchor_wall: OffsetDateTime::now_utc(), anchor: Instant::now(), offset }
    }

    /// A virtual clock behind an [`Arc`], ready to share.
    pub fn shared(offset: Duration) -> SharedClock {
        Arc::new(Self::starting_at_offset(offset))
    }

    fn current_offset(&self) -> Duration {
        Duration::from_nanos(self.offset.load(Ordering::Acquire))
    }

    fn at(&self, offset: Duration) -> Option<OffsetDateTime> {
        let elapsed = to_time(self.anchor.elapsed())?;
        self.anchor_wall.checked_add(elapsed)?.checked_add(to_time(offset)?)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> OffsetDateTime {
        let offset = self.current_offset();
        // `advance` refuses offsets that do not fit, so this only saturates ~290 years after the anchor.
        self.at(offset).unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
    }

    fn kind(&self) -> ClockKind {
        ClockKind::Virtual
    }

    fn advance(&self, by: Duration) -> Result<OffsetDateTime, ClockError> {
        let overflow = || ClockError::Overflow(by);
        // Refuse a step after which `now` would leave the representable range (year 9999) in the next century too.
        let margin = Duration::from_secs(100 * 366 * 24 * 3600);
        let mut current = self.offset.load(Ordering::Acquire);
        loop {
            let next = Duration::from_nanos(current).checked_add(by).ok_or_else(overflow)?;
            let next_nanos = offset_nanos(next).ok_or_else(overflow)?;
            let now = self.at(next).ok_or_else(overflow)?;
            self.at(next.checked_add(margin).ok_or_else(overflow)?).ok_or_else(overflow)?;
            // Concurrent steps both count: whoever lost the race adds its step to the winner's offset.
            match self.offset.compare_exchange(current, next_nanos, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(now),
                Err(actual) => current = actual,
            }
        }
    }

    fn offset(&self) -> Duration {
        self.current_offset()
    }
}

/// A shared clock of `kind`: a [`SystemClock`], or a [`VirtualClock`] starting at `offset` (ignored for the system
/// clock).
pub fn new_clock(kind: ClockKind, offset: Duration) -> SharedClock {
    match kind {
        ClockKind::System => SystemClock::shared(),
        ClockKind::Virtual => VirtualClock::shared(offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// DESIGN.md: the offset "only moves forward"; `advance` moves `now` by at least the step.
    #[test]
    fn advance_moves_forward_only() {
        let c = VirtualClock::new();
        assert_eq!(c.kind(), ClockKind::Virtual);
        assert_eq!(c.offset(), Duration::ZERO);
        let before = c.now();
        let after = c.advance(90 * DAY).expect("advance");
        assert!(after - before >= time::Duration::days(90), "{before} → {after}");
        assert_eq!(c.offset(), 90 * DAY);
        assert!(c.now() >= after);
        c.advance(Duration::ZERO).expect("zero step");
        assert_eq!(c.offset(), 90 * DAY);
        c.advance(Duration::from_secs(1)).expect("advance");
        assert_eq!(c.offset(), 90 * DAY + Duration::from_secs(1));
    }

    /// A restarted server resumes at the persisted offset.
    #[test]
    fn starting_at_offset_resumes() {
        let c = VirtualClock::starting_at_offset(10 * DAY);
        assert_eq!(c.offset(), 10 * DAY);
        let real = OffsetDateTime::now_utc();
        assert!(c.now() - real >= time::Duration::days(10) - time::Duration::seconds(5));
    }

    /// An absurd step is refused and leaves the clock untouched.
    #[test]
    fn overflow_is_refused() {
        let c = VirtualClock::new();
        assert!(matches!(c.advance(Duration::MAX), Err(ClockError::Overflow(_))));
        assert!(matches!(c.advance(Duration::from_secs(u64::MAX / 4)), Err(ClockError::Overflow(_))));
        assert_eq!(c.offset(), Duration::ZERO);
    }

    /// `now` is monotone non-decreasing across calls, for both clocks, including across threads.
    #[test]
    fn now_is_monotone() {
        let clocks: [SharedClock; 2] = [SystemClock::shared(), VirtualClock::shared(Duration::ZERO)];
        for c in clocks {
            let mut last = c.now();
            for i in 0..10_000 {
                if i % 1000 == 0 {
                    let _ = c.advance(Duration::from_millis(1));
                }
                let n = c.now();
                assert!(n >= last, "{:?}: {n} < {last}", c.kind());
                last = n;
            }
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let c = Arc::clone(&c);
                    std::thread::spawn(move || {
                        let mut last = c.now();
                        for _ in 0..5_000 {
                            let n = c.now();
                            assert!(n >= last);
                            last = n;
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread");
            }
        }
    }

    /// Steps taken at the same time from several threads all count (the offset is one atomic, not a lock), and an
    /// offset beyond the atomic's range (about 584 years) is refused.
    #[test]
    fn concurrent_steps_all_count() {
        let c = Arc::new(VirtualClock::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.advance(Duration::from_secs(1)).expect("advance");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a stepping thread");
        }
        assert_eq!(c.offset(), Duration::from_secs(4000));
        assert!(matches!(c.advance(Duration::from_secs(600 * 366 * 24 * 3600)), Err(ClockError::Overflow(_))));
        assert_eq!(c.offset(), Duration::from_secs(4000), "a refused step changes nothing");
    }

    /// The system clock refuses `advance` and has no offset.
    #[test]
    fn system_clock_refuses_advance() {
        let c = SystemClock;
        assert_eq!(c.kind(), ClockKind::System);
        assert_eq!(c.advance(DAY), Err(ClockError::NotVirtual));
        assert_eq!(c.offset(), Duration::ZERO);
        let real = OffsetDateTime::now_utc();
        assert!((c.now() - real).abs() < time::Duration::seconds(5));
    }

    #[test]
    fn clock_kind_parses_and_serialises() {
        assert_eq!("system".parse::<ClockKind>(), Ok(ClockKind::System));
        assert_eq!("Virtual".parse::<ClockKind>(), Ok(ClockKind::Virtual));
        assert!("sundial".parse::<ClockKind>().is_err());
        assert_eq!(serde_json::to_string(&ClockKind::Virtual).ok().as_deref(), Some("\"virtual\""));
        assert_eq!(serde_json::from_str::<ClockKind>("\"system\"").ok(), Some(ClockKind::System));
        assert_eq!(ClockKind::Virtual.to_string(), "virtual");
        assert_eq!(new_clock(ClockKind::Virtual, DAY).offset(), DAY);
        assert_eq!(new_clock(ClockKind::System, DAY).offset(), Duration::ZERO);
    }
}
