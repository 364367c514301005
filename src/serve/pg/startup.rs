//! How a Postgres connection starts: with the secret (SCRAM-SHA-256, any user name) when one is
//! set, open otherwise (see [`crate::serve::access`]); and how a client's `CancelRequest`
//! reaches the statement it cancels.
//!
//! ```text
//! client ── StartupMessage ──► Startup::Scram ── AuthenticationSASL ──► client
//!        ── SCRAM first/final (proof from the secret) ──► AuthenticationOk … ReadyForQuery
//!        (a wrong password: FATAL 28P01, the connection closes)
//! psql Ctrl-C ── CancelRequest(pid, key) on a new connection ──► Cancels ──► that
//!        connection's running statement ends with 57014
//! ```
//!
//! The server keeps the secret only as SCRAM's salted key (RFC 5802: PBKDF2 with a random
//! salt, 4096 rounds), derived once at start.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, SCRAM_ITERATIONS};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::serve::access::Secret;

/// The secret as SCRAM asks it: a salt and the salted key.
#[derive(Debug)]
struct Salted {
    salt: Vec<u8>,
    key: Vec<u8>,
}

#[async_trait]
impl AuthSource for Salted {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(Some(self.salt.clone()), self.key.clone()))
    }
}

/// What every connection's start shares: the salted secret (if any), the connections that may
/// be cancelled, and their ids.
pub struct Starts {
    salted: Option<Arc<Salted>>,
    /// The running connections by `(pid, key)`, for `CancelRequest`s.
    connections: Arc<ConnectionManager>,
    ids: Arc<RandomPidSecretKeyGenerator>,
}

impl Starts {
    /// Starts that ask for `secret`, when given.
    pub fn new(secret: Option<&Secret>) -> Starts {
        let salted = secret.map(|secret| {
            let salt = crate::serve::access::random_bytes(16);
            let key = gen_salted_password(secret.text(), &salt, SCRAM_ITERATIONS);
            Arc::new(Salted { salt, key })
        });
        Starts { salted, connections: Arc::new(ConnectionManager::new()), ids: Arc::default() }
    }

    /// The start of one connection.
    pub fn start(&self) -> Startup {
        match &self.salted {
            None => Startup::Open(Open { connections: Arc::clone(&self.connections), ids: Arc::clone(&self.ids) }),
            Some(salted) => {
                let mut scram = ScramAuth::new(Arc::clone(salted) as Arc<dyn AuthSource>);
                scram.set_iterations(SCRAM_ITERATIONS);
                let handler = SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(scram)
                    .with_connection_manager(Arc::clone(&self.connections))
                    .with_pid_secret_key_generator(Arc::clone(&self.ids) as Arc<dyn PidSecretKeyGenerator>);
                Startup::Scram(Box::new(handler))
            }
        }
    }
}

/// A connection's start without a secret: any user, no password.
pub struct Open {
    connections: Arc<ConnectionManager>,
    ids: Arc<RandomPidSecretKeyGenerator>,
}

#[async_trait]
impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.connections))
    }

    fn pid_secret_key_generator(&self) -> &dyn PidSecretKeyGenerator {
        &*self.ids
    }
}

/// A connection's start, open or with the secret.
pub enum Startup {
    /// No secret.
    Open(Open),
    /// SCRAM-SHA-256 with the secret.
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(open) => open.on_startup(client, message).await,
            Startup::Scram(scram) => scram.on_startup(client, message).await,
        }
    }
}

/// The cancels of the server's connections: a `CancelRequest` (on a connection of its own,
/// naming another by its process id and secret key) ends that connection's running statement
/// — through pgwire's [`ConnectionManager`], while the statement's handler runs — and its
/// `SUBSCRIBE` stream, which goes on after its handler returned.
pub struct Cancels {
    connections: Arc<ConnectionManager>,
    /// The connections with a `SUBSCRIBE` streaming.
    watching: Mutex<HashMap<SocketAddr, Watching>>,
}

/// A connection's process id and key, and what tells its `SUBSCRIBE` stream it is cancelled.
type Watching = (i32, SecretKey, tokio::sync::watch::Sender<()>);

impl Cancels {
    /// The cancels of the connections `starts` starts.
    pub fn new(starts: &Starts) -> Cancels {
        Cancels { connections: Arc::clone(&starts.connections), watching: Mutex::default() }
    }

    /// What resolves (changes) when `client`'s connection is cancelled.
    pub fn watch<C: ClientInfo>(&self, client: &C) -> tokio::sync::watch::Receiver<()> {
        let (pid, key) = client.pid_and_secret_key();
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let entry = watching
            .entry(client.socket_addr())
            .or_insert_with(|| (pid, key.clone(), tokio::sync::watch::channel(()).0));
        *entry = (pid, key, entry.2.clone());
        entry.2.subscribe()
    }

    /// Forgets a closed connection.
    pub fn forget(&self, client: SocketAddr) {
        self.watching.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.connections.cancel(request.pid, &request.secret_key).await;
        let watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        for (pid, key, cancel) in watching.values() {
            if *pid == request.pid && key.eq_value(&request.secret_key) {
                cancel.send_replace(());
            }
        }
    }
}
