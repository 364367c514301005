//! SQL over the Postgres wire protocol (`pgwire`): `psql -h 127.0.0.1 -p 6875 -U lambda
//! lambda`, `pgbench` with a custom script, and drivers (psycopg, JDBC) reach the same SQL
//! engine as the prompt and `POST /v1/sql`.
//!
//! Simple and extended queries are answered; columns are typed (`text`, `bigint`,
//! `numeric`, `timestamptz`, `boolean`) and sent in text format; parameters (`$1`) of
//! extended queries are bound as literals. Any user and database name is accepted: the
//! server listens on loopback by default. Errors carry their SQLSTATE and, for syntax
//! errors, the position. `SHOW as_of` says which logical time and offsets the session's
//! previous answer reflects. `SUBSCRIBE view` (or `COPY (SUBSCRIBE view) TO STDOUT`, as in
//! Materialize) streams a view's changefeed as COPY text: `time, diff, columns...` per line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type as PgType};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;

use crate::reading::Reading;
use crate::serve::bound::Session;
use crate::serve::feed::{Event, Feeds, Row, SubscribeError};
use crate::serve::Serving;
use crate::sql::value::{Type, Value};
use crate::sql::{Answer, Column, Engine, SqlError};

/// The backend every connection shares.
pub struct Backend {
    engine: Engine,
    topic: String,
    parser: Arc<NoopQueryParser>,
    /// What each session's previous answer reflected, for `SHOW as_of`.
    last: Mutex<HashMap<SocketAddr, Reading>>,
    /// Each session's read-your-writes bound (`SET min_offsets = '...'`).
    sessions: Mutex<HashMap<SocketAddr, Session>>,
    /// The changefeeds `SUBSCRIBE` follows.
    feeds: Feeds,
}

impl Backend {
    /// A backend over a running pipeline, whose `SUBSCRIBE`s follow `feeds`.
    pub fn new(engine: Engine, feeds: Feeds, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        let parser = Arc::new(NoopQueryParser::new());
        Backend { engine, topic, parser, last: Mutex::default(), sessions: Mutex::default(), feeds }
    }

    async fn answer(&self, client: SocketAddr, statement: &str) -> PgWireResult<Response> {
        tracing::debug!(%client, statement, "a SQL statement over the Postgres protocol");
        let words: Vec<String> =
            statement.trim().trim_end_matches(';').split_whitespace().map(str::to_ascii_lowercase).collect();
        if words == ["show", "as_of"] {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).get(&client).cloned();
            if let Some(reading) = last {
                let offsets: Vec<String> =
                    reading.offsets.iter().map(|(p, o)| format!("{}/{p}:{o}", self.topic)).collect();
                let answer = Answer {
                    columns: vec![
                        Column { name: "time".into(), ty: Type::BigInt },
                        Column { name: "offsets".into(), ty: Type::Text },
                    ],
                    rows: vec![vec![Value::Int(reading.time as i64), Value::Text(offsets.join(",").into())]],
                    reading: None,
                    tag: None,
                };
                return Ok(response(&answer));
            }
        }
        if let Some(view) = subscribe_target(statement) {
            return self.subscribe(view).await;
        }
        let mut session =
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&client).cloned().unwrap_or_default();
        let answer = self.engine.execute_in_async(&mut session, statement).await;
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(client, session);
        let answer = answer.map_err(user_error)?;
        if let Some(reading) = &answer.reading {
            let mut kept = reading.clone();
            kept.rows.clear();
            kept.customers.clear();
            self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(client, kept);
        }
        Ok(response(&answer))
    }

    /// `SUBSCRIBE view` (or `COPY (SUBSCRIBE view) TO STDOUT`), as Materialize streams it: a
    /// COPY in text format that never ends by itself, one line per row change —
    /// `time, diff, the row's columns` — first the view's rows (diff 1), then every change.
    async fn subscribe(&self, view: &str) -> PgWireResult<Response> {
        let view = view.trim_matches('"');
        let columns = self.engine.columns(&format!("SELECT * FROM \"{view}\"")).map_err(user_error)?;
        let subscription = match self.feeds.subscribe(view, None, None).await {
            Ok(subscription) => subscription,
            Err(SubscribeError::View(error)) => return Err(user_error(error)),
            Err(other) => return Err(user_error(SqlError::new("55000", format!("{other:?}")))),
        };
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let width = names.len() + 2;
        let lines = futures::StreamExt::flat_map(
            stream::unfold(subscription, move |mut subscription| {
                let names = names.clone();
                async move {
                    loop {
                        let event = subscription.next().await?;
                        // One message per line: pgwire hands them to the socket once 8 KiB are
                        // waiting (it feeds copy data without flushing), so lines, not whole
                        // snapshots, are what make that happen.
                        let line = |time: u64, diff: i64, row: &Row| {
                            Ok(CopyData::new(copy_line(time, diff, &row.values, &names).into()))
                        };
                        let lines: Vec<PgWireResult<CopyData>> = match &*event {
                            Event::Snapshot { time, rows, .. } => rows.iter().map(|row| line(*time, 1, row)).collect(),
                            Event::Changes { time, changes, .. } => {
                                changes.iter().map(|c| line(*time, c.diff, &c.row)).collect()
                            }
                            Event::Progress { .. } => continue,
                            Event::End { reason } => vec![Err(user_error(SqlError::new("57014", reason.clone())))],
                        };
                        if !lines.is_empty() {
                            return Some((lines, subscription));
                        }
                    }
                }
            }),
            stream::iter,
        );
        Ok(Response::CopyOut(CopyResponse::new(0, width, lines)))
    }

    /// Forgets a closed session.
    fn forget(&self, client: SocketAddr) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
    }
}

