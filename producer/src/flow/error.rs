//! Why a YAML workflow is refused: the file, the line, the column, the key.

use std::fmt;

/// A place in a YAML file: 1-based line and column.
///
/// # Examples
///
/// ```
/// use celeriac_producer::flow::Position;
///
/// let at = Position::new(12, 7);
/// assert_eq!(at.to_string(), "12:7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
}

impl Position {
    /// Line `line`, column `column` (both from 1).
    pub fn new(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    pub(crate) fn from_marker(marker: &saphyr::Marker) -> Position {
        Position {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What is wrong with a YAML workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowErrorKind {
    /// The file cannot be read.
    Read {
        /// The operating system's reason.
        message: String,
    },
    /// The text is not YAML (or has a duplicated key).
    Syntax {
        /// The parser's reason.
        message: String,
    },
    /// A key that the format does not have: a typo must not pass silently.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<&'static str>,
    },
    /// A required key is missing.
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A value of the wrong YAML type.
    WrongType {
        /// What the key takes.
        expected: &'static str,
        /// What the file has.
        found: &'static str,
    },
    /// A value of the right type that is not allowed.
    Invalid {
        /// Why.
        message: String,
    },
    /// `needs` names no task of the workflow.
    UnknownTask {
        /// The name as written.
        name: String,
    },
    /// The `needs` go round in a circle.
    Cycle {
        /// The node ids of the cycle, each needing the one before it and
        /// the first needing the last.
        path: Vec<String>,
    },
    /// A schedule that cannot be parsed, or a child scheduled less often
    /// than its parent.
    Schedule {
        /// Why.
        message: String,
    },
}

impl fmt::Display for FlowErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowErrorKind::Read { message } => write!(f, "cannot read the file: {message}"),
            FlowErrorKind::Syntax { message } => write!(f, "invalid YAML: {message}"),
            FlowErrorKind::UnknownKey { key, suggestion } => {
                write!(f, "unknown key {key:?}")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean {s:?}?)")?;
                }
                Ok(())
            }
            FlowErrorKind::MissingKey { key } => write!(f, "missing key {key:?}"),
            FlowErrorKind::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            FlowErrorKind::Invalid { message } | FlowErrorKind::Schedule { message } => {
                f.write_str(message)
            }
            FlowErrorKind::UnknownTask { name } => write!(f, "unknown task {name:?}"),
            FlowErrorKind::Cycle { path } => {
                f.write_str("the tasks need each other in a cycle: ")?;
                for id in path {
                    write!(f, "{id} -> ")?;
                }
                match path.first() {
                    Some(first) => f.write_str(first),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A YAML workflow that cannot be used, with where the problem is.
///
/// Displays as `file:line:column: key.path: message`, for example
/// `flow.yaml:12:7: tasks.report.needs: unknown task "cnt"`.
///
/// # Examples
///
/// ```
/// use celeriac_producer::flow::{Flow, FlowErrorKind};
///
/// let err = Flow::parse("name: demo\ntasks:\n  a: {run: [true], retires: 2}\n", "flow.yaml").unwrap_err();
/// assert_eq!(err.to_string(), "flow.yaml:3:20: tasks.a: unknown key \"retires\" (did you mean \"retries\"?)");
/// assert_eq!((err.line(), err.column()), (Some(3), Some(20)));
/// assert_eq!(err.key(), "tasks.a");
/// assert!(matches!(err.kind(), FlowErrorKind::UnknownKey { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FlowError {
    file: String,
    position: Option<Position>,
    key: String,
    kind: FlowErrorKind,
}

impl FlowError {
    pub(crate) fn new(
        file: &str,
        position: Option<Position>,
        key: impl Into<String>,
        kind: FlowErrorKind,
    ) -> FlowError {
        FlowError {
            file: file.to_owned(),
            position,
            key: key.into(),
            kind,
        }
    }

    /// The file, as it was named.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where in the file, when the problem has a place.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// The line (from 1), when the problem has a place.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }

    /// The column (from 1), when the problem has a place.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.column)
    }

    /// The path of the key the problem is in (`tasks.report.needs`); empty
    /// for the whole document.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong.
    pub fn kind(&self) -> &FlowErrorKind {
        &self.kind
    }

    /// Whether the file could not be read at all (as opposed to read and
    /// found invalid).
    pub fn is_read_error(&self) -> bool {
        matches!(self.kind, FlowErrorKind::Read { .. })
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(at) = self.position {
            write!(f, ":{at}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        self.kind.fmt(f)
    }
}

/// The known key closest to `key`, when it is a likely typo of it.
pub(crate) fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let known = &["retries", "timeout", "needs", "run", "task"];
        assert_eq!(suggest("retires", known), Some("retries"));
        assert_eq!(suggest("need", known), Some("needs"));
        assert_eq!(suggest("Timeout", known), Some("timeout"));
        assert_eq!(suggest("colour", known), None);
        assert_eq!(suggest("xy", known), None);
    }
}
