//! SQL over the Postgres wire protocol (`pgwire`): `psql -h 127.0.0.1 -p 6875 -U lambda
//! lambda`, `pgbench` with a custom script, and drivers (psycopg, JDBC) reach the same SQL
//! engine as the prompt and `POST /v1/sql`.
//!
//! Simple and extended queries are answered by the SQL engine ([`crate::sql`]); rows are
//! encoded from its Arrow batches by `arrow-pg`, in text or binary per column as the client
//! asks; parameters (`$1`) of extended queries are bound as typed values (never pasted into
//! the statement). Any user and database name is accepted; with a
//! secret (see [`crate::serve::access`]) the password must be it (SCRAM-SHA-256, in
//! `startup.rs`), else the server may listen on loopback only. A `CancelRequest` (psql's
//! Ctrl-C) ends the connection's running statement or `SUBSCRIBE`. Errors carry their SQLSTATE and, for syntax
//! errors, the position. Each answer is preceded by a NOTICE saying which logical time and
//! offsets it reflects (`as_of: time …, offsets …`; silenced by `SET client_min_messages =
//! warning`), and `SHOW as_of` says it again. `SUBSCRIBE view` (or `COPY (SUBSCRIBE view) TO STDOUT`, as in
//! Materialize) streams a view's changefeed as COPY text: `time, diff, columns...` per line.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use futures::{stream, Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type as PgType};
use pgwire::api::{ClientPortalStore, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;

use crate::serve::feed::Feeds;
use crate::sql::session::Session;
use crate::sql::{Answer, Engine, SqlError};

mod startup;
mod subscribe;

use subscribe::{send_copy_out, subscribe_target};

/// The backend every connection shares.
pub struct Backend {
    engine: Engine,
    parser: Arc<Parser>,
    /// Each session's settings (`SET`), and what its previous answer reflected.
    sessions: Mutex<HashMap<SocketAddr, Session>>,
    /// The changefeeds `SUBSCRIBE` follows.
    feeds: Feeds,
    /// What ends a connection's `SUBSCRIBE` on a `CancelRequest`.
    cancels: Arc<startup::Cancels>,
}

/// A statement as the extended protocol keeps it: its text, its parameters' types and its
/// columns, as DataFusion planned them when it was parsed.
#[derive(Clone, Debug)]
pub struct Prepared {
    text: String,
    parameters: Vec<Option<DataType>>,
    columns: Option<SchemaRef>,
}

/// Plans statements for the extended protocol (Parse), with the engine.
pub struct Parser {
    engine: Engine,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<PgType>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if sql.trim().trim_matches(';').trim().is_empty() {
            return Ok(None);
        }
        let (parameters, columns) = if subscribe_target(sql).is_some() {
            (Vec::new(), None)
        } else {
            self.engine.describe(sql).await.map_err(user_error)?
        };
        Ok(Some(Prepared { text: sql.to_owned(), parameters, columns }))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<PgType>> {
        Ok(statement
            .parameters
            .iter()
            .map(|ty| ty.as_ref().and_then(|t| arrow_pg::datatypes::into_pg_type(t).ok()).unwrap_or(PgType::UNKNOWN))
            .collect())
    }

    fn get_result_schema(&self, statement: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match &statement.columns {
            None => Ok(Vec::new()),
            Some(schema) => {
                arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None)
            }
        }
    }
}

impl Backend {
    /// A backend over a running pipeline, whose `SUBSCRIBE`s follow `feeds`.
    fn new(engine: Engine, feeds: Feeds, cancels: Arc<startup::Cancels>) -> Self {
        let parser = Arc::new(Parser { engine: engine.clone() });
        Backend { engine, parser, sessions: Mutex::default(), feeds, cancels }
    }

    /// A copy of `client`'s session (its settings), for one statement: kept as it was if the
    /// statement is cancelled.
    fn session(&self, client: SocketAddr) -> Session {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&client).cloned().unwrap_or_default()
    }

    /// Puts `client`'s session back.
    fn keep(&self, client: SocketAddr, session: Session) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(client, session);
    }

    /// Answers one statement in `format`; a query's answer is preceded by a NOTICE saying
    /// the time and offsets it reflects (as `SHOW as_of` does), unless the session's
    /// `client_min_messages` is above NOTICE.
    async fn answer<C>(&self, client: &mut C, statement: &str, format: &Format) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(view) = subscribe_target(statement) {
            let cancelled = self.cancels.watch(client);
            return self.subscribe(view, cancelled).await;
        }
        let address = client.socket_addr();
        tracing::debug!(client = %address, statement, "a SQL statement over the Postgres protocol");
        let mut session = self.session(address);
        let answer = self.engine.execute_in(&mut session, statement).await;
        self.notice_as_of(client, &session, answer.as_ref().ok()).await?;
        self.keep(address, session);
        response(answer.map_err(user_error)?, format)
    }

    /// The NOTICE of what `answer` reflects (see [`Backend::answer`]).
    async fn notice_as_of<C>(&self, client: &mut C, session: &Session, answer: Option<&Answer>) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(as_of) = answer.and_then(|a| a.as_of.as_ref()) else { return Ok(()) };
        if !session.notices() {
            return Ok(());
        }
        let text = crate::sql::session::as_of_text(as_of, self.engine.topic());
        let notice = ErrorInfo::new("NOTICE".into(), "00000".into(), format!("as_of: {text}"));
        client.send(PgWireBackendMessage::NoticeResponse(notice.into())).await?;
        Ok(())
    }

    /// Forgets a closed session.
    fn forget(&self, client: SocketAddr) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
        self.cancels.forget(client);
    }
}

