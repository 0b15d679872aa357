//! Berth's schedule expressions: an expression and an IANA time zone in, fire times out.
//!
//! A schedule (`berth schedule create NAME --expression EXPR --timezone ZONE`) launches a
//! task at each fire time. The state machine and the leader both ask this crate for the next
//! fire time, so it is pure (no clock, no I/O), deterministic, and never panics on user
//! input: every malformed expression is an [`ExprError`]. Times are `u64` milliseconds since
//! the Unix epoch, in UTC.
//!
//! # Grammar
//!
//! Keywords, names and letters are case-insensitive; whitespace around the expression is
//! ignored; an expression is at most 256 characters.
//!
//! | Form | Example | Meaning |
//! |------|---------|---------|
//! | `cron(min hour day-of-month month day-of-week year)` | `cron(0 12 ? * MON-FRI *)` | EventBridge cron: exactly 6 fields, no seconds |
//! | `rate(N unit)` | `rate(5 minutes)` | every N units from the schedule's anchor |
//! | `at(YYYY-MM-DDTHH:MM:SS)` | `at(2027-06-01T09:00:00)` | once, at that wall time in the zone |
//! | `min hour day-of-month month day-of-week` | `*/15 9-17 * * 1-5` | common 5-field cron, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` (`@annually`) |
//!
//! Cron fields take `*`, lists `1,15`, ranges `1-5` and steps `*/15`, `0/15` or `10-50/20`:
//!
//! | Field | Values | Extras |
//! |-------|--------|--------|
//! | minute | 0-59 | |
//! | hour | 0-23 | |
//! | day-of-month | 1-31 | `L` last day, `LW` last weekday, `15W` weekday nearest the 15th, `?` |
//! | month | 1-12, `JAN`-`DEC` | |
//! | day-of-week in `cron(...)` | 1-7 with 1 = `SUN` (EventBridge/Quartz), `SUN`-`SAT` | `MON#2` second Monday, `6L` last Friday, `?` |
//! | day-of-week in 5 fields | 0-7 with 0 and 7 = `SUN` (POSIX), `SUN`-`SAT` | `MON#2`, `5L` last Friday, `?` |
//! | year (`cron(...)` only) | e.g. `2027`, `2026-2030` | |
//!
//! In `cron(...)` exactly one of day-of-month and day-of-week is `?`, as in EventBridge. In the
//! 5-field form a day matches when either day field matches, unless one of them is `*`/`?`
//! (classic Vixie cron).
//!
//! `rate` units are `second(s)`, `minute(s)`, `hour(s)`, `day(s)`; N is at least 1 and the
//! period at most 366 days. A rate fires at `anchor + k * period` for `k >= 0`, in absolute
//! time, so daylight saving time does not move it.
//!
//! # Daylight saving time
//!
//! Cron and `at` are read on the wall clock of the zone. Berth promises that each scheduled
//! wall time fires at most once:
//!
//! * a wall time that happens twice (the clock goes back) fires on its first pass only;
//! * a wall time that never happens (the clock jumps forward) fires once, at the first instant
//!   after the jump, merged with any other fire at that same instant.
//!
//! For example, in `America/New_York` on 2027-03-14 the clock jumps from 02:00 EST to
//! 03:00 EDT, so `cron(30 2 * * ? *)` fires at 03:00 EDT (07:00Z) that day; on 2027-11-07 it
//! goes back from 02:00 EDT to 01:00 EST, so `*/15 * * * *` fires at 01:00, 01:15, 01:30 and
//! 01:45 EDT, then at 02:00 EST, 75 minutes after 01:45 EDT. `at(...)` in a gap fires at the
//! instant the civil time names with the offset before the gap (`at(2027-03-14T02:30:00)` is
//! 03:30 EDT), and in a fold at the earlier instant.
//!
//! ```
//! use berth_cron::Schedule;
//!
//! let daily = Schedule::parse("cron(30 2 * * ? *)", "America/New_York").unwrap();
//! let march_14_2027 = 1_804_982_400_000; // 2027-03-14T00:00:00Z
//! // 02:30 does not exist that night: the fire moves to 03:00 EDT (07:00Z), once.
//! assert_eq!(daily.next_after(march_14_2027, 0), Some(1_805_007_600_000));
//! // The next night is ordinary again: 02:30 EDT.
//! assert_eq!(daily.next_after(1_805_007_600_000, 0), Some(1_805_092_200_000));
//!
//! let every_5m = Schedule::parse("rate(5 minutes)", "").unwrap();
//! assert_eq!(every_5m.next_after(1_000, 0), Some(300_000));
//! assert_eq!(every_5m.period_ms(), Some(300_000));
//! ```
//!
//! # Error positions
//!
//! [`ExprError::Syntax`] carries a 1-based character position in the expression exactly as
//! given (leading whitespace and the `cron(` prefix count): the first character of the
//! offending field or token.

