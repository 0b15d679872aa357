//! Bad expressions: the right variant, the right position, a message naming what is allowed,
//! and never a panic.

use berth_cron::{check_zone, ExprError, Schedule};
use proptest::prelude::*;

/// Asserts a syntax error at `position` whose message contains every one of `needles`.
#[track_caller]
fn syntax(expression: &str, position: usize, needles: &[&str]) {
    match Schedule::parse(expression, "UTC") {
        Err(ExprError::Syntax {
            position: got,
            message,
            expression: quoted,
        }) => {
            assert_eq!(
                got, position,
                "{expression:?}: position {got}, wanted {position} ({message})"
            );
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{expression:?}: message {message:?} lacks {needle:?}"
                );
            }
            assert!(
                quoted.chars().count() <= 65,
                "{expression:?}: quoted {quoted:?}"
            );
        }
        other => panic!("{expression:?}: expected a syntax error, got {other:?}"),
    }
}

#[track_caller]
fn never(expression: &str, needles: &[&str]) {
    match Schedule::parse(expression, "UTC") {
        Err(ExprError::Never { message, .. }) => {
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{expression:?}: message {message:?} lacks {needle:?}"
                );
            }
        }
        other => panic!("{expression:?}: expected Never, got {other:?}"),
    }
}

#[test]
fn cron_field_errors_point_at_the_field() {
    syntax("cron(0 25 * * ? *)", 8, &["hour field `25`", "0-23"]);
    syntax("cron(60 1 * * ? *)", 6, &["minute field `60`", "0-59"]);
    syntax("  cron(0 61 * * ? *)", 10, &["hour field `61`"]);
    syntax(
        "cron(0 12 32 * ? *)",
        11,
        &["day-of-month field `32`", "1-31"],
    );
    syntax("cron(0 12 ? 13 MON *)", 13, &["month field `13`", "1-12"]);
    syntax(
        "cron(0 12 ? MON MON *)",
        13,
        &["month field `MON`", "JAN-DEC"],
    );
    syntax("cron(0 12 ? * 0 *)", 15, &["day-of-week field `0`", "1-7"]);
    syntax("cron(0 12 ? * 8 *)", 15, &["day-of-week field `8`", "1-7"]);
    syntax("cron(0 12 ? * L *)", 15, &["day-of-week field `L`", "6L"]);
    syntax(
        "cron(0 12 ? * +MON *)",
        15,
        &["day-of-week field `+MON`", "`+`"],
    );
    syntax(
        "cron(0 12 ? * MONDAY *)",
        15,
        &["`MONDAY` is not allowed", "SUN-SAT"],
    );
    syntax("cron(0 12 ? * MON#6 *)", 15, &["day-of-week field"]);
    syntax("cron(0 12 * * ? 20x6)", 17, &["year field `20x6`", "years"]);
    syntax("cron(*/0 12 * * ? *)", 6, &["minute field `*/0`"]);
    syntax("cron(? 12 * * ? *)", 6, &["minute field `?`"]);
    syntax("cron(0 12 1,? * ? *)", 11, &["`?` must stand alone"]);
    syntax("cron(0 ½ * * ? *)", 8, &["hour field `½`"]);
}

#[test]
fn eventbridge_needs_exactly_one_question_mark() {
    syntax(
        "cron(0 12 * * 2 *)",
        11,
        &["exactly one of them must be `?`"],
    );
    syntax(
        "cron(0 12 ? * ? *)",
        11,
        &["exactly one of them must be `?`"],
    );
    syntax("cron(0 12 1 * MON *)", 11, &["`?`"]);
}

