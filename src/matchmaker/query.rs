//! The matchmaker query language: Nakama's query-string syntax over ticket properties,
//! parsed once when a ticket is added and evaluated against other tickets' properties.
//!
//! A query is `*` (anyone) or a list of space-separated items. Each item is required
//! (`+`), excluded (`-`) or optional ("should"): when a list has no required item, at
//! least one optional item must match (OR); otherwise optional items only rank
//! candidates. Terms are `properties.<key>:<value>` where the value is an exact,
//! case-sensitive whole value, a number (numeric or string equality), a numeric
//! comparison (`>N`, `>=N`, `<N`, `<=N`), a quoted phrase (the exact value, spaces
//! included), `/regex/` (whole value), a wildcard pattern (`*`, `?`), `*` alone (the
//! property exists), or a fuzzy term `value~N` (edit distance at most N, N <= 2). `^N`
//! boosts a term or group. `\` escapes the next character.
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

use std::{collections::BTreeMap, fmt};

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
    Regex(regex::Regex),
    Wildcard(Vec<Glob>),
    Exists,
    Fuzzy(String, u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeOp {
    Gt,
    Ge,
    Lt,
    Le,
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
            Matcher::Range { op, bound } => number.is_some_and(|x| match op {
                RangeOp::Gt => x > bound,
                RangeOp::Ge => x >= bound,
                RangeOp::Lt => x < bound,
                RangeOp::Le => x <= bound,
            }),
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
            Some('"') => Matcher::Exact(self.phrase()?),
            Some('/') => self.regex()?,
            Some('>' | '<') => self.range()?,
            Some('=') => return err(value_pos, "use 'field:value' for equality, not '='"),
            _ => {
                let (text, has_glob) = self.word(false)?;
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
        let (text, glob) = self.word_chars(false)?;
        let plain: String = text.iter().map(GlobChar::ch).collect();
        match parse_number(&plain) {
            Some(bound) if !glob => Ok(Matcher::Range { op, bound }),
            _ if plain.is_empty() => err(start, "a comparison needs a number"),
            _ => err(num_start, format!("{plain:?} is not a number")),
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
mod tests {
    use super::*;

    fn props(strings: &[(&str, &str)], numbers: &[(&str, f64)]) -> Properties {
        Properties {
            strings: strings
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            numbers: numbers.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
        }
    }

    /// The four documents of the reference notes.
    fn docs() -> Vec<Properties> {
        vec![
            props(
                &[
                    ("mode", "ranked"),
                    ("region", "eu-west"),
                    ("maps", "map1 map2"),
                    ("name", "john"),
                    ("Cap", "EU"),
                ],
                &[("skill", 10.0)],
            ),
            props(
                &[
                    ("mode", "casual"),
                    ("region", "us-east"),
                    ("name", "jon"),
                    ("Cap", "eu"),
                ],
                &[("skill", 20.0)],
            ),
            props(
                &[
                    ("mode", "ranked solo"),
                    ("region", "eu"),
                    ("name", "jane"),
                    ("empty", ""),
                ],
                &[("skill", -5.0)],
            ),
            props(
                &[("mode", "ranked"), ("region", "asia")],
                &[("skill", 10.5)],
            ),
        ]
    }

    fn hits(q: &str) -> Vec<usize> {
        let q = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        docs()
            .iter()
            .enumerate()
            .filter(|(_, d)| q.matches(d))
            .map(|(i, _)| i + 1)
            .collect()
    }

    #[test]
    fn star_and_empty_match_everyone() {
        assert_eq!(hits("*"), [1, 2, 3, 4]);
        assert_eq!(hits(""), [1, 2, 3, 4]);
        assert_eq!(hits(" * "), [1, 2, 3, 4]);
    }

    #[test]
    fn should_must_and_must_not() {
        assert_eq!(hits("properties.mode:ranked"), [1, 4]);
        assert_eq!(hits("-properties.mode:ranked"), [2, 3]);
        assert_eq!(
            hits("properties.mode:ranked properties.region:eu"),
            [1, 3, 4]
        );
        assert_eq!(
            hits("+properties.mode:ranked +properties.region:eu"),
            Vec::<usize>::new()
        );
        assert_eq!(hits("+properties.mode:ranked -properties.region:asia"), [1]);
        assert_eq!(
            hits("+properties.mode:ranked properties.region:nowhere"),
            [1, 4]
        );
    }

    #[test]
    fn values_are_exact_and_case_sensitive() {
        assert_eq!(hits("properties.Cap:EU"), [1]);
        assert_eq!(hits("properties.cap:eu"), Vec::<usize>::new());
        assert_eq!(hits("properties.maps:map1"), Vec::<usize>::new());
        assert_eq!(hits("properties.region:eu"), [3]);
    }

    #[test]
    fn numeric_comparisons_and_boundaries() {
        assert_eq!(hits("properties.skill:>=10"), [1, 2, 4]);
        assert_eq!(hits("properties.skill:>10"), [2, 4]);
        assert_eq!(hits("properties.skill:<10"), [3]);
        assert_eq!(hits("properties.skill:<=10.5"), [1, 3, 4]);
        assert_eq!(hits("+properties.skill:>=10 +properties.skill:<=10"), [1]);
        assert_eq!(hits("properties.skill:-5"), [3]);
        assert_eq!(hits("properties.skill:10"), [1]);
        assert_eq!(hits("properties.skill:<0"), [3]);
        assert_eq!(hits("properties.skill:> 15"), [2]);
        // Ranges only look at numeric properties.
        assert_eq!(hits("properties.mode:>1"), Vec::<usize>::new());
    }

    #[test]
    fn numbers_also_match_equal_strings() {
        let d = props(&[("code", "10")], &[]);
        assert!(Query::parse("properties.code:10")
            .expect("parse")
            .matches(&d));
        assert!(!Query::parse("properties.code:>5")
            .expect("parse")
            .matches(&d));
    }

    #[test]
    fn phrases_match_the_exact_value() {
        assert_eq!(hits("properties.mode:\"ranked solo\""), [3]);
        assert_eq!(hits("properties.mode:ranked\\ solo"), [3]);
        assert_eq!(hits("properties.mode:\"ranked\""), [1, 4]);
        assert_eq!(hits("properties.maps:\"map1 map2\""), [1]);
    }

    #[test]
    fn wildcards_regex_fuzzy_exists() {
        assert_eq!(hits("properties.region:eu*"), [1, 3]);
        assert_eq!(hits("properties.region:eu?west"), [1]);
        assert_eq!(hits("properties.region:*east"), [2]);
        assert_eq!(hits("properties.region:/eu.*/"), [1, 3]);
        assert_eq!(hits("properties.region:/eu/"), [3]);
        assert_eq!(hits("properties.maps:/.*map1.*/"), [1]);
        assert_eq!(hits("properties.maps:/.*(map2|map3).*/"), [1]);
        assert_eq!(hits("properties.name:jon~1"), [1, 2]);
        assert_eq!(hits("properties.name:jon~"), [1, 2]);
        assert_eq!(hits("properties.name:jon~0"), [2]);
        assert_eq!(hits("properties.name:jxnx~2"), [2, 3]);
        assert_eq!(hits("properties.empty:*"), [3]);
        assert_eq!(hits("properties.skill:*"), [1, 2, 3, 4]);
        assert_eq!(hits("-properties.empty:*"), [1, 2, 4]);
        // An escaped star is a literal star.
        let d = props(&[("x", "a*")], &[]);
        assert!(Query::parse("properties.x:a\\*")
            .expect("parse")
            .matches(&d));
        assert!(!Query::parse("properties.x:a\\*")
            .expect("parse")
            .matches(&props(&[("x", "ab")], &[])));
    }

    #[test]
    fn boolean_operators_and_groups() {
        assert_eq!(
            hits("properties.mode:casual AND properties.region:asia"),
            Vec::<usize>::new()
        );
        assert_eq!(
            hits("properties.mode:casual OR properties.region:asia"),
            [2, 4]
        );
        assert_eq!(hits("(properties.mode:ranked)"), [1, 4]);
        assert_eq!(
            hits("+(properties.region:eu OR properties.region:asia) +properties.mode:ranked"),
            [4]
        );
        assert_eq!(
            hits("properties.mode:ranked AND NOT properties.region:asia"),
            [1]
        );
        assert_eq!(
            hits("properties.mode:ranked && !properties.region:asia"),
            [1]
        );
        assert_eq!(
            hits("(properties.skill:>15 || properties.skill:<0) AND properties.name:*"),
            [2, 3]
        );
        assert_eq!(hits("NOT properties.mode:ranked"), [2, 3]);
        assert_eq!(
            hits("+properties.mode:ranked -(properties.skill:>10 properties.region:eu-west)"),
            Vec::<usize>::new()
        );
        assert_eq!(
            hits("(+properties.mode:ranked -properties.region:asia) properties.mode:casual"),
            [1, 2]
        );
    }

    #[test]
    fn should_terms_and_boosts_rank() {
        let q = Query::parse("+properties.mode:ranked properties.skill:10^3").expect("parse");
        let d = docs();
        assert_eq!(q.score(&d[0]), Some(4.0));
        assert_eq!(q.score(&d[3]), Some(1.0));
        assert_eq!(q.score(&d[1]), None);
        assert!(!q.is_constant_score());
        let q = Query::parse("(properties.mode:ranked properties.region:eu)^2").expect("parse");
        assert_eq!(q.score(&d[2]), Some(2.0));
        assert!(Query::parse("+properties.a:x -properties.b:y")
            .expect("p")
            .is_constant_score());
        assert!(Query::parse("*").expect("p").is_constant_score());
    }

    #[test]
    fn required_terms_drive_the_index() {
        let q =
            Query::parse("+properties.region:eu +properties.rank:>=3 properties.x:y").expect("p");
        assert_eq!(q.required_terms(), vec![("region", "eu")]);
        let q = Query::parse("properties.region:eu").expect("p");
        assert_eq!(q.required_terms(), vec![("region", "eu")]);
        let q = Query::parse("properties.region:eu properties.region:us").expect("p");
        assert!(q.required_terms().is_empty());
        let q = Query::parse("properties.a:1 AND properties.b:x").expect("p");
        assert_eq!(q.required_terms(), vec![("b", "x")]);
    }

    #[test]
    fn rejected_forms_say_where_and_why() {
        let cases = [
            ("properties.a:", 13, "missing value"),
            ("\"abc", 0, "expected 'properties"),
            ("properties.a:\"abc", 13, "unterminated"),
            ("properties.a:>abc", 14, "not a number"),
            ("properties.a:=5", 13, "equality"),
            ("+", 0, "followed by a term"),
            ("-", 0, "followed by a term"),
            ("123:abc", 0, "must be 'properties.<key>'"),
            ("mode:ranked", 0, "must be 'properties.<key>'"),
            ("ranked", 0, "expected 'properties"),
            ("properties.a:foo~x", 13, "fuzziness"),
            ("properties.a:foo~3", 13, "fuzziness"),
            ("properties.a:foo^x", 16, "boost"),
            ("properties.a:\"x\"~2", 16, "phrases"),
            ("properties.skill:5~1", 17, "plain text"),
            ("properties.a:/[/", 13, "invalid regex"),
            ("(properties.a:x", 15, "missing ')'"),
            ("properties.a:x)", 14, "unexpected ')'"),
            ("properties.a:x AND", 18, "expected a term"),
            ("properties.:x", 0, "must be 'properties.<key>'"),
            ("properties.a:x\\", 15, "dangling"),
        ];
        for (q, pos, reason) in cases {
            let e = Query::parse(q)
                .err()
                .unwrap_or_else(|| panic!("{q:?} must fail"));
            assert!(e.reason.contains(reason), "{q:?}: {e}");
            assert_eq!(e.pos, pos, "{q:?}: {e}");
        }
        assert!(Query::parse(&"x".repeat(MAX_QUERY_LEN + 1)).is_err());
        let deep = format!("{}properties.a:x{}", "(".repeat(40), ")".repeat(40));
        assert!(Query::parse(&deep)
            .expect_err("deep")
            .reason
            .contains("nesting"));
    }

    #[test]
    fn label_mode_uses_label_fields() {
        let d = props(
            &[
                ("mode", "ranked"),
                ("geo.region", "eu"),
                (LABEL_KEY, "raw text"),
            ],
            &[("skill", 7.0)],
        );
        let label = |q: &str| {
            Query::parse_fields(q, Fields::Label)
                .unwrap_or_else(|e| panic!("{q}: {e}"))
                .matches(&d)
        };
        assert!(label("+label.mode:ranked +label.skill:>=7"));
        assert!(label("label.geo.region:eu"));
        assert!(label("label:\"raw text\""));
        assert!(label("+label:raw* -label.mode:casual"));
        assert!(!label("label.mode:casual"));
        assert!(!label("label:raw"));
        // The bare field is the whole label only; `label.` alone is no key.
        for (q, pos, reason) in [
            (
                "properties.mode:ranked",
                0,
                "must be 'label' or 'label.<key>'",
            ),
            ("+label.:x", 1, "must be 'label' or 'label.<key>'"),
            ("labels:x", 0, "must be 'label' or 'label.<key>'"),
            ("mode:ranked", 0, "must be 'label' or 'label.<key>'"),
            (
                "label",
                0,
                "expected 'label.<key>:<value>' or 'label:<value>'",
            ),
            ("label.a:>x", 9, "not a number"),
        ] {
            let e = Query::parse_fields(q, Fields::Label)
                .err()
                .unwrap_or_else(|| panic!("{q:?} must fail"));
            assert!(e.reason.contains(reason), "{q:?}: {e}");
            assert_eq!(e.pos, pos, "{q:?}: {e}");
        }
        // Tickets keep their own fields and messages.
        for q in ["label.mode:ranked", "label:x"] {
            let e = Query::parse(q).expect_err(q);
            assert_eq!(
                e.reason,
                format!(
                    "field {:?} must be 'properties.<key>'",
                    &q[..q.find(':').unwrap_or(0)]
                )
            );
        }
        let e = Query::parse("ranked").expect_err("bare word");
        assert_eq!(
            e.reason,
            "expected 'properties.<key>:<value>', found \"ranked\""
        );
    }

    mod props_test {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_queries_never_panic(q in ".{0,200}") {
                if let Ok(query) = Query::parse(&q) {
                    for d in docs() {
                        let _ = query.score(&d);
                    }
                }
            }

            #[test]
            fn exact_terms_match_their_own_value(key in "[a-z]{1,8}", value in "[a-zA-Z0-9_.-]{1,16}") {
                let q = Query::parse(&format!("+properties.{key}:\"{value}\"")).expect("parse");
                let d = Properties { strings: [(key.clone(), value.clone())].into(), numbers: BTreeMap::new() };
                prop_assert!(q.matches(&d));
                let other = Properties { strings: [(key, format!("{value}x"))].into(), numbers: BTreeMap::new() };
                prop_assert!(!q.matches(&other));
            }

            #[test]
            fn ranges_agree_with_comparisons(bound in -1000i32..1000, value in -1000i32..1000) {
                let d = Properties { strings: BTreeMap::new(), numbers: [("n".to_owned(), f64::from(value))].into() };
                for (op, expect) in [(">", value > bound), (">=", value >= bound), ("<", value < bound), ("<=", value <= bound)] {
                    let q = Query::parse(&format!("properties.n:{op}{bound}")).expect("parse");
                    prop_assert_eq!(q.matches(&d), expect, "{} {}", op, bound);
                }
            }
        }
    }
}
