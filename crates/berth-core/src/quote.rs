//! Quoting a user's value inside a message.
//!
//! An error message travels back in gRPC metadata (`grpc-message`), and common clients drop
//! metadata past 8–16 KiB: the caller then sees `RESOURCE_EXHAUSTED` instead of the error
//! meant for them. So a message never repeats a whole value it was sent. It quotes at most
//! [`MAX_QUOTE_BYTES`] of it, cut on a character boundary, and says how long the value
//! was, which is usually the clue a person needs ("you sent 100 KiB where an id goes").
//!
//! Every message that quotes a user's value (ids, expressions, strategy fields, names,
//! tokens) goes through [`quote`], so the bound holds in one place.

use std::fmt;

use crate::limits::MAX_QUOTE_BYTES;

/// A value as a message shows it: in backticks, whole when short, otherwise its first
/// [`MAX_QUOTE_BYTES`] followed by `…` and the full length.
pub struct Quoted<'a>(&'a str);

/// Quotes `value` for a message; see the module documentation.
pub fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// The longest prefix of `value` of at most [`MAX_QUOTE_BYTES`] bytes that ends on a
/// character boundary: what a message or a failure's `arn` may carry of a value.
pub fn prefix(value: &str) -> &str {
    if value.len() <= MAX_QUOTE_BYTES {
        return value;
    }
    let mut end = MAX_QUOTE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = prefix(self.0);
        f.write_str("`")?;
        // Control characters are escaped so that a message stays on one line whatever
        // was sent.
        for c in shown.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if shown.len() < self.0.len() {
            write!(f, "…` ({} bytes)", self.0.len())
        } else {
            f.write_str("`")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quote("web:3").to_string(), "`web:3`");
        assert_eq!(quote("").to_string(), "``");
        let exact = "x".repeat(MAX_QUOTE_BYTES);
        assert_eq!(quote(&exact).to_string(), format!("`{exact}`"));
    }

    #[test]
    fn long_values_show_a_prefix_and_their_length() {
        let long = "x".repeat(100 * 1024);
        let q = quote(&long).to_string();
        assert!(q.len() < 2 * MAX_QUOTE_BYTES, "{q}");
        assert!(q.ends_with("…` (102400 bytes)"), "{q}");
        assert!(
            q.starts_with(&format!("`{}", "x".repeat(MAX_QUOTE_BYTES))),
            "{q}"
        );
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        // 'é' is two bytes: 63 of 'a' then 'é' straddles the 64-byte mark.
        let s = format!("{}é{}", "a".repeat(MAX_QUOTE_BYTES - 1), "b".repeat(10));
        let p = prefix(&s);
        assert_eq!(p.len(), MAX_QUOTE_BYTES - 1);
        assert!(quote(&s)
            .to_string()
            .contains(&format!("({} bytes)", s.len())));
    }

    #[test]
    fn control_characters_do_not_break_the_line() {
        assert_eq!(quote("a\nb").to_string(), "`a\\nb`");
    }
}
