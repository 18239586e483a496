//! Configuration errors as the operator reads them.
//!
//! Owns: [`ConfigError`], [`ConfigErrors`] and their text form
//! `FILE:LINE:COL: FIELD: WHAT; FIX`. Must not: decide what is an error
//! (that is `schema.rs`, `checks.rs`, `system.rs`).

use std::fmt;

/// Where in the file an error points (both 1-based; the column counts
/// characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// The class of a configuration error, for callers that react to some
/// classes differently (e.g. treat `System` errors as "wrong host").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not valid TOML.
    Syntax,
    /// A key the schema does not know.
    UnknownKey,
    /// A key reserved for a feature this build does not implement yet.
    Reserved,
    /// A required key or section is absent.
    Missing,
    /// The value has the wrong TOML type (string where an integer belongs...).
    WrongType,
    /// The value has the right type but is not allowed.
    InvalidValue,
    /// Two entries that must differ are equal.
    Duplicate,
    /// Two settings contradict each other.
    Conflict,
    /// The configuration does not fit the system it was checked against.
    System,
}

/// One error: file, position, field path, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// The file name as the caller gave it.
    pub origin: String,
    /// `None` only when there is no position (the file could not be read).
    pub location: Option<Location>,
    /// Field path such as `service[1].backend[0].weight`; empty for the
    /// whole file.
    pub field: String,
    /// What is wrong, e.g. `unknown scheduler "mglev"`.
    pub message: String,
    /// A concrete fix, e.g. `expected one of rr, wrr, lc, sh, maglev`.
    pub help: String,
}

/// All errors found in one configuration, ordered by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    origin: String,
    errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if let Some(at) = self.location {
            write!(f, "{}:{}:", at.line, at.column)?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}; {}", self.message, self.help)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigErrors {
    /// Sorts `errors` by position (errors without one first) and keeps the
    /// order of discovery among equal positions.
    pub(crate) fn new(origin: &str, mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| e.location);
        ConfigErrors {
            origin: origin.to_string(),
            errors,
        }
    }

    /// The file name the errors refer to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// The last line of the text form, e.g. `configs/lab.toml: 3 errors`.
    pub fn summary(&self) -> String {
        let n = self.errors.len();
        let noun = if n == 1 { "error" } else { "errors" };
        format!("{}: {n} {noun}", self.origin)
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// One error per line, then the summary line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            writeln!(f, "{error}")?;
        }
        write!(f, "{}", self.summary())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, field: &str) -> ConfigError {
        ConfigError {
            kind: ErrorKind::InvalidValue,
            origin: "configs/lab.toml".into(),
            location: Some(Location { line, column: 10 }),
            field: field.into(),
            message: "unknown scheduler \"mglev\"".into(),
            help: "expected one of rr, wrr, lc, sh, maglev (did you mean \"maglev\"?)".into(),
        }
    }

    #[test]
    fn one_error_reads_like_a_compiler_message() {
        assert_eq!(
            error(23, "service[1].scheduler").to_string(),
            "configs/lab.toml:23:10: service[1].scheduler: unknown scheduler \"mglev\"; \
             expected one of rr, wrr, lc, sh, maglev (did you mean \"maglev\"?)"
        );
    }

    #[test]
    fn errors_are_sorted_and_summarised() {
        let errors = ConfigErrors::new("configs/lab.toml", vec![error(9, "b"), error(2, "a")]);
        let text = errors.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("configs/lab.toml:2:10: a:"));
        assert!(lines[1].starts_with("configs/lab.toml:9:10: b:"));
        assert_eq!(lines[2], "configs/lab.toml: 2 errors");
    }

    #[test]
    fn an_error_without_position_or_field_still_reads_well() {
        let e = ConfigError {
            kind: ErrorKind::Io,
            origin: "x.toml".into(),
            location: None,
            field: String::new(),
            message: "cannot read the file: not found".into(),
            help: "check the path given to --config".into(),
        };
        assert_eq!(
            e.to_string(),
            "x.toml: cannot read the file: not found; check the path given to --config"
        );
    }
}