#[test]
fn cron_field_count_and_shape() {
    syntax("cron(0 12 * *)", 6, &["6 fields expected", "found 4"]);
    syntax(
        "cron(0 12 * * ? * 2027)",
        19,
        &["6 fields expected", "found 7"],
    );
    syntax("cron()", 6, &["6 fields expected", "found 0"]);
    syntax("cron(0 12 * * ? *", 18, &["missing the closing `)`"]);
    syntax(
        "cron(0 12 * * ? *) x",
        20,
        &["unexpected text after the closing `)`"],
    );
    syntax("cron(0 12 (* * ? *)", 11, &["parentheses do not nest"]);
    syntax("cron 0 12 * * ? *", 5, &["expected `(` right after `cron`"]);
    syntax("0 12 * * 8", 10, &["day-of-week field `8`", "0-7"]);
    syntax("0 12 * * ? 2027", 1, &["found 6 fields", "cron("]);
    syntax("* * * *", 1, &["found 4 fields", "rate(", "at("]);
    syntax("*/0 * * * *", 1, &["minute field `*/0`"]);
}

#[test]
fn other_forms() {
    syntax("", 1, &["empty", "cron(", "rate(", "at("]);
    syntax("   \t ", 1, &["empty"]);
    syntax("hello", 1, &["cron(", "rate(", "at(", "5-field"]);
    syntax("every day", 1, &["cron(", "rate(", "at("]);
    syntax("@fortnightly", 1, &["@daily"]);
    syntax("crontab(0 0 * * ? *)", 1, &["cron("]);
}

#[test]
fn rate_errors() {
    syntax("rate(0 minutes)", 6, &["rate value `0`", "at least 1"]);
    syntax(
        "rate(5 fortnights)",
        8,
        &["rate unit `fortnights`", "minute(s)"],
    );
    syntax("rate(367 days)", 6, &["at most 366 days"]);
    syntax("rate(99999999999999999999999 seconds)", 6, &["too large"]);
    syntax("rate(-5 minutes)", 6, &["rate value `-5`"]);
    syntax("rate(1.5 hours)", 6, &["rate value `1.5`"]);
    syntax("rate(5)", 6, &["2 parts, found 1"]);
    syntax("rate()", 6, &["2 parts, found 0"]);
    syntax("rate(5 minutes please)", 16, &["2 parts, found 3"]);
}

#[test]
fn at_errors() {
    syntax("at(2026-13-01T00:00:00)", 9, &["month `13`", "01-12"]);
    syntax("at(2026-02-30T00:00:00)", 12, &["day `30`", "01-28"]);
    syntax("at(2028-02-30T00:00:00)", 12, &["day `30`", "01-29"]);
    syntax("at(2026-06-01T24:00:00)", 15, &["hour `24`", "00-23"]);
    syntax("at(2026-06-01T10:60:00)", 18, &["minute `60`"]);
    syntax("at(2026-06-01T10:00:60)", 21, &["second `60`"]);
    syntax("at(1969-12-31T00:00:00)", 4, &["1970-2199"]);
    syntax("at(2200-01-01T00:00:00)", 4, &["1970-2199"]);
    syntax(
        "at(2026-06-01 10:00:00)",
        14,
        &["unexpected ` `", "YYYY-MM-DDTHH:MM:SS"],
    );
    syntax("at(2026-06-01T10:00:00 x)", 23, &["after the seconds"]);
    syntax("at(2026-6-01T10:00:00)", 10, &["YYYY-MM-DDTHH:MM:SS"]);
    syntax("at(2026-06-01T10:00)", 20, &["cut short"]);
    syntax("at(2026-06-01T10:00:00Z)", 23, &["after the seconds"]);
    syntax("at()", 4, &["empty"]);
}

#[test]
fn never_firing_crons() {
    never("cron(0 0 30 2 ? *)", &["30 February"]);
    never("cron(0 0 31 4,6,9,11 ? *)", &["day-of-month"]);
    never("0 0 30 2 *", &["30 February"]);
    never("cron(0 0 * * ? 2019)", &["year field `2019`"]);
    never("cron(0 0 * * ? 2000-2025)", &["year field `2000-2025`"]);
    never("cron(0 0 1 1 ? 2300)", &["year field `2300`", "2199"]);
    // 2100 is not a leap year; with any year it would fire, so the year field is named.
    never("cron(0 0 29 2 ? 2100)", &["year field `2100`"]);
}

