//! A session's settings: what `SET` keeps for the statements after it, and `SHOW` answers.
//!
//! | setting | meaning |
//! |---|---|
//! | `min_offsets` | read-your-writes: every later read waits until the views reflect these input positions (`topic/partition:offset,...`, see [`crate::serve::bound`]) |
//! | `timeout_ms` | how long such a read waits (default 5000) |
//! | `statement_timeout` | how long a statement may take, in milliseconds (`'5s'`, `'1min'` too; 0: the server's `--query-timeout-ms`) |
//! | anything else | kept and shown, as Postgres keeps what clients set when they connect (`extra_float_digits`, `application_name`, `DateStyle`, `search_path`, …) |
//!
//! `SHOW as_of` says which logical time and input positions the session's previous answer
//! reflects. `current_setting('name')` reads the same settings.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName, Statement, Value as SqlValue};

use super::SqlError;
use crate::reading::Reading;
use crate::serve::bound::{self, MinOffsets};

/// The settings a client sees before it sets any, as a Postgres 16 server shows them.
const DEFAULTS: [(&str, &str); 15] = [
    ("client_min_messages", "notice"),
    ("server_version", "16.6"),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("search_path", "public"),
    ("standard_conforming_strings", "on"),
    ("transaction_isolation", "read committed"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("default_transaction_read_only", "on"),
    ("is_superuser", "off"),
];

/// One session's settings.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// The input positions every read waits for.
    pub min_offsets: Option<MinOffsets>,
    /// How long a read waits for them.
    pub wait: Option<Duration>,
    /// How long a statement may take (none: the server's limit).
    pub statement_timeout: Option<Duration>,
    /// What the previous answer reflected.
    pub as_of: Option<Reading>,
    /// The other settings, by lowercase name.
    vars: BTreeMap<String, String>,
}

/// What a `SET`, `RESET` or `SHOW` answered.
pub enum Said {
    /// A setting was taken (`SET`, `RESET`).
    Set,
    /// A setting's value (`SHOW`): its name and value.
    Shown(String, String),
}

impl Session {
    /// How long a read waits for the session's positions.
    pub fn wait(&self) -> Duration {
        self.wait.unwrap_or(bound::DEFAULT_TIMEOUT)
    }

    /// Whether the client takes NOTICE messages (`client_min_messages` at NOTICE or below).
    pub fn notices(&self) -> bool {
        let level = self.vars.get("client_min_messages").map_or("notice", String::as_str);
        matches!(
            level.to_lowercase().as_str(),
            "notice" | "log" | "info" | "debug" | "debug1" | "debug2" | "debug3" | "debug4" | "debug5"
        )
    }

    /// The value of setting `name` (case-insensitive), if it has one.
    pub fn get(&self, name: &str, topic: &str) -> Option<String> {
        let name = name.to_lowercase();
        match name.as_str() {
            "min_offsets" => Some(self.min_offsets.as_ref().map_or(String::new(), |b| b.display(topic))),
            "timeout_ms" => Some(self.wait().as_millis().to_string()),
            "statement_timeout" => Some(self.statement_timeout.map_or("0".into(), |t| format!("{}ms", t.as_millis()))),
            "as_of" => Some(self.as_of.as_ref().map_or(String::new(), |r| as_of_text(r, topic))),
            "transaction isolation level" => Some("read committed".into()),
            _ => self
                .vars
                .get(&name)
                .cloned()
                .or_else(|| DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())),
        }
    }

    /// Takes a `SET`, `RESET` or `SHOW` statement; `None` for any other.
    pub fn take(&mut self, statement: &Statement, topic: &str) -> Option<Result<Said, SqlError>> {
        use datafusion::sql::sqlparser::ast::{Reset, Set};
        match statement {
            Statement::Set(Set::SingleAssignment { variable, values, .. }) => {
                Some(self.set(&name_of(variable), values, topic).map(|()| Said::Set))
            }
            Statement::Set(Set::SetTimeZone { value, .. }) => {
                Some(self.set("timezone", std::slice::from_ref(value), topic).map(|()| Said::Set))
            }
            Statement::Set(Set::MultipleAssignments { assignments }) => {
                for assignment in assignments {
                    if let Err(error) =
                        self.set(&name_of(&assignment.name), std::slice::from_ref(&assignment.value), topic)
                    {
                        return Some(Err(error));
                    }
                }
                Some(Ok(Said::Set))
            }
            // `SET SESSION CHARACTERISTICS`, `SET ROLE`, …: taken, as a read-only server may.
            Statement::Set(_) => Some(Ok(Said::Set)),
            Statement::Reset(reset) => {
                match &reset.reset {
                    Reset::ALL => *self = Session { as_of: self.as_of.take(), ..Session::default() },
                    Reset::ConfigurationParameter(name) => self.reset(&name_of(name)),
                }
                Some(Ok(Said::Set))
            }
            Statement::ShowVariable { variable } => {
                let name: Vec<String> = variable.iter().map(|i| i.value.clone()).collect();
                let name = name.join(" ");
                Some(Ok(Said::Shown(name.to_lowercase(), self.get(&name, topic).unwrap_or_default())))
            }
            _ => None,
        }
    }

    fn reset(&mut self, name: &str) {
        match name {
            "min_offsets" => self.min_offsets = None,
            "timeout_ms" => self.wait = None,
            "statement_timeout" => self.statement_timeout = None,
            other => {
                self.vars.remove(other);
            }
        }
    }

    fn set(&mut self, name: &str, values: &[Expr], topic: &str) -> Result<(), SqlError> {
        let texts: Vec<String> = values.iter().map(value_text).collect();
        let value = texts.join(", ");
        if value.eq_ignore_ascii_case("default") {
            self.reset(name);
            return Ok(());
        }
        match name {
            "min_offsets" => {
                self.min_offsets = Some(MinOffsets::parse(&value, topic).map_err(SqlError::InvalidParameter)?);
            }
            "timeout_ms" => self.wait = Some(bound::parse_timeout(&value).map_err(SqlError::InvalidParameter)?),
            "statement_timeout" => {
                let timeout = duration(&value).ok_or_else(|| {
                    SqlError::InvalidParameter(format!(
                        "invalid value for parameter \"statement_timeout\": \"{value}\" (milliseconds, or like '5s')"
                    ))
                })?;
                self.statement_timeout = (!timeout.is_zero()).then_some(timeout);
            }
            other => {
                self.vars.insert(other.to_owned(), value);
            }
        }
        Ok(())
    }
}

