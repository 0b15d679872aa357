//! Known fire times for each expression form, in UTC and in zones without DST.

mod common;

use berth_cron::Schedule;
use common::{fires_shown, ms, show};
use jiff::civil::Weekday;

fn parse(expression: &str, zone: &str) -> Schedule {
    Schedule::parse(expression, zone).unwrap_or_else(|e| panic!("{expression}: {e}"))
}

fn next(expression: &str, zone: &str, after: &str) -> Option<String> {
    parse(expression, zone).next_after(ms(after), 0).map(show)
}

#[test]
fn eventbridge_cron_in_utc() {
    assert_eq!(
        next("cron(0 12 * * ? *)", "", "2026-03-01T13:00:00Z").as_deref(),
        Some("2026-03-02T12:00:00Z")
    );
    // Strictly after: a fire time exactly at `after` is not returned again.
    assert_eq!(
        next("cron(0 12 * * ? *)", "UTC", "2026-03-02T12:00:00Z").as_deref(),
        Some("2026-03-03T12:00:00Z")
    );
    // Within the same second, too (croner drops sub-seconds).
    assert_eq!(
        next("cron(0 12 * * ? *)", "UTC", "2026-03-02T12:00:00.999Z").as_deref(),
        Some("2026-03-03T12:00:00Z")
    );
    assert_eq!(
        next("cron(0 12 * * ? *)", "UTC", "2026-03-02T11:59:59.999Z").as_deref(),
        Some("2026-03-02T12:00:00Z")
    );
    // EventBridge's documented `0/15` step.
    assert_eq!(
        fires_shown(
            &parse("cron(0/15 * * * ? *)", ""),
            "2026-03-01T13:07:30Z",
            3
        ),
        [
            "2026-03-01T13:15:00Z",
            "2026-03-01T13:30:00Z",
            "2026-03-01T13:45:00Z"
        ]
    );
}

