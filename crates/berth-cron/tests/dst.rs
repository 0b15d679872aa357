//! Berth's daylight saving time rule on known transitions: a repeated wall time fires once
//! (first pass), a skipped wall time fires once at the first instant after the jump.

mod common;

use berth_cron::Schedule;
use common::{fires, fires_shown, ms, show};

fn parse(expression: &str, zone: &str) -> Schedule {
    Schedule::parse(expression, zone).unwrap_or_else(|e| panic!("{expression}: {e}"))
}

// New York, 2027-03-14: 02:00 EST jumps to 03:00 EDT at 07:00Z.
// New York, 2027-11-07: 02:00 EDT goes back to 01:00 EST at 06:00Z.

#[test]
fn new_york_spring_forward_fixed_time_fires_once_right_after_the_gap() {
    let schedule = parse("cron(30 2 * * ? *)", "America/New_York");
    assert_eq!(
        fires_shown(&schedule, "2027-03-13T00:00:00Z", 3),
        [
            "2027-03-13T07:30:00Z", // 02:30 EST
            "2027-03-14T07:00:00Z", // 02:30 does not exist: 03:00 EDT, the end of the gap
            "2027-03-15T06:30:00Z", // 02:30 EDT
        ]
    );
    // Asking from inside the shifted fire's instant does not fire it again.
    assert_eq!(
        schedule
            .next_after(ms("2027-03-14T07:00:00Z"), 0)
            .map(show)
            .as_deref(),
        Some("2027-03-15T06:30:00Z")
    );
}

#[test]
fn new_york_spring_forward_several_skipped_times_fire_once() {
    // croner alone skips this day entirely (two minute values make it an "interval" job).
    let schedule = parse("15,45 2 * * *", "America/New_York");
    assert_eq!(
        fires_shown(&schedule, "2027-03-14T05:00:00Z", 2),
        ["2027-03-14T07:00:00Z", "2027-03-15T06:15:00Z"]
    );
}

#[test]
fn new_york_spring_forward_hourly_shifts_instead_of_skipping() {
    let schedule = parse("30 * * * *", "America/New_York");
    assert_eq!(
        fires_shown(&schedule, "2027-03-14T06:00:00Z", 3),
        [
            "2027-03-14T06:30:00Z", // 01:30 EST
            "2027-03-14T07:00:00Z", // 02:30 skipped: 03:00 EDT
            "2027-03-14T07:30:00Z", // 03:30 EDT
        ]
    );
    // Every quarter hour: the skipped 02:xx merge into 03:00 EDT, which matches anyway.
    let quarter = parse("*/15 * * * *", "America/New_York");
    assert_eq!(
        fires_shown(&quarter, "2027-03-14T06:40:00Z", 3),
        [
            "2027-03-14T06:45:00Z",
            "2027-03-14T07:00:00Z",
            "2027-03-14T07:15:00Z"
        ]
    );
}

#[test]
fn new_york_fall_back_fixed_time_fires_once() {
    let schedule = parse("30 1 * * *", "America/New_York");
    assert_eq!(
        fires_shown(&schedule, "2027-11-07T04:00:00Z", 2),
        [
            "2027-11-07T05:30:00Z", // 01:30 EDT, the first pass
            "2027-11-08T06:30:00Z", // 01:30 EST the next day
        ]
    );
    // From the second pass, 01:30 EST is not fired.
    assert_eq!(
        schedule
            .next_after(ms("2027-11-07T06:10:00Z"), 0)
            .map(show)
            .as_deref(),
        Some("2027-11-08T06:30:00Z")
    );
}

#[test]
fn new_york_fall_back_quarter_hours_fire_once_each() {
    let schedule = parse("*/15 * * * *", "America/New_York");
    let got = fires(&schedule, ms("2027-11-07T04:50:00Z"), 7);
    assert_eq!(
        got.iter().map(|&f| show(f)).collect::<Vec<_>>(),
        [
            "2027-11-07T05:00:00Z", // 01:00 EDT
            "2027-11-07T05:15:00Z", // 01:15 EDT
            "2027-11-07T05:30:00Z", // 01:30 EDT
            "2027-11-07T05:45:00Z", // 01:45 EDT
            "2027-11-07T07:00:00Z", // 02:00 EST: 01:00-01:45 EST are not fired again
            "2027-11-07T07:15:00Z",
            "2027-11-07T07:30:00Z",
        ]
    );
    // The pause is the step plus the repeated hour, no longer.
    let longest = got.windows(2).map(|p| p[1] - p[0]).max().unwrap();
    assert_eq!(longest, 15 * 60_000 + 3_600_000);
    // Asking from anywhere in the second pass lands on 02:00 EST.
    for after in [
        "2027-11-07T06:00:00Z",
        "2027-11-07T06:14:59Z",
        "2027-11-07T06:15:00Z",
        "2027-11-07T06:59:59.999Z",
    ] {
        assert_eq!(
            schedule.next_after(ms(after), 0).map(show).as_deref(),
            Some("2027-11-07T07:00:00Z"),
            "after {after}"
        );
    }
}

