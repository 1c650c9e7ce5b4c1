//! The mistakes users actually make, each provoked as a new user would make it: the error is
//! one line that says what is wrong and where the fix goes, is not retried when a retry cannot
//! help, and never shows a password or a piece of one.

mod support;

use neon_connect::{ConnectionString, Diagnosis, Error, ErrorKind, Options};
use neon_connect_testing::{trust_test_ca_as_system_store, PgServer};
use std::time::{Duration, Instant};

const SECRET: &str = "Sec";

/// Connects with settings parsed from `url` (no environment, no password file) and returns the
/// error, after the checks every error must pass.
async fn connect_fails(cs: ConnectionString) -> (Error, Duration) {
    trust_test_ca_as_system_store().expect("test CA bundle");
    let started = Instant::now();
    let err = Options::from_connection_string(cs)
        .connect_timeout(Duration::from_secs(4))
        .connect()
        .await
        .expect_err("must fail");
    let line = err.to_string();
    assert!(!line.contains('\n'), "not one line: {line}");
    assert!(line.contains("; help: "), "no fix: {line}");
    (err, started.elapsed())
}

/// The parse error of `s`, after checking that no piece of the password `Sec...` shows.
fn parse_fails(s: &str) -> Error {
    let err = ConnectionString::parse(s).expect_err(s);
    let all = format!("{err} {err:#} {err:?}");
    assert!(
        !all.contains(SECRET),
        "{s}: a piece of the password shows: {all}"
    );
    assert_eq!(err.kind(), ErrorKind::ConnectionString, "{s}: {err:#}");
    err
}

#[tokio::test]
async fn no_password_anywhere() {
    let server = PgServer::shared();
    let url = format!(
        "postgresql://{}@localhost:{}/{}",
        server.user(),
        server.port(),
        server.dbname()
    );
    let (err, took) = connect_fails(ConnectionString::parse(&url).unwrap()).await;
    support::assert_diagnosis(&err, Diagnosis::PasswordMissing);
    assert!(!err.is_retryable());
    assert!(took < Duration::from_secs(3), "retried: {took:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "the server \"localhost:{}\" asks for a password for user \"{}\", and none was given",
            server.port(),
            server.user()
        )),
        "{err}"
    );
    assert!(err.help().unwrap().contains("PGPASSWORD"));
}

#[tokio::test]
async fn a_pgsslmode_left_in_the_shell_is_named() {
    let server = PgServer::shared();
    let env = |k: &str| (k == "PGSSLMODE").then(|| "disable".to_string());
    let cs = ConnectionString::parse_with_env(&server.url(), env).unwrap();
    let (err, _) = connect_fails(cs).await;
    assert_eq!(err.kind(), ErrorKind::TlsPolicy);
    assert!(
        err.to_string().starts_with(
            "`PGSSLMODE=disable` (from the environment) is refused: neon-connect never connects without TLS over TCP; help: unset PGSSLMODE"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_unix_socket_that_does_not_exist() {
    let dir = std::env::temp_dir().join("neon-connect-no-server-here");
    let cs = ConnectionString::parse(&format!("host={} user=app", dir.display())).unwrap();
    let (err, took) = connect_fails(cs).await;
    support::assert_diagnosis(&err, Diagnosis::UnixSocketMissing);
    assert!(!err.is_retryable());
    assert!(took < Duration::from_secs(2), "retried: {took:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "no PostgreSQL server socket exists at \"{}:5432\" ({}/.s.PGSQL.5432)",
            dir.display(),
            dir.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn target_session_attrs_that_no_host_satisfies() {
    let server = PgServer::shared();
    let cs = ConnectionString::parse(&format!("{}?target_session_attrs=read-only", server.url()))
        .unwrap();
    let (err, took) = connect_fails(cs).await;
    support::assert_diagnosis(&err, Diagnosis::TargetSessionAttrsUnmatched);
    assert_ne!(err.kind(), ErrorKind::Network);
    assert!(!err.is_retryable());
    assert!(took < Duration::from_secs(3), "retried: {took:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "the server \"localhost:{}\" is a primary, and `target_session_attrs=read-only` asks for a read-only server",
            server.port()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_timeout_reports_the_time_it_waited() {
    trust_test_ca_as_system_store().expect("test CA bundle");
    // A peer that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cs = ConnectionString::parse(&format!(
        "postgresql://app:{SECRET}ret@localhost:{port}/db?connect_timeout=2"
    ))
    .unwrap();
    let err = Options::from_connection_string(cs)
        .connect()
        .await
        .expect_err("times out");
    hold.abort();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:#}");
    support::assert_diagnosis(&err, Diagnosis::TimeoutTls);
    let line = err.to_string();
    assert!(!line.contains("after 0.0s"), "{line}");
    assert!(
        line.starts_with("timed out after 2.0s during the TLS request"),
        "{line}"
    );
}

#[test]
fn host_names_no_server_can_have() {
    let err = parse_fails("postgresql://app@192.000.002.001/db");
    assert_eq!(
        err.to_string(),
        "the host \"192.000.002.001\" in `host` is not a valid IP address: leading zeros are ambiguous (some resolvers read them as octal); help: write it without leading zeros: `192.0.2.1`"
    );
    let err = parse_fails("host='a\u{0}b' user=app");
    assert!(err
        .to_string()
        .starts_with("a host in `host` contains a NUL character"));
}

#[test]
fn unencoded_characters_in_a_url_password_never_show() {
    for url in [
        // `?` then `=`: the user info cannot be told from the host and its "port".
        "postgresql://neon:Sec?ret=x@localhost/neondb",
        // `/` and `?` in the password.
        "postgresql://neon:Sec/ret?x@localhost/neondb",
        "postgresql://neon:Sec/ret@localhost:5432/neondb",
        // `#` then `/`.
        "postgresql://neon:Sec#ret/x@localhost/neondb",
        // A whole URL where a host belongs (host=, or PGHOST).
        "host=postgresql://neon:Secret@localhost/neondb",
    ] {
        let err = parse_fails(url);
        assert!(
            err.help().unwrap().contains("percent-encode")
                || err.help().unwrap().contains("give the URL itself"),
            "{url}: {err}"
        );
    }
    let env = |k: &str| (k == "PGHOST").then(|| "postgresql://neon:Secret@h/db".to_string());
    let err = ConnectionString::parse_with_env("user=app", env).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    assert!(err.to_string().starts_with(
        "the environment variable `PGHOST` holds a whole connection URL, not a host name"
    ));
}
