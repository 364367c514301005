//! Who may talk to the pipeline: one secret for both front ends, and loopback by default.
//!
//! | | no secret (the default) | a secret (`--password-file FILE` or `LAMBDA_PASSWORD`) |
//! |---|---|---|
//! | where it may listen | loopback only (`127.0.0.1`, `::1`); any other address is refused at start unless `--insecure-no-auth` says so | anywhere |
//! | HTTP | any request whose `Host` is this machine's loopback name | `Authorization: Bearer <secret>` (or the dashboard's session cookie) on every route but `/healthz` and the dashboard's page |
//! | Postgres | any user, no password | SCRAM-SHA-256 with the secret, any user name |
//!
//! Whatever the secret, a browser page of another site cannot act on the pipeline through the
//! user's browser: requests that change something (every method but `GET`/`HEAD`) with a
//! foreign `Origin` are refused, their bodies must be of a type a page cannot send without
//! asking first (`application/json`, `application/sql`, …), and a `Host` that is not this
//! server's loopback name (what DNS rebinding needs) is refused on a loopback server. The HTTP
//! side of these rules is in `serve/http/guard.rs`; the Postgres side in `serve/pg.rs`.
//!
//! ```text
//! $ lambda run --http 0.0.0.0:8080
//! error: --http 0.0.0.0:8080 can be reached from other machines and no secret is set: ...
//! $ echo 's3cret' > secret.txt && lambda run --http 0.0.0.0:8080 --password-file secret.txt
//! $ curl -H 'Authorization: Bearer s3cret' http://host:8080/v1/status
//! $ PGPASSWORD=s3cret psql -h host -p 6875 -U lambda lambda
//! ```

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ServeSettings;

/// The environment variable the secret is read from when no password file is given.
pub const PASSWORD_VARIABLE: &str = "LAMBDA_PASSWORD";

/// The one secret; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret of this text.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// Whether `given` is the secret, compared in time that does not depend on where they
    /// differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        same_bytes(self.0.as_bytes(), given)
    }

    /// The secret's text, for the Postgres handshake that derives its keys from it.
    pub fn text(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `a == b` in time that depends only on their lengths.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the front ends cannot be served as configured.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The password file cannot be read.
    #[error("cannot read the password file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is empty (a file of only white space, an empty variable).
    #[error("the secret in {0} is empty")]
    Empty(String),
    /// A front end would listen where other machines reach it, with nothing to keep them out.
    #[error(
        "--{flag} {address} can be reached from other machines and no secret is set: give \
         --password-file FILE (or set {PASSWORD_VARIABLE}), listen on 127.0.0.1, or accept that \
         anyone who reaches it may read and change the views with --insecure-no-auth"
    )]
    Open {
        /// The front end's flag (`http`, `pg`).
        flag: &'static str,
        /// Its address.
        address: String,
    },
}

/// Who may talk to the front ends of one process.
#[derive(Clone, Debug)]
pub struct Access {
    secret: Option<Secret>,
    /// The value of the dashboard's session cookie: random, for this process's life.
    session: String,
}

impl Access {
    /// The access `serve` asks for: the secret from its file or the environment, and every
    /// address it listens on checked against it.
    pub fn of(serve: &ServeSettings) -> Result<Access, AccessError> {
        let secret = match &serve.password_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| AccessError::Read { path: path.clone(), source })?;
                Some(secret_of(&text).ok_or_else(|| AccessError::Empty(path.display().to_string()))?)
            }
            None => match std::env::var(PASSWORD_VARIABLE) {
                Ok(text) => Some(secret_of(&text).ok_or_else(|| AccessError::Empty(PASSWORD_VARIABLE.into()))?),
                Err(_) => None,
            },
        };
        if secret.is_none() {
            for (flag, address) in [("http", &serve.http), ("pg", &serve.pg)] {
                if !reaches_others(address) {
                    continue;
                }
                if !serve.insecure_no_auth {
                    return Err(AccessError::Open { flag, address: address.clone() });
                }
                tracing::warn!(
                    "--{flag} {address}: served without a secret (--insecure-no-auth): anyone who reaches it \
                     may read every view and create or drop views"
                );
            }
        }
        Ok(Access::with(secret))
    }

    /// Access with this secret (none: loopback rules only).
    pub fn with(secret: Option<Secret>) -> Access {
        Access { secret, session: random_hex(32) }
    }

    /// The secret, if one is set.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    /// Whether `token` is the dashboard's session cookie of this process.
    pub fn is_session(&self, token: &str) -> bool {
        same_bytes(self.session.as_bytes(), token.as_bytes())
    }

    /// The dashboard's session cookie's value.
    pub fn session(&self) -> &str {
        &self.session
    }
}

