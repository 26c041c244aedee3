//! The matchmaker query language: Nakama's query-string syntax over ticket properties,
//! parsed once when a ticket is added and evaluated against other tickets' properties.
//!
//! A query is `*` (anyone) or a list of space-separated items. Each item is required
//! (`+`), excluded (`-`) or optional ("should"): when a list has no required item, at
//! least one optional item must match (OR); otherwise optional items only rank
//! candidates. Terms are `properties.<key>:<value>` where the value is an exact,
//! case-sensitive whole value, a number (numeric or string equality), a numeric
//! comparison (`>N`, `>=N`, `<N`, `<=N`) or a date comparison (below), a quoted phrase
//! (the exact value, spaces included; a date phrase means its instant, below),
//! `/regex/` (whole value), a wildcard pattern (`*`, `?`), `*` alone (the
//! property exists), or a fuzzy term `value~N` (edit distance at most N, N <= 2). `^N`
//! boosts a term or group. `\` escapes the next character.
//!
//! Dates, as in Nakama: a comparison may take a quoted RFC 3339 date-time instead of a
//! number (`properties.d:>"2024-01-01T00:00:00Z"`, `>=`, `<`, `<=`), and a quoted phrase
//! that is an RFC 3339 date-time (`properties.d:"2024-01-01T00:00:00Z"`) means that
//! instant. A date term looks at the property's string value read as an RFC 3339
//! date-time and compares instants, so `2024-01-01T02:00:00+02:00` equals
//! `2024-01-01T00:00:00Z`; a value that is not such a date (or a numeric property)
//! never matches it. A date is `YYYY-MM-DDTHH:MM:SS`, an optional fraction, then `Z` or
//! `+HH:MM`/`-HH:MM` (`T` and `Z` in either case; years 1970 to 9999). A quoted non-date
//! after a comparison is rejected; an unquoted date after one is "not a number".
//!
//! A value must not start with `+` (`properties.k:+10`), nor with `-` unless the whole
//! value is a negative number (`properties.k:-5` is fine, `properties.k:-foo` is not):
//! Nakama rejects both, and here they would otherwise be text that silently never
//! matches a number. Quote (`"+10"`) or escape (`\+10`, `\-foo`) the text to match
//! such a string; put `+`/`-` before the field to require or exclude a term.
//!
//! Beyond Nakama: parentheses group, `AND`/`&&`, `OR`/`||` and `NOT`/`!` are real
//! operators (AND binds tighter than OR; both bind tighter than the space-separated
//! list), a quoted phrase matches the exact value, `\*` is a literal star, and a field
//! must be `properties.<key>` (anything else is rejected instead of matching nothing).
//! Every query that does not parse, or whose regex does not compile, is rejected with
//! the byte position and the reason.
//!
//! Match listings parse with [`Query::parse_fields`] and [`Fields::Label`]: fields are
//! `label.<key>`, or the bare `label` (the property key [`LABEL_KEY`]), instead.

use std::{borrow::Cow, collections::BTreeMap, fmt, time::UNIX_EPOCH};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;
/// Deepest nesting of parentheses and operators.
const MAX_DEPTH: usize = 16;
/// Most terms in one query.
const MAX_TERMS: usize = 64;
/// Compiled size limit of one regex, so a hostile pattern cannot use much memory.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Largest fuzzy distance.
const MAX_FUZZINESS: u8 = 2;
/// The only field prefix a term may use.
const FIELD_PREFIX: &str = "properties.";
/// The field prefix of [`Fields::Label`] terms.
const LABEL_PREFIX: &str = "label.";
/// The property key the bare `label` field reads in [`Fields::Label`] mode; no
/// `label.<key>` term can name it, because keys are never empty.
pub const LABEL_KEY: &str = "";

/// Which field names a query's terms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// `properties.<key>`: matchmaker tickets ([`Query::parse`]).
    Properties,
    /// `label.<key>` (key `<key>`), or the bare `label` (key [`LABEL_KEY`]): match
    /// listings over labels.
    Label,
}

