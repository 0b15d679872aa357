//! Every IANA zone in jiff's bundled database, every offset change from 2020 to 2035: the
//! fires around each change must follow Berth's rule, checked against an oracle that walks
//! real instants minute by minute (see `common::oracle`).

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use berth_cron::Schedule;
use common::{check_window, transitions, Pattern};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

fn zone_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<String> = jiff::tz::db()
            .available()
            .map(|name| name.to_string())
            .collect();
        names.sort();
        names
    })
}

fn range() -> (Timestamp, Timestamp) {
    (
        "2020-01-01T00:00:00Z".parse().unwrap(),
        "2036-01-01T00:00:00Z".parse().unwrap(),
    )
}

fn schedule(pattern: &Pattern, eventbridge: bool, zone: &str) -> Schedule {
    let expression = if eventbridge {
        // Same fields with `?` for day-of-week and `*` for the year.
        let mut fields: Vec<&str> = pattern.text.split(' ').collect();
        fields[4] = "?";
        format!("cron({} *)", fields.join(" "))
    } else {
        pattern.text.clone()
    };
    Schedule::parse(&expression, zone).unwrap_or_else(|e| panic!("{expression} in {zone}: {e}"))
}

/// Fixed wall times that fall inside the changed range: its first minute and its middle.
fn fixed_patterns(
    at: Timestamp,
    before: jiff::tz::Offset,
    after: jiff::tz::Offset,
) -> Vec<Pattern> {
    let low = before.min(after);
    let span = before.duration_since(after).abs();
    let start = low.to_datetime(at);
    let middle = start + span / 2;
    let mut patterns = Vec::new();
    for wall in [start, middle] {
        let pattern = Pattern::new(&wall.minute().to_string(), &wall.hour().to_string());
        if !patterns.iter().any(|p: &Pattern| p.text == pattern.text) {
            patterns.push(pattern);
        }
    }
    patterns
}

#[test]
fn every_zone_every_transition_2020_2035() {
    let started = Instant::now();
    let (from, to) = range();
    let around = SignedDuration::from_hours(3);
    let quarter = Pattern::new("*/15", "*");
    let half_past = Pattern::new("30", "*");
    let every_minute = Pattern::new("*", "*");
    let mut zones_with_changes = 0;
    let mut checked = 0usize;
    for (zone_index, name) in zone_names().iter().enumerate() {
        let tz: TimeZone = jiff::tz::db().get(name).unwrap();
        let changes = transitions(&tz, from, to);
        if changes.is_empty() {
            // Still walk one ordinary window, so every zone is exercised.
            let mid: Timestamp = "2027-06-15T12:00:00Z".parse().unwrap();
            let s = schedule(&quarter, false, name);
            check_window(name, &s, &tz, &quarter, mid - around, mid + around);
            checked += 1;
            continue;
        }
        zones_with_changes += 1;
        for (index, &(at, before, after)) in changes.iter().enumerate() {
            let window = (at - around, at + around);
            let label = |p: &Pattern| format!("{name} {at} ({before} -> {after}) `{}`", p.text);
            // Alternate the two cron dialects, so both are covered in every zone.
            let eventbridge = index % 2 == 1;
            let mut patterns = vec![quarter.clone()];
            patterns.extend(fixed_patterns(at, before, after));
            // Sample the costlier ones: still every zone, a few of its changes.
            if (index + zone_index) % 4 == 0 {
                patterns.push(half_past.clone());
            }
            if (index + zone_index) % 16 == 0 {
                patterns.push(every_minute.clone());
            }
            for pattern in &patterns {
                let s = schedule(pattern, eventbridge, name);
                check_window(&label(pattern), &s, &tz, pattern, window.0, window.1);
                checked += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "all zones: {} zones ({zones_with_changes} with offset changes in 2020-2035), \
         {checked} windows checked in {elapsed:.2?}",
        zone_names().len()
    );
    assert!(zone_names().len() > 400, "the bundled database looks empty");
    assert!(zones_with_changes > 100);
}

fn minute_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        prop::sample::select(vec![2u32, 5, 7, 10, 15, 20, 30]).prop_map(|k| format!("*/{k}")),
        (0u32..60).prop_map(|m| m.to_string()),
        (0u32..60, 0u32..60)
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
        (0u32..60, 0u32..10).prop_map(|(a, len)| format!("{a}-{}", (a + len).min(59))),
    ]
}

fn hour_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        prop::sample::select(vec![2u32, 3, 6]).prop_map(|k| format!("*/{k}")),
        (0u32..24).prop_map(|h| h.to_string()),
        (0u32..24, 0u32..24)
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
        (0u32..24, 0u32..4).prop_map(|(a, len)| format!("{a}-{}", (a + len).min(23))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        // No regression files in the source tree; a failure prints its minimal case.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random pattern, zone and start (half the time just before one of the zone's offset
    /// changes): the walk over the next day and a half follows the rule.
    #[test]
    fn random_walks_follow_the_rule(
        minute in minute_field(),
        hour in hour_field(),
        zone_pick in any::<prop::sample::Index>(),
        near_change in any::<bool>(),
        change_pick in any::<prop::sample::Index>(),
        start_secs in 1_577_836_800i64..2_082_758_400, // 2020-01-01 .. 2036-01-01
        lead_secs in 0i64..6 * 3600,
        eventbridge in any::<bool>(),
    ) {
        let names = zone_names();
        let name = &names[zone_pick.index(names.len())];
        let tz = jiff::tz::db().get(name).unwrap();
        let (from, to) = range();
        let changes = transitions(&tz, from, to);
        let start = if near_change && !changes.is_empty() {
            changes[change_pick.index(changes.len())].0 - SignedDuration::from_secs(lead_secs)
        } else {
            Timestamp::from_second(start_secs).unwrap()
        };
        let pattern = Pattern::new(&minute, &hour);
        let s = schedule(&pattern, eventbridge, name);
        let label = format!("{name} from {start} `{}` (eventbridge {eventbridge})", pattern.text);
        check_window(&label, &s, &tz, &pattern, start, start + SignedDuration::from_hours(36));
    }
}