/// `min_offsets`' and `SHOW as_of`'s way of naming input positions.
pub fn as_of_text(reading: &Reading, topic: &str) -> String {
    let offsets: Vec<String> = reading.offsets.iter().map(|(p, o)| format!("{topic}/{p}:{o}")).collect();
    format!("time {}, offsets {}", reading.time, offsets.join(","))
}

/// A setting's name as SQL wrote it, lowercase.
fn name_of(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), |i: &Ident| i.value.clone()))
        .collect::<Vec<_>>()
        .join(".")
        .to_lowercase()
}

/// A value of `SET` as text: a string's contents, a number or a word as written.
fn value_text(value: &Expr) -> String {
    match value {
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// A duration as Postgres writes it: milliseconds, or a number with a unit.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = (text[..split].parse::<f64>().ok()?, text[split..].trim());
    let ms = match unit {
        "" | "ms" => number,
        "s" => number * 1e3,
        "min" => number * 60e3,
        "h" => number * 3600e3,
        _ => return None,
    };
    (0.0..1e12).contains(&ms).then(|| Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).unwrap().remove(0)
    }

    #[test]
    fn settings_are_kept_and_shown() {
        let mut session = Session::default();
        let topic = "real-time-orders";
        for sql in [
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET statement_timeout = '250ms'",
            "SET min_offsets = 'real-time-orders/1:3'",
            "SET DateStyle = ISO",
        ] {
            assert!(matches!(session.take(&statement(sql), topic), Some(Ok(Said::Set))), "{sql}");
        }
        assert_eq!(session.get("extra_float_digits", topic).as_deref(), Some("3"));
        assert_eq!(session.get("APPLICATION_NAME", topic).as_deref(), Some("psql"));
        assert_eq!(session.statement_timeout, Some(Duration::from_millis(250)));
        assert_eq!(session.get("min_offsets", topic).as_deref(), Some("real-time-orders/1:3"));
        assert_eq!(session.get("server_version", topic).as_deref(), Some("16.6"));
        let Some(Ok(Said::Shown(name, value))) = session.take(&statement("SHOW datestyle"), topic) else { panic!() };
        assert_eq!((name.as_str(), value.as_str()), ("datestyle", "ISO"));
        assert!(matches!(session.take(&statement("SET min_offsets = 'elsewhere/0:1'"), topic), Some(Err(_))));
        assert!(matches!(session.take(&statement("SET statement_timeout = 'forever'"), topic), Some(Err(_))));
        session.take(&statement("RESET min_offsets"), topic);
        assert!(session.min_offsets.is_none());
        assert!(session.take(&statement("SELECT 1"), topic).is_none());
    }
}