impl Fields {
    /// The property key a field names, or `None` when this mode rejects the field.
    fn key(self, field: &str) -> Option<&str> {
        match self {
            Self::Properties => field.strip_prefix(FIELD_PREFIX).filter(|k| !k.is_empty()),
            Self::Label if field == "label" => Some(LABEL_KEY),
            Self::Label => field.strip_prefix(LABEL_PREFIX).filter(|k| !k.is_empty()),
        }
    }

    /// How a field must be written, for error messages.
    fn shape(self) -> &'static str {
        match self {
            Self::Properties => "'properties.<key>'",
            Self::Label => "'label' or 'label.<key>'",
        }
    }

    /// How a term must be written, for error messages.
    fn term_shape(self) -> &'static str {
        match self {
            Self::Properties => "'properties.<key>:<value>'",
            Self::Label => "'label.<key>:<value>' or 'label:<value>'",
        }
    }
}

/// A ticket's properties, as queries see them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// String properties.
    pub strings: BTreeMap<String, String>,
    /// Numeric properties.
    pub numbers: BTreeMap<String, f64>,
}

/// Why a query was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query error at byte {pos}: {reason}")]
pub struct QueryError {
    /// Byte offset in the query where the problem was found.
    pub pos: usize,
    /// What is wrong.
    pub reason: String,
}

fn err<T>(pos: usize, reason: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError {
        pos,
        reason: reason.into(),
    })
}

/// A parsed query, ready to evaluate.
#[derive(Clone)]
pub struct Query {
    text: String,
    root: Node,
    constant_score: bool,
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Query({:?})", self.text)
    }
}

impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[derive(Debug, Clone)]
enum Node {
    All,
    Leaf(Leaf),
    And(Vec<Self>),
    Or(Vec<Self>),
    Not(Box<Self>),
    List {
        must: Vec<Self>,
        should: Vec<Self>,
        must_not: Vec<Self>,
    },
    Boost(Box<Self>, f64),
}

#[derive(Debug, Clone)]
struct Leaf {
    key: String,
    matcher: Matcher,
    boost: f64,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Exact string value.
    Exact(String),
    /// Numeric equality, or the string with the same text.
    Number(f64, String),
    Range {
        op: RangeOp,
        bound: f64,
    },
    /// A quoted RFC 3339 date: string values that are the same instant.
    Date(UnixNanos),
    /// A comparison with a quoted RFC 3339 date, over string values that are dates.
    DateRange {
        op: RangeOp,
        bound: UnixNanos,
    },
    Regex(regex::Regex),
    Wildcard(Vec<Glob>),
    Exists,
    Fuzzy(String, u8),
}

