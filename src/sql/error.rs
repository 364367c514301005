//! Why a statement has no answer: an error with Postgres' SQLSTATE code, as every client of
//! the SQL engine (the prompt, `POST /v1/sql`, the Postgres protocol) reports it.

use serde::Serialize;

use crate::reading::ReadError;

/// A statement that cannot be answered, with its SQLSTATE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// The SQLSTATE code (e.g. `42601`).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where in the statement (from 1, in characters), for syntax errors.
    pub position: Option<usize>,
}

impl SqlError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        SqlError { code, message: message.into(), position: None }
    }

    /// A syntax error (42601), at `position` if known.
    pub fn syntax(message: impl Into<String>, position: Option<usize>) -> Self {
        SqlError { code: "42601", message: message.into(), position }
    }

    /// Something SQL can say that this engine does not do (0A000), naming it.
    pub fn unsupported(what: impl Into<String>) -> Self {
        SqlError::new("0A000", format!("not supported: {}", what.into()))
    }

    /// A parser error, with its place turned into a position in `text`.
    pub fn parse(error: sqlparser::parser::ParserError, text: &str) -> Self {
        let message = error.to_string();
        let number = |label: &str| -> Option<usize> {
            let at = message.find(label)? + label.len();
            message[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        let position = match (number("Line:"), number("Column:")) {
            (Some(line), Some(column)) => {
                let before: usize = text.split('\n').take(line.saturating_sub(1)).map(|l| l.chars().count() + 1).sum();
                Some(before + column)
            }
            _ => None,
        };
        let message = message.trim_start_matches("sql parser error: ").to_owned();
        SqlError::syntax(message, position)
    }

    pub(crate) fn from_read(error: ReadError) -> Self {
        match error {
            ReadError::TooManyRows { .. } => SqlError::new("54000", error.to_string()),
            ReadError::Timeout => SqlError::new("57014", format!("canceling statement: {error}")),
            ReadError::TooSlow { .. } => SqlError::new("57014", error.to_string()),
            other => SqlError::new("55000", other.to_string()),
        }
    }
}
