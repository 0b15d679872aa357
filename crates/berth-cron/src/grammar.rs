//! Splits an expression into its form and checks `rate(...)` and `at(...)`.
//!
//! Everything here works on character indices into the expression as the user typed it, so
//! that an error position points at what they see in their terminal.

use jiff::civil::DateTime;

use crate::cron::{self, CronSpec, Dialect};
use crate::{quote, ExprError, MAX_EXPRESSION_CHARS};

/// The four accepted forms, for messages about an input that is none of them.
pub(crate) const FORMS: &str = "use cron(min hour day-of-month month day-of-week year), \
     rate(N minutes|hours|days|seconds), at(YYYY-MM-DDTHH:MM:SS), or a 5-field cron \
     `min hour day-of-month month day-of-week` such as `0 9 * * MON-FRI`";

/// The longest rate period: a year, leap day included.
const MAX_RATE_MS: u64 = 366 * 86_400_000;

pub(crate) enum Parsed {
    Cron(Box<CronSpec>),
    Rate { period_ms: u64 },
    At(DateTime),
}

/// The expression as characters, with helpers that turn an index into an error.
pub(crate) struct Source<'a> {
    pub(crate) text: &'a str,
    pub(crate) chars: Vec<char>,
}

impl Source<'_> {
    /// A syntax error at character index `index` (0-based; reported 1-based).
    pub(crate) fn error(&self, index: usize, message: impl Into<String>) -> ExprError {
        ExprError::Syntax {
            expression: quote(self.text),
            position: index + 1,
            message: message.into(),
        }
    }

    /// The characters in `start..end`, as a string.
    pub(crate) fn slice(&self, start: usize, end: usize) -> String {
        self.chars[start..end].iter().collect()
    }

    /// Whitespace-separated tokens of `start..end`, each with the index of its first char.
    pub(crate) fn tokens(&self, start: usize, end: usize) -> Vec<(usize, String)> {
        let mut tokens = Vec::new();
        let mut current: Option<(usize, String)> = None;
        for index in start..end {
            let ch = self.chars[index];
            if ch.is_whitespace() {
                tokens.extend(current.take());
            } else {
                current
                    .get_or_insert_with(|| (index, String::new()))
                    .1
                    .push(ch);
            }
        }
        tokens.extend(current);
        tokens
    }
}

pub(crate) fn parse(expression: &str) -> Result<Parsed, ExprError> {
    let source = Source {
        text: expression,
        chars: expression.chars().take(MAX_EXPRESSION_CHARS + 1).collect(),
    };
    if source.chars.len() > MAX_EXPRESSION_CHARS {
        return Err(source.error(
            MAX_EXPRESSION_CHARS,
            format!(
                "the expression is {} characters long; at most {MAX_EXPRESSION_CHARS} are allowed",
                expression.chars().count()
            ),
        ));
    }
    let chars = &source.chars;
    let start = chars
        .iter()
        .position(|c| !c.is_whitespace())
        .unwrap_or(chars.len());
    let end = chars
        .iter()
        .rposition(|c| !c.is_whitespace())
        .map_or(start, |last| last + 1);
    if start == end {
        return Err(source.error(0, format!("the expression is empty: {FORMS}")));
    }

    for keyword in ["cron", "rate", "at"] {
        if !starts_with_ignore_case(&chars[start..end], keyword) {
            continue;
        }
        let open = start + keyword.len();
        match chars.get(open).filter(|_| open < end) {
            Some('(') => {
                let (inner_start, inner_end) = inside_parentheses(&source, keyword, open, end)?;
                return match keyword {
                    "cron" => cron::parse(&source, Dialect::EventBridge, inner_start, inner_end)
                        .map(|spec| Parsed::Cron(Box::new(spec))),
                    "rate" => parse_rate(&source, inner_start, inner_end),
                    _ => parse_at(&source, inner_start, inner_end),
                };
            }
            Some(ch) if ch.is_alphanumeric() => {}
            _ => {
                return Err(source.error(
                    open,
                    format!("expected `(` right after `{keyword}`: {FORMS}"),
                ))
            }
        }
    }

    if chars[start] == '@' {
        return parse_nickname(&source, start, end);
    }
    let tokens = source.tokens(start, end);
    let looks_like_cron = chars[start].is_ascii_digit() || matches!(chars[start], '*' | '/');
    if tokens.len() == 5 && looks_like_cron {
        return cron::parse(&source, Dialect::Posix, start, end)
            .map(|spec| Parsed::Cron(Box::new(spec)));
    }
    let found = if looks_like_cron {
        format!(" (found {} fields)", tokens.len())
    } else {
        String::new()
    };
    Err(source.error(start, format!("not a schedule expression{found}: {FORMS}")))
}

