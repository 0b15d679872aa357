//! Cron fields: Berth's own checks first, then croner's parser field by field.
//!
//! croner reports what is wrong but not where, so each field is also parsed alone inside an
//! otherwise-wildcard pattern: the first field croner refuses is the one the position names.
//! Berth's checks come first because croner is more lenient than the documented grammar in
//! ways that would silently change a schedule's meaning (see [`check_letters`]).

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::grammar::Source;
use crate::{quote, ExprError};

/// Which cron grammar the fields follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `cron(min hour dom month dow year)`, weekdays 1-7 = SUN-SAT, one day field is `?`.
    EventBridge,
    /// `min hour dom month dow`, weekdays 0-7 with 0 and 7 = SUN.
    Posix,
}

/// A parsed cron, plus the same cron with its year field opened up to `*`, which lets the
/// creation check tell a user that the year field, not the days, is why it never fires.
#[derive(Debug)]
pub(crate) struct CronSpec {
    pub(crate) cron: Cron,
    pub(crate) any_year: Option<(String, Cron)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek(Dialect),
    Year,
}

const LISTS: &str = "with `*`, lists `1,5`, ranges `1-5` and steps `*/15` or `0/15`";

impl Field {
    fn layout(dialect: Dialect) -> &'static [Field] {
        match dialect {
            Dialect::EventBridge => &[
                Field::Minute,
                Field::Hour,
                Field::DayOfMonth,
                Field::Month,
                Field::DayOfWeek(Dialect::EventBridge),
                Field::Year,
            ],
            Dialect::Posix => &[
                Field::Minute,
                Field::Hour,
                Field::DayOfMonth,
                Field::Month,
                Field::DayOfWeek(Dialect::Posix),
            ],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek(_) => "day-of-week",
            Field::Year => "year",
        }
    }

    fn allowed(self) -> String {
        let values = match self {
            Field::Minute => "values are 0-59",
            Field::Hour => "values are 0-23",
            Field::DayOfMonth => {
                "values are 1-31, `L` (last day), `LW` (last weekday), `15W` (weekday nearest \
                 the 15th) or `?`"
            }
            Field::Month => "values are 1-12 or JAN-DEC",
            Field::DayOfWeek(Dialect::EventBridge) => {
                "values are 1-7 (1 = SUN, 7 = SAT) or SUN-SAT, `MON#2` (second Monday), `6L` \
                 (last Friday) or `?`"
            }
            Field::DayOfWeek(Dialect::Posix) => {
                "values are 0-7 (0 and 7 = SUN) or SUN-SAT, `MON#2` (second Monday), `5L` \
                 (last Friday) or `?`"
            }
            Field::Year => "values are years such as 2027 or ranges such as 2026-2030",
        };
        format!("{values}, {LISTS}")
    }

    /// Letters that may appear in the field, as whole runs of letters.
    fn words(self) -> &'static [&'static str] {
        const MONTHS: &[&str] = &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ];
        const WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "L"];
        match self {
            Field::DayOfMonth => &["L", "W", "LW"],
            Field::Month => MONTHS,
            Field::DayOfWeek(_) => WEEKDAYS,
            _ => &[],
        }
    }

    fn symbols(self) -> &'static str {
        match self {
            Field::DayOfMonth => "*,-/?",
            Field::DayOfWeek(_) => "*,-/?#",
            _ => "*,-/",
        }
    }
}