mod cron;
mod grammar;
mod wall;

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The longest expression accepted, in characters; a bound keeps error messages and stored
/// state small.
pub const MAX_EXPRESSION_CHARS: usize = 256;

/// How much of a bad input an error message quotes, so that a huge input cannot make a huge
/// message.
const QUOTE_CHARS: usize = 64;

/// 2026-01-01T00:00:00Z: a cron with no fire time after this is rejected when it is created.
const NEVER_CHECK_FROM_MS: u64 = 1_767_225_600_000;

/// 2200-01-01T00:00:00Z: as in EventBridge, schedules live in 1970-2199, so a cron whose
/// first fire time is past 2199 is rejected too.
const NEVER_CHECK_UNTIL_MS: u64 = 7_258_118_400_000;

/// A parsed schedule expression bound to its time zone.
///
/// Parsing once and keeping the result lets the leader ask for fire times without
/// re-validating user input each tick.
#[derive(Clone, Debug)]
pub struct Schedule {
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    /// Wall-clock pattern, matched in `zone`.
    Cron {
        cron: Box<croner::Cron>,
        zone: TimeZone,
    },
    /// Absolute period in milliseconds.
    Rate { period_ms: u64 },
    /// The single fire instant, in ms; signed because a zone east of UTC can put
    /// `at(1970-01-01T00:00:00)` before the epoch.
    At { at_ms: i64 },
}

impl Schedule {
    /// Parses `expression` in the IANA `zone` ("" means UTC).
    ///
    /// A cron that can never fire again is refused here, with [`ExprError::Never`], so that a
    /// user learns at creation time rather than by waiting for a run that never comes.
    /// `at(...)` in the past is accepted: it simply has no next fire time.
    pub fn parse(expression: &str, zone: &str) -> Result<Schedule, ExprError> {
        let parsed = grammar::parse(expression)?;
        let zone = zone_from_name(zone)?;
        let rule = match parsed {
            grammar::Parsed::Rate { period_ms } => Rule::Rate { period_ms },
            grammar::Parsed::At(civil) => {
                // jiff's "compatible" rule: a gap shifts forward by its length, a fold takes
                // the earlier instant, like most calendar software.
                let at = zone
                    .to_ambiguous_timestamp(civil)
                    .compatible()
                    .map_err(|_| ExprError::Never {
                        expression: quote(expression),
                        message: "its time is outside the range Berth can represent".into(),
                    })?;
                Rule::At {
                    at_ms: at.as_millisecond(),
                }
            }
            grammar::Parsed::Cron(spec) => {
                check_fires(expression, &spec, &zone)?;
                Rule::Cron {
                    cron: Box::new(spec.cron),
                    zone,
                }
            }
        };
        Ok(Schedule { rule })
    }

    /// The first fire time strictly after `after_ms`, or None when the expression fires no more
    /// (an `at()` already past, a cron whose year field has ended). `anchor_ms` is where a
    /// rate() counts from (the schedule's start time, or its creation time): rate fires at
    /// anchor + k*period for k >= 0. cron and at ignore the anchor.
    ///
    /// Calling this again with the time it returned walks the schedule one fire at a time;
    /// each wall time fires at most once (see the crate documentation on daylight saving
    /// time). A result beyond what a `u64` of milliseconds or the year 5000 can hold is
    /// reported as None rather than wrapped.
    pub fn next_after(&self, after_ms: u64, anchor_ms: u64) -> Option<u64> {
        match &self.rule {
            Rule::Cron { cron, zone } => wall::next_fire(cron, zone, after_ms),
            Rule::Rate { period_ms } => {
                if after_ms < anchor_ms {
                    return Some(anchor_ms);
                }
                let k = (after_ms - anchor_ms) / period_ms + 1;
                anchor_ms.checked_add(k.checked_mul(*period_ms)?)
            }
            Rule::At { at_ms } => {
                let at = u64::try_from(*at_ms).ok()?;
                (at > after_ms).then_some(at)
            }
        }
    }