#[test]
fn new_york_fall_back_hourly_fires_once() {
    let schedule = parse("cron(30 * * * ? *)", "America/New_York");
    assert_eq!(
        fires_shown(&schedule, "2027-11-07T04:00:00Z", 3),
        [
            "2027-11-07T04:30:00Z", // 00:30 EDT
            "2027-11-07T05:30:00Z", // 01:30 EDT
            "2027-11-07T07:30:00Z", // 02:30 EST (01:30 EST is the repeat)
        ]
    );
}

// London, 2027-03-28: 01:00 GMT jumps to 02:00 BST at 01:00Z.
// London, 2027-10-31: 02:00 BST goes back to 01:00 GMT at 01:00Z.

#[test]
fn london_transitions() {
    assert_eq!(
        fires_shown(
            &parse("0 1 * * *", "Europe/London"),
            "2027-03-27T12:00:00Z",
            2
        ),
        [
            "2027-03-28T01:00:00Z", // 01:00 skipped: 02:00 BST
            "2027-03-29T00:00:00Z", // 01:00 BST
        ]
    );
    assert_eq!(
        fires_shown(
            &parse("30 * * * *", "Europe/London"),
            "2027-03-28T00:00:00Z",
            3
        ),
        [
            "2027-03-28T00:30:00Z", // 00:30 GMT
            "2027-03-28T01:00:00Z", // 01:30 skipped: 02:00 BST
            "2027-03-28T01:30:00Z", // 02:30 BST
        ]
    );
    assert_eq!(
        fires_shown(
            &parse("30 1 * * *", "Europe/London"),
            "2027-10-30T23:00:00Z",
            2
        ),
        [
            "2027-10-31T00:30:00Z", // 01:30 BST, first pass
            "2027-11-01T01:30:00Z", // 01:30 GMT the next day
        ]
    );
}

// Lord Howe, 2027-10-03: 02:00 +10:30 jumps to 02:30 +11 at 2027-10-02T15:30Z.
// Lord Howe, 2027-04-04: 02:00 +11 goes back to 01:30 +10:30 at 2027-04-03T15:00Z.

#[test]
fn lord_howe_half_hour_gap() {
    let zone = "Australia/Lord_Howe";
    assert_eq!(
        fires_shown(&parse("*/15 * * * *", zone), "2027-10-02T15:00:00Z", 3),
        [
            "2027-10-02T15:15:00Z", // 01:45 +10:30
            "2027-10-02T15:30:00Z", // 02:00 and 02:15 skipped, merged with 02:30 +11
            "2027-10-02T15:45:00Z", // 02:45 +11
        ]
    );
    assert_eq!(
        fires_shown(&parse("0 * * * *", zone), "2027-10-02T14:00:00Z", 3),
        [
            "2027-10-02T14:30:00Z", // 01:00 +10:30
            "2027-10-02T15:30:00Z", // 02:00 skipped: 02:30 +11
            "2027-10-02T16:00:00Z", // 03:00 +11
        ]
    );
    assert_eq!(
        fires_shown(&parse("cron(0 2 * * ? *)", zone), "2027-10-02T12:00:00Z", 2),
        ["2027-10-02T15:30:00Z", "2027-10-03T15:00:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_fold() {
    let schedule = parse("*/15 * * * *", "Australia/Lord_Howe");
    let got = fires(&schedule, ms("2027-04-03T14:20:00Z"), 4);
    assert_eq!(
        got.iter().map(|&f| show(f)).collect::<Vec<_>>(),
        [
            "2027-04-03T14:30:00Z", // 01:30 +11
            "2027-04-03T14:45:00Z", // 01:45 +11
            "2027-04-03T15:30:00Z", // 02:00 +10:30 (01:30 and 01:45 +10:30 are repeats)
            "2027-04-03T15:45:00Z",
        ]
    );
    assert_eq!(got[2] - got[1], 15 * 60_000 + 30 * 60_000);
}

#[test]
fn cron_and_posix_forms_agree_on_dst_days() {
    for (eventbridge, posix) in [
        ("cron(*/15 * * * ? *)", "*/15 * * * *"),
        ("cron(30 1,2 * * ? *)", "30 1,2 * * *"),
    ] {
        for zone in ["America/New_York", "Europe/London", "Australia/Lord_Howe"] {
            for after in [
                "2027-03-13T20:00:00Z",
                "2027-11-06T20:00:00Z",
                "2027-10-02T10:00:00Z",
            ] {
                assert_eq!(
                    fires_shown(&parse(eventbridge, zone), after, 30),
                    fires_shown(&parse(posix, zone), after, 30),
                    "{eventbridge} vs {posix} in {zone} after {after}"
                );
            }
        }
    }
}