/// The secret in a file's or variable's text: without its line end; `None` when empty.
fn secret_of(text: &str) -> Option<Secret> {
    let text = text.trim_end_matches(['\n', '\r']);
    (!text.trim().is_empty()).then(|| Secret::new(text))
}

/// Whether a listener on `address` (as `--http`/`--pg` give it) can be reached from other
/// machines: any address but loopback and `off`.
pub fn reaches_others(address: &str) -> bool {
    let address = address.trim();
    if address.is_empty() || address == "off" {
        return false;
    }
    address.parse::<SocketAddr>().map_or(true, |a| !a.ip().is_loopback())
}

/// `bytes` random bytes as hex, from the operating system.
fn random_hex(bytes: usize) -> String {
    random_bytes(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` random bytes, from the operating system.
pub fn random_bytes(bytes: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; bytes];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buffer));
    if read.is_err() {
        // No /dev/urandom: the standard library's per-process random keys, hashed.
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in buffer.chunks_mut(8).enumerate() {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(http: &str, pg: &str) -> ServeSettings {
        ServeSettings { http: http.into(), pg: pg.into(), ..ServeSettings::default() }
    }

    #[test]
    fn an_open_address_without_a_secret_is_refused_unless_told() {
        std::env::remove_var(PASSWORD_VARIABLE);
        assert!(Access::of(&serve("127.0.0.1:8080", "[::1]:6875")).is_ok());
        assert!(Access::of(&serve("off", "127.0.0.1:0")).is_ok());
        let error = Access::of(&serve("0.0.0.0:8080", "127.0.0.1:6875")).unwrap_err();
        assert!(matches!(error, AccessError::Open { flag: "http", .. }), "{error}");
        let error = Access::of(&serve("127.0.0.1:8080", "192.168.1.4:6875")).unwrap_err();
        assert!(matches!(error, AccessError::Open { flag: "pg", .. }), "{error}");
        let insecure = ServeSettings { insecure_no_auth: true, ..serve("0.0.0.0:8080", "0.0.0.0:6875") };
        assert!(Access::of(&insecure).unwrap().secret().is_none());
    }

    #[test]
    fn a_password_file_opens_any_address() {
        let dir = std::env::temp_dir().join(format!("access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret.txt");
        std::fs::write(&file, "s3 cret\n").unwrap();
        let settings = ServeSettings { password_file: Some(file.clone()), ..serve("0.0.0.0:8080", "0.0.0.0:6875") };
        let access = Access::of(&settings).unwrap();
        let secret = access.secret().unwrap();
        assert!(secret.matches(b"s3 cret") && !secret.matches(b"s3 cret\n") && !secret.matches(b"s3"));
        assert_eq!(format!("{secret:?}"), "Secret(..)", "never printed");
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(Access::of(&settings), Err(AccessError::Empty(_))));
        let missing = ServeSettings { password_file: Some(dir.join("none")), ..settings };
        assert!(matches!(Access::of(&missing), Err(AccessError::Read { .. })));
    }

    #[test]
    fn sessions_are_random_and_compared_whole() {
        let (a, b) = (Access::with(None), Access::with(None));
        assert_ne!(a.session(), b.session());
        assert_eq!(a.session().len(), 64);
        assert!(a.is_session(a.session()) && !a.is_session(b.session()) && !a.is_session(""));
    }
}
