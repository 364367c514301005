//! Who may talk to the pipeline (issue 25, `SECURITY.md`), through the real `lambda run`: a
//! web page of another site cannot act through the user's browser; a secret guards both front
//! ends; an address other machines reach is refused without one.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::live::*;
use common::temp_dir;

fn workshop() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/transactions.json")
}

/// `lambda run` on the workshop's history with `extra` flags and environment `env`, its stderr
/// in `dir/stderr.txt`; never with a secret from the developer's own environment.
fn run(broker: &TestBroker, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Killed {
    let mut command = lambda();
    command
        .args(["run", "--brokers", &broker.address(), "--workers", "1"])
        .arg("--input")
        .arg(workshop())
        .arg("--dead-letters")
        .arg(dir.join("dead.jsonl"))
        .args(extra)
        .env_remove("LAMBDA_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    Killed(command.spawn().expect("lambda run starts"))
}

/// `POST /v1/sql` of `statement` with these extra header lines: the status and the answer.
fn post(address: &str, headers: &str, statement: &str) -> (u16, String) {
    raw_http(address, &format!("POST /v1/sql HTTP/1.1\r\n{headers}"), statement)
}

#[test]
fn a_page_of_another_site_cannot_act_through_the_browser() {
    let dir = temp_dir("access-cross-site");
    let broker = TestBroker::mock();
    let http = format!("127.0.0.1:{}", free_port());
    let _run = run(&broker, &dir, &["--http", &http, "--pg", "off"], &[]);
    wait_listening(&http, "lambda run's HTTP API");
    let own = format!("Host: {http}\r\nContent-Type: application/sql");
    let create = "CREATE VIEW crossed AS SELECT customer, count(*) AS n FROM transactions GROUP BY customer";

    // A form or a fetch with a simple body from another site: refused before any statement runs.
    let (status, answer) = post(&http, &format!("{own}\r\nOrigin: http://evil.example"), create);
    assert_eq!(status, 403, "a foreign Origin: {answer}");
    let (status, answer) = post(&http, &format!("Host: {http}\r\nContent-Type: text/plain"), create);
    assert_eq!(status, 415, "a body any page may send: {answer}");
    let (status, answer) =
        post(&http, &format!("Host: {http}\r\nContent-Type: application/x-www-form-urlencoded"), create);
    assert_eq!(status, 415, "a form: {answer}");
    let (status, answer) = post(&http, &format!("{own}\r\nSec-Fetch-Site: cross-site"), create);
    assert_eq!(status, 403, "{answer}");
    // DNS rebinding: the attacker's name, pointed at 127.0.0.1, is in the Host header.
    let (status, answer) = post(&http, "Host: evil.example:8080\r\nContent-Type: application/sql", create);
    assert_eq!(status, 403, "a foreign Host: {answer}");
    let (status, answer) = raw_http(&http, "GET /v1/status HTTP/1.1\r\nHost: evil.example", "");
    assert_eq!(status, 403, "reads too are refused to a foreign Host: {answer}");
    assert_eq!(http_get(&http, "/v1/views/crossed").0, 404, "no refused statement ran");

    // The server's own page, and a client of its own, may.
    let (status, answer) = post(&http, &format!("{own}\r\nOrigin: http://{http}"), create);
    assert_eq!(status, 200, "{answer}");
    let json = format!("Host: localhost:{}\r\nContent-Type: application/json", http.rsplit(':').next().unwrap());
    let (status, answer) = post(&http, &json, r#"{"sql": "SELECT count(*) FROM crossed"}"#);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""rows":[[3]]"#), "{answer}");
    let (status, answer) = raw_http(&http, "PUT /v1/sql HTTP/1.1\r\nHost: localhost", "");
    assert_eq!(status, 405, "{answer}");
    assert!(answer.contains("/v1/sql does not take PUT"), "405 says why: {answer}");
}

#[test]
fn a_secret_guards_http_and_the_postgres_protocol() {
    let dir = temp_dir("access-secret");
    let broker = TestBroker::mock();
    let http = format!("127.0.0.1:{}", free_port());
    let pg = free_port();
    let pg_address = format!("127.0.0.1:{pg}");
    let _run = run(&broker, &dir, &["--http", &http, "--pg", &pg_address], &[("LAMBDA_PASSWORD", "s3cret")]);
    wait_listening(&http, "lambda run's HTTP API");
    wait_listening(&pg_address, "lambda run's Postgres protocol");

    let host = format!("Host: {http}");
    let (status, answer) = raw_http(&http, &format!("GET /v1/status HTTP/1.1\r\n{host}"), "");
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
    let (status, _) = raw_http(&http, &format!("GET /v1/status HTTP/1.1\r\n{host}\r\nAuthorization: Bearer nope"), "");
    assert_eq!(status, 401);
    let bearer = format!("{host}\r\nAuthorization: Bearer s3cret");
    let (status, answer) = raw_http(&http, &format!("GET /v1/status HTTP/1.1\r\n{bearer}"), "");
    assert_eq!(status, 200, "{answer}");
    let (status, _) = post(&http, &format!("{host}\r\nContent-Type: application/sql"), "SELECT 1");
    assert_eq!(status, 401, "a statement needs the secret too");
    let (status, answer) =
        post(&http, &format!("{bearer}\r\nContent-Type: application/sql"), "SELECT count(*) FROM customers");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(raw_http(&http, &format!("GET /healthz HTTP/1.1\r\n{host}"), "").0, 200, "liveness is open");

    // The dashboard: its page is open (it holds no data) and asks for the secret, which it
    // trades for a session cookie that the feeds carry.
    let (status, page) = raw_http(&http, &format!("GET / HTTP/1.1\r\n{host}"), "");
    assert_eq!(status, 200);
    assert!(page.contains(r#""secret":true"#), "the page knows to ask");
    let login = format!("POST /v1/login HTTP/1.1\r\n{host}\r\nContent-Type: application/json");
    let started = Instant::now();
    let (status, _) = raw_http(&http, &login, r#"{"password":"guess"}"#);
    assert_eq!(status, 401);
    assert!(started.elapsed() >= Duration::from_millis(200), "a wrong guess is slowed down");
    let (status, answer) = raw_http(&http, &login, r#"{"password":"s3cret"}"#);
    assert_eq!(status, 204, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let (status, _) = raw_http(&http, &format!("GET /v1/status HTTP/1.1\r\n{host}\r\nCookie: {session}"), "");
    assert_eq!(status, 200, "the cookie opens the API");
    let (status, _) = raw_http(&http, &format!("GET /v1/status HTTP/1.1\r\n{host}\r\nCookie: lambda_session=0000"), "");
    assert_eq!(status, 401, "another cookie does not");

    // psql: SCRAM-SHA-256 with the secret, any user name; a wrong password is refused.
    let psql = |password: &str| {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &pg.to_string(), "-U", "anyone", "-d", "lambda", "-X", "-A", "-t"])
            .args(["-c", "SELECT count(*) FROM customers"])
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("psql is installed (./test installs it)")
    };
    let out = psql("s3cret");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let out = psql("guess");
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.to_lowercase().contains("password authentication failed"), "{error}");
}

/// Waits for `child` to exit within `within`; its status, or `None` if it still runs.
fn exit_within(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_address_other_machines_reach_needs_a_secret_or_says_it_is_insecure() {
    let dir = temp_dir("access-open");
    let broker = TestBroker::mock();
    let port = free_port();
    let open = format!("0.0.0.0:{port}");

    let mut refused = run(&broker, &dir, &["--http", &open, "--pg", "off"], &[]);
    let status = exit_within(&mut refused.0, Duration::from_secs(30)).expect("refused at start");
    assert!(!status.success());
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    assert!(stderr.contains("--password-file") && stderr.contains("--insecure-no-auth"), "{stderr}");
    let mut refused = run(&broker, &dir, &["--http", "off", "--pg", &open], &[]);
    assert!(!exit_within(&mut refused.0, Duration::from_secs(30)).expect("refused at start").success());

    let mut insecure = run(&broker, &dir, &["--http", &open, "--pg", "off", "--insecure-no-auth"], &[]);
    let local = format!("127.0.0.1:{port}");
    wait_listening(&local, "lambda run --insecure-no-auth");
    assert!(exit_within(&mut insecure.0, Duration::from_millis(100)).is_none());
    assert_eq!(http_get(&local, "/v1/status").0, 200);
    drop(insecure);
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    assert!(stderr.contains("without a secret"), "a warning: {stderr}");

    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "pa55word\n").unwrap();
    let port = free_port();
    let _guarded = run(
        &broker,
        &dir,
        &["--http", &format!("0.0.0.0:{port}"), "--pg", "off", "--password-file", secret.to_str().unwrap()],
        &[],
    );
    let local = format!("127.0.0.1:{port}");
    wait_listening(&local, "lambda run --password-file");
    assert_eq!(http_get(&local, "/v1/status").0, 401);
    let (status, _) =
        raw_http(&local, &format!("GET /v1/status HTTP/1.1\r\nHost: {local}\r\nAuthorization: Bearer pa55word"), "");
    assert_eq!(status, 200, "the file's line is the secret, without its line end");
}