/// The view a `SUBSCRIBE [TO] view` or `COPY (SUBSCRIBE [TO] view) TO STDOUT` names, if the
/// statement is one.
fn subscribe_target(statement: &str) -> Option<&str> {
    let mut text = statement.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    let copy = lower.starts_with("copy");
    if copy {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let tail = text[close + 1..].trim().to_ascii_lowercase();
        if tail.split_whitespace().collect::<Vec<_>>() != ["to", "stdout"] {
            return None;
        }
        text = text[open + 1..close].trim();
    }
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("subscribe") {
        return None;
    }
    let mut view = words.next()?;
    if view.eq_ignore_ascii_case("to") {
        view = words.next()?;
    }
    words.next().is_none().then_some(view)
}

/// One row change as a line of COPY's text format: time, diff, then the columns.
fn copy_line(time: u64, diff: i64, row: &serde_json::Map<String, serde_json::Value>, names: &[String]) -> String {
    let mut line = format!("{time}\t{diff}");
    for name in names {
        line.push('\t');
        match row.get(name) {
            None | Some(serde_json::Value::Null) => line.push_str("\\N"),
            Some(serde_json::Value::String(text)) => {
                for c in text.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\t' => line.push_str("\\t"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        c => line.push(c),
                    }
                }
            }
            Some(other) => line.push_str(&other.to_string()),
        }
    }
    line.push('\n');
    line
}

fn pg_type(ty: Type) -> PgType {
    match ty {
        Type::Text => PgType::TEXT,
        Type::BigInt => PgType::INT8,
        Type::Numeric => PgType::NUMERIC,
        Type::Timestamp => PgType::TIMESTAMPTZ,
        Type::Bool => PgType::BOOL,
    }
}

fn fields(columns: &[Column]) -> Vec<FieldInfo> {
    columns.iter().map(|c| FieldInfo::new(c.name.clone(), None, None, pg_type(c.ty), FieldFormat::Text)).collect()
}

