//! `memberOf` expressions: a small language over agent attributes, the agent's id and the
//! task's group, in the spirit of ECS's cluster query language.
//!
//! ```text
//! expr     := and ("or" and)*
//! and      := primary ("and" primary)*
//! primary  := "(" expr ")" | operand test
//! operand  := "attribute:" NAME | "agent.id" | "instanceId" | "task:group"
//! test     := ("==" | "!=") value
//!           | ("in" | "not" "in") "[" value ("," value)* "]"
//!           | ("=~" | "!~") pattern
//!           | "exists" | "!exists" | "not" "exists"
//! value    := bare | "double quoted" | 'single quoted'
//! ```
//!
//! A bare value runs to whitespace or one of `,[]()`; a bare pattern runs to whitespace or an
//! unbalanced `)`, so `=~ (t2|t3)\..*` needs no quotes. Patterns are anchored at both ends
//! (`=~ t2.*` matches `t2.micro`, not `xt2`), because a partial match on an attribute value is
//! almost never what someone writing a placement rule meant.
//!
//! An agent lacking the attribute fails `==`, `in`, `=~` and `exists`, and passes `!=`,
//! `not in`, `!~` and `!exists`: "not equal to x" holds for a value that is not there.

use std::collections::BTreeMap;
use std::fmt;

/// Longest expression accepted. Expressions arrive from users over the API; the bound keeps
/// parsing and regex compilation cheap whatever they send.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest parenthesis nesting accepted; the parser recurses once per level.
pub const MAX_DEPTH: usize = 32;
/// Compiled size limit for one `=~` pattern (the regex crate's own unit, bytes of program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why an expression was refused: `position` is the byte offset in the source where the
/// problem starts, so an API error can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// What a test looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operand {
    /// `attribute:NAME`, an agent attribute such as `zone` or `instance-type`.
    Attribute(String),
    /// `agent.id` or ECS's `instanceId`.
    AgentId,
    /// `task:group`, the group of the task being placed.
    TaskGroup,
}

/// A compiled `=~` pattern; equality and `Debug` go by the source text.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn source(&self) -> &str {
        &self.source
    }
    fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Pattern {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Matches(Pattern),
    NotMatches(Pattern),
    Exists,
    NotExists,
}

/// A parsed `memberOf` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Test(Operand, Test),
}

impl Expr {
    /// Whether an agent with these attributes and id may take a task of `group`.
    pub fn eval(&self, attributes: &BTreeMap<String, String>, agent_id: &str, group: &str) -> bool {
        match self {
            Expr::And(a, b) => {
                a.eval(attributes, agent_id, group) && b.eval(attributes, agent_id, group)
            }
            Expr::Or(a, b) => {
                a.eval(attributes, agent_id, group) || b.eval(attributes, agent_id, group)
            }
            Expr::Test(operand, test) => {
                let value = match operand {
                    Operand::Attribute(name) => attributes.get(name).map(String::as_str),
                    Operand::AgentId => Some(agent_id),
                    Operand::TaskGroup => Some(group),
                };
                match (test, value) {
                    (Test::Eq(x), Some(v)) => v == x,
                    (Test::Ne(x), Some(v)) => v != x,
                    (Test::In(xs), Some(v)) => xs.iter().any(|x| x == v),
                    (Test::NotIn(xs), Some(v)) => !xs.iter().any(|x| x == v),
                    (Test::Matches(p), Some(v)) => p.is_match(v),
                    (Test::NotMatches(p), Some(v)) => !p.is_match(v),
                    (Test::Exists, v) => v.is_some(),
                    (Test::NotExists, v) => v.is_none(),
                    (Test::Eq(_) | Test::In(_) | Test::Matches(_), None) => false,
                    (Test::Ne(_) | Test::NotIn(_) | Test::NotMatches(_), None) => true,
                }
            }
        }
    }

    /// Whether the result can depend on the task's group; if not, one evaluation per agent
    /// serves every group.
    pub fn uses_task_group(&self) -> bool {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => a.uses_task_group() || b.uses_task_group(),
            Expr::Test(op, _) => *op == Operand::TaskGroup,
        }
    }
}