fn starts_with_ignore_case(chars: &[char], keyword: &str) -> bool {
    chars.len() >= keyword.len()
        && chars
            .iter()
            .zip(keyword.chars())
            .all(|(c, k)| c.eq_ignore_ascii_case(&k))
}

/// Returns the index range between `open` and the closing `)`, which must end the expression.
fn inside_parentheses(
    source: &Source<'_>,
    keyword: &str,
    open: usize,
    end: usize,
) -> Result<(usize, usize), ExprError> {
    let chars = &source.chars;
    for index in open + 1..end {
        match chars[index] {
            ')' if index + 1 == end => return Ok((open + 1, index)),
            ')' => {
                let after = (index + 1..end)
                    .find(|&i| !chars[i].is_whitespace())
                    .unwrap_or(index + 1);
                return Err(source.error(
                    after,
                    format!("unexpected text after the closing `)` of {keyword}(...)"),
                ));
            }
            '(' => {
                return Err(source.error(
                    index,
                    format!("unexpected `(` inside {keyword}(...): parentheses do not nest"),
                ))
            }
            _ => {}
        }
    }
    Err(source.error(end, format!("missing the closing `)` of {keyword}(...)")))
}

fn parse_nickname(source: &Source<'_>, start: usize, end: usize) -> Result<Parsed, ExprError> {
    let word = source.slice(start, end).to_ascii_lowercase();
    let fields = match word.as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            return Err(source.error(
                start,
                format!(
                    "unknown nickname `{}`: use @hourly, @daily, @weekly, @monthly or @yearly",
                    quote(&source.slice(start, end))
                ),
            ))
        }
    };
    cron::parse_fixed(fields)
        .map(|spec| Parsed::Cron(Box::new(spec)))
        .map_err(|_| {
            // The nickname patterns are constants known to parse.
            source.error(start, "internal error expanding a nickname")
        })
}

/// `rate(N unit)`; lenient on the plural because users type `rate(1 minutes)`.
fn parse_rate(source: &Source<'_>, start: usize, end: usize) -> Result<Parsed, ExprError> {
    const USAGE: &str = "rate takes a whole number of at least 1 and a unit: \
                         second(s), minute(s), hour(s) or day(s), e.g. rate(5 minutes)";
    let tokens = source.tokens(start, end);
    let [(value_at, value), (unit_at, unit)] = tokens.as_slice() else {
        let at = match tokens.get(2) {
            Some((index, _)) => *index,
            None => tokens.first().map_or(start, |(index, _)| *index),
        };
        return Err(source.error(
            at,
            format!("rate takes 2 parts, found {}: {USAGE}", tokens.len()),
        ));
    };
    let number = if value.chars().all(|c| c.is_ascii_digit()) {
        value.parse::<u64>().ok()
    } else {
        None
    };
    let number = match number {
        Some(n) if n >= 1 => n,
        Some(_) => {
            return Err(source.error(*value_at, format!("rate value `0`: {USAGE}")));
        }
        None if value.chars().all(|c| c.is_ascii_digit()) => {
            return Err(source.error(
                *value_at,
                format!(
                    "rate value `{}` is too large: the period is at most 366 days",
                    quote(value)
                ),
            ));
        }
        None => {
            return Err(source.error(*value_at, format!("rate value `{}`: {USAGE}", quote(value))));
        }
    };
    let unit_ms: u64 = match unit.to_ascii_lowercase().as_str() {
        "second" | "seconds" => 1_000,
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        _ => {
            return Err(source.error(*unit_at, format!("rate unit `{}`: {USAGE}", quote(unit))));
        }
    };
    match number.checked_mul(unit_ms) {
        Some(period_ms) if period_ms <= MAX_RATE_MS => Ok(Parsed::Rate { period_ms }),
        _ => Err(source.error(
            *value_at,
            format!(
                "rate({} {}) is longer than 366 days: the period is at most 366 days",
                quote(value),
                quote(unit)
            ),
        )),
    }
}

