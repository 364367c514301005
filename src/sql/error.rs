//! Why a statement has no answer: one enum, each kind with its Postgres SQLSTATE, as every
//! client of the SQL engine (the prompt, `POST /v1/sql`, the Postgres protocol) reports it.
//!
//! DataFusion's errors are sorted into these kinds once, in [`SqlError::from_datafusion`]:
//!
//! | kind | SQLSTATE | e.g. |
//! |---|---|---|
//! | `Syntax` | 42601 | `SELEC 1` |
//! | `TooComplex` | 54001 | `SELECT 1+1+…` with thousands of terms |
//! | `UndefinedTable` | 42P01 | `SELECT * FROM nope` |
//! | `UndefinedColumn` | 42703 | `SELECT nope FROM customers` |
//! | `UndefinedFunction` | 42883 | `SELECT nope(1)`, `'a' + 1` |
//! | `Unsupported` | 0A000 | `INSERT INTO customers …` (read-only), a view the dataflow cannot maintain |
//! | `TooLarge` | 54000 | more rows or bytes than `--max-rows` or the byte budget |
//! | `OutOfMemory` | 53200 | the statements' memory pool is spent |
//! | `Canceled` | 57014 | a timeout, a client's `CancelRequest` |
//! | `Overflow` | 22003 | a sum or product past its type |
//! | `DivisionByZero` | 22012 | `SELECT 1/0` |

use serde::Serialize;

use crate::reading::ReadError;

/// A statement that cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum SqlError {
    /// The text is not SQL (42601), at a position from 1 (in characters) when known.
    #[error("{message}")]
    Syntax {
        /// What is wrong.
        message: String,
        /// Where.
        position: Option<usize>,
    },
    /// The statement is too long or nests too deep to plan (54001).
    #[error("statement too complex: {0}")]
    TooComplex(String),
    /// A relation that is not there (42P01).
    #[error("{0}")]
    UndefinedTable(String),
    /// A column that is not there (42703).
    #[error("{0}")]
    UndefinedColumn(String),
    /// A column name that two relations have (42702).
    #[error("{0}")]
    AmbiguousColumn(String),
    /// A function, or an operator of these types, that is not there (42883).
    #[error("{0}")]
    UndefinedFunction(String),
    /// Values of the wrong type for where they are (42804).
    #[error("{0}")]
    Datatype(String),
    /// A grouping mistake: a column neither grouped nor aggregated (42803).
    #[error("{0}")]
    Grouping(String),
    /// Something SQL can say that this engine does not do (0A000), naming it.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A name already taken (42P07).
    #[error("{0}")]
    DuplicateRelation(String),
    /// Two columns of a view with one name (42701).
    #[error("{0}")]
    DuplicateColumn(String),
    /// A name that cannot be one (42602).
    #[error("{0}")]
    InvalidName(String),
    /// A name longer than a name may be (42622).
    #[error("{0}")]
    NameTooLong(String),
    /// An object others depend on (2BP01).
    #[error("{0}")]
    Dependents(String),
    /// An object of another kind than the statement takes (42809).
    #[error("{0}")]
    WrongObjectType(String),
    /// A setting's value that is not one (22023).
    #[error("{0}")]
    InvalidParameter(String),
    /// Text that is not a value of its type (22P02), or another data exception (22000).
    #[error("{0}")]
    InvalidValue(String),
    /// A number past its type (22003).
    #[error("{0}")]
    Overflow(String),
    /// Division by zero (22012).
    #[error("division by zero")]
    DivisionByZero,
    /// More rows or bytes than a statement may answer (54000).
    #[error("{0}")]
    TooLarge(String),
    /// The memory the statements may hold is spent (53200).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// Canceled: by its time limit or the client (57014).
    #[error("canceling statement: {0}")]
    Canceled(String),
    /// The pipeline cannot answer now (55000): stopping, or the views not readable.
    #[error("{0}")]
    Unavailable(String),
    /// A definition that could not be kept in the state directory (58030).
    #[error("{0}")]
    Io(String),
    /// A fault of the engine itself (XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// Its SQLSTATE.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Syntax { .. } => "42601",
            SqlError::TooComplex(_) => "54001",
            SqlError::UndefinedTable(_) => "42P01",
            SqlError::UndefinedColumn(_) => "42703",
            SqlError::AmbiguousColumn(_) => "42702",
            SqlError::UndefinedFunction(_) => "42883",
            SqlError::Datatype(_) => "42804",
            SqlError::Grouping(_) => "42803",
            SqlError::Unsupported(_) => "0A000",
            SqlError::DuplicateRelation(_) => "42P07",
            SqlError::DuplicateColumn(_) => "42701",
            SqlError::InvalidName(_) => "42602",
            SqlError::NameTooLong(_) => "42622",
            SqlError::Dependents(_) => "2BP01",
            SqlError::WrongObjectType(_) => "42809",
            SqlError::InvalidParameter(_) => "22023",
            SqlError::InvalidValue(_) => "22P02",
            SqlError::Overflow(_) => "22003",
            SqlError::DivisionByZero => "22012",
            SqlError::TooLarge(_) => "54000",
            SqlError::OutOfMemory(_) => "53200",
            SqlError::Canceled(_) => "57014",
            SqlError::Unavailable(_) => "55000",
            SqlError::Io(_) => "58030",
            SqlError::Internal(_) => "XX000",
        }
    }

    /// Where in the statement, for a syntax error.
    pub fn position(&self) -> Option<usize> {
        match self {
            SqlError::Syntax { position, .. } => *position,
            _ => None,
        }
    }

    /// A syntax error in `text`, with the parser's "Line: l, Column: c" turned into a position.
    pub fn parse(message: &str, text: &str) -> Self {
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
        let message = message.trim_start_matches("SQL error: ").trim_start_matches("sql parser error: ");
        let message = message.trim_start_matches("ParserError(\"").trim_end_matches("\")").to_owned();
        SqlError::Syntax { message, position }
    }

    /// A read of the views that failed.
    pub fn from_read(error: ReadError) -> Self {
        match error {
            ReadError::TooManyRows { .. } => SqlError::TooLarge(error.to_string()),
            ReadError::Timeout => SqlError::Canceled(error.to_string()),
            ReadError::TooSlow { .. } => SqlError::Canceled(error.to_string()),
            other => SqlError::Unavailable(other.to_string()),
        }
    }

    /// DataFusion's error, sorted by kind. `text` is the statement, for positions.
    pub fn from_datafusion(error: datafusion::error::DataFusionError, text: &str) -> Self {
        use datafusion::arrow::error::ArrowError;
        use datafusion::common::SchemaError;
        use datafusion::error::DataFusionError as E;
        let root = error.find_root();
        let message = root.message().into_owned();
        match root {
            E::SQL(parser, _) => {
                let parsed = parser.to_string();
                if parsed.contains("recursion limit") {
                    SqlError::TooComplex(format!("it nests deeper than the parser allows ({parsed})"))
                } else {
                    SqlError::parse(&parsed, text)
                }
            }
            E::SchemaError(schema, _) => match schema.as_ref() {
                SchemaError::FieldNotFound { field, .. } => {
                    SqlError::UndefinedColumn(format!("column \"{}\" does not exist", field.name))
                }
                SchemaError::AmbiguousReference { .. } => SqlError::AmbiguousColumn(message),
                _ => SqlError::Datatype(message),
            },
            E::ArrowError(arrow, _) => match arrow.as_ref() {
                ArrowError::DivideByZero => SqlError::DivisionByZero,
                ArrowError::ArithmeticOverflow(_) => SqlError::Overflow(message),
                ArrowError::CastError(_) | ArrowError::ParseError(_) => SqlError::InvalidValue(message),
                ArrowError::ComputeError(m) if m.contains("Overflow") || m.contains("overflow") => {
                    SqlError::Overflow(message)
                }
                _ => SqlError::InvalidValue(message),
            },
            E::NotImplemented(_) => SqlError::Unsupported(message),
            E::ResourcesExhausted(_) => SqlError::OutOfMemory(message),
            E::Plan(_) => plan_error(message),
            E::Execution(m) if m.contains("Divide by zero") || m.contains("division by zero") => {
                SqlError::DivisionByZero
            }
            E::Execution(m) if m.contains("verflow") => SqlError::Overflow(message),
            E::Execution(_) => SqlError::InvalidValue(message),
            E::Configuration(_) => SqlError::InvalidParameter(message),
            _ => SqlError::Internal(message),
        }
    }
}

