//! Typed reads out of the spanned TOML tree, collecting every error.
//!
//! Owns: [`Ctx`] (the error sink with the file's line index) and
//! [`Section`] (one TOML table with the keys the schema allows). Must not:
//! know vipgate's fields; `schema.rs` says which keys exist and what their
//! values mean.

use std::cell::RefCell;
use std::fmt::Display;
use std::net::IpAddr;
use std::time::Duration;

use super::duration::{format_duration, parse_duration, DurationError};
use super::error::{ConfigError, ErrorKind, Location};
use super::model::Choice;
use super::suggest::did_you_mean_suffix;
use super::tree::{Entry, Node, Span, Table, Value};

/// A value read from the file with the span of its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct At<T> {
    pub value: T,
    pub span: Option<Span>,
}

/// A key the schema reserves for a later feature: rejected with `message`
/// and `help` instead of "unknown key".
pub(crate) struct Reserved {
    pub key: &'static str,
    pub message: &'static str,
    pub help: &'static str,
}

/// The error sink for one file.
pub(crate) struct Ctx<'s> {
    origin: &'s str,
    source: &'s str,
    line_starts: Vec<usize>,
    errors: RefCell<Vec<ConfigError>>,
}

impl<'s> Ctx<'s> {
    pub(crate) fn new(origin: &'s str, source: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            origin,
            source,
            line_starts,
            errors: RefCell::new(Vec::new()),
        }
    }

    /// 1-based line and character column of byte offset `at`.
    pub(crate) fn locate(&self, at: usize) -> Location {
        let at = at.min(self.source.len());
        let line = self.line_starts.partition_point(|&start| start <= at);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .source
            .get(start..at)
            .map_or(at - start, |s| s.chars().count());
        Location {
            line,
            column: column + 1,
        }
    }

    /// The line a span starts on, for "first defined at line N".
    pub(crate) fn line_of(&self, span: &Option<Span>) -> Option<usize> {
        span.as_ref().map(|s| self.locate(s.start).line)
    }

    pub(crate) fn report(
        &self,
        kind: ErrorKind,
        span: Option<Span>,
        field: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.errors.borrow_mut().push(ConfigError {
            kind,
            origin: self.origin.to_string(),
            location: Some(span.map_or(Location { line: 1, column: 1 }, |s| self.locate(s.start))),
            field: field.to_string(),
            message: message.into(),
            help: help.into(),
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    pub(crate) fn into_errors(self) -> Vec<ConfigError> {
        self.errors.into_inner()
    }
}

/// One TOML table being read against the schema.
pub(crate) struct Section<'a> {
    pub ctx: &'a Ctx<'a>,
    table: &'a Table,
    /// Field path of the table: "" (root), "dataplane", "service[1]".
    pub path: String,
    /// How the table is written, for messages: "[[service]]".
    pub title: &'a str,
    /// Where the table starts (its header), for "missing key" errors.
    pub span: Option<Span>,
}

impl<'a> Section<'a> {
    /// Opens `table` and reports every key not in `keys` (reserved keys get
    /// their own message).
    pub(crate) fn open(
        ctx: &'a Ctx<'a>,
        table: &'a Table,
        path: String,
        title: &'a str,
        span: Option<Span>,
        keys: &[&str],
        reserved: &[Reserved],
    ) -> Self {
        let section = Section {
            ctx,
            table,
            path,
            title,
            span,
        };
        for entry in &table.entries {
            if keys.contains(&entry.key.as_str()) {
                continue;
            }
            section.reject_key(entry, keys, reserved);
        }
        section
    }

    fn reject_key(&self, entry: &Entry, keys: &[&str], reserved: &[Reserved]) {
        let field = self.field(&entry.key);
        let span = entry.key_span.clone().or_else(|| entry.node.span.clone());
        if let Some(r) = reserved.iter().find(|r| r.key == entry.key) {
            self.ctx
                .report(ErrorKind::Reserved, span, &field, r.message, r.help);
            return;
        }
        let where_ = if self.title.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in {}", self.title)
        };
        self.ctx.report(
            ErrorKind::UnknownKey,
            span,
            &field,
            format!("unknown key \"{}\" {where_}", entry.key),
            format!(
                "expected one of {}{}",
                keys.join(", "),
                did_you_mean_suffix(&entry.key, keys.iter().copied())
            ),
        );
    }

    /// The field path of `key` in this table.
    pub(crate) fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Where `key` is written (its name, else its value), if present.
    pub(crate) fn key_span(&self, key: &str) -> Option<Span> {
        let entry = self.table.get(key)?;
        entry.key_span.clone().or_else(|| entry.node.span.clone())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// Reports `key` as missing when absent; returns whether it is present.
    pub(crate) fn require(&self, key: &str, example: &str) -> bool {
        if self.has(key) {
            return true;
        }
        let in_ = if self.title.is_empty() {
            String::new()
        } else {
            format!(" in {}", self.title)
        };
        self.ctx.report(
            ErrorKind::Missing,
            self.span.clone(),
            &self.field(key),
            format!("missing key \"{key}\"{in_}"),
            format!("add {key} = {example}"),
        );
        false
    }

    /// Reports a value of the right type that is not allowed.
    pub(crate) fn invalid(&self, key: &str, span: &Option<Span>, message: String, help: String) {
        self.ctx.report(
            ErrorKind::InvalidValue,
            span.clone(),
            &self.field(key),
            message,
            help,
        );
    }

    fn wrong_type(&self, key: &str, node: &Node, expected: &str, example: &str) {
        self.ctx.report(
            ErrorKind::WrongType,
            node.span.clone(),
            &self.field(key),
            format!("expected {expected}, found {}", describe(&node.value)),
            format!("write {key} = {example}"),
        );
    }

    pub(crate) fn string(&self, key: &str, example: &str) -> Option<At<&'a str>> {
        let entry = self.table.get(key)?;
        match &entry.node.value {
            Value::String(s) => Some(At {
                value: s.as_str(),
                span: entry.node.span.clone(),
            }),
            _ => {
                self.wrong_type(key, &entry.node, "a string", example);
                None
            }
        }
    }

    pub(crate) fn boolean(&self, key: &str) -> Option<At<bool>> {
        let entry = self.table.get(key)?;
        match &entry.node.value {
            Value::Boolean(b) => Some(At {
                value: *b,
                span: entry.node.span.clone(),
            }),
            _ => {
                self.wrong_type(key, &entry.node, "true or false", "true");
                None
            }
        }
    }

    /// An integer in `min..=max`; `help` says what the range means.
    pub(crate) fn int_in<T>(
        &self,
        key: &str,
        example: &str,
        min: T,
        max: T,
        help: &str,
    ) -> Option<At<T>>
    where
        T: TryFrom<i64> + PartialOrd + Display + Copy,
    {
        let entry = self.table.get(key)?;
        let Value::Integer(raw) = entry.node.value else {
            self.wrong_type(key, &entry.node, "an integer", example);
            return None;
        };
        let span = entry.node.span.clone();
        match T::try_from(raw) {
            Ok(v) if min <= v && v <= max => Some(At { value: v, span }),
            _ => {
                self.invalid(
                    key,
                    &span,
                    format!("{key} {raw} is out of range {min}..={max}"),
                    help.to_string(),
                );
                None
            }
        }
    }

    /// One of the names of `T`.
    pub(crate) fn choice<T: Choice>(&self, key: &str) -> Option<At<T>> {
        let names: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
        let example = format!("\"{}\"", names.first().copied().unwrap_or_default());
        let text = self.string(key, &example)?;
        if let Some(value) = T::from_name(text.value) {
            return Some(At {
                value,
                span: text.span,
            });
        }
        let (message, help) = if T::NOT_YET.contains(&text.value) {
            (
                format!("{} \"{}\" is not supported yet", T::WHAT, text.value),
                format!("use one of {}", names.join(", ")),
            )
        } else {
            (
                format!("unknown {} \"{}\"", T::WHAT, text.value),
                format!(
                    "expected one of {}{}",
                    names.join(", "),
                    did_you_mean_suffix(text.value, names.iter().copied())
                ),
            )
        };
        self.invalid(key, &text.span, message, help);
        None
    }

    /// A duration string such as "900s" in `min..=max`.
    pub(crate) fn duration(
        &self,
        key: &str,
        example: &str,
        min: Duration,
        max: Duration,
    ) -> Option<At<Duration>> {
        let entry = self.table.get(key)?;
        let Value::String(text) = &entry.node.value else {
            let hint = match entry.node.value {
                Value::Integer(n) => format!("\"{n}s\""),
                _ => example.to_string(),
            };
            self.wrong_type(key, &entry.node, "a duration string", &hint);
            return None;
        };
        let span = entry.node.span.clone();
        let value = match parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.invalid(
                    key,
                    &span,
                    format!("invalid duration \"{text}\": {e}"),
                    duration_help(&e, key, example),
                );
                return None;
            }
        };
        if value < min || value > max {
            self.invalid(
                key,
                &span,
                format!("{key} {} is out of range", format_duration(value)),
                format!(
                    "use a duration from {} to {}",
                    format_duration(min),
                    format_duration(max)
                ),
            );
            return None;
        }
        Some(At { value, span })
    }

    /// An IP address (no prefix length, no port).
    pub(crate) fn ip(&self, key: &str, example: &str) -> Option<At<IpAddr>> {
        let text = self.string(key, example)?;
        if let Ok(addr) = text.value.parse::<IpAddr>() {
            return Some(At {
                value: addr,
                span: text.span,
            });
        }
        let help = ip_help(text.value, key, example);
        self.invalid(
            key,
            &text.span,
            format!("\"{}\" is not an IP address", text.value),
            help,
        );
        None
    }

    /// The items of `key = [...]`, each with its span; `None` (reported) if
    /// the value is not an array or an item is not a string.
    /// A secret of 1..=`max` bytes (a password, a key). Otherwise reports
    /// `why(length)` with `help` and returns `None`.
    pub(crate) fn secret(
        &self,
        key: &str,
        max: usize,
        why: impl FnOnce(usize) -> String,
        help: String,
    ) -> Option<At<String>> {
        let text = self.string(key, "\"secret\"")?;
        let len = text.value.len();
        if (1..=max).contains(&len) {
            return Some(At {
                value: text.value.to_string(),
                span: text.span,
            });
        }
        self.invalid(key, &text.span, why(len), help);
        None
    }

    pub(crate) fn strings(&self, key: &str, example: &str) -> Option<At<Vec<At<&'a str>>>> {
        let entry = self.table.get(key)?;
        let Value::Array(items) = &entry.node.value else {
            self.wrong_type(key, &entry.node, "an array of strings", example);
            return None;
        };
        let mut strings = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(s) => strings.push(At {
                    value: s.as_str(),
                    span: item.span.clone(),
                }),
                other => self.ctx.report(
                    ErrorKind::WrongType,
                    item.span.clone(),
                    &format!("{}[{i}]", self.field(key)),
                    format!("expected a string, found {}", describe(other)),
                    format!("write {key} = {example}"),
                ),
            }
        }
        (strings.len() == items.len()).then_some(At {
            value: strings,
            span: entry.node.span.clone(),
        })
    }

    /// The items of `key = [...]`, whatever their types; `None` (reported)
    /// if the value is not an array.
    pub(crate) fn array(&self, key: &str, example: &str) -> Option<At<&'a [Node]>> {
        let entry = self.table.get(key)?;
        let Value::Array(items) = &entry.node.value else {
            self.wrong_type(key, &entry.node, "an array", example);
            return None;
        };
        Some(At {
            value: items.as_slice(),
            span: entry.node.span.clone(),
        })
    }

    /// `key = ["198.18.0.1", ...]`: IP addresses; `None` (reported) if any
    /// item is not one.
    pub(crate) fn ips(&self, key: &str, example: &str) -> Option<At<Vec<At<IpAddr>>>> {
        let list = self.strings(key, example)?;
        let mut ips = Vec::with_capacity(list.value.len());
        for (i, text) in list.value.iter().enumerate() {
            match text.value.parse::<IpAddr>() {
                Ok(value) => ips.push(At {
                    value,
                    span: text.span.clone(),
                }),
                Err(_) => self.invalid(
                    &format!("{key}[{i}]"),
                    &text.span,
                    format!("\"{}\" is not an IP address", text.value),
                    ip_list_help(text.value, key, example),
                ),
            }
        }
        (ips.len() == list.value.len()).then_some(At {
            value: ips,
            span: list.span,
        })
    }

    /// A sub-table `[key]`; reports other value types.
    pub(crate) fn table(&self, key: &str) -> Option<(&'a Table, Option<Span>)> {
        let entry = self.table.get(key)?;
        match &entry.node.value {
            Value::Table(t) => Some((
                t,
                entry.node.span.clone().or_else(|| entry.key_span.clone()),
            )),
            _ => {
                self.ctx.report(
                    ErrorKind::WrongType,
                    entry.node.span.clone(),
                    &self.field(key),
                    format!(
                        "expected a table [{}], found {}",
                        self.field(key),
                        describe(&entry.node.value)
                    ),
                    format!("write the settings under a [{}] header", self.field(key)),
                );
                None
            }
        }
    }

    /// The tables of an array of tables `[[key]]`, with their index and span.
    pub(crate) fn tables(&self, key: &str, header: &str) -> Vec<(usize, &'a Table, Option<Span>)> {
        let Some(entry) = self.table.get(key) else {
            return Vec::new();
        };
        let items = match &entry.node.value {
            Value::Array(items) => items,
            other => {
                self.ctx.report(
                    ErrorKind::WrongType,
                    entry.key_span.clone().or_else(|| entry.node.span.clone()),
                    &self.field(key),
                    format!(
                        "expected an array of tables {header}, found {}",
                        describe(other)
                    ),
                    format!("write {header} (double brackets) before each entry"),
                );
                return Vec::new();
            }
        };
        let mut tables = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match &item.value {
                Value::Table(t) => tables.push((
                    index,
                    t,
                    item.span.clone().or_else(|| entry.key_span.clone()),
                )),
                other => self.ctx.report(
                    ErrorKind::WrongType,
                    item.span.clone(),
                    &format!("{}[{index}]", self.field(key)),
                    format!("expected a table, found {}", describe(other)),
                    format!("write each entry as a {header} section"),
                ),
            }
        }
        tables
    }
}