#[test]
fn long_input_is_refused_at_257_and_quoted_short() {
    let long = format!("cron(0 12 * * ? *){}", " ".repeat(300));
    syntax(&long, 257, &["at most 256", "318 characters"]);
    let long = "x".repeat(300);
    syntax(&long, 257, &["at most 256"]);
    // Exactly 256 characters is fine.
    let padded = format!("{:<256}", "rate(5 minutes)");
    assert_eq!(padded.chars().count(), 256);
    assert!(Schedule::parse(&padded, "").is_ok());
    // A long bad field is quoted, not copied whole.
    let field = "9".repeat(200);
    match Schedule::parse(&format!("cron(0 12 * * ? {field})"), "") {
        Err(ExprError::Syntax {
            position, message, ..
        }) => {
            assert_eq!(position, 17);
            assert!(message.len() < 400, "{message}");
            assert!(message.contains('…'), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_zone() {
    let err = Schedule::parse("cron(0 12 * * ? *)", "Mars/Olympus").unwrap_err();
    assert_eq!(
        err,
        ExprError::Zone {
            zone: "Mars/Olympus".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown time zone \"Mars/Olympus\": use an IANA name such as \"Europe/Paris\" or \"UTC\""
    );
    assert!(check_zone("Mars/Olympus").is_err());
    assert!(check_zone("America/New_York").is_ok());
    assert!(Schedule::parse("rate(5 minutes)", "Nowhere").is_err());
}

#[test]
fn display_names_the_position() {
    let err = Schedule::parse("cron(0 25 * * ? *)", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "expression \"cron(0 25 * * ? *)\", at character 8: hour field `25`: values are 0-23, \
         with `*`, lists `1,5`, ranges `1-5` and steps `*/15` or `0/15`"
    );
}

fn expression_chars() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(' '),
            Just('*'),
            Just('?'),
            Just('/'),
            Just(','),
            Just('-'),
            Just('#'),
            Just('L'),
            Just('W'),
            Just('('),
            Just(')'),
            Just('@'),
            Just(':'),
            Just('T'),
            Just('é'),
            proptest::char::range('0', '9'),
            proptest::char::range('A', 'Z'),
            proptest::char::range('a', 'z'),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // No regression files in the source tree; a failure prints its minimal case.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary input never panics, and every syntax error points inside (or just past) it.
    #[test]
    fn arbitrary_input_never_panics(
        body in expression_chars(),
        wrapper in 0usize..5,
        after in 0u64..8_000_000_000_000,
    ) {
        let expression = match wrapper {
            0 => format!("cron({body})"),
            1 => format!("rate({body})"),
            2 => format!("at({body})"),
            _ => body,
        };
        match Schedule::parse(&expression, "Europe/London") {
            Ok(schedule) => {
                let first = schedule.next_after(after, after / 2);
                if let Some(first) = first {
                    prop_assert!(first > after);
                }
            }
            Err(ExprError::Syntax { position, message, .. }) => {
                prop_assert!(position >= 1 && position <= expression.chars().count() + 1,
                    "{expression:?}: position {position}");
                prop_assert!(!message.is_empty());
            }
            Err(_) => {}
        }
    }

    /// Field-shaped garbage inside cron(...) is refused with a position, never a panic.
    #[test]
    fn cron_fields_never_panic(
        fields in proptest::collection::vec(
            proptest::string::string_regex("[0-9*?/,#LW-]{1,6}|[A-Z]{3}(-[A-Z]{3})?").unwrap(),
            6,
        ),
    ) {
        let expression = format!("cron({})", fields.join(" "));
        if let Ok(schedule) = Schedule::parse(&expression, "America/New_York") {
            let next = schedule.next_after(1_767_225_600_000, 0);
            prop_assert!(next.is_some(), "{expression} parsed but never fires");
        }
    }
}