/// An answer as pgwire sends it: its rows encoded by `arrow-pg` in `format` (text or
/// binary, per column), or its command tag.
fn response(answer: Answer, format: &Format) -> PgWireResult<Response> {
    match answer.tag.as_deref() {
        Some("BEGIN") => return Ok(Response::TransactionStart(Tag::new("BEGIN"))),
        Some(tag @ ("COMMIT" | "ROLLBACK")) => return Ok(Response::TransactionEnd(Tag::new(tag))),
        Some(tag) => return Ok(Response::Execution(Tag::new(tag))),
        None => {}
    }
    let fields = Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(&answer.schema, format, None)?);
    let mut rows = Vec::with_capacity(answer.len());
    for batch in answer.batches {
        for row in arrow_pg::datatypes::encode_recordbatch(Arc::clone(&fields), batch) {
            // A value that does not encode ends the answer there (the encoder would give the
            // same error for ever).
            let failed = row.is_err();
            rows.push(row);
            if failed {
                return Ok(Response::Query(QueryResponse::new(fields, stream::iter(rows))));
            }
        }
    }
    Ok(Response::Query(QueryResponse::new(fields, stream::iter(rows))))
}

fn user_error(error: SqlError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".to_owned(), error.code().to_owned(), error.to_string());
    info.position = error.position().map(|p| p.to_string());
    PgWireError::UserError(Box::new(info))
}

/// Statements of one simple query, split at semicolons outside quotes and comments.
fn statements(query: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quote, mut comment) = (0, None::<char>, false);
    let mut chars = query.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, comment, c) {
            (_, true, '\n') => comment = false,
            (_, true, _) => {}
            (None, false, '-') if chars.peek().map(|(_, n)| *n) == Some('-') => comment = true,
            (None, false, '\'' | '"') => quote = Some(c),
            (Some(q), false, c) if c == q => quote = None,
            (None, false, ';') => {
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
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut responses = Vec::new();
        for statement in statements(query) {
            match self.answer(client, statement, &Format::UnifiedText).await {
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

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        if prepared.parameters.is_empty() && portal.parameters.is_empty() {
            // In the portal's formats (binary columns for a driver that asks).
            return self.answer(client, &prepared.text, &portal.result_column_format).await;
        }
        // Parameters are bound as typed values: the client's types where it gave them, else
        // those DataFusion inferred — never pasted into the statement's text.
        let params = bind_parameters(portal)?;
        let address = client.socket_addr();
        let mut session = self.session(address);
        let answer = self.engine.execute_bound(&mut session, &prepared.text, params).await;
        self.notice_as_of(client, &session, answer.as_ref().ok()).await?;
        self.keep(address, session);
        response(answer.map_err(user_error)?, &portal.result_column_format)
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &target.statement;
        let mut types = self.parser.get_parameter_types(prepared)?;
        for (i, given) in target.parameter_types.iter().enumerate() {
            if let (Some(ty), Some(given)) = (types.get_mut(i), given) {
                *ty = given.clone();
            }
        }
        let fields = self.parser.get_result_schema(prepared, None)?;
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(&target.statement.statement, Some(&target.result_column_format))?;
        Ok(DescribePortalResponse::new(fields))
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
    engine: &Engine,
    feeds: &Feeds,
    access: &crate::serve::access::Access,
) -> anyhow::Result<Option<tokio::runtime::Runtime>> {
    let Some((runtime, listener)) = crate::serve::listen(&settings.serve.pg, "pg", "the Postgres protocol")? else {
        return Ok(None);
    };
    let bound = listener.local_addr()?;
    let starts = startup::Starts::new(access.secret());
    let cancel = Arc::new(startup::Cancels::new(&starts));
    let backend = Arc::new(Backend::new(engine.clone(), feeds.clone(), Arc::clone(&cancel)));
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

/// The portal's parameters as typed values for the statement's `$n`: decoded by arrow-pg
/// from the client's types (or those DataFusion inferred), then cast exactly to the type
/// the statement wants where the client sent another (an `int8` for a `numeric` column:
/// `total > $1` with `100`).
fn bind_parameters(portal: &Portal<Prepared>) -> PgWireResult<datafusion::common::ParamValues> {
    use datafusion::common::ParamValues;
    let wanted = &portal.statement.statement.parameters;
    let given = &portal.statement.parameter_types;
    let integer = |i: usize| {
        matches!(
            given.get(i).cloned().flatten(),
            Some(pgwire::api::Type::INT2 | pgwire::api::Type::INT4 | pgwire::api::Type::INT8)
        )
    };
    // arrow-pg casts integers to integer types only: it decodes those as `Int64` here.
    let decode: Vec<Option<&DataType>> = wanted
        .iter()
        .enumerate()
        .map(|(i, ty)| match ty {
            Some(DataType::Decimal128(..) | DataType::Decimal256(..)) if integer(i) => Some(&DataType::Int64),
            other => other.as_ref(),
        })
        .collect();
    let decoded = arrow_pg::datatypes::df::deserialize_parameters(portal, &decode)?;
    let ParamValues::List(mut values) = decoded else { return Ok(decoded) };
    for (value, wanted) in values.iter_mut().zip(wanted) {
        if let Some(wanted) = wanted {
            if value.value.data_type() != *wanted && !value.value.is_null() {
                value.value = value.value.cast_to(wanted).map_err(|e| {
                    PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
                        "ERROR".into(),
                        "22003".into(),
                        format!("parameter {} does not fit {wanted}: {e}", value.value),
                    )))
                })?;
            }
        }
    }
    Ok(ParamValues::List(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_split_statements_outside_quotes() {
        assert_eq!(statements("select 1; select ';' ;"), vec!["select 1", " select ';' "]);
        assert_eq!(statements("select 1 -- a ; comment\n; select 2"), vec!["select 1 -- a ; comment\n", " select 2"]);
    }
}