/// `at(YYYY-MM-DDTHH:MM:SS)`, checked part by part so the position names the bad part.
fn parse_at(source: &Source<'_>, start: usize, end: usize) -> Result<Parsed, ExprError> {
    const USAGE: &str =
        "at takes a date and time `YYYY-MM-DDTHH:MM:SS`, e.g. at(2027-06-01T09:00:00)";
    // The whole inside, spaces included, is checked against the shape, so that a space
    // where the `T` belongs is reported where it is.
    let Some(base) = (start..end).find(|&i| !source.chars[i].is_whitespace()) else {
        return Err(source.error(start, format!("at() is empty: {USAGE}")));
    };
    let last = (start..end)
        .rfind(|&i| !source.chars[i].is_whitespace())
        .unwrap_or(base);
    let text = source.slice(base, last + 1);
    let chars: Vec<char> = text.chars().collect();
    // The shape first: digits where digits go, separators where they go.
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd";
    for (offset, expected) in SHAPE.chars().enumerate() {
        let Some(&ch) = chars.get(offset) else {
            return Err(source.error(
                base + offset.min(chars.len()),
                format!("at() date and time is cut short: {USAGE}"),
            ));
        };
        let fits = match expected {
            'd' => ch.is_ascii_digit(),
            'T' => ch.eq_ignore_ascii_case(&'T'),
            sep => ch == sep,
        };
        if !fits {
            return Err(source.error(
                base + offset,
                format!("unexpected `{ch}` in at(...): {USAGE}"),
            ));
        }
    }
    if chars.len() > SHAPE.len() {
        return Err(source.error(
            base + SHAPE.len(),
            format!("unexpected text after the seconds in at(...): {USAGE}"),
        ));
    }
    let number = |from: usize, len: usize| -> i32 {
        chars[from..from + len]
            .iter()
            .fold(0, |n, c| n * 10 + c.to_digit(10).unwrap_or(0) as i32)
    };
    let (year, month, day) = (number(0, 4), number(5, 2), number(8, 2));
    let (hour, minute, second) = (number(11, 2), number(14, 2), number(17, 2));
    let part =
        |offset: usize, len: usize| -> String { chars[offset..offset + len].iter().collect() };
    if !(1970..=2199).contains(&year) {
        return Err(source.error(
            base,
            format!("at() year `{}`: years are 1970-2199", part(0, 4)),
        ));
    }
    if !(1..=12).contains(&month) {
        return Err(source.error(
            base + 5,
            format!("at() month `{}`: months are 01-12", part(5, 2)),
        ));
    }
    let month_days = jiff::civil::Date::new(year as i16, month as i8, 1)
        .map(|d| i32::from(d.days_in_month()))
        .unwrap_or(31);
    if !(1..=month_days).contains(&day) {
        return Err(source.error(
            base + 8,
            format!(
                "at() day `{}`: {year:04}-{month:02} has days 01-{month_days}",
                part(8, 2)
            ),
        ));
    }
    for (value, offset, what, max) in [
        (hour, 11, "hour", 23),
        (minute, 14, "minute", 59),
        (second, 17, "second", 59),
    ] {
        if value > max {
            return Err(source.error(
                base + offset,
                format!("at() {what} `{}`: values are 00-{max}", part(offset, 2)),
            ));
        }
    }
    DateTime::new(
        year as i16,
        month as i8,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        0,
    )
    .map(Parsed::At)
    .map_err(|_| source.error(base, USAGE))
}
