//! Helpers several integration tests share (`mod support;`). Each test binary compiles its own
//! copy and uses part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

use neon_connect::Pool;
use neon_connect_testing::{trust_test_ca_as_system_store, PgServer, ServerOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The process's shared server, with the test CA as the "system" root store
/// (`SSL_CERT_FILE`), so URLs without `sslmode` mean verify-full against it.
pub fn shared_server() -> &'static PgServer {
    trust_test_ca_as_system_store().expect("test CA bundle");
    PgServer::shared()
}

/// A private server started with `opts`, with the test CA as the "system" root store.
pub fn start_server(opts: ServerOptions) -> PgServer {
    trust_test_ca_as_system_store().expect("test CA bundle");
    PgServer::start(opts).expect("start server")
}

/// The server's URL with `sslmode=verify-full` against its CA file.
pub fn verified_url(s: &PgServer) -> String {
    format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        s.url(),
        s.ca_file().display()
    )
}

/// A port on 127.0.0.1 nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `SELECT 1` through the pool; the error as text.
pub async fn select_one(pool: &Pool) -> Result<i32, String> {
    let client = pool.get().await.map_err(|e| format!("get: {e:#}"))?;
    let row = client
        .query_one("SELECT 1", &[])
        .await
        .map_err(|e| format!("query: {e}"))?;
    Ok(row.get(0))
}

/// Asserts that none of `secrets` appears in `text`, which `what` names.
#[track_caller]
pub fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} leaks a secret ({secret:?}):\n{text}"
        );
    }
}

/// Captures the `tracing` output of the thread that installs it (current-thread runtimes
/// only) at up to `level`.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Makes this capture the thread's subscriber until the guard is dropped.
    pub fn install(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
