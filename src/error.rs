//! The crate's one error type: a kind to match on, the step that failed, a help line with
//! the fix, and the underlying cause in [`std::error::Error::source`].

use crate::diagnostics::Diagnosis;
use std::error::Error as StdError;
use std::fmt;

type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is. Match on this, not on the message text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection string or an environment variable is malformed or names an unknown key.
    ConnectionString,
    /// The settings are well formed but our TLS policy refuses them (for example `sslmode=disable`).
    TlsPolicy,
    /// The root certificates (system store, `sslrootcert` file) could not be loaded.
    RootCertificates,
    /// The client certificate or key (`sslcert`, `sslkey`) could not be loaded or do not match.
    ClientCertificate,
    /// The server's certificate was rejected (unknown issuer, wrong host name, expired, ...).
    Certificate,
    /// The server refused or lacks TLS, or broke the TLS negotiation in a way that looks like tampering.
    TlsRefused,
    /// The TLS handshake failed for another reason (protocol version, alert, ALPN).
    TlsHandshake,
    /// The host name could not be resolved.
    Dns,
    /// The TCP connection failed or was cut (refused, unreachable, reset).
    Network,
    /// A step took longer than its deadline.
    Timeout,
    /// The server rejected our credentials or the authentication exchange failed.
    Authentication,
    /// The server (or Neon's proxy) refused the connection after login for another reason.
    Server,
    /// The pool could not hand out a connection in time, or was closed.
    Pool,
    /// The connection was closed by the server.
    Closed,
    /// A statement failed: the server's error (with its SQLSTATE), or a value that could not
    /// be converted.
    Query,
}

impl ErrorKind {
    /// A short lowercase name for the kind, stable across versions.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectionString => "connection string",
            ErrorKind::TlsPolicy => "tls policy",
            ErrorKind::RootCertificates => "root certificates",
            ErrorKind::ClientCertificate => "client certificate",
            ErrorKind::Certificate => "certificate",
            ErrorKind::TlsRefused => "tls refused",
            ErrorKind::TlsHandshake => "tls handshake",
            ErrorKind::Dns => "dns",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Authentication => "authentication",
            ErrorKind::Server => "server",
            ErrorKind::Pool => "pool",
            ErrorKind::Closed => "closed",
            ErrorKind::Query => "query",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of connection setup at which a failure happened.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Reading the connection string, environment and certificate files.
    Config,
    /// Resolving the host name.
    Dns,
    /// Opening the TCP (or Unix socket) connection.
    Tcp,
    /// Asking the server for TLS (the SSLRequest) and reading its one-byte answer.
    TlsRequest,
    /// The TLS handshake, including certificate verification.
    TlsHandshake,
    /// Authentication (password, SCRAM, channel binding).
    Authentication,
    /// Session startup after authentication (parameters, the first check query).
    Startup,
    /// Waiting for a pooled connection.
    Pool,
    /// Running a statement on an open connection.
    Query,
}

impl Step {
    /// A short lowercase name for the step, as used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Config => "configuration",
            Step::Dns => "DNS lookup",
            Step::Tcp => "TCP connect",
            Step::TlsRequest => "TLS request",
            Step::TlsHandshake => "TLS handshake",
            Step::Authentication => "authentication",
            Step::Startup => "session startup",
            Step::Pool => "pool checkout",
            Step::Query => "query",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned by everything in this crate.
///
/// `{}` prints one line: the message, then `; help: ` and the one thing to change.
/// `{:#}` (or [`Error::report`]) prints every cause in the chain once, each host's failure,
/// and the help on its own line. The password is never part of any of it.
///
/// Query errors convert with `?`: `client.query(...).await?` in a function returning this
/// `Error` gives a readable, classified error ([`Error::diagnosis`]) with the server's
/// SQLSTATE, message, detail and hint in one line, and [`Error::as_db_error`] for the rest.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    step: Option<Step>,
    host: Option<String>,
    message: String,
    help: Option<String>,
    retryable: bool,
    diagnosis: Option<Diagnosis>,
    source: Option<Cause>,
    attempts: Vec<Error>,
}

