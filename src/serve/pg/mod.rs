//! SQL over the Postgres wire protocol (`pgwire`): `psql -h 127.0.0.1 -p 6875 -U lambda
//! lambda`, `pgbench` with a custom script, and drivers (psycopg, JDBC) reach the same SQL
//! engine as the prompt and `POST /v1/sql`.
//!
//! Simple and extended queries are answered; columns are typed (`text`, `bigint`,
//! `numeric`, `timestamptz`, `boolean`) and sent in text format; parameters (`$1`) of
//! extended queries are bound as literals. Any user and database name is accepted; with a
//! secret (see [`crate::serve::access`]) the password must be it (SCRAM-SHA-256, in
//! `startup.rs`), else the server may listen on loopback only. A `CancelRequest` (psql's
//! Ctrl-C) ends the connection's running statement or `SUBSCRIBE`. Errors carry their SQLSTATE and, for syntax
//! errors, the position. `SHOW as_of` says which logical time and offsets the session's
//! previous answer reflects. `SUBSCRIBE view` (or `COPY (SUBSCRIBE view) TO STDOUT`, as in
//! Materialize) streams a view's changefeed as COPY text: `time, diff, columns...` per line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream;
use futures::{Sink, SinkExt};
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse, Response,
    Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type as PgType};
use pgwire::api::{ClientPortalStore, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;
use std::fmt::Debug;

use crate::reading::Reading;
use crate::serve::bound::Session;
use crate::serve::feed::Feeds;
use crate::serve::Serving;
use crate::sql::value::{Type, Value};
use crate::sql::{Answer, Column, Engine, SqlError};

mod startup;
mod subscribe;

use subscribe::{send_copy_out, subscribe_target};

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
    /// What ends a connection's `SUBSCRIBE` on a `CancelRequest`.
    cancels: Arc<startup::Cancels>,
}

impl Backend {
    /// A backend over a running pipeline, whose `SUBSCRIBE`s follow `feeds`.
    fn new(engine: Engine, feeds: Feeds, topic: impl Into<String>, cancels: Arc<startup::Cancels>) -> Self {
        let topic = topic.into();
        let parser = Arc::new(NoopQueryParser::new());
        Backend { engine, topic, parser, last: Mutex::default(), sessions: Mutex::default(), feeds, cancels }
    }

    async fn answer<C: ClientInfo>(&self, client: &C, statement: &str) -> PgWireResult<Response> {
        let address = client.socket_addr();
        if let Some(view) = subscribe_target(statement) {
            let cancelled = self.cancels.watch(client);
            return self.subscribe(view, cancelled).await;
        }
        self.answer_at(address, statement).await
    }

    async fn answer_at(&self, client: SocketAddr, statement: &str) -> PgWireResult<Response> {
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

    /// Forgets a closed session.
    fn forget(&self, client: SocketAddr) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
        self.cancels.forget(client);
    }
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
impl SimpleQueryHandler for Backend {
    /// A `SUBSCRIBE` is streamed here, as Postgres streams `COPY ... TO STDOUT`: a cancel (or the
    /// feed's end) in the middle ends it with an `ErrorResponse`, which libpq takes during a
    /// COPY — pgwire's own COPY sender would send a `CopyFail` first, which no client expects
    /// from a server. Every other query goes pgwire's way.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(view) = subscribe_target(&query.query) else { return self._on_query(client, query).await };
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let cancelled = self.cancels.watch(client);
        let Response::CopyOut(copy) = self.subscribe(view, cancelled).await? else {
            unreachable!("a subscription answers a COPY")
        };
        send_copy_out(client, copy).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = client.transaction_status();
        client.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status))).await?;
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut responses = Vec::new();
        for statement in statements(query) {
            match self.answer(client, statement).await {
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
        self.answer(client, &statement).await
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

/// The handlers `pgwire` asks for, for one connection.
struct Handlers {
    backend: Arc<Backend>,
    startup: Arc<startup::Startup>,
    cancel: Arc<startup::Cancels>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.backend)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.backend)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Serves the Postgres protocol on the `serve.pg` address (`off`: none), on its own small
/// runtime, to those `access` lets in; it serves until the runtime is dropped. Its
/// `SUBSCRIBE`s follow `feeds`.
pub fn start(
    settings: &crate::config::Settings,
    serving: &Serving,
    feeds: &Feeds,
    access: &crate::serve::access::Access,
) -> anyhow::Result<Option<tokio::runtime::Runtime>> {
    let Some((runtime, listener)) = crate::serve::listen(&settings.serve.pg, "pg", "the Postgres protocol")? else {
        return Ok(None);
    };
    let bound = listener.local_addr()?;
    let engine = Engine::new(serving.clone(), settings.kafka.topic.clone(), settings.sql_limits());
    let starts = startup::Starts::new(access.secret());
    let cancel = Arc::new(startup::Cancels::new(&starts));
    let backend = Arc::new(Backend::new(engine, feeds.clone(), settings.kafka.topic.clone(), Arc::clone(&cancel)));
    runtime.spawn(crate::serve::accept_each(listener, "a Postgres connection", move |socket, peer| {
        let handlers = Arc::new(Handlers {
            backend: Arc::clone(&backend),
            startup: Arc::new(starts.start()),
            cancel: Arc::clone(&cancel),
        });
        tokio::spawn(async move {
            let backend = Arc::clone(&handlers.backend);
            if let Err(error) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%error, %peer, "a Postgres connection ended with an error");
            }
            backend.forget(peer);
        });
    }));
    let password = if access.secret().is_some() { " (password: the secret)" } else { "" };
    tracing::info!(address = %bound, "serving SQL over the Postgres protocol (psql -h {} -p {} -U lambda lambda){password}", bound.ip(), bound.port());
    Ok(Some(runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_split_statements_outside_quotes() {
        assert_eq!(statements("select 1; select ';' ;"), vec!["select 1", " select ';' "]);
        assert_eq!(parameters("select * from customers where customer = $1 and total > $2"), 2);
    }
}