/// An answer as rows of text values, or a statement's tag.
fn response(answer: &Answer) -> Response {
    match answer.tag {
        Some("BEGIN") => return Response::TransactionStart(Tag::new("BEGIN")),
        Some(tag @ ("COMMIT" | "ROLLBACK")) => return Response::TransactionEnd(Tag::new(tag)),
        Some(tag) => return Response::Execution(Tag::new(tag)),
        None => {}
    }
    let schema = Arc::new(fields(&answer.columns));
    let rows: Vec<Vec<Option<String>>> =
        answer.rows.iter().map(|r| r.iter().map(Value::to_pg_text).collect()).collect();
    let mut encoder = DataRowEncoder::new(Arc::clone(&schema));
    let encoded: Vec<PgWireResult<_>> = rows
        .into_iter()
        .map(|row| {
            for value in &row {
                encoder.encode_field(value)?;
            }
            Ok(encoder.take_row())
        })
        .collect();
    Response::Query(QueryResponse::new(schema, stream::iter(encoded)))
}

fn user_error(error: SqlError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".to_owned(), error.code.to_owned(), error.message);
    info.position = error.position.map(|p| p.to_string());
    PgWireError::UserError(Box::new(info))
}

/// Statements of one simple query, split at semicolons outside quotes.
fn statements(query: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quote) = (0, None::<char>);
    for (i, c) in query.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => {
                out.push(&query[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&query[start..]);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

#[async_trait]
impl NoopStartupHandler for Backend {}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut responses = Vec::new();
        for statement in statements(query) {
            match self.answer(client.socket_addr(), statement).await {
                Ok(response) => responses.push(response),
                Err(PgWireError::UserError(info)) => {
                    // Postgres stops a multi-statement query at its first error.
                    responses.push(Response::Error(info));
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(responses)
    }
}

/// A bound parameter as a SQL literal: numbers as they are, everything else quoted. Text and
/// binary formats are both read (psycopg sends integers in binary), by the declared type.
fn literal(portal: &Portal<String>, n: usize) -> PgWireResult<String> {
    let i = n - 1;
    if portal.parameters.get(i).is_none_or(Option::is_none) {
        return Ok("NULL".into());
    }
    let declared = portal.statement.parameter_types.get(i).cloned().flatten().unwrap_or(PgType::UNKNOWN);
    let quoted = |text: String| format!("'{}'", text.replace('\'', "''"));
    let number = |text: String| text;
    Ok(match declared {
        t if t == PgType::INT2 => number(portal.parameter::<i16>(i, &t)?.unwrap_or_default().to_string()),
        t if t == PgType::INT4 => number(portal.parameter::<i32>(i, &t)?.unwrap_or_default().to_string()),
        t if t == PgType::INT8 => number(portal.parameter::<i64>(i, &t)?.unwrap_or_default().to_string()),
        t if t == PgType::FLOAT4 => number(portal.parameter::<f32>(i, &t)?.unwrap_or_default().to_string()),
        t if t == PgType::FLOAT8 => number(portal.parameter::<f64>(i, &t)?.unwrap_or_default().to_string()),
        t if t == PgType::BOOL => portal.parameter::<bool>(i, &t)?.unwrap_or_default().to_string(),
        t if portal.parameter_format.is_binary(i) && t != PgType::TEXT && t != PgType::VARCHAR => {
            return Err(user_error(SqlError::unsupported(format!(
                "a parameter of type {} in binary format (send it as text)",
                t.name()
            ))))
        }
        _ => {
            let bytes = portal.parameters[i].as_ref().expect("checked above");
            let text = String::from_utf8_lossy(bytes).into_owned();
            if declared == PgType::NUMERIC || (declared == PgType::UNKNOWN && text.parse::<f64>().is_ok()) {
                number(text)
            } else {
                quoted(text)
            }
        }
    })
}

/// A statement with its `$n` parameters replaced by the bound values, as literals.
fn bind(portal: &Portal<String>) -> PgWireResult<String> {
    let statement = &portal.statement.statement;
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    let mut quote = None::<char>;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '$') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                match digits.parse::<usize>() {
                    Ok(n) if n > 0 => out.push_str(&literal(portal, n)?),
                    _ => {
                        out.push('$');
                        out.push_str(&digits);
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    Ok(out)
}

/// How many parameters (`$n`) a statement takes.
fn parameters(statement: &str) -> usize {
    let mut most = 0;
    let bytes = statement.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'$' {
            let digits: String = bytes[i + 1..].iter().take_while(|d| d.is_ascii_digit()).map(|d| *d as char).collect();
            most = most.max(digits.parse().unwrap_or(0));
        }
    }
    most
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let statement = bind(portal)?;
        if statement.trim().is_empty() {
            return Ok(Response::EmptyQuery);
        }
        self.answer(client.socket_addr(), &statement).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        statement: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let count = parameters(&statement.statement);
        let types: Vec<PgType> = (0..count)
            .map(|i| statement.parameter_types.get(i).cloned().flatten().unwrap_or(PgType::UNKNOWN))
            .collect();
        // The columns do not depend on the parameters' values: the planner reads an unbound
        // `$n` as NULL.
        let columns = self.engine.columns(&statement.statement).map_err(user_error)?;
        Ok(DescribeStatementResponse::new(types, fields(&columns)))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let columns = self.engine.columns(&bind(portal)?).map_err(user_error)?;
        Ok(DescribePortalResponse::new(fields(&columns)))
    }
}

/// The handlers `pgwire` asks for.
struct Handlers(Arc<Backend>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }
}

/// Serves the Postgres protocol on the `serve.pg` address (`off`: none), on its own small
/// runtime; it serves until the runtime is dropped. Its `SUBSCRIBE`s follow `feeds`.
pub fn start(
    settings: &crate::config::Settings,
    serving: &Serving,
    feeds: &Feeds,
) -> anyhow::Result<Option<tokio::runtime::Runtime>> {
    let Some((runtime, listener)) = crate::serve::listen(&settings.serve.pg, "pg", "the Postgres protocol")? else {
        return Ok(None);
    };
    let bound = listener.local_addr()?;
    let engine = Engine::new(serving.clone(), settings.kafka.topic.clone(), settings.sql_limits());
    let backend = Arc::new(Backend::new(engine, feeds.clone(), settings.kafka.topic.clone()));
    runtime.spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a Postgres connection");
                    continue;
                }
            };
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let handlers = Arc::new(Handlers(Arc::clone(&backend)));
                if let Err(error) = pgwire::tokio::process_socket(socket, None, handlers).await {
                    tracing::debug!(%error, %peer, "a Postgres connection ended with an error");
                }
                backend.forget(peer);
            });
        }
    });
    tracing::info!(address = %bound, "serving SQL over the Postgres protocol (psql -h {} -p {} -U lambda lambda)", bound.ip(), bound.port());
    Ok(Some(runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_statements_name_their_view() {
        assert_eq!(subscribe_target("SUBSCRIBE customers"), Some("customers"));
        assert_eq!(subscribe_target("subscribe to big;"), Some("big"));
        assert_eq!(subscribe_target("COPY (SUBSCRIBE customers) TO STDOUT"), Some("customers"));
        assert_eq!(subscribe_target("COPY (SUBSCRIBE customers) TO '/tmp/x'"), None);
        assert_eq!(subscribe_target("SELECT * FROM customers"), None);
        assert_eq!(subscribe_target("SUBSCRIBE customers WITH (SNAPSHOT = false)"), None);
    }

    #[test]
    fn copy_lines_escape_text_and_write_nulls() {
        let row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"customer":"A\tb","total":400,"category":null}"#).unwrap();
        let names = ["customer".to_owned(), "total".to_owned(), "category".to_owned()];
        assert_eq!(copy_line(7, -1, &row, &names), "7\t-1\tA\\tb\t400\t\\N\n");
    }

    #[test]
    fn semicolons_split_statements_outside_quotes() {
        assert_eq!(statements("select 1; select ';' ;"), vec!["select 1", " select ';' "]);
        assert_eq!(parameters("select * from customers where customer = $1 and total > $2"), 2);
    }
}