/// "an integer (80)", "a string (\"80\")" for wrong-type messages.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("a string (\"{}\")", shorten(s)),
        Value::Integer(n) => format!("an integer ({n})"),
        Value::Float(x) => format!("a float ({x})"),
        Value::Boolean(b) => format!("a boolean ({b})"),
        Value::Datetime(d) => format!("a date-time ({d})"),
        other => other.kind().to_string(),
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

fn duration_help(error: &DurationError, key: &str, example: &str) -> String {
    match error {
        DurationError::MissingUnit(n) => {
            format!("add a unit: {key} = \"{n}s\" (units: ms, s, m, h, d)")
        }
        DurationError::Fraction => {
            "use a smaller unit instead of a fraction, e.g. \"1500ms\" for 1.5s".to_string()
        }
        _ => format!("write e.g. {key} = {example} (units: ms, s, m, h, d)"),
    }
}

/// Help for a string that is not an IP address: spot a prefix or a port.
fn ip_help(text: &str, key: &str, example: &str) -> String {
    if let Some((addr, _)) = text.split_once('/') {
        if addr.parse::<IpAddr>().is_ok() {
            return format!("write the address without a prefix length: {key} = \"{addr}\"");
        }
    }
    if let Ok(sock) = text.parse::<std::net::SocketAddr>() {
        return format!(
            "write the address without a port: {key} = \"{}\", and the port in port = {}",
            sock.ip(),
            sock.port()
        );
    }
    format!("write an IPv4 or IPv6 address, e.g. {key} = {example}")
}

