//! The SQL corpus under `tests/sql/`, in the sqllogictest format DataFusion, RisingWave and
//! Materialize keep theirs in, run against the live engine: each file starts a pipeline of
//! its own (the history `tests/sql/history.jsonl`, a broker, 2 workers), and sends Kafka
//! messages — corrections and deletes among them — with a statement of its own:
//!
//! ```text
//! statement ok
//! PRODUCE 1 t1 {"id":"t1","customer":"Ali","amount":130.00}
//! ```
//!
//! (`PRODUCE <partition> <key or -> <message>`). Every query after it waits until the views
//! reflect every message sent. Values are shown as psql shows them: `NULL`, decimals at their
//! scale, timestamps in UTC; an empty string is `(empty)`. Errors are checked by SQLSTATE:
//! `statement error (42P01)`.
//!
//! `SLT_COMPLETE=1 cargo test --test it sql_logic` writes the engine's answers into the files
//! (to be read and checked by hand before committing).

use crate::common;

use std::path::{Path, PathBuf};

use atelier_lambda::sql::{Answer, SqlError};
use common::engine::Live;
use common::Message;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};

/// A pipeline read through SQL, as sqllogictest drives a database.
struct Engine(Live);

#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("{0} ({code})", code = .0.code())]
    Sql(SqlError),
    #[error("{0}")]
    Produce(String),
}

impl sqllogictest::DB for Engine {
    type Error = Failed;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Failed> {
        if let Some(message) = sql.trim().strip_prefix("PRODUCE ") {
            let mut parts = message.splitn(3, ' ');
            let partition = parts.next().and_then(|p| p.parse().ok());
            let (Some(partition), Some(key), Some(body)) = (partition, parts.next(), parts.next()) else {
                return Err(Failed::Produce(format!("not PRODUCE <partition> <key or -> <message>: {sql}")));
            };
            let key = (key != "-").then(|| key.to_owned());
            self.0.send(&[Message { partition, key, body: body.to_owned(), worker: 0 }]);
            return Ok(DBOutput::StatementComplete(0));
        }
        let answer = self.0.sql(sql).map_err(Failed::Sql)?;
        if answer.schema.fields().is_empty() || answer.tag.is_some() && answer.batches.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; answer.schema.fields().len()], rows: shown(&answer) })
    }

    fn engine_name(&self) -> &str {
        "atelier-lambda"
    }

    fn error_sql_state(error: &Failed) -> Option<String> {
        match error {
            Failed::Sql(e) => Some(e.code().to_owned()),
            Failed::Produce(_) => None,
        }
    }
}

/// The rows as text, as psql shows them.
fn shown(answer: &Answer) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in &answer.batches {
        let formatters: Vec<ArrayFormatter<'_>> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let text = f.value(row).to_string();
                        if text.is_empty() {
                            "(empty)".to_owned()
                        } else {
                            text
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_corpus_answers_as_written() {
    let history = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/history.jsonl");
    let complete = std::env::var("SLT_COMPLETE").is_ok_and(|v| v == "1");
    let files = corpus();
    assert!(files.len() >= 5, "the corpus is there: {files:?}");
    let mut failures = Vec::new();
    for file in files {
        let dir = common::temp_dir("slt");
        let (history, dir_in) = (history.clone(), dir.clone());
        let mut runner = sqllogictest::Runner::new(move || {
            let (history, dir) = (history.clone(), dir_in.clone());
            async move { Ok::<_, Failed>(Engine(Live::start(&history, 2, &dir, 1000))) }
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        if complete {
            let validator = sqllogictest::default_validator;
            let normalizer = sqllogictest::default_normalizer;
            let column = sqllogictest::default_column_validator;
            let updated =
                futures::executor::block_on(runner.update_test_file(&file, " ", validator, normalizer, column));
            if let Err(error) = updated {
                failures.push(format!("{}: {error}", file.display()));
            }
        } else if let Err(error) = runner.run_file(&file) {
            failures.push(format!("{}:\n{}", file.display(), error.display(false)));
        }
        drop(runner);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