/// Parses a `memberOf` expression; the API layer calls this to refuse a bad one with
/// `INVALID_ARGUMENT` before anything is placed.
pub fn parse_expression(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_EXPRESSION_LEN {
        return Err(ParseError {
            position: MAX_EXPRESSION_LEN,
            message: format!(
                "expression is {} bytes; the limit is {MAX_EXPRESSION_LEN}",
                src.len()
            ),
        });
    }
    let mut p = Parser { src, pos: 0 };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("empty expression"));
    }
    let e = p.or(0)?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(&format!(
            "unexpected `{}` after a complete expression",
            p.peek_token()
        )));
    }
    Ok(e)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

/// Characters that end a bare value.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '[' | ']' | '(' | ')')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }
    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn error(&self, message: &str) -> ParseError {
        ParseError {
            position: self.pos,
            message: message.to_string(),
        }
    }
    fn peek_token(&self) -> &'a str {
        let r = self.rest();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let tok = &r[..end];
        // Keep messages short whatever was sent.
        match tok.char_indices().nth(24) {
            Some((i, _)) => &tok[..i],
            None => tok,
        }
    }
    /// Consumes `kw` if it is next and is a whole word (not a prefix of a longer name).
    fn keyword(&mut self, kw: &str) -> bool {
        let r = self.rest();
        if let Some(after) = r.strip_prefix(kw) {
            let whole = after
                .chars()
                .next()
                .is_none_or(|c| !is_name_char(c) && c != ':');
            if whole {
                self.pos += kw.len();
                return true;
            }
        }
        false
    }
    fn symbol(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.and(depth)?;
        loop {
            self.skip_ws();
            if self.keyword("or") || self.symbol("||") {
                let right = self.and(depth)?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.primary(depth)?;
        loop {
            self.skip_ws();
            if self.keyword("and") || self.symbol("&&") {
                let right = self.primary(depth)?;
                left = Expr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.at_end() {
            return Err(
                self.error("expected a test such as `attribute:zone == a` or `(`, found the end")
            );
        }
        if self.rest().starts_with('(') {
            if depth >= MAX_DEPTH {
                return Err(self.error(&format!("parentheses nested deeper than {MAX_DEPTH}")));
            }
            let open = self.pos;
            self.pos += 1;
            let e = self.or(depth + 1)?;
            self.skip_ws();
            if !self.symbol(")") {
                return Err(if self.at_end() {
                    ParseError {
                        position: open,
                        message: "`(` is never closed".into(),
                    }
                } else {
                    self.error(&format!(
                        "expected `)` or `and`/`or`, found `{}`",
                        self.peek_token()
                    ))
                });
            }
            return Ok(e);
        }
        let operand = self.operand()?;
        let test = self.test()?;
        Ok(Expr::Test(operand, test))
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let start = self.pos;
        if self.rest().starts_with("attribute:") {
            self.pos += "attribute:".len();
            let r = self.rest();
            let len = r.find(|c: char| !is_name_char(c)).unwrap_or(r.len());
            if len == 0 {
                return Err(self.error("expected an attribute name after `attribute:`"));
            }
            self.pos += len;
            return Ok(Operand::Attribute(r[..len].to_string()));
        }
        if self.keyword("agent.id") || self.keyword("instanceId") {
            return Ok(Operand::AgentId);
        }
        if self.keyword("task:group") {
            return Ok(Operand::TaskGroup);
        }
        Err(ParseError {
            position: start,
            message: format!(
                "expected `attribute:NAME`, `agent.id`, `instanceId` or `task:group`, found `{}`",
                self.peek_token()
            ),
        })
    }

    fn test(&mut self) -> Result<Test, ParseError> {
        self.skip_ws();
        if self.symbol("==") {
            return Ok(Test::Eq(self.value()?));
        }
        if self.symbol("!=") {
            return Ok(Test::Ne(self.value()?));
        }
        if self.symbol("=~") {
            return Ok(Test::Matches(self.pattern()?));
        }
        if self.symbol("!~") {
            return Ok(Test::NotMatches(self.pattern()?));
        }
        if self.symbol("!exists") {
            return Ok(Test::NotExists);
        }
        if self.keyword("exists") {
            return Ok(Test::Exists);
        }
        if self.keyword("in") {
            return Ok(Test::In(self.list()?));
        }
        let not_at = self.pos;
        if self.keyword("not") {
            self.skip_ws();
            if self.keyword("in") {
                return Ok(Test::NotIn(self.list()?));
            }
            if self.keyword("exists") {
                return Ok(Test::NotExists);
            }
            return Err(ParseError {
                position: not_at,
                message: "`not` must be followed by `in` or `exists`".into(),
            });
        }
        if self.at_end() {
            return Err(self.error(
                "expected an operator (==, !=, in, not in, =~, !~, exists), found the end",
            ));
        }
        Err(self.error(&format!(
            "expected an operator (==, !=, in, not in, =~, !~, exists), found `{}`",
            self.peek_token()
        )))
    }

    fn quoted(&mut self) -> Result<Option<String>, ParseError> {
        let Some(q) = self
            .rest()
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
        else {
            return Ok(None);
        };
        let open = self.pos;
        let mut out = String::new();
        let mut chars = self.rest()[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.pos += 1 + i + 1;
                return Ok(Some(out));
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        Err(ParseError {
            position: open,
            message: format!("string starting here is never closed with {q}"),
        })
    }

    fn value(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        if let Some(s) = self.quoted()? {
            return Ok(s);
        }
        let r = self.rest();
        let len = r.find(ends_value).unwrap_or(r.len());
        if len == 0 {
            return Err(if self.at_end() {
                self.error("expected a value, found the end")
            } else {
                self.error(&format!(
                    "expected a value, found `{}`",
                    &r[..r.chars().next().map_or(0, char::len_utf8)]
                ))
            });
        }
        self.pos += len;
        Ok(r[..len].to_string())
    }

    fn list(&mut self) -> Result<Vec<String>, ParseError> {
        self.skip_ws();
        if !self.symbol("[") {
            return Err(self.error("expected `[` to start a list of values"));
        }
        let open = self.pos - 1;
        let mut out = Vec::new();
        loop {
            out.push(self.value()?);
            self.skip_ws();
            if self.symbol(",") {
                continue;
            }
            if self.symbol("]") {
                return Ok(out);
            }
            return Err(if self.at_end() {
                ParseError {
                    position: open,
                    message: "`[` is never closed".into(),
                }
            } else {
                self.error(&format!(
                    "expected `,` or `]`, found `{}`",
                    self.peek_token()
                ))
            });
        }
    }

    fn pattern(&mut self) -> Result<Pattern, ParseError> {
        self.skip_ws();
        let start = self.pos;
        let source = match self.quoted()? {
            Some(s) => s,
            None => {
                let mut depth = 0usize;
                let mut len = 0;
                for (i, c) in self.rest().char_indices() {
                    if c.is_whitespace() || (c == ')' && depth == 0) {
                        break;
                    }
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    len = i + c.len_utf8();
                }
                if len == 0 {
                    return Err(self.error("expected a regular expression after `=~`"));
                }
                let s = self.rest()[..len].to_string();
                self.pos += len;
                s
            }
        };
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| ParseError {
                position: start,
                message: format!(
                    "bad regular expression: {}",
                    e.to_string().lines().last().unwrap_or("invalid")
                ),
            })?;
        Ok(Pattern { source, regex })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(src: &str) -> Expr {
        match parse_expression(src) {
            Ok(e) => e,
            Err(e) => panic!("`{src}` should parse: {e}"),
        }
    }

    fn err(src: &str) -> ParseError {
        match parse_expression(src) {
            Ok(e) => panic!("`{src}` should be refused, parsed as {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn comparisons() {
        let a = attrs(&[("zone", "a"), ("instance-type", "t2.micro")]);
        assert!(ok("attribute:zone == a").eval(&a, "agent-1", "g"));
        assert!(!ok("attribute:zone == b").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:zone != b").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:zone in [a, b]").eval(&a, "agent-1", "g"));
        assert!(!ok("attribute:zone not in [a,b]").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:instance-type =~ t2.*").eval(&a, "agent-1", "g"));
        assert!(
            !ok("attribute:instance-type =~ t2").eval(&a, "agent-1", "g"),
            "patterns are anchored"
        );
        assert!(ok("attribute:instance-type !~ m5.*").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:instance-type =~ (t2|t3)\\..*").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:zone exists").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:gpu !exists").eval(&a, "agent-1", "g"));
        assert!(ok("attribute:gpu not exists").eval(&a, "agent-1", "g"));
        assert!(ok("agent.id == agent-1").eval(&a, "agent-1", "g"));
        assert!(ok("instanceId in [agent-2, agent-1]").eval(&a, "agent-1", "g"));
        assert!(ok("task:group == \"family:web\"").eval(&a, "agent-1", "family:web"));
        assert!(ok("task:group == family:web").eval(&a, "agent-1", "family:web"));
    }

    #[test]
    fn missing_attribute() {
        let a = attrs(&[]);
        assert!(!ok("attribute:zone == a").eval(&a, "x", "g"));
        assert!(ok("attribute:zone != a").eval(&a, "x", "g"));
        assert!(!ok("attribute:zone in [a]").eval(&a, "x", "g"));
        assert!(ok("attribute:zone not in [a]").eval(&a, "x", "g"));
        assert!(!ok("attribute:zone =~ .*").eval(&a, "x", "g"));
        assert!(!ok("attribute:zone exists").eval(&a, "x", "g"));
    }

    #[test]
    fn precedence_and_parentheses() {
        let a = attrs(&[("zone", "a"), ("tier", "gold")]);
        // `and` binds tighter than `or`.
        let e = ok("attribute:zone == b and attribute:tier == silver or attribute:tier == gold");
        assert!(e.eval(&a, "x", "g"));
        let e = ok("attribute:zone == b and (attribute:tier == silver or attribute:tier == gold)");
        assert!(!e.eval(&a, "x", "g"));
        let e = ok("((attribute:zone == a))&&attribute:tier==gold");
        assert!(e.eval(&a, "x", "g"));
        assert!(ok("attribute:zone == 'a b'").eval(&attrs(&[("zone", "a b")]), "x", "g"));
        assert!(ok("task:group == x or attribute:zone == a").uses_task_group());
        assert!(!ok("attribute:zone == a").uses_task_group());
    }

    #[test]
    fn keywords_are_whole_words() {
        // `order` starts with `or`; `android` contains `and`.
        let e = ok("attribute:os == android or attribute:order == 1");
        assert!(e.eval(&attrs(&[("order", "1")]), "x", "g"));
    }

    #[test]
    fn bad_expressions_point_at_the_problem() {
        let e = err("");
        assert_eq!(e.position, 0);
        let e = err("   ");
        assert_eq!(e.position, 3);
        let e = err("zone == a");
        assert_eq!(e.position, 0);
        assert!(e.message.contains("attribute:NAME"), "{e}");
        let e = err("attribute: == a");
        assert_eq!(e.position, 10);
        let e = err("attribute:zone = a");
        assert_eq!(e.position, 15);
        assert!(e.message.contains("operator"), "{e}");
        let e = err("attribute:zone ==");
        assert_eq!(e.position, 17);
        let e = err("attribute:zone in a, b");
        assert_eq!(e.position, 18);
        let e = err("attribute:zone in [a, b");
        assert_eq!(e.position, 18);
        assert!(e.message.contains("never closed"), "{e}");
        let e = err("attribute:zone in [a,]");
        assert_eq!(e.position, 21);
        let e = err("(attribute:zone == a");
        assert_eq!(e.position, 0);
        let e = err("attribute:zone == a)");
        assert_eq!(e.position, 19);
        let e = err("attribute:zone == a and");
        assert_eq!(e.position, 23);
        let e = err("attribute:zone == a b");
        assert_eq!(e.position, 20);
        let e = err("attribute:zone =~ (a");
        assert_eq!(e.position, 18);
        assert!(e.message.contains("regular expression"), "{e}");
        let e = err("attribute:zone =~ 'a[' ");
        assert_eq!(e.position, 18);
        let e = err("attribute:zone == \"abc");
        assert_eq!(e.position, 18);
        let e = err("attribute:zone not a");
        assert_eq!(e.position, 15);
        let e = err("attribute:zone == a or or attribute:x exists");
        assert_eq!(e.position, 23);
    }

    #[test]
    fn limits() {
        let deep = format!("{}attribute:a exists{}", "(".repeat(40), ")".repeat(40));
        let e = err(&deep);
        assert!(e.message.contains("nested"), "{e}");
        let long = format!("attribute:a == {}", "x".repeat(MAX_EXPRESSION_LEN));
        assert!(err(&long).message.contains("limit"));
        let huge_regex = format!("attribute:a =~ '{}'", "(a{1000}){1000}");
        assert!(err(&huge_regex).message.contains("regular expression"));
    }

    #[test]
    fn non_ascii_is_refused_not_panicking() {
        for src in [
            "é",
            "attribute:zone == ü",
            "attribute:zone é",
            "(((",
            "attribute:zone in [é",
            "attribute:z =~ é(",
        ] {
            let _ = parse_expression(src);
        }
        assert!(ok("attribute:zone == ü").eval(&attrs(&[("zone", "ü")]), "x", "g"));
    }
}