impl Error {
    /// A new error of `kind` with a lowercase one-line `message`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            step: None,
            host: None,
            message: message.into(),
            help: None,
            retryable: false,
            diagnosis: None,
            source: None,
            attempts: Vec::new(),
        }))
    }

    /// A connection string error; the message names the key, never a password.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::ConnectionString, message).with_step(Step::Config)
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    pub(crate) fn with_step(mut self, step: Step) -> Self {
        self.0.step = Some(step);
        self
    }

    pub(crate) fn with_host(mut self, host: impl Into<String>) -> Self {
        self.0.host = Some(host.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    pub(crate) fn retryable(mut self, retryable: bool) -> Self {
        self.0.retryable = retryable;
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.0.message = message.into();
        self
    }

    pub(crate) fn with_diagnosis(mut self, d: Diagnosis) -> Self {
        self.0.diagnosis = Some(d);
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: Vec<Error>) -> Self {
        self.0.attempts = attempts;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// What went wrong, finer than [`Error::kind`] (for example
    /// [`Diagnosis::NeonEndpointNotSpecified`]); [`Diagnosis::id`] is its stable text form, and
    /// the README's troubleshooting table lists them all.
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        self.0.diagnosis
    }

    /// The step of connection setup that failed, when the failure happened while connecting.
    pub fn step(&self) -> Option<Step> {
        self.0.step
    }

    /// The `host:port` the failure concerns, when there is one.
    pub fn host(&self) -> Option<&str> {
        self.0.host.as_deref()
    }

    /// The one-line message, without the help line.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The one thing to change, when we know it.
    pub fn help(&self) -> Option<&str> {
        self.0.help.as_deref()
    }

    /// Whether trying again, unchanged, can succeed (a busy or waking server, a network blip).
    pub fn is_retryable(&self) -> bool {
        self.0.retryable
    }

    /// When every host of a multi-host connection string failed: each host's own error, in order.
    pub fn attempts(&self) -> &[Error] {
        &self.0.attempts
    }

    /// The server's error, when the failure is an error the server (or proxy) sent.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        let mut cur: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(e) = cur {
            if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
                return Some(db);
            }
            cur = e.source();
        }
        None
    }

    /// The full report: message, every cause once, each host's failure, and the help line.
    pub fn report(&self) -> String {
        format!("{self:#}")
    }
}

impl fmt::Display for Error {
    /// `{}`: one line, the message then `; help: ` and the fix, for logs and JSON bodies.
    /// `{:#}`: the message, every cause once, each host's failure, and `help:` on its own line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        if !f.alternate() {
            if let Some(help) = &self.0.help {
                write!(f, "; help: {help}")?;
            }
            return Ok(());
        }
        let mut cur = self.source();
        let mut seen: Vec<String> = vec![self.0.message.clone()];
        while let Some(e) = cur {
            let text = e.to_string();
            if !text.is_empty() && !seen.iter().any(|s| s.contains(&text)) {
                write!(f, "\n  caused by: {text}")?;
                seen.push(text);
            }
            cur = e.source();
        }
        for attempt in &self.0.attempts {
            write!(f, "\n  - {}", attempt.message())?;
        }
        if let Some(help) = &self.0.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("step", &self.0.step)
            .field("host", &self.0.host)
            .field("message", &self.0.message)
            .field("help", &self.0.help)
            .field("retryable", &self.0.retryable)
            .field("diagnosis", &self.0.diagnosis);
        if let Some(source) = &self.0.source {
            // Causes are ours, rustls's, io's or tokio-postgres's: none carries the password.
            d.field("source", &source.to_string());
        }
        if !self.0.attempts.is_empty() {
            d.field("attempts", &self.0.attempts);
        }
        d.finish()
    }
}

/// Classifies a failed statement (or any other error of a pooled client): see
/// [`Diagnosis`] for the classes (connection lost, serialization failure, deadlock, timeout,
/// constraint, ...).
impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        crate::diagnostics::query::classify(e)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_small_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn display_has_message_and_help_alternate_has_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let e = Error::new(ErrorKind::Network, "could not connect to \"db:5432\"")
            .with_help("check that the server is running")
            .with_source(io);
        assert_eq!(
            e.to_string(),
            "could not connect to \"db:5432\"; help: check that the server is running"
        );
        assert_eq!(
            format!("{e:#}"),
            "could not connect to \"db:5432\"\n  caused by: refused by peer\nhelp: check that the server is running"
        );
    }
}