#[test]
fn eventbridge_weekdays_count_from_sunday_as_one() {
    let mondays = fires_shown(&parse("cron(0 12 ? * 2 *)", ""), "2026-01-01T00:00:00Z", 6);
    // 2026-01-01 is a Thursday.
    assert_eq!(mondays[0], "2026-01-05T12:00:00Z");
    for fire in &mondays {
        let ts: jiff::Timestamp = fire.parse().unwrap();
        assert_eq!(
            ts.to_zoned(jiff::tz::TimeZone::UTC).weekday(),
            Weekday::Monday,
            "{fire}"
        );
    }
    let by_name = fires_shown(
        &parse("cron(0 12 ? * mon *)", ""),
        "2026-01-01T00:00:00Z",
        6,
    );
    assert_eq!(mondays, by_name);
    let first = |expression: &str| next(expression, "", "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(first("cron(0 12 ? * 1 *)"), "2026-01-04T12:00:00Z"); // Sunday
    assert_eq!(first("cron(0 12 ? * SUN *)"), "2026-01-04T12:00:00Z");
    assert_eq!(first("cron(0 12 ? * 7 *)"), "2026-01-03T12:00:00Z"); // Saturday
    assert_eq!(first("cron(0 12 ? * 6 *)"), "2026-01-02T12:00:00Z"); // Friday
    assert_eq!(first("cron(0 12 ? * 2-6 *)"), "2026-01-01T12:00:00Z"); // Mon-Fri
    assert_eq!(first("cron(0 12 ? * 6L *)"), "2026-01-30T12:00:00Z"); // last Friday
    assert_eq!(first("cron(0 12 ? * MON#2 *)"), "2026-01-12T12:00:00Z");
    assert_eq!(first("cron(0 12 ? * 2#2 *)"), "2026-01-12T12:00:00Z");
}

#[test]
fn posix_weekdays_count_from_sunday_as_zero_or_seven() {
    let first = |expression: &str| next(expression, "", "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(first("0 12 * * 1"), "2026-01-05T12:00:00Z"); // Monday
    assert_eq!(first("0 12 * * 0"), "2026-01-04T12:00:00Z"); // Sunday
    assert_eq!(first("0 12 * * 7"), "2026-01-04T12:00:00Z"); // Sunday
    assert_eq!(first("0 12 * * sun"), "2026-01-04T12:00:00Z");
    assert_eq!(first("0 12 * * 5L"), "2026-01-30T12:00:00Z"); // last Friday
    assert_eq!(first("0 12 * * MON#2"), "2026-01-12T12:00:00Z");
    // Vixie cron: both day fields restricted means either may match.
    assert_eq!(first("0 12 13 * 1"), "2026-01-05T12:00:00Z");
    assert_eq!(first("*/20 9-10 * * *"), "2026-01-01T09:00:00Z");
}

#[test]
fn day_of_month_modifiers() {
    let first = |expression: &str, after: &str| next(expression, "", after).unwrap();
    assert_eq!(
        first("cron(0 0 L * ? *)", "2026-02-01T00:00:00Z"),
        "2026-02-28T00:00:00Z"
    );
    assert_eq!(
        first("cron(0 0 L 2 ? *)", "2027-03-01T00:00:00Z"),
        "2028-02-29T00:00:00Z"
    );
    // 2026-02-15 is a Sunday: the nearest weekday is Monday the 16th.
    assert_eq!(
        first("cron(0 9 15W * ? *)", "2026-02-01T00:00:00Z"),
        "2026-02-16T09:00:00Z"
    );
    // Last weekday of January 2026 is Friday the 30th.
    assert_eq!(
        first("cron(0 9 LW * ? *)", "2026-01-01T00:00:00Z"),
        "2026-01-30T09:00:00Z"
    );
    assert_eq!(
        first("0 0 1 JAN-MAR *", "2026-01-01T00:00:00Z"),
        "2026-02-01T00:00:00Z"
    );
}

#[test]
fn year_field_ends_the_schedule() {
    let schedule = parse("cron(0 0 1 1 ? 2027-2028)", "");
    assert_eq!(
        fires_shown(&schedule, "2026-06-01T00:00:00Z", 5),
        ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]
    );
    assert_eq!(schedule.next_after(ms("2028-01-01T00:00:00Z"), 0), None);
}

#[test]
fn zone_without_dst() {
    // Kolkata is UTC+05:30 all year.
    assert_eq!(
        next("cron(30 9 * * ? *)", "Asia/Kolkata", "2026-06-01T00:00:00Z").as_deref(),
        Some("2026-06-01T04:00:00Z")
    );
    let fires = common::fires(
        &parse("*/15 * * * *", "Asia/Kolkata"),
        ms("2026-12-31T12:00:00Z"),
        200,
    );
    assert_eq!(fires.len(), 200);
    assert_eq!(show(fires[0]), "2026-12-31T12:15:00Z");
    for pair in fires.windows(2) {
        assert_eq!(pair[1] - pair[0], 15 * 60_000);
    }
}

#[test]
fn nicknames() {
    let after = "2026-06-03T10:20:00Z"; // a Wednesday
    let first = |expression: &str| next(expression, "", after).unwrap();
    assert_eq!(first("@hourly"), "2026-06-03T11:00:00Z");
    assert_eq!(first("@daily"), "2026-06-04T00:00:00Z");
    assert_eq!(first("@DAILY"), "2026-06-04T00:00:00Z");
    assert_eq!(first("@weekly"), "2026-06-07T00:00:00Z");
    assert_eq!(first("@monthly"), "2026-07-01T00:00:00Z");
    assert_eq!(first("@yearly"), "2027-01-01T00:00:00Z");
    assert_eq!(first("@annually"), "2027-01-01T00:00:00Z");
    assert_eq!(parse("@daily", "").kind(), "cron");
}

#[test]
fn keywords_are_case_insensitive_and_whitespace_is_trimmed() {
    let canonical = fires_shown(
        &parse("cron(0 12 ? * MON *)", ""),
        "2026-01-01T00:00:00Z",
        3,
    );
    for variant in [
        "  CRON(0 12 ? * mon *)  ",
        "Cron( 0  12 ?\t* Mon * )",
        "\ncron(0 12 ? * 2 *)",
    ] {
        assert_eq!(
            fires_shown(&parse(variant, ""), "2026-01-01T00:00:00Z", 3),
            canonical,
            "{variant:?}"
        );
    }
}

#[test]
fn kind_and_period() {
    let cron = parse("cron(0 12 * * ? *)", "Europe/Paris");
    assert_eq!((cron.kind(), cron.period_ms()), ("cron", None));
    let posix = parse("0 12 * * *", "");
    assert_eq!((posix.kind(), posix.period_ms()), ("cron", None));
    let rate = parse("rate(5 minutes)", "");
    assert_eq!((rate.kind(), rate.period_ms()), ("rate", Some(300_000)));
    let at = parse("at(2027-06-01T09:00:00)", "");
    assert_eq!((at.kind(), at.period_ms()), ("at", None));
}

#[test]
fn rate_counts_from_the_anchor() {
    let schedule = parse("rate(5 minutes)", "America/New_York");
    let anchor = ms("2026-01-01T00:00:00Z");
    let period = 300_000;
    assert_eq!(schedule.next_after(anchor - 1, anchor), Some(anchor));
    assert_eq!(schedule.next_after(0, anchor), Some(anchor));
    assert_eq!(schedule.next_after(anchor, anchor), Some(anchor + period));
    assert_eq!(
        schedule.next_after(anchor + 1, anchor),
        Some(anchor + period)
    );
    assert_eq!(
        schedule.next_after(anchor + period - 1, anchor),
        Some(anchor + period)
    );
    assert_eq!(
        schedule.next_after(anchor + period, anchor),
        Some(anchor + 2 * period)
    );
    // The anchor's phase is kept, not rounded to the unit.
    let odd_anchor = anchor + 7_123;
    assert_eq!(
        schedule.next_after(anchor + 3 * period, odd_anchor),
        Some(odd_anchor + 3 * period)
    );
    // No overflow panics at the end of time.
    assert_eq!(schedule.next_after(u64::MAX - 1, 0), None);
    assert_eq!(schedule.next_after(u64::MAX, u64::MAX), None);
}

#[test]
fn rate_ignores_daylight_saving_time() {
    // New York springs forward at 2027-03-14T07:00Z; a rate keeps its absolute period.
    let schedule = parse("rate(1 hour)", "America/New_York");
    let anchor = ms("2027-03-14T05:00:00Z");
    assert_eq!(
        common::fires(&schedule, anchor, 4)
            .into_iter()
            .map(show)
            .collect::<Vec<_>>(),
        [
            "2027-03-14T06:00:00Z",
            "2027-03-14T07:00:00Z",
            "2027-03-14T08:00:00Z",
            "2027-03-14T09:00:00Z"
        ]
    );
}

#[test]
fn rate_units_and_plurals() {
    for (expression, period) in [
        ("rate(1 minutes)", 60_000),
        ("rate(1 minute)", 60_000),
        ("rate(5 minute)", 300_000),
        ("rate(2 Hours)", 7_200_000),
        ("RATE(1 day)", 86_400_000),
        ("rate(3 days)", 3 * 86_400_000),
        ("rate(1 second)", 1_000),
        ("rate(30 seconds)", 30_000),
        ("rate( 10   minutes )", 600_000),
        ("rate(366 days)", 366 * 86_400_000),
        ("rate(8784 hours)", 366 * 86_400_000),
    ] {
        assert_eq!(
            parse(expression, "").period_ms(),
            Some(period),
            "{expression}"
        );
    }
}

#[test]
fn at_fires_once_at_its_wall_time() {
    let schedule = parse("at(2027-06-01T09:00:00)", "Europe/Paris");
    let fire = ms("2027-06-01T07:00:00Z");
    assert_eq!(schedule.next_after(0, 0), Some(fire));
    assert_eq!(schedule.next_after(fire - 1, 12345), Some(fire));
    assert_eq!(schedule.next_after(fire, 0), None);
    assert_eq!(schedule.next_after(u64::MAX, 0), None);
    // Lower-case `t` is accepted.
    assert_eq!(
        parse("at(2027-06-01t09:00:00)", "").next_after(0, 0),
        Some(ms("2027-06-01T09:00:00Z"))
    );
}

#[test]
fn at_in_the_past_is_accepted_and_never_fires() {
    let schedule = parse("at(2020-01-01T00:00:00)", "UTC");
    assert_eq!(schedule.next_after(ms("2026-01-01T00:00:00Z"), 0), None);
    assert_eq!(schedule.next_after(0, 0), Some(ms("2020-01-01T00:00:00Z")));
    // Before the epoch in UTC: representable, but never a fire time.
    let early = parse("at(1970-01-01T00:00:00)", "Asia/Tokyo");
    assert_eq!(early.next_after(0, 0), None);
}

#[test]
fn at_in_a_gap_shifts_forward_and_in_a_fold_takes_the_first_pass() {
    // 2027-03-14 02:30 does not exist in New York: it is read with EST (the offset before
    // the gap), which is 03:30 EDT.
    assert_eq!(
        next(
            "at(2027-03-14T02:30:00)",
            "America/New_York",
            "2027-01-01T00:00:00Z"
        )
        .as_deref(),
        Some("2027-03-14T07:30:00Z")
    );
    // 2027-11-07 01:30 happens twice: the first pass, EDT.
    assert_eq!(
        next(
            "at(2027-11-07T01:30:00)",
            "America/New_York",
            "2027-01-01T00:00:00Z"
        )
        .as_deref(),
        Some("2027-11-07T05:30:00Z")
    );
    // Lord Howe's 30-minute gap: 02:15 +10:30 is 02:45 +11.
    assert_eq!(
        next(
            "at(2027-10-03T02:15:00)",
            "Australia/Lord_Howe",
            "2027-01-01T00:00:00Z"
        )
        .as_deref(),
        Some("2027-10-02T15:45:00Z")
    );
}