/// [`ip_help`] for an item of a list of addresses.
fn ip_list_help(text: &str, key: &str, example: &str) -> String {
    let bare = text
        .split_once('/')
        .map(|(a, _)| a.to_string())
        .or_else(|| {
            text.parse::<std::net::SocketAddr>()
                .ok()
                .map(|s| s.ip().to_string())
        })
        .filter(|a| a.parse::<IpAddr>().is_ok());
    match bare {
        Some(addr) => format!("write the bare address, without prefix length or port: \"{addr}\""),
        None => format!("write IPv4 or IPv6 addresses, e.g. {key} = {example}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_character_columns() {
        let src = "a = 1\nbé = \"x\"\n\nc";
        let ctx = Ctx::new("f.toml", src);
        assert_eq!(ctx.locate(0), Location { line: 1, column: 1 });
        assert_eq!(ctx.locate(4), Location { line: 1, column: 5 });
        assert_eq!(ctx.locate(6), Location { line: 2, column: 1 });
        // "bé = " is 6 bytes but 5 characters: the string starts at column 6.
        let quote = src.find('"').unwrap();
        assert_eq!(ctx.locate(quote), Location { line: 2, column: 6 });
        assert_eq!(ctx.locate(src.len()), Location { line: 4, column: 2 });
        assert_eq!(ctx.locate(usize::MAX), Location { line: 4, column: 2 });
    }

    #[test]
    fn ip_help_spots_prefixes_and_ports() {
        assert!(ip_help("198.18.0.1/24", "vip", "\"x\"").contains("vip = \"198.18.0.1\""));
        assert!(ip_help("198.18.0.1:80", "vip", "\"x\"").contains("port = 80"));
        assert!(ip_help("[2001:db8::1]:80", "vip", "\"x\"").contains("\"2001:db8::1\""));
        assert!(ip_help("gw", "vip", "\"198.18.1.10\"").contains("vip = \"198.18.1.10\""));
    }
}