/// Parses the cron fields in `start..end` of `source`.
pub(crate) fn parse(
    source: &Source<'_>,
    dialect: Dialect,
    start: usize,
    end: usize,
) -> Result<CronSpec, ExprError> {
    let layout = Field::layout(dialect);
    let tokens = source.tokens(start, end);
    if tokens.len() != layout.len() {
        let names: Vec<&str> = layout.iter().map(|f| f.name()).collect();
        let at = tokens
            .get(layout.len())
            .or(tokens.first())
            .map_or(start, |(index, _)| *index);
        let example = match dialect {
            Dialect::EventBridge => "cron(0 12 ? * MON-FRI *)",
            Dialect::Posix => "0 12 * * MON-FRI",
        };
        return Err(source.error(
            at,
            format!(
                "{} fields expected ({}), found {}: e.g. {example}",
                layout.len(),
                names.join(" "),
                tokens.len()
            ),
        ));
    }
    let texts: Vec<String> = tokens.iter().map(|(_, t)| t.to_ascii_uppercase()).collect();

    for (index, (&field, (at, text))) in layout.iter().zip(&tokens).enumerate() {
        let bad = |what: String| source.error(*at, what);
        let shown = quote(text);
        check_letters(field, &texts[index]).map_err(|why| {
            bad(format!(
                "{} field `{shown}`: {why}{}",
                field.name(),
                field.allowed()
            ))
        })?;
        let mut alone = vec!["*"; layout.len()];
        alone[index] = &texts[index];
        if build(dialect, &alone).is_err() {
            return Err(bad(format!(
                "{} field `{shown}`: {}",
                field.name(),
                field.allowed()
            )));
        }
    }

    if dialect == Dialect::EventBridge && ((texts[2] == "?") == (texts[4] == "?")) {
        return Err(source.error(
            tokens[2].0,
            format!(
                "day-of-month `{}` and day-of-week `{}`: exactly one of them must be `?`, \
                 e.g. cron(0 12 * * ? *) for every day or cron(0 12 ? * MON *) for Mondays",
                quote(&tokens[2].1),
                quote(&tokens[4].1)
            ),
        ));
    }

    let fields: Vec<&str> = texts.iter().map(String::as_str).collect();
    let cron = build(dialect, &fields).map_err(|e| {
        source.error(
            tokens[0].0,
            format!("the fields do not combine ({e}): {}", crate::grammar::FORMS),
        )
    })?;
    let any_year = match dialect {
        Dialect::EventBridge if texts[5] != "*" => {
            let mut opened = fields.clone();
            opened[5] = "*";
            build(dialect, &opened)
                .ok()
                .map(|c| (tokens[5].1.clone(), c))
        }
        _ => None,
    };
    Ok(CronSpec { cron, any_year })
}

/// Parses a constant 5-field pattern (the `@daily`-style nicknames).
pub(crate) fn parse_fixed(fields: &str) -> Result<CronSpec, croner::errors::CronError> {
    let fields: Vec<&str> = fields.split_whitespace().collect();
    Ok(CronSpec {
        cron: build(Dialect::Posix, &fields)?,
        any_year: None,
    })
}

/// Berth's stricter reading of a field, before croner sees it; the error text is a prefix
/// for the field's "values are" message.
///
/// croner replaces weekday and month names anywhere in the whole pattern, so unchecked it
/// would read a month field `MON` as January, and it accepts `+` (day-of-month AND
/// day-of-week) and a lone `L` in day-of-week, which matches nothing. Berth's grammar has
/// none of these.
fn check_letters(field: Field, text: &str) -> Result<(), String> {
    if let Some(ch) = text
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || field.symbols().contains(c)))
    {
        return Err(format!("`{ch}` is not allowed here; "));
    }
    for word in text.split(|c: char| !c.is_ascii_alphabetic()) {
        if !word.is_empty() && !field.words().contains(&word) {
            return Err(format!("`{}` is not allowed here; ", quote(word)));
        }
    }
    if text.contains('?') && text != "?" {
        return Err("`?` must stand alone; ".into());
    }
    if matches!(field, Field::DayOfWeek(_)) && text.split(',').any(|part| part == "L") {
        return Err("`L` needs a weekday before it, as in `6L`; ".into());
    }
    Ok(())
}

/// Builds a croner pattern from Berth fields: EventBridge gets a zero seconds field prepended
/// and Quartz weekday numbering; both accept `0/15`-style steps, which EventBridge documents.
fn build(dialect: Dialect, fields: &[&str]) -> Result<Cron, croner::errors::CronError> {
    let builder = CronParser::builder().sloppy_ranges(true);
    match dialect {
        Dialect::EventBridge => builder
            .alternative_weekdays(true)
            .seconds(Seconds::Required)
            .year(Year::Required)
            .build()
            .parse(&format!("0 {}", fields.join(" "))),
        Dialect::Posix => builder
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&fields.join(" ")),
    }
}