/// A planning error, sorted by what its message says (DataFusion gives one kind for all).
fn plan_error(message: String) -> SqlError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("table '") && lower.contains("not found") {
        // `table 'lambda.public.nope' not found` is Postgres' `relation "nope" does not exist`.
        let named = message.split('\'').nth(1).unwrap_or_default();
        let name = named.rsplit('.').next().unwrap_or(named);
        SqlError::UndefinedTable(format!("relation \"{name}\" does not exist"))
    } else if let Some(name) = lower.strip_prefix("invalid function '").and_then(|rest| rest.split('\'').next()) {
        SqlError::UndefinedFunction(format!("function {name} does not exist"))
    } else if ["invalid function", "no function matches", "cannot coerce", "failed to coerce", "cannot infer"]
        .iter()
        .any(|m| lower.contains(m))
    {
        SqlError::UndefinedFunction(message)
    } else if lower.contains("group by") || lower.contains("aggregate") && lower.contains("must appear") {
        SqlError::Grouping(message)
    } else if lower.contains("unsupported") || lower.contains("not supported") {
        SqlError::Unsupported(message)
    } else {
        SqlError::Datatype(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_sqlstate() {
        assert_eq!(
            SqlError::parse("Expected: an SQL statement, found: SELEC at Line: 1, Column: 1", "SELEC 1").code(),
            "42601"
        );
        assert_eq!(SqlError::UndefinedTable("x".into()).code(), "42P01");
        let missing = plan_error("table 'lambda.public.nope' not found".into());
        assert_eq!((missing.code(), missing.to_string()), ("42P01", "relation \"nope\" does not exist".into()));
        assert_eq!(SqlError::Canceled("x".into()).code(), "57014");
        assert_eq!(SqlError::DivisionByZero.code(), "22012");
        assert_eq!(SqlError::from_read(ReadError::Timeout).code(), "57014");
    }

    #[test]
    fn a_syntax_error_says_where() {
        let error = SqlError::parse("Expected: end of statement, found: x at Line: 2, Column: 3", "SELECT 1\nFROM x");
        assert_eq!(error.position(), Some(12), "9 characters of the first line and its end, then 3");
    }
}
