//! Connection strings: libpq URL and `key=value` forms, `PG*` environment variables, validation.
//!
//! Parsing is pure: [`ConnectionString::parse`] reads only its argument, and
//! [`ConnectionString::parse_with_env`] takes the environment as a lookup function, so tests
//! need no process-wide environment changes. The connection string beats the environment,
//! which beats the defaults. Every invalid value is an error that names its key (never a
//! silent default) and never quotes a password.

use crate::error::Error;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// libpq's `sslmode`. All six values parse; what each one does is our TLS policy (see the crate docs).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SslMode {
    /// `disable`: refused over TCP.
    Disable,
    /// `allow`: treated as `require`.
    Allow,
    /// `prefer`: treated as `require`.
    Prefer,
    /// `require`: encrypted; verified like `verify-ca` when a root certificate file is given.
    Require,
    /// `verify-ca`: encrypted, certificate chain verified.
    VerifyCa,
    /// `verify-full`: encrypted, chain and host name verified. The default.
    VerifyFull,
}

/// libpq's `sslnegotiation` (PostgreSQL 17+).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslNegotiation {
    /// Ask with an SSLRequest first (the default).
    Postgres,
    /// Start the TLS handshake at once, with ALPN `postgresql`.
    Direct,
}

/// libpq's `channel_binding`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when the server offers SCRAM-SHA-256-PLUS (the default).
    Prefer,
    /// Fail unless channel binding is used.
    Require,
}

/// Where root certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RootCert {
    /// `sslrootcert=system`: the platform's store (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// A PEM bundle file.
    File(PathBuf),
}

/// One host of the connection string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name or an IP literal, reached over TCP with TLS.
    Tcp(String),
    /// A Unix socket directory (a host starting with `/`); TLS does not apply.
    Unix(PathBuf),
}

/// TLS protocol versions for `ssl_min_protocol_version` / `ssl_max_protocol_version`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2
    Tls12,
    /// TLS 1.3
    Tls13,
}

/// `target_session_attrs` values tokio-postgres supports.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetSessionAttrs {
    /// `any`
    Any,
    /// `read-write`
    ReadWrite,
    /// `read-only`
    ReadOnly,
}

/// Where a setting's value came from.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The connection string.
    ConnectionString,
    /// A `PG*` environment variable.
    Environment,
    /// The crate's default.
    Default,
}

/// A password. Its `Debug` and `Display` print `***`; read it with [`Password::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Password(s.into())
    }
    /// The password itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed, validated connection string with the environment applied.
///
/// Fields keep libpq's meaning; `None` means "not given anywhere" and the documented default
/// applies. `Debug` never shows the password.
#[derive(Clone, PartialEq)]
pub struct ConnectionString {
    pub(crate) hosts: Vec<Host>,
    /// `hostaddr`, one per host when given (libpq allows empty entries: `None`).
    pub(crate) hostaddrs: Vec<Option<IpAddr>>,
    /// One port for all hosts, or one per host.
    pub(crate) ports: Vec<u16>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<Password>,
    pub(crate) dbname: Option<String>,
    pub(crate) options: Option<String>,
    pub(crate) application_name: Option<String>,
    pub(crate) sslmode: Option<SslMode>,
    pub(crate) sslrootcert: Option<RootCert>,
    pub(crate) sslcert: Option<PathBuf>,
    pub(crate) sslkey: Option<PathBuf>,
    pub(crate) sslnegotiation: Option<SslNegotiation>,
    pub(crate) sslsni: Option<bool>,
    pub(crate) ssl_min_protocol_version: Option<TlsVersion>,
    pub(crate) ssl_max_protocol_version: Option<TlsVersion>,
    pub(crate) channel_binding: Option<ChannelBinding>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) tcp_user_timeout: Option<Duration>,
    pub(crate) keepalives: Option<bool>,
    pub(crate) keepalives_idle: Option<Duration>,
    pub(crate) keepalives_interval: Option<Duration>,
    pub(crate) keepalives_count: Option<u32>,
    pub(crate) target_session_attrs: Option<TargetSessionAttrs>,
    pub(crate) load_balance_hosts_random: Option<bool>,
    /// (canonical key, where its value came from), for every key that has a value.
    pub(crate) sources: Vec<(&'static str, Source)>,
}
