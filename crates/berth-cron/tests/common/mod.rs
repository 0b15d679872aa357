//! Shared test helpers, including an oracle for Berth's daylight saving time rule that is
//! written independently of the crate: it walks real instants minute by minute and reads
//! the zone's wall clock, instead of resolving wall times like the crate does.
#![allow(dead_code)]

use std::collections::HashSet;

use berth_cron::Schedule;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

pub fn ms(text: &str) -> u64 {
    let ts: Timestamp = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    u64::try_from(ts.as_millisecond()).unwrap()
}

pub fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millisecond(ms as i64).unwrap()
}

pub fn show(ms: u64) -> String {
    ts(ms).to_string()
}

pub fn zone(name: &str) -> TimeZone {
    jiff::tz::db().get(name).unwrap()
}

/// Walks `schedule` from `after_ms`, up to `count` fires.
pub fn fires(schedule: &Schedule, after_ms: u64, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = after_ms;
    while out.len() < count {
        match schedule.next_after(at, 0) {
            Some(next) => {
                out.push(next);
                at = next;
            }
            None => break,
        }
    }
    out
}

/// Fires as RFC 3339 strings, for readable assertions.
pub fn fires_shown(schedule: &Schedule, after: &str, count: usize) -> Vec<String> {
    fires(schedule, ms(after), count)
        .into_iter()
        .map(show)
        .collect()
}

/// A minute-and-hour pattern (day fields `*`), matched by the oracle without croner.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub text: String,
    pub minutes: [bool; 60],
    pub hours: [bool; 24],
}

impl Pattern {
    /// `minute` and `hour` are either `*`, `*/k`, `a-b`, or comma lists of numbers.
    pub fn new(minute: &str, hour: &str) -> Pattern {
        Pattern {
            text: format!("{minute} {hour} * * *"),
            minutes: field_set::<60>(minute),
            hours: field_set::<24>(hour),
        }
    }

    pub fn matches(&self, wall: DateTime) -> bool {
        wall.second() == 0
            && wall.subsec_nanosecond() == 0
            && self.minutes[wall.minute() as usize]
            && self.hours[wall.hour() as usize]
    }
}

fn field_set<const N: usize>(text: &str) -> [bool; N] {
    let mut set = [false; N];
    if text == "*" {
        return [true; N];
    }
    if let Some(step) = text.strip_prefix("*/") {
        let step: usize = step.parse().unwrap();
        for (value, slot) in set.iter_mut().enumerate() {
            *slot = value % step == 0;
        }
        return set;
    }
    if let Some((a, b)) = text.split_once('-') {
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        for slot in &mut set[a..=b] {
            *slot = true;
        }
        return set;
    }
    for value in text.split(',') {
        set[value.parse::<usize>().unwrap()] = true;
    }
    set
}

/// The instants in `(from, to]` at which `pattern` must fire in `tz` under Berth's rule,
/// found by walking every whole minute from `from - 8h` (so that the first pass of any fold
/// overlapping the range is seen) and reading the wall clock:
///
/// * an instant fires if its wall time matches and no earlier instant showed that wall time;
/// * the first instant after a jump forward fires if a skipped wall time matches.
///
/// Offsets in 2020-2035 are whole minutes, so whole-minute instants see every wall minute,
/// and the wall clock either advances a minute per step or jumps; so "an earlier instant
/// showed this wall time" is "this wall time is not past the latest one shown so far"
/// (cheaper than a set of every wall time, which matters in the unoptimised test build).
pub fn oracle(tz: &TimeZone, pattern: &Pattern, from: Timestamp, to: Timestamp) -> Vec<u64> {
    let minute = SignedDuration::from_mins(1);
    let start = from - SignedDuration::from_hours(8);
    // Align to a whole minute.
    let start = Timestamp::from_second(start.as_second().div_euclid(60) * 60).unwrap();
    let mut latest_shown: Option<DateTime> = None;
    let mut out = Vec::new();
    let mut previous_offset = tz.to_offset(start - minute);
    let mut instant = start;
    while instant <= to {
        let offset = tz.to_offset(instant);
        let wall = offset.to_datetime(instant);
        let mut fire = false;
        if offset > previous_offset {
            // The clock jumped forward at some instant in (instant - 1 min, instant]; every
            // transition in 2020-2035 is on a whole minute, so at `instant` itself. The
            // skipped wall times are those the old offset would have shown from here on.
            let gap_len = offset.duration_since(previous_offset);
            let skipped_start = previous_offset.to_datetime(instant);
            let mut skipped = skipped_start;
            while skipped < skipped_start + gap_len {
                fire |= pattern.matches(skipped);
                skipped += minute;
            }
        }
        let shown_before = latest_shown.is_some_and(|latest| wall <= latest);
        fire |= pattern.matches(wall) && !shown_before;
        latest_shown = latest_shown.max(Some(wall));
        if fire && instant > from {
            out.push(u64::try_from(instant.as_millisecond()).unwrap());
        }
        previous_offset = offset;
        instant += minute;
    }
    out
}

/// Checks the walk of `schedule` over `(from, to]` against the rule, one invariant at a time
/// so that a failure says which promise broke, then against the oracle as a whole.
pub fn check_window(
    label: &str,
    schedule: &Schedule,
    tz: &TimeZone,
    pattern: &Pattern,
    from: Timestamp,
    to: Timestamp,
) {
    let from_ms = u64::try_from(from.as_millisecond()).unwrap();
    let to_ms = u64::try_from(to.as_millisecond()).unwrap();
    let mut got = Vec::new();
    let mut at = from_ms;
    while let Some(next) = schedule.next_after(at, 0) {
        assert!(
            next > at,
            "{label}: next_after({}) = {} is not strictly later",
            show(at),
            show(next)
        );
        if next > to_ms {
            break;
        }
        got.push(next);
        at = next;
    }
    let mut walls = HashSet::new();
    for &fire in &got {
        let wall = tz.to_datetime(ts(fire));
        assert!(
            walls.insert(wall),
            "{label}: wall time {wall} fired twice (again at {})",
            show(fire)
        );
        if !pattern.matches(wall) {
            // Allowed only as the first instant after a jump forward that skipped a match.
            let before = tz.to_offset(ts(fire) - SignedDuration::from_secs(1));
            let now = tz.to_offset(ts(fire));
            assert!(
                now > before,
                "{label}: fired at {} ({wall}), which neither matches nor ends a gap",
                show(fire)
            );
        }
    }
    let expected = oracle(tz, pattern, from, to);
    for &want in &expected {
        assert!(
            got.contains(&want),
            "{label}: missed {} ({}); got {:?}",
            show(want),
            tz.to_datetime(ts(want)),
            got.iter().map(|&g| show(g)).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        got.iter().map(|&g| show(g)).collect::<Vec<_>>(),
        expected.iter().map(|&g| show(g)).collect::<Vec<_>>(),
        "{label}: fires differ from the oracle"
    );
}

/// The offset-changing transitions of `tz` in `[from, to)`, with the offsets either side.
pub fn transitions(
    tz: &TimeZone,
    from: Timestamp,
    to: Timestamp,
) -> Vec<(Timestamp, jiff::tz::Offset, jiff::tz::Offset)> {
    tz.following(from)
        .take_while(|t| t.timestamp() < to)
        .filter_map(|t| {
            let before = tz.to_offset(t.timestamp() - SignedDuration::from_secs(1));
            (before != t.offset()).then(|| (t.timestamp(), before, t.offset()))
        })
        .collect()
}