/// An instant as nanoseconds since the Unix epoch (negative before it).
type UnixNanos = i128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeOp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl RangeOp {
    /// Whether `value <op> bound`.
    fn holds<T: PartialOrd>(self, value: T, bound: T) -> bool {
        match self {
            Self::Gt => value > bound,
            Self::Ge => value >= bound,
            Self::Lt => value < bound,
            Self::Le => value <= bound,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Glob {
    Any,
    One,
    Lit(char),
}

impl Query {
    /// Parses a query; an empty query means `*`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        Self::parse_fields(text, Fields::Properties)
    }

    /// Parses a query whose terms name `fields`; [`Query::parse`] is
    /// `parse_fields(text, Fields::Properties)`.
    pub fn parse_fields(text: &str, fields: Fields) -> Result<Self, QueryError> {
        if text.len() > MAX_QUERY_LEN {
            return err(
                MAX_QUERY_LEN,
                format!("query longer than {MAX_QUERY_LEN} bytes"),
            );
        }
        let trimmed = text.trim();
        let root = if trimmed.is_empty() || trimmed == "*" {
            Node::All
        } else {
            let mut p = Parser {
                src: text,
                pos: 0,
                depth: 0,
                terms: 0,
                fields,
            };
            let root = p.list(false)?;
            p.skip_ws();
            if p.pos < text.len() {
                return err(p.pos, "unexpected ')'");
            }
            root
        };
        Ok(Self {
            text: text.to_owned(),
            constant_score: constant_score(&root),
            root,
        })
    }

    /// The query as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether every matching ticket gets the same score, so candidates can be taken in
    /// age order without scoring them all.
    pub fn is_constant_score(&self) -> bool {
        self.constant_score
    }

    /// Whether `props` satisfy the query.
    pub fn matches(&self, props: &Properties) -> bool {
        eval(&self.root, props).is_some()
    }

    /// The score of `props`, or `None` when they do not satisfy the query. Higher is
    /// better: matched optional terms and boosts add to it.
    pub fn score(&self, props: &Properties) -> Option<f64> {
        eval(&self.root, props)
    }

    /// Exact `(key, value)` string terms every match must have: the matchmaker looks
    /// candidates up by these instead of scanning the pool.
    pub fn required_terms(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        required_terms(&self.root, &mut out);
        out
    }
}

fn required_terms<'a>(node: &'a Node, out: &mut Vec<(&'a str, &'a str)>) {
    match node {
        Node::Leaf(Leaf {
            key,
            matcher: Matcher::Exact(v),
            ..
        }) => out.push((key, v)),
        Node::And(children) => children.iter().for_each(|c| required_terms(c, out)),
        Node::List { must, should, .. } => {
            must.iter().for_each(|c| required_terms(c, out));
            if must.is_empty() && should.len() == 1 {
                required_terms(&should[0], out);
            }
        }
        Node::Boost(inner, _) => required_terms(inner, out),
        _ => {}
    }
}

fn constant_score(node: &Node) -> bool {
    match node {
        Node::All | Node::Not(_) => true,
        Node::Leaf(l) => !matches!(l.matcher, Matcher::Fuzzy(..)),
        Node::And(children) => children.iter().all(constant_score),
        Node::Or(_) | Node::Boost(..) => false,
        Node::List { must, should, .. } => {
            (should.is_empty() || (must.is_empty() && should.len() == 1))
                && must.iter().chain(should).all(constant_score)
        }
    }
}

fn eval(node: &Node, props: &Properties) -> Option<f64> {
    match node {
        Node::All => Some(0.0),
        Node::Leaf(leaf) => leaf.eval(props),
        Node::And(children) => children
            .iter()
            .try_fold(0.0, |acc, c| eval(c, props).map(|s| acc + s)),
        Node::Or(children) => {
            let mut any = None;
            for c in children {
                if let Some(s) = eval(c, props) {
                    any = Some(any.unwrap_or(0.0) + s);
                }
            }
            any
        }
        Node::Not(inner) => match eval(inner, props) {
            Some(_) => None,
            None => Some(0.0),
        },
        Node::Boost(inner, b) => eval(inner, props).map(|s| s * b),
        Node::List {
            must,
            should,
            must_not,
        } => {
            if must_not.iter().any(|c| eval(c, props).is_some()) {
                return None;
            }
            let mut score = must
                .iter()
                .try_fold(0.0, |acc, c| eval(c, props).map(|s| acc + s))?;
            let mut matched_should = false;
            for c in should {
                if let Some(s) = eval(c, props) {
                    matched_should = true;
                    score += s;
                }
            }
            if must.is_empty() && !should.is_empty() && !matched_should {
                return None;
            }
            Some(score)
        }
    }
}

impl Leaf {
    fn eval(&self, props: &Properties) -> Option<f64> {
        let string = props.strings.get(&self.key);
        let number = props.numbers.get(&self.key);
        let hit = match &self.matcher {
            Matcher::Exact(v) => string.is_some_and(|s| s == v),
            Matcher::Number(n, text) => {
                number.is_some_and(|x| x == n) || string.is_some_and(|s| s == text)
            }
            Matcher::Range { op, bound } => number.is_some_and(|x| op.holds(x, bound)),
            Matcher::Date(at) => string.and_then(|s| parse_date(s)) == Some(*at),
            Matcher::DateRange { op, bound } => string
                .and_then(|s| parse_date(s))
                .is_some_and(|x| op.holds(x, *bound)),
            Matcher::Regex(re) => string.is_some_and(|s| re.is_match(s)),
            Matcher::Wildcard(glob) => string.is_some_and(|s| glob_match(glob, s)),
            Matcher::Exists => string.is_some() || number.is_some(),
            Matcher::Fuzzy(term, max) => {
                let s = string?;
                let d = strsim::levenshtein(term, s);
                if d > usize::from(*max) {
                    return None;
                }
                // An exact hit scores 1; each edit lowers the score.
                return Some(self.boost / (1.0 + d as f64));
            }
        };
        hit.then_some(self.boost)
    }
}

/// Whole-value glob match with `*` (any run) and `?` (one character).
fn glob_match(pattern: &[Glob], value: &str) -> bool {
    let chars: Vec<char> = value.chars().collect();
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < chars.len() {
        match pattern.get(p) {
            Some(Glob::Any) => {
                star = Some((p, v));
                p += 1;
            }
            Some(Glob::One) => {
                p += 1;
                v += 1;
            }
            Some(Glob::Lit(c)) if *c == chars[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    p = sp + 1;
                    v = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|g| *g == Glob::Any)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    terms: usize,
    fields: Fields,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    /// Whether the next word is exactly `word` (followed by whitespace, `(` or the end).
    fn at_keyword(&self, word: &str) -> bool {
        let rest = self.rest();
        rest.starts_with(word)
            && rest[word.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '(')
    }

    fn eat_keyword(&mut self, words: &[&str]) -> bool {
        self.skip_ws();
        for w in words {
            if self.at_keyword(w) {
                self.pos += w.len();
                return true;
            }
        }
        false
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.pos, format!("nesting deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    /// list := item+ (until the end, or `)` inside a group)
    fn list(&mut self, in_group: bool) -> Result<Node, QueryError> {
        self.enter()?;
        let (mut must, mut should, mut must_not) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            self.skip_ws();
            match self.peek() {
                None if in_group => return err(self.pos, "missing ')'"),
                None => break,
                Some(')') if in_group => break,
                Some(')') => return err(self.pos, "unexpected ')'"),
                _ => {}
            }
            let start = self.pos;
            let prefix = match self.peek() {
                Some('+') => {
                    self.bump();
                    Some(true)
                }
                Some('-') => {
                    self.bump();
                    Some(false)
                }
                _ => None,
            };
            if prefix.is_some() && self.peek().is_none_or(char::is_whitespace) {
                return err(start, "'+' or '-' must be followed by a term");
            }
            let node = self.or_expr()?;
            match prefix {
                Some(true) => must.push(node),
                Some(false) => must_not.push(node),
                None => should.push(node),
            }
        }
        self.depth -= 1;
        if must.is_empty() && should.is_empty() && must_not.is_empty() {
            return err(self.pos, "empty query or group");
        }
        Ok(Node::List {
            must,
            should,
            must_not,
        })
    }

    /// `operand (KEYWORD operand)*`, folded into `combine` when there is more than one.
    fn chain(
        &mut self,
        keywords: &[&str],
        operand: fn(&mut Self) -> Result<Node, QueryError>,
        combine: fn(Vec<Node>) -> Node,
    ) -> Result<Node, QueryError> {
        let mut parts = vec![operand(self)?];
        loop {
            let save = self.pos;
            if self.eat_keyword(keywords) {
                parts.push(operand(self)?);
            } else {
                self.pos = save;
                break;
            }
        }
        Ok(if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            combine(parts)
        })
    }

    fn or_expr(&mut self) -> Result<Node, QueryError> {
        self.chain(&["OR", "||"], Self::and_expr, Node::Or)
    }

    fn and_expr(&mut self) -> Result<Node, QueryError> {
        self.chain(&["AND", "&&"], Self::unary, Node::And)
    }

    fn unary(&mut self) -> Result<Node, QueryError> {
        self.skip_ws();
        if self.at_keyword("NOT") {
            self.pos += 3;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        if self.peek() == Some('!') {
            self.bump();
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, QueryError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => err(start, "expected a term"),
            Some('(') => {
                self.bump();
                let inner = self.list(true)?;
                if self.bump() != Some(')') {
                    return err(self.pos, "missing ')'");
                }
                match self.boost()? {
                    Some(b) => Ok(Node::Boost(Box::new(inner), b)),
                    None => Ok(inner),
                }
            }
            Some(')') => err(start, "unexpected ')'"),
            Some(c @ ('+' | '-')) => err(start, format!("unexpected '{c}' inside an expression")),
            _ if self.rest().starts_with('*')
                && self.rest()[1..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_whitespace() || c == ')') =>
            {
                self.bump();
                Ok(Node::All)
            }
            _ => self.term(),
        }
    }

    fn term(&mut self) -> Result<Node, QueryError> {
        let start = self.pos;
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return err(start, format!("more than {MAX_TERMS} terms"));
        }
        let (field, _) = self.word(true)?;
        let field: String = field.iter().map(GlobChar::ch).collect();
        if self.peek() != Some(':') {
            let shape = self.fields.term_shape();
            return err(start, format!("expected {shape}, found {field:?}"));
        }
        let Some(key) = self.fields.key(&field) else {
            let shape = self.fields.shape();
            return err(start, format!("field {field:?} must be {shape}"));
        };
        let key = key.to_owned();
        self.bump(); // ':'
        let value_pos = self.pos;
        let matcher = match self.peek() {
            None => return err(value_pos, "missing value after ':'"),
            Some(c) if c.is_whitespace() || c == ')' => {
                return err(value_pos, "missing value after ':'")
            }
            Some('"') => {
                let text = self.phrase()?;
                match parse_date(&text) {
                    Some(at) => Matcher::Date(at),
                    None => Matcher::Exact(text),
                }
            }
            Some('/') => self.regex()?,
            Some('>' | '<') => self.range()?,
            Some('=') => return err(value_pos, "use 'field:value' for equality, not '='"),
            Some('+') => {
                return err(
                    value_pos,
                    "a value cannot start with '+': write a number without it, or quote \
                     (\"+x\") or escape (\\+x) text; a '+' that requires a term goes \
                     before the field",
                )
            }
            _ => {
                let (text, has_glob) = self.word(false)?;
                if self.src[value_pos..].starts_with('-') {
                    let plain: String = text.iter().map(GlobChar::ch).collect();
                    if has_glob || parse_number(&plain).is_none() {
                        return err(
                            value_pos,
                            format!(
                                "a value can start with '-' only as a negative number, got \
                                 {plain:?}: quote (\"-x\") or escape (\\-x) text; a '-' \
                                 that excludes a term goes before the field"
                            ),
                        );
                    }
                }
                let fuzzy = self.fuzzy(value_pos)?;
                if let Some(f) = fuzzy {
                    let plain: String = text.iter().map(GlobChar::ch).collect();
                    if has_glob || parse_number(&plain).is_some() {
                        return err(value_pos, "fuzzy '~' applies to plain text values only");
                    }
                    Matcher::Fuzzy(text.iter().map(GlobChar::ch).collect(), f)
                } else if has_glob {
                    if text.len() == 1 && text[0] == GlobChar::Any {
                        Matcher::Exists
                    } else {
                        Matcher::Wildcard(
                            text.iter()
                                .map(|g| match g {
                                    GlobChar::Any => Glob::Any,
                                    GlobChar::One => Glob::One,
                                    GlobChar::Lit(c) => Glob::Lit(*c),
                                })
                                .collect(),
                        )
                    }
                } else {
                    let plain: String = text.iter().map(GlobChar::ch).collect();
                    match parse_number(&plain) {
                        Some(n) => Matcher::Number(n, plain),
                        None => Matcher::Exact(plain),
                    }
                }
            }
        };
        let boost = self.boost()?.unwrap_or(1.0);
        Ok(Node::Leaf(Leaf {
            key,
            matcher,
            boost,
        }))
    }

    /// Reads a field name (`field = true`: up to ':') or a value (up to whitespace,
    /// ')', '^' or '~'), resolving escapes; reports whether an unescaped `*`/`?` appeared.
    fn word_chars(&mut self, field: bool) -> Result<(Vec<GlobChar>, bool), QueryError> {
        let mut out = Vec::new();
        let mut glob = false;
        while let Some(c) = self.peek() {
            if c.is_whitespace()
                || c == ')'
                || (field && c == ':')
                || (!field && (c == '^' || c == '~'))
            {
                break;
            }
            if c == '(' && field {
                return err(self.pos, "unexpected '('");
            }
            self.bump();
            match c {
                '\\' => match self.bump() {
                    Some(e) => out.push(GlobChar::Lit(e)),
                    None => return err(self.pos, "dangling '\\' at the end"),
                },
                '*' if !field => {
                    glob = true;
                    out.push(GlobChar::Any);
                }
                '?' if !field => {
                    glob = true;
                    out.push(GlobChar::One);
                }
                c => out.push(GlobChar::Lit(c)),
            }
        }
        Ok((out, glob))
    }

    fn word(&mut self, field: bool) -> Result<(Vec<GlobChar>, bool), QueryError> {
        let start = self.pos;
        let (chars, glob) = self.word_chars(field)?;
        if chars.is_empty() {
            return err(start, "expected a term");
        }
        Ok((chars, glob))
    }

    fn phrase(&mut self) -> Result<String, QueryError> {
        let start = self.pos;
        self.bump(); // opening quote
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return err(start, "unterminated '\"'"),
                Some('"') => break,
                Some('\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => return err(start, "unterminated '\"'"),
                },
                Some(c) => out.push(c),
            }
        }
        if self.peek() == Some('~') {
            return err(self.pos, "fuzzy '~' does not apply to phrases");
        }
        Ok(out)
    }

    fn regex(&mut self) -> Result<Matcher, QueryError> {
        let start = self.pos;
        self.bump(); // opening slash
        let mut pattern = String::new();
        loop {
            match self.bump() {
                None => return err(start, "unterminated '/regex/'"),
                Some('/') => break,
                Some('\\') => match self.bump() {
                    Some('/') => pattern.push('/'),
                    Some(c) => {
                        pattern.push('\\');
                        pattern.push(c);
                    }
                    None => return err(start, "unterminated '/regex/'"),
                },
                Some(c) => pattern.push(c),
            }
        }
        if pattern.is_empty() {
            return err(start, "empty regex");
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(32)
            .build()
            .map(Matcher::Regex)
            .or_else(|e| {
                let first = e.to_string();
                let reason = first.lines().last().unwrap_or("invalid regex").trim();
                err(start, format!("invalid regex: {reason}"))
            })
    }

    fn range(&mut self) -> Result<Matcher, QueryError> {
        let start = self.pos;
        let op = if self.rest().starts_with(">=") {
            self.pos += 2;
            RangeOp::Ge
        } else if self.rest().starts_with("<=") {
            self.pos += 2;
            RangeOp::Le
        } else if self.rest().starts_with('>') {
            self.pos += 1;
            RangeOp::Gt
        } else {
            self.pos += 1;
            RangeOp::Lt
        };
        self.skip_ws();
        let num_start = self.pos;
        if self.peek() == Some('"') {
            let text = self.phrase()?;
            return match parse_date(&text) {
                Some(bound) => Ok(Matcher::DateRange { op, bound }),
                None => err(
                    num_start,
                    format!(
                        "{text:?} is not an RFC 3339 date (like \"2024-01-01T00:00:00Z\"); \
                         a comparison takes a number or a quoted date"
                    ),
                ),
            };
        }
        let (text, glob) = self.word_chars(false)?;
        let plain: String = text.iter().map(GlobChar::ch).collect();
        match parse_number(&plain) {
            Some(bound) if !glob => Ok(Matcher::Range { op, bound }),
            _ if plain.is_empty() => err(start, "a comparison needs a number or a quoted date"),
            _ if parse_date(&plain).is_some() => err(
                num_start,
                format!("{plain:?} is not a number; quote a date: \"{plain}\""),
            ),
            _ => err(
                num_start,
                format!("{plain:?} is not a number or a quoted RFC 3339 date"),
            ),
        }
    }

    fn fuzzy(&mut self, value_pos: usize) -> Result<Option<u8>, QueryError> {
        if self.peek() != Some('~') {
            return Ok(None);
        }
        self.bump();
        let digits = self.number_text();
        if digits.is_empty() {
            return Ok(Some(1));
        }
        match digits.parse::<u8>() {
            Ok(n) if n <= MAX_FUZZINESS => Ok(Some(n)),
            _ => err(
                value_pos,
                format!("fuzziness must be 0 to {MAX_FUZZINESS}, got {digits:?}"),
            ),
        }
    }

    fn boost(&mut self) -> Result<Option<f64>, QueryError> {
        if self.peek() != Some('^') {
            return Ok(None);
        }
        let start = self.pos;
        self.bump();
        let digits = self.number_text();
        if digits.is_empty() {
            return Ok(Some(1.0));
        }
        match parse_number(&digits) {
            Some(b) if b >= 0.0 => Ok(Some(b)),
            _ => err(
                start,
                format!("boost must be a non-negative number, got {digits:?}"),
            ),
        }
    }

    fn number_text(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ')' {
                break;
            }
            out.push(c);
            self.bump();
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobChar {
    Any,
    One,
    Lit(char),
}

impl GlobChar {
    fn ch(&self) -> char {
        match self {
            Self::Any => '*',
            Self::One => '?',
            Self::Lit(c) => *c,
        }
    }
}

/// An RFC 3339 date-time as nanoseconds since the Unix epoch, or `None` when `s` is
/// not one: `YYYY-MM-DDTHH:MM:SS`, an optional fraction of one or more digits, then `Z`
/// or an offset `+HH:MM`/`-HH:MM` (`T` and `Z` in either case). humantime checks the
/// calendar (month lengths, leap years, hours; years 1970 to 9999) on the UTC
/// wall-clock part; the offset is then subtracted, so equal instants compare equal.
fn parse_date(s: &str) -> Option<UnixNanos> {
    const SHAPE: &[u8; 19] = b"0000-00-00T00:00:00";
    let b = s.as_bytes();
    if b.len() <= SHAPE.len() {
        return None;
    }
    let shaped = b.iter().zip(SHAPE).all(|(&c, &want)| match want {
        b'0' => c.is_ascii_digit(),
        b'T' => c.eq_ignore_ascii_case(&b'T'),
        _ => c == want,
    });
    if !shaped {
        return None;
    }
    // The first 19 bytes are ASCII, so these are character boundaries.
    let mut rest = &s[SHAPE.len()..];
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        (frac, rest) = r.split_at(digits);
    }
    let two = |h: u8, l: u8| i64::from(h - b'0') * 10 + i64::from(l - b'0');
    let offset_secs = match *rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(u8::is_ascii_digit) =>
        {
            let (h, m) = (two(h1, h2), two(m1, m2));
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let utc: Cow<'_, str> = if b[10] == b'T' && rest == "Z" {
        Cow::Borrowed(s)
    } else {
        let dot = if frac.is_empty() { "" } else { "." };
        Cow::Owned(format!("{}T{}{dot}{frac}Z", &s[..10], &s[11..19]))
    };
    let since = humantime::parse_rfc3339(&utc)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?;
    Some(
        (i128::from(since.as_secs()) - i128::from(offset_secs)) * 1_000_000_000
            + i128::from(since.subsec_nanos()),
    )
}

/// A plain decimal number: optional '-', digits, optional fraction.
fn parse_number(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let mut parts = body.splitn(2, '.');
    let int = parts.next()?;
    let frac = parts.next();
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.is_some_and(|f| !f.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests;