    /// The expression's kind, for display: "cron", "rate", "at".
    pub fn kind(&self) -> &'static str {
        match self.rule {
            Rule::Cron { .. } => "cron",
            Rule::Rate { .. } => "rate",
            Rule::At { .. } => "at",
        }
    }

    /// rate()'s period in ms, None for the others (the caller uses it for catch-up windows).
    pub fn period_ms(&self) -> Option<u64> {
        match self.rule {
            Rule::Rate { period_ms } => Some(period_ms),
            _ => None,
        }
    }
}

/// Checks a zone name alone (for error messages naming the field): Ok(()) or ExprError.
pub fn check_zone(zone: &str) -> Result<(), ExprError> {
    zone_from_name(zone).map(|_| ())
}

/// Why an expression or zone was refused; the message is meant for the user who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// A malformed expression: `position` is the 1-based character position in the expression
    /// where the problem starts (the start of the offending field or token), `message` says
    /// what is wrong and what is allowed, e.g. "hour field `25`: values are 0-23".
    #[error("expression {expression:?}, at character {position}: {message}")]
    Syntax {
        expression: String,
        position: usize,
        message: String,
    },
    /// Well-formed but never fires (30 February, a year range wholly past 2199, ...).
    #[error("expression {expression:?} never fires: {message}")]
    Never { expression: String, message: String },
    #[error("unknown time zone {zone:?}: use an IANA name such as \"Europe/Paris\" or \"UTC\"")]
    Zone { zone: String },
}

/// Resolves a zone from jiff's bundled database only, so that every node of a cluster reads
/// the same rules whatever tzdata its host has.
fn zone_from_name(zone: &str) -> Result<TimeZone, ExprError> {
    let name = zone.trim();
    if name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    // An over-long name cannot be a zone; refusing it early keeps the lookup cheap.
    if name.len() > 128 {
        return Err(ExprError::Zone { zone: quote(zone) });
    }
    jiff::tz::db()
        .get(name)
        .map_err(|_| ExprError::Zone { zone: quote(zone) })
}

/// Refuses a cron with no fire time from 2026 to 2199, naming the field to blame when the
/// year field alone is the cause.
fn check_fires(expression: &str, spec: &cron::CronSpec, zone: &TimeZone) -> Result<(), ExprError> {
    let fires_in_window = |cron: &croner::Cron| {
        wall::next_fire(cron, zone, NEVER_CHECK_FROM_MS)
            .is_some_and(|first| first < NEVER_CHECK_UNTIL_MS)
    };
    if fires_in_window(&spec.cron) {
        return Ok(());
    }
    let message = match &spec.any_year {
        Some((year_field, any_year)) if fires_in_window(any_year) => format!(
            "no fire time from 2026 to 2199 falls in the years its year field `{}` allows: \
             use years from 2026 to 2199 that contain the chosen days, or `*`",
            quote(year_field)
        ),
        _ => "no date from 2026 to 2199 matches its day-of-month, month and day-of-week \
              fields together (e.g. 30 February): use days that exist in the chosen months"
            .to_string(),
    };
    Err(ExprError::Never {
        expression: quote(expression),
        message,
    })
}

/// At most [`QUOTE_CHARS`] characters of `text`, marked when cut.
pub(crate) fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        quoted.push('…');
    }
    quoted
}

/// Converts an epoch-millisecond input; None when it is past what jiff can represent
/// (year 9999), where no schedule can fire anyway.
pub(crate) fn timestamp_from_ms(ms: u64) -> Option<Timestamp> {
    Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_name_the_dates_they_claim() {
        let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let until: Timestamp = "2200-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(from.as_millisecond() as u64, NEVER_CHECK_FROM_MS);
        assert_eq!(until.as_millisecond() as u64, NEVER_CHECK_UNTIL_MS);
    }

    #[test]
    fn quote_cuts_long_text_on_a_char_boundary() {
        assert_eq!(quote("short"), "short");
        let long = "é".repeat(100);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), QUOTE_CHARS + 1);
        assert!(quoted.ends_with('…'));
    }

    #[test]
    fn zones_resolve_from_the_bundled_database() {
        assert!(check_zone("").is_ok());
        assert!(check_zone("UTC").is_ok());
        assert!(check_zone("Europe/Paris").is_ok());
        assert_eq!(
            check_zone("Mars/Olympus"),
            Err(ExprError::Zone {
                zone: "Mars/Olympus".into()
            })
        );
        let huge = "x".repeat(1000);
        match check_zone(&huge) {
            Err(ExprError::Zone { zone }) => assert!(zone.chars().count() <= QUOTE_CHARS + 1),
            other => panic!("expected a zone error, got {other:?}"),
        }
    }
}
