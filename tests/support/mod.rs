//! Helpers several integration tests share (`mod support;`). Each test binary compiles its own
//! copy and uses part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

use neon_connect::{Diagnosis, Error, Pool};
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

/// Asserts that `err` is diagnosis `want` and that its one-line `Display` is what the README's
/// troubleshooting table shows for it (see [`shows`]), so the table's "what you see" column is
/// checked against every real provocation.
#[track_caller]
pub fn assert_diagnosis(err: &Error, want: Diagnosis) {
    assert_eq!(err.diagnosis(), Some(want), "{err:#}");
    let example = readme_example(want);
    let text = err.to_string();
    assert!(
        shows(&example, &text),
        "the README's \"what you see\" for `{}` is not what users see:\n  README: {example}\n  real:   {text}",
        want.id()
    );
}

/// The "what you see" cell of `d`'s row in the README's troubleshooting table (a unit test
/// keeps the table equal to the catalogue, so this is also `Diagnosis::shows`).
pub fn readme_example(d: Diagnosis) -> String {
    let readme = include_str!("../../README.md");
    let start = format!("| `{}` | ", d.id());
    let row = readme
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| {
            panic!(
                "no row for `{}` in the README's troubleshooting table",
                d.id()
            )
        });
    // The second cell; a `|` inside a cell is written `\|`.
    let rest = &row[start.len()..];
    let mut cell = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => cell.push(chars.next().unwrap()),
            '|' => break,
            c => cell.push(c),
        }
    }
    cell.trim_end().to_owned()
}

/// Whether `text` is what `example` shows. An example may give alternatives separated by
/// ` / `; `text` must match one. In each, placeholders stand for anything: `...`, a
/// double-quoted name (`"host:5432"`, `"alex"`), a number (`15.0`, `10`), a path
/// (`/path/to/ca.pem`, also after `=`) and a host and port (`db1:5432`). The literal text between them must
/// appear in `text` in order, the first piece at its start (an example shows the start of the
/// message; the help line follows).
pub fn shows(example: &str, text: &str) -> bool {
    example
        .split(" / ")
        .any(|alternative| matches_pieces(&literal_pieces(alternative), text))
}

/// `example` split at its placeholders (see [`shows`]): the literal pieces, in order.
fn literal_pieces(example: &str) -> Vec<String> {
    let word_end = |s: &str| {
        s.find(|c: char| c.is_whitespace() || matches!(c, ',' | ')' | ';'))
            .unwrap_or(s.len())
    };
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let is_host_port = |word: &str| {
        word.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && !port.is_empty()
                && digits(port) == port.len()
        })
    };
    let mut pieces = vec![String::new()];
    let mut rest = example;
    let mut word_start = true;
    while let Some(c) = rest.chars().next() {
        let placeholder = if rest.starts_with("...") {
            3
        } else if c == '"' {
            rest[1..].find('"').map_or(rest.len(), |end| end + 2)
        } else if word_start && (c == '/' || is_host_port(&rest[..word_end(rest)])) {
            word_end(rest)
        } else if c.is_ascii_digit() {
            let whole = digits(rest);
            match rest[whole..].strip_prefix('.') {
                Some(frac) if digits(frac) > 0 => whole + 1 + digits(frac),
                _ => whole,
            }
        } else {
            0
        };
        if placeholder > 0 {
            pieces.push(String::new());
            rest = &rest[placeholder..];
            word_start = false;
        } else {
            pieces.last_mut().unwrap().push(c);
            rest = &rest[c.len_utf8()..];
            word_start = c.is_whitespace() || c == '(' || c == '=';
        }
    }
    pieces
}

fn matches_pieces(pieces: &[String], text: &str) -> bool {
    if !text.starts_with(pieces[0].as_str()) {
        return false;
    }
    let mut at = pieces[0].len();
    for piece in pieces[1..].iter().filter(|p| !p.is_empty()) {
        match text[at..].find(piece.as_str()) {
            Some(found) => at += found + piece.len(),
            None => return false,
        }
    }
    true
}
