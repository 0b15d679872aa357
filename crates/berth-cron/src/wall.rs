//! From wall-clock matches to instants, under Berth's daylight saving time rule.
//!
//! croner is asked only about civil (zone-less) times, where every wall time exists exactly
//! once; this module alone decides which instant each matching wall time fires at:
//!
//! * a wall time that exists once fires at that instant;
//! * a repeated wall time (the clock went back) fires at its first pass;
//! * a skipped wall time (the clock jumped forward) fires at the first instant after the jump.
//!
//! croner's own zoned search differs on purpose-built points (an interval job fires both
//! passes of a repeated hour and skips the wall times of a gap), so it is not used.
//!
//! The map from wall time to fire instant is non-decreasing: wall times before a gap map
//! before it, all of the gap maps to its end, a fold's wall times map to its first pass,
//! whose instants all precede the transition. So the next fire after `t` is the instant of
//! the first matching wall time whose instant is past `t`, and a search can walk wall times
//! in order and stop at the first one that qualifies. Only one case walks past a match: when
//! `t` is in the second pass of a fold, the fold's wall times fired on the first pass, before
//! `t`; the search then jumps to the end of the fold.

use croner::Cron;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::Timestamp;

/// More than enough: at most one jump over a fold is needed per call.
const MAX_ROUNDS: usize = 8;

/// The first fire time of `cron` in `zone` strictly after `after_ms`.
pub(crate) fn next_fire(cron: &Cron, zone: &TimeZone, after_ms: u64) -> Option<u64> {
    let after = crate::timestamp_from_ms(after_ms)?;
    // croner drops sub-seconds, and an exclusive search starts at the next whole second, so
    // a wall time within the same second as `after` (which fired at or before it) is skipped.
    let mut from = zone.to_datetime(after);
    let mut inclusive = false;
    for _ in 0..MAX_ROUNDS {
        // croner gives up (an error) past its year 5000 limit or after a year-long walk
        // without a match; either way there is nothing to fire.
        let wall = cron.find_next_occurrence(&from, inclusive).ok()?;
        let fire = fire_instant(zone, wall)?;
        if fire > after {
            return u64::try_from(fire.as_millisecond()).ok();
        }
        // `wall` is repeated and its first pass is not after `after`: `after` sits in the
        // second pass. Every wall time of the fold fired on the first pass, so resume at the
        // first wall time after the fold.
        match fold_end(zone, wall) {
            Some(end) if end > wall => {
                from = end;
                inclusive = true;
            }
            _ => {
                from = wall;
                inclusive = false;
            }
        }
    }
    None
}

/// The instant at which the matching wall time `wall` fires in `zone`.
pub(crate) fn fire_instant(zone: &TimeZone, wall: DateTime) -> Option<Timestamp> {
    let ambiguous = zone.to_ambiguous_timestamp(wall);
    match ambiguous.offset() {
        AmbiguousOffset::Gap { before, after } => {
            // The transition lies between the readings of `wall` with each offset: the one
            // with the later offset is before it, the other at or after it.
            let lo = after.to_timestamp(wall).ok()?;
            let hi = before.to_timestamp(wall).ok()?;
            // Should the database ever disagree, the instant with the offset before the gap
            // is still past the gap and still fires once.
            Some(transition_to(zone, lo, hi, after).unwrap_or(hi))
        }
        AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
            ambiguous.earlier().ok()
        }
    }
}

/// The first wall time after the fold that repeats `wall`, or None when `wall` is not
/// repeated.
fn fold_end(zone: &TimeZone, wall: DateTime) -> Option<DateTime> {
    let AmbiguousOffset::Fold { before, after } = zone.to_ambiguous_timestamp(wall).offset() else {
        return None;
    };
    let first_pass = before.to_timestamp(wall).ok()?;
    let second_pass = after.to_timestamp(wall).ok()?;
    let transition = transition_to(zone, first_pass, second_pass, after)?;
    // The wall clock just before the transition reads `transition + before`; that reading is
    // where the repeated range ends.
    Some(before.to_datetime(transition))
}

/// The transition to `offset` in `(lo, hi]`.
fn transition_to(
    zone: &TimeZone,
    lo: Timestamp,
    hi: Timestamp,
    offset: Offset,
) -> Option<Timestamp> {
    zone.following(lo)
        .take(4)
        .map(|transition| (transition.timestamp(), transition.offset()))
        .take_while(|(at, _)| *at <= hi)
        .find(|(_, to)| *to == offset)
        .map(|(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        jiff::tz::db().get(name).unwrap()
    }

    fn civil(text: &str) -> DateTime {
        text.parse().unwrap()
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn gap_wall_times_fire_at_the_end_of_the_gap() {
        let ny = zone("America/New_York");
        // 2027-03-14: 02:00 EST jumps to 03:00 EDT at 07:00Z.
        for wall in [
            "2027-03-14T02:00",
            "2027-03-14T02:30",
            "2027-03-14T02:59:59",
        ] {
            assert_eq!(
                fire_instant(&ny, civil(wall)),
                Some(ts("2027-03-14T07:00:00Z")),
                "{wall}"
            );
        }
        assert_eq!(
            fire_instant(&ny, civil("2027-03-14T03:00")),
            Some(ts("2027-03-14T07:00:00Z"))
        );
        assert_eq!(
            fire_instant(&ny, civil("2027-03-14T01:59")),
            Some(ts("2027-03-14T06:59:00Z"))
        );
    }

    #[test]
    fn fold_wall_times_fire_on_the_first_pass_and_the_fold_end_is_found() {
        let ny = zone("America/New_York");
        // 2027-11-07: 02:00 EDT goes back to 01:00 EST at 06:00Z.
        assert_eq!(
            fire_instant(&ny, civil("2027-11-07T01:30")),
            Some(ts("2027-11-07T05:30:00Z"))
        );
        assert_eq!(
            fold_end(&ny, civil("2027-11-07T01:30")),
            Some(civil("2027-11-07T02:00"))
        );
        assert_eq!(fold_end(&ny, civil("2027-11-07T02:00")), None);
        assert_eq!(fold_end(&ny, civil("2027-11-07T00:59")), None);
    }

    #[test]
    fn lord_howe_half_hour_transitions() {
        let lh = zone("Australia/Lord_Howe");
        // 2027-10-03: 02:00 +10:30 jumps to 02:30 +11 at 2027-10-02T15:30Z.
        assert_eq!(
            fire_instant(&lh, civil("2027-10-03T02:15")),
            Some(ts("2027-10-02T15:30:00Z"))
        );
        // 2027-04-04: 02:00 +11 goes back to 01:30 +10:30 at 2027-04-03T15:00Z.
        assert_eq!(
            fold_end(&lh, civil("2027-04-04T01:45")),
            Some(civil("2027-04-04T02:00"))
        );
    }
}
