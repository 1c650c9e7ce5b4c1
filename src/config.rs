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

impl SslMode {
    /// Every value, in libpq's order.
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The libpq spelling, e.g. `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl SslNegotiation {
    const ALL: [SslNegotiation; 2] = [SslNegotiation::Postgres, SslNegotiation::Direct];

    /// The libpq spelling: `postgres` or `direct`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslNegotiation::Postgres => "postgres",
            SslNegotiation::Direct => "direct",
        }
    }
}

impl ChannelBinding {
    const ALL: [ChannelBinding; 3] = [
        ChannelBinding::Disable,
        ChannelBinding::Prefer,
        ChannelBinding::Require,
    ];

    /// The libpq spelling: `disable`, `prefer` or `require`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl TlsVersion {
    /// The libpq spelling: `TLSv1.2` or `TLSv1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

impl TargetSessionAttrs {
    const ALL: [TargetSessionAttrs; 3] = [
        TargetSessionAttrs::Any,
        TargetSessionAttrs::ReadWrite,
        TargetSessionAttrs::ReadOnly,
    ];

    /// The libpq spelling: `any`, `read-write` or `read-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
        }
    }
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
    /// Set in code, through a setter such as [`ConnectionString::set_password`].
    Code,
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

/// One accepted connection parameter: its libpq name, its environment variable, its default
/// and what it does. The single table behind parsing, the environment and the docs.
#[derive(Debug)]
pub(crate) struct KeyInfo {
    pub(crate) name: &'static str,
    pub(crate) env: Option<&'static str>,
    pub(crate) default: &'static str,
    pub(crate) doc: &'static str,
}

macro_rules! keys {
    ($( $name:literal, $env:expr, $default:literal, $doc:literal; )*) => {
        &[$( KeyInfo { name: $name, env: $env, default: $default, doc: $doc } ),*]
    };
}

/// Every key we accept, in the order the docs list them.
pub(crate) static KEYS: &[KeyInfo] = keys![
    "host", Some("PGHOST"), "(none: an error)", "host name, IP address, or Unix socket directory (starts with `/`); a comma list for several hosts";
    "hostaddr", Some("PGHOSTADDR"), "(none)", "IP address to connect to instead of resolving `host`; `host` is still the name TLS checks";
    "port", Some("PGPORT"), "5432", "port, or a comma list with one port per host";
    "user", Some("PGUSER"), "the OS user", "role to log in as";
    "password", Some("PGPASSWORD"), "(none)", "password (never printed by this crate)";
    "dbname", Some("PGDATABASE"), "the user name", "database";
    "options", Some("PGOPTIONS"), "(none)", "command-line options for the server, e.g. `-c search_path=app` or Neon's `endpoint=<id>`";
    "application_name", Some("PGAPPNAME"), "(none)", "name the server shows in `pg_stat_activity`";
    "sslmode", Some("PGSSLMODE"), "verify-full", "`disable` (refused), `allow`/`prefer` (treated as `require`), `require`, `verify-ca`, `verify-full`";
    "sslrootcert", Some("PGSSLROOTCERT"), "the system store", "PEM file of trusted roots, or `system` for the system store";
    "sslcert", Some("PGSSLCERT"), "(none)", "client certificate (PEM)";
    "sslkey", Some("PGSSLKEY"), "(none)", "client private key (PEM; must not be readable by group or others)";
    "sslnegotiation", Some("PGSSLNEGOTIATION"), "postgres; direct for `*.neon.tech` hosts (falls back once per host)", "`postgres` (SSLRequest first) or `direct` (TLS at once, ALPN `postgresql`; PostgreSQL 17+, Neon); written out, no fallback";
    "sslsni", Some("PGSSLSNI"), "1", "`1` sends the host name in TLS (SNI; Neon needs it), `0` does not";
    "ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION"), "TLSv1.2", "`TLSv1.2` or `TLSv1.3` (`TLSv1`/`TLSv1.1` mean TLSv1.2: rustls goes no lower)";
    "ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION"), "(none)", "`TLSv1.2` or `TLSv1.3`";
    "channel_binding", Some("PGCHANNELBINDING"), "prefer", "`disable`, `prefer`, `require` (SCRAM-SHA-256-PLUS bound to the TLS certificate)";
    "connect_timeout", Some("PGCONNECT_TIMEOUT"), "15", "seconds for each host's whole handshake (TCP, TLS, login); libpq's minimum of 2 applies";
    "tcp_user_timeout", None, "(none)", "milliseconds, as in libpq (tokio-postgres reads seconds; we convert)";
    "keepalives", None, "1", "`1` or `0`: TCP keepalives";
    "keepalives_idle", None, "(OS default)", "seconds of idle before keepalives";
    "keepalives_interval", None, "(OS default)", "seconds between keepalives";
    "keepalives_count", None, "(OS default)", "keepalives lost before the connection is dropped (`keepalives_retries` is accepted too)";
    "target_session_attrs", Some("PGTARGETSESSIONATTRS"), "any", "`any`, `read-write`, `read-only`";
    "load_balance_hosts", Some("PGLOADBALANCEHOSTS"), "disable", "`disable` (hosts in order) or `random`";
];

/// libpq parameters we refuse, with why.
static UNSUPPORTED: &[(&str, &str)] = &[
    ("sslpassword", "encrypted private keys are not supported; decrypt the key file (`openssl pkey -in key.pem -out key.pem`) and protect it with `chmod 600`"),
    ("sslcrl", "certificate revocation lists are not supported; remove the parameter"),
    ("sslcrldir", "certificate revocation lists are not supported; remove the parameter"),
    ("sslcertmode", "a client certificate is sent whenever `sslcert` and `sslkey` are given; remove the parameter"),
    ("service", "service files are not supported; put the settings in the connection string"),
    ("servicefile", "service files are not supported; put the settings in the connection string"),
    ("passfile", "put the password in the connection string or PGPASSWORD"),
    ("requirepeer", "peer checks apply to Unix sockets only and are not supported; remove the parameter"),
    ("require_auth", "`require_auth` is not supported yet; use `channel_binding=require` to insist on SCRAM with channel binding"),
    ("krbsrvname", "Kerberos/GSSAPI is not supported; remove the parameter"),
    ("gsslib", "Kerberos/GSSAPI is not supported; remove the parameter"),
    ("gssdelegation", "Kerberos/GSSAPI is not supported; remove the parameter"),
    ("replication", "replication connections are not supported; remove the parameter"),
    ("fallback_application_name", "use `application_name` instead"),
    ("sslkeylogfile", "writing TLS session keys to a file is not supported; remove the parameter"),
    ("min_protocol_version", "choosing the PostgreSQL protocol version is not supported; remove the parameter"),
    ("max_protocol_version", "choosing the PostgreSQL protocol version is not supported; remove the parameter"),
    ("oauth_issuer", "OAuth authentication is not supported; remove the parameter"),
    ("oauth_client_id", "OAuth authentication is not supported; remove the parameter"),
    ("oauth_client_secret", "OAuth authentication is not supported; remove the parameter"),
    ("oauth_scope", "OAuth authentication is not supported; remove the parameter"),
    ("scram_client_key", "SCRAM keys are not supported; give the `password` instead"),
    ("scram_server_key", "SCRAM keys are not supported; give the `password` instead"),
];

/// Other drivers' parameters that have no libpq name, with what to do instead.
static HINTS: &[(&str, &str)] = &[
    ("pgbouncer", "`pgbouncer=true` is a Prisma setting, not a libpq one; remove it (neon-connect detects Neon's -pooler hosts itself)"),
    ("connection_limit", "`connection_limit` is a Prisma setting; set the pool size with `Options::pool_size` instead"),
    ("pool_timeout", "`pool_timeout` is a Prisma setting; set how long a checkout waits with `Options::wait_timeout` instead"),
    ("schema", "set the schema with `options=-c search_path=<schema>` (URL: `?options=-c%20search_path%3D<schema>`)"),
    ("search_path", "set it with `options=-c search_path=<schema>` (URL: `?options=-c%20search_path%3D<schema>`)"),
    ("currentschema", "set the schema with `options=-c search_path=<schema>` (URL: `?options=-c%20search_path%3D<schema>`)"),
    ("statement_timeout", "set it with `options=-c statement_timeout=<ms>` (URL: `?options=-c%20statement_timeout%3D<ms>`)"),
];

/// Common misspellings and other drivers' names for our keys.
static ALIASES: &[(&str, &str)] = &[
    ("ssl", "sslmode"),
    ("ssl_mode", "sslmode"),
    ("database", "dbname"),
    ("db", "dbname"),
    ("username", "user"),
    ("usr", "user"),
    ("pass", "password"),
    ("pwd", "password"),
    ("sslca", "sslrootcert"),
    ("ca", "sslrootcert"),
    ("sslrootcertificate", "sslrootcert"),
    ("ssl_root_cert", "sslrootcert"),
    ("sslcertificate", "sslcert"),
    ("application-name", "application_name"),
    ("appname", "application_name"),
    ("connection_timeout", "connect_timeout"),
    ("connecttimeout", "connect_timeout"),
    ("timeout", "connect_timeout"),
    ("channelbinding", "channel_binding"),
    ("requiressl", "sslmode"),
    ("sslaccept", "sslmode"),
    ("hostname", "host"),
    ("server", "host"),
    ("tcp_keepalives_idle", "keepalives_idle"),
    ("tcp_keepalives_interval", "keepalives_interval"),
    ("tcp_keepalives_count", "keepalives_count"),
];

/// The connection string reference as a Markdown table (the README embeds it; a test keeps
/// the two equal).
pub fn reference_table() -> String {
    let mut out =
        String::from("| key | environment variable | default | meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.name,
            k.env.map_or("—".to_string(), |e| format!("`{e}`")),
            k.default,
            k.doc
        ));
    }
    out
}

/// The canonical name of an accepted key; `keepalives_retries` (tokio-postgres's name) is
/// `keepalives_count`.
fn canonical(key: &str) -> Option<&'static str> {
    if key == "keepalives_retries" {
        return Some("keepalives_count");
    }
    KEYS.iter().find(|k| k.name == key).map(|k| k.name)
}

/// Edit distance (insertions, deletions, substitutions) between two keys.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The error for a key we do not accept: refused libpq keys say why, other drivers' keys say
/// what to do instead, and near misses name the key that was meant.
fn unknown_key(key: &str) -> Error {
    let lower = key.to_ascii_lowercase();
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == lower) {
        return Error::config(format!(
            "connection parameter `{key}` is not supported by neon-connect"
        ))
        .with_help(*why);
    }
    let e = Error::config(format!("unknown connection parameter `{key}`"));
    if let Some((_, hint)) = HINTS.iter().find(|(k, _)| *k == lower) {
        return e.with_help(*hint);
    }
    let meant = ALIASES
        .iter()
        .find(|(a, _)| *a == lower)
        .map(|(_, k)| *k)
        .or_else(|| canonical(&lower))
        .or_else(|| {
            KEYS.iter()
                .map(|k| (levenshtein(&lower, k.name), k.name))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, n)| n)
        })
        .or_else(|| {
            // A cut-off name such as `ssl_min_protocol` or `application`.
            let mut longer = KEYS.iter().filter(|k| k.name.starts_with(&lower));
            match (lower.len() >= 5, longer.next(), longer.next()) {
                (true, Some(k), None) => Some(k.name),
                _ => None,
            }
        });
    match meant {
        Some(name) => e.with_help(format!("the parameter is named `{name}`")),
        None => e.with_help(
            "see the connection string reference in the README for the accepted parameters",
        ),
    }
}

/// libpq parameters that are accepted and ignored because they cannot weaken anything
/// (`None`: not one of them).
fn ignored(key: &str, value: &str) -> Option<Result<(), Error>> {
    let origin = Origin::Param(key);
    Some(match key {
        "gssencmode" => match value {
            "disable" | "prefer" => Ok(()),
            "require" => Err(Error::config(
                "`gssencmode=require` is not supported: GSSAPI encryption is never used",
            )
            .with_help("remove `gssencmode`; connections are encrypted with TLS")),
            _ => Err(origin.invalid(value, "`disable`, `prefer`, `require`")),
        },
        "sslcompression" => match value {
            "0" | "1" => Ok(()),
            _ => Err(origin.invalid(value, "`0`, `1`")),
        },
        "client_encoding" => match value.to_ascii_lowercase().as_str() {
            "utf8" | "utf-8" | "unicode" => Ok(()),
            _ => Err(origin.invalid(value, "`UTF8` (tokio-postgres always uses UTF-8)")),
        },
        _ => return None,
    })
}

/// Where a raw value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// A key of the connection string, as the user spelled it.
    Param(&'a str),
    /// An environment variable.
    Env(&'static str),
}

impl Origin<'_> {
    /// "`sslmode`" or "the environment variable `PGSSLMODE`".
    fn name(self) -> String {
        match self {
            Origin::Param(k) => format!("`{k}`"),
            Origin::Env(v) => format!("the environment variable `{v}`"),
        }
    }

    /// `invalid value "x" for <origin>` with the accepted values as help. Never shows a
    /// password.
    fn invalid(self, value: &str, accepted: &str) -> Error {
        let shown = match self {
            Origin::Param("password") | Origin::Env("PGPASSWORD") => "***".to_string(),
            _ => format!("\"{value}\""),
        };
        Error::config(format!("invalid value {shown} for {}", self.name()))
            .with_help(format!("accepted values: {accepted}"))
    }
}

/// "`a`, `b`, `c`".
fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of `all` whose libpq spelling is `value`.
fn pick<T: Copy>(
    value: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    origin: Origin<'_>,
) -> Result<T, Error> {
    all.iter()
        .copied()
        .find(|v| name(*v) == value)
        .ok_or_else(|| origin.invalid(value, &one_of(all.iter().map(|v| name(*v)))))
}

/// libpq's `0`/`1` switches.
fn parse_bool(value: &str, origin: Origin<'_>) -> Result<bool, Error> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(origin.invalid(value, "`0`, `1`")),
    }
}

/// A whole number (surrounding spaces allowed, as libpq does).
fn parse_int<T: std::str::FromStr>(
    value: &str,
    origin: Origin<'_>,
    accepted: &str,
) -> Result<T, Error> {
    value
        .trim()
        .parse()
        .map_err(|_| origin.invalid(value, accepted))
}

/// A port: digits only, 1 to 65535.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|n| *n > 0)
}

/// A comma list of hosts; a host starting with `/` is a Unix socket directory.
fn parse_hosts(value: &str, origin: Origin<'_>) -> Result<Vec<Host>, Error> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|h| {
            if h.is_empty() {
                return Err(Error::config(format!(
                    "empty entry in the host list of {}",
                    origin.name()
                ))
                .with_help("remove the extra `,`: write several hosts as `host1,host2`"));
            }
            Ok(if h.starts_with('/') {
                Host::Unix(PathBuf::from(h))
            } else {
                let h = h
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h);
                Host::Tcp(h.to_string())
            })
        })
        .collect()
}

impl ConnectionString {
    fn empty() -> ConnectionString {
        ConnectionString {
            hosts: Vec::new(),
            hostaddrs: Vec::new(),
            ports: Vec::new(),
            user: None,
            password: None,
            dbname: None,
            options: None,
            application_name: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            sslnegotiation: None,
            sslsni: None,
            ssl_min_protocol_version: None,
            ssl_max_protocol_version: None,
            channel_binding: None,
            connect_timeout: None,
            tcp_user_timeout: None,
            keepalives: None,
            keepalives_idle: None,
            keepalives_interval: None,
            keepalives_count: None,
            target_session_attrs: None,
            load_balance_hosts_random: None,
            sources: Vec::new(),
        }
    }

    /// Parses a connection string (URL or `key=value` form) without reading the environment.
    ///
    /// ```
    /// use neon_connect::ConnectionString;
    /// let cs = ConnectionString::parse("postgresql://alex@ep-x.neon.tech/neondb?sslmode=verify-full")?;
    /// assert_eq!(cs.dbname(), Some("neondb"));
    /// # Ok::<(), neon_connect::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::ConnectionString`], naming the key or the part that is wrong (never
    /// quoting the password).
    pub fn parse(s: &str) -> Result<ConnectionString, Error> {
        Self::parse_with_env(s, |_| None)
    }

    /// Parses a connection string, then fills what it leaves out from the `PG*` variables
    /// looked up through `env` (pass `|k| std::env::var(k).ok()` for the process environment).
    ///
    /// As in libpq, a key given in the string wins (even with an empty value), then its
    /// environment variable, then the default. The deprecated `PGREQUIRESSL=1` means
    /// `sslmode=require` when neither `sslmode` nor `PGSSLMODE` is set.
    ///
    /// # Errors
    /// [`crate::ErrorKind::ConnectionString`], naming the key or variable that is wrong.
    pub fn parse_with_env(
        s: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectionString, Error> {
        let pairs = split(s)?;
        let mut cs = ConnectionString::empty();
        for (key, value) in &pairs {
            let Some(name) = canonical(key) else {
                match ignored(key, value) {
                    Some(result) => {
                        result?;
                        continue;
                    }
                    None => return Err(unknown_key(key)),
                }
            };
            cs.set(name, value, Origin::Param(key))?;
            cs.mark(name, Source::ConnectionString);
        }
        for info in KEYS {
            let Some(var) = info.env else { continue };
            if cs.sources.iter().any(|(k, _)| *k == info.name) {
                continue;
            }
            if let Some(value) = env(var) {
                cs.set(info.name, &value, Origin::Env(var))?;
                cs.mark(info.name, Source::Environment);
            }
        }
        match env("PGREQUIRESSL").as_deref() {
            None | Some("0") => {}
            Some("1") => {
                if cs.sslmode.is_none() {
                    cs.sslmode = Some(SslMode::Require);
                    cs.mark("sslmode", Source::Environment);
                }
            }
            Some(v) => return Err(Origin::Env("PGREQUIRESSL").invalid(v, "`0`, `1`")),
        }
        cs.finish()?;
        Ok(cs)
    }

    fn mark(&mut self, key: &'static str, source: Source) {
        self.sources.retain(|(k, _)| *k != key);
        self.sources.push((key, source));
    }

    /// Sets one canonical key from its raw (decoded) value.
    fn set(&mut self, name: &'static str, value: &str, origin: Origin<'_>) -> Result<(), Error> {
        let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let seconds = "a whole number of seconds";
        match name {
            "host" => self.hosts = parse_hosts(value, origin)?,
            "hostaddr" => {
                self.hostaddrs = if value.is_empty() {
                    Vec::new()
                } else {
                    value
                        .split(',')
                        .map(|a| {
                            if a.is_empty() {
                                return Ok(None);
                            }
                            a.parse::<IpAddr>().map(Some).map_err(|_| {
                                origin.invalid(
                                    a,
                                    "IP addresses, e.g. `10.0.0.5` or `::1` (names go in `host`)",
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?
                }
            }
            "port" => {
                self.ports = if value.is_empty() {
                    Vec::new()
                } else {
                    value
                        .split(',')
                        .map(|p| {
                            if p.is_empty() {
                                return Ok(5432);
                            }
                            parse_port(p)
                                .ok_or_else(|| origin.invalid(p, "a port number from 1 to 65535"))
                        })
                        .collect::<Result<_, _>>()?
                }
            }
            "user" => self.user = non_empty(value),
            // libpq: an empty password is no password.
            "password" => self.password = non_empty(value).map(Password),
            "dbname" => self.dbname = non_empty(value),
            "options" => self.options = non_empty(value),
            "application_name" => self.application_name = non_empty(value),
            "sslmode" => self.sslmode = Some(pick(value, &SslMode::ALL, SslMode::as_str, origin)?),
            "sslrootcert" => {
                // libpq: only the exact word `system` is special; `./system` is a file.
                self.sslrootcert = match value {
                    "" => None,
                    "system" => Some(RootCert::System),
                    path => Some(RootCert::File(PathBuf::from(path))),
                }
            }
            "sslcert" => self.sslcert = non_empty(value).map(PathBuf::from),
            "sslkey" => self.sslkey = non_empty(value).map(PathBuf::from),
            "sslnegotiation" => {
                self.sslnegotiation = Some(pick(
                    value,
                    &SslNegotiation::ALL,
                    SslNegotiation::as_str,
                    origin,
                )?)
            }
            "sslsni" => self.sslsni = Some(parse_bool(value, origin)?),
            "ssl_min_protocol_version" | "ssl_max_protocol_version" => {
                let min = name == "ssl_min_protocol_version";
                // libpq compares these without regard to case.
                let v =
                    match value.to_ascii_lowercase().as_str() {
                        "" => None,
                        // rustls goes no lower than TLS 1.2, which only raises the minimum.
                        "tlsv1" | "tlsv1.1" if min => Some(TlsVersion::Tls12),
                        "tlsv1" | "tlsv1.1" => return Err(Error::config(format!(
                            "invalid value \"{value}\" for {}: TLS below 1.2 is not supported",
                            origin.name()
                        ))
                        .with_help(
                            "use `TLSv1.2` or `TLSv1.3` (rustls never negotiates older versions)",
                        )),
                        "tlsv1.2" => Some(TlsVersion::Tls12),
                        "tlsv1.3" => Some(TlsVersion::Tls13),
                        _ => {
                            let accepted = if min {
                                "`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`"
                            } else {
                                "`TLSv1.2`, `TLSv1.3`"
                            };
                            return Err(origin.invalid(value, accepted));
                        }
                    };
                if min {
                    self.ssl_min_protocol_version = v;
                } else {
                    self.ssl_max_protocol_version = v;
                }
            }
            "channel_binding" => {
                self.channel_binding = Some(pick(
                    value,
                    &ChannelBinding::ALL,
                    ChannelBinding::as_str,
                    origin,
                )?)
            }
            "connect_timeout" => {
                let secs: i64 =
                    parse_int(value, origin, "a whole number of seconds (0: no limit)")?;
                // libpq: 0 or negative waits forever, and the minimum is 2 seconds.
                self.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64));
            }
            "tcp_user_timeout" => {
                // Milliseconds, as in libpq (tokio-postgres reads seconds); 0: the OS default.
                let ms: u64 = parse_int(value, origin, "a whole number of milliseconds")?;
                self.tcp_user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "keepalives" => self.keepalives = Some(parse_bool(value, origin)?),
            "keepalives_idle" => {
                let secs: u64 = parse_int(value, origin, seconds)?;
                self.keepalives_idle = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "keepalives_interval" => {
                let secs: u64 = parse_int(value, origin, seconds)?;
                self.keepalives_interval = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "keepalives_count" => {
                let n: u32 = parse_int(value, origin, "a whole number")?;
                self.keepalives_count = (n > 0).then_some(n);
            }
            "target_session_attrs" => {
                if matches!(value, "primary" | "standby" | "prefer-standby") {
                    return Err(Error::config(format!(
                        "the value \"{value}\" of {} is not supported yet",
                        origin.name()
                    ))
                    .with_help("use `any`, `read-write` (finds the primary) or `read-only`"));
                }
                self.target_session_attrs = Some(pick(
                    value,
                    &TargetSessionAttrs::ALL,
                    TargetSessionAttrs::as_str,
                    origin,
                )?)
            }
            "load_balance_hosts" => {
                self.load_balance_hosts_random = Some(match value {
                    "disable" => false,
                    "random" => true,
                    _ => return Err(origin.invalid(value, "`disable`, `random`")),
                })
            }
            _ => unreachable!("every key of KEYS is handled"),
        }
        Ok(())
    }

    /// libpq's checks across keys, then one port for all hosts when they all share it.
    fn finish(&mut self) -> Result<(), Error> {
        let hosts = self.hosts.len();
        let addrs = self.hostaddrs.len();
        if hosts > 0 && addrs > 0 && hosts != addrs {
            return Err(Error::config(format!(
                "could not match {hosts} host names to {addrs} hostaddr values"
            ))
            .with_help("give one `hostaddr` per `host`, in the same order"));
        }
        let n = hosts.max(addrs);
        if self.ports.len() > 1 && self.ports.len() != n {
            return Err(Error::config(format!(
                "could not match {} port numbers to {n} hosts",
                self.ports.len()
            ))
            .with_help("give one port for all hosts, or one port per host"));
        }
        if let [first, rest @ ..] = self.ports.as_slice() {
            if rest.iter().all(|p| p == first) {
                self.ports.truncate(1);
            }
        }
        if let (Some(min), Some(max)) =
            (self.ssl_min_protocol_version, self.ssl_max_protocol_version)
        {
            if min > max {
                return Err(
                    Error::config("invalid SSL protocol version range").with_help(
                        "`ssl_min_protocol_version` must not be above `ssl_max_protocol_version`",
                    ),
                );
            }
        }
        Ok(())
    }

    /// The hosts, in order (empty: none given).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// `hostaddr` values, one per host when given (`None`: that host is resolved by name).
    pub fn hostaddrs(&self) -> &[Option<IpAddr>] {
        &self.hostaddrs
    }

    /// The ports as given: empty (5432 for every host), one port for all hosts, or one per
    /// host. See [`ConnectionString::port_for`].
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The port for host number `i` (libpq: a single port applies to all hosts).
    pub fn port_for(&self, i: usize) -> u16 {
        match self.ports.as_slice() {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        }
    }

    /// The user name (`None`: not given).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password (its `Debug` and `Display` print `***`).
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }

    /// The database name (`None`: libpq's default, the user name).
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }

    /// The server `options`, as given (e.g. `-c search_path=app` or `endpoint=<id>`).
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// The application name.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// `sslmode` as given (`None`: the default, `verify-full`).
    pub fn sslmode(&self) -> Option<SslMode> {
        self.sslmode
    }

    /// `sslrootcert` as given (`None`: the default root store).
    pub fn sslrootcert(&self) -> Option<&RootCert> {
        self.sslrootcert.as_ref()
    }

    /// `sslcert` (client certificate file) as given.
    pub fn sslcert(&self) -> Option<&std::path::Path> {
        self.sslcert.as_deref()
    }

    /// `sslkey` (client private key file) as given.
    pub fn sslkey(&self) -> Option<&std::path::Path> {
        self.sslkey.as_deref()
    }

    /// `sslnegotiation` as given (`None`: `postgres`).
    pub fn sslnegotiation(&self) -> Option<SslNegotiation> {
        self.sslnegotiation
    }

    /// `sslsni` as given (`None`: on).
    pub fn sslsni(&self) -> Option<bool> {
        self.sslsni
    }

    /// `ssl_min_protocol_version` as given (`TLSv1` and `TLSv1.1` read as TLS 1.2).
    pub fn ssl_min_protocol_version(&self) -> Option<TlsVersion> {
        self.ssl_min_protocol_version
    }

    /// `ssl_max_protocol_version` as given.
    pub fn ssl_max_protocol_version(&self) -> Option<TlsVersion> {
        self.ssl_max_protocol_version
    }

    /// `channel_binding` as given (`None`: `prefer`).
    pub fn channel_binding(&self) -> Option<ChannelBinding> {
        self.channel_binding
    }

    /// `connect_timeout` (`None`: not given, or 0 or less, and our default applies; libpq's
    /// minimum of 2 seconds is applied).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// `tcp_user_timeout`, read as milliseconds as libpq does (`None`: the OS default).
    pub fn tcp_user_timeout(&self) -> Option<Duration> {
        self.tcp_user_timeout
    }

    /// `keepalives` (`None`: on).
    pub fn keepalives(&self) -> Option<bool> {
        self.keepalives
    }

    /// `keepalives_idle` (`None`: the OS default).
    pub fn keepalives_idle(&self) -> Option<Duration> {
        self.keepalives_idle
    }

    /// `keepalives_interval` (`None`: the OS default).
    pub fn keepalives_interval(&self) -> Option<Duration> {
        self.keepalives_interval
    }

    /// `keepalives_count` (also accepted as `keepalives_retries`; `None`: the OS default).
    pub fn keepalives_count(&self) -> Option<u32> {
        self.keepalives_count
    }

    /// `target_session_attrs` as given (`None`: `any`).
    pub fn target_session_attrs(&self) -> Option<TargetSessionAttrs> {
        self.target_session_attrs
    }

    /// `load_balance_hosts`: `Some(true)` for `random`, `Some(false)` for `disable` (`None`:
    /// not given; hosts are tried in order).
    pub fn load_balance_hosts_random(&self) -> Option<bool> {
        self.load_balance_hosts_random
    }

    /// Where the value of `key` (a libpq key name) came from; [`Source::Default`] when no
    /// value was given anywhere.
    pub fn source(&self, key: &str) -> Source {
        let key = canonical(key).unwrap_or(key);
        self.sources
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Source::Default, |(_, s)| *s)
    }

    /// Sets the user name.
    pub fn set_user(&mut self, user: impl Into<String>) {
        self.user = Some(user.into());
        self.mark("user", Source::Code);
    }

    /// Sets the password.
    pub fn set_password(&mut self, password: Password) {
        self.password = Some(password);
        self.mark("password", Source::Code);
    }

    /// Sets the database name.
    pub fn set_dbname(&mut self, dbname: impl Into<String>) {
        self.dbname = Some(dbname.into());
        self.mark("dbname", Source::Code);
    }

    /// Sets the server `options` (e.g. `-c search_path=app`).
    pub fn set_options(&mut self, options: impl Into<String>) {
        self.options = Some(options.into());
        self.mark("options", Source::Code);
    }

    /// Sets the application name.
    pub fn set_application_name(&mut self, name: impl Into<String>) {
        self.application_name = Some(name.into());
        self.mark("application_name", Source::Code);
    }

    /// Sets `sslmode`.
    pub fn set_sslmode(&mut self, mode: SslMode) {
        self.sslmode = Some(mode);
        self.mark("sslmode", Source::Code);
    }

    /// Sets `sslrootcert`.
    pub fn set_sslrootcert(&mut self, root: RootCert) {
        self.sslrootcert = Some(root);
        self.mark("sslrootcert", Source::Code);
    }

    /// Sets `sslnegotiation`.
    pub fn set_sslnegotiation(&mut self, negotiation: SslNegotiation) {
        self.sslnegotiation = Some(negotiation);
        self.mark("sslnegotiation", Source::Code);
    }

    /// Sets `channel_binding`.
    pub fn set_channel_binding(&mut self, binding: ChannelBinding) {
        self.channel_binding = Some(binding);
        self.mark("channel_binding", Source::Code);
    }

    /// Sets the per-host connect deadline (used as given: libpq's 2-second minimum applies
    /// only to parsed values).
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = Some(timeout);
        self.mark("connect_timeout", Source::Code);
    }

    /// Sets `target_session_attrs`.
    pub fn set_target_session_attrs(&mut self, attrs: TargetSessionAttrs) {
        self.target_session_attrs = Some(attrs);
        self.mark("target_session_attrs", Source::Code);
    }

    /// The settings as a `postgresql://` URL with the password shown as `***`: every host
    /// with its port, and the other settings as query parameters. Parsing it back gives the
    /// same settings (the password aside).
    pub fn redacted(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // Everything but RFC 3986's unreserved characters.
        const PART: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        const IPV6: &AsciiSet = &PART.remove(b':');
        const VALUE: &AsciiSet = &PART.remove(b'/').remove(b':').remove(b',');
        let enc = |s: &str, set: &'static AsciiSet| utf8_percent_encode(s, set).to_string();
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let join = |items: Vec<String>| items.join(",");

        let mut out = String::from("postgresql://");
        if let Some(u) = &self.user {
            out.push_str(&enc(u, PART));
        }
        if self.password.is_some() {
            out.push_str(":***");
        }
        if self.user.is_some() || self.password.is_some() {
            out.push('@');
        }
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = match h {
                    Host::Tcp(n) if n.contains(':') => format!("[{}]", enc(n, IPV6)),
                    Host::Tcp(n) => enc(n, PART),
                    Host::Unix(p) => enc(&path(p), PART),
                };
                match self.ports.is_empty() {
                    true => name,
                    false => format!("{name}:{}", self.port_for(i)),
                }
            })
            .collect();
        out.push_str(&hosts.join(","));
        out.push('/');
        if let Some(d) = &self.dbname {
            out.push_str(&enc(d, PART));
        }

        let mut q: Vec<String> = Vec::new();
        let mut push = |k: &str, v: &str| q.push(format!("{k}={}", enc(v, VALUE)));
        if !self.hostaddrs.is_empty() {
            let addrs = self.hostaddrs.iter();
            push(
                "hostaddr",
                &join(
                    addrs
                        .map(|a| a.map(|a| a.to_string()).unwrap_or_default())
                        .collect(),
                ),
            );
        }
        if self.hosts.is_empty() && !self.ports.is_empty() {
            push(
                "port",
                &join(self.ports.iter().map(u16::to_string).collect()),
            );
        }
        if let Some(v) = &self.options {
            push("options", v);
        }
        if let Some(v) = &self.application_name {
            push("application_name", v);
        }
        if let Some(v) = self.sslmode {
            push("sslmode", v.as_str());
        }
        match &self.sslrootcert {
            Some(RootCert::System) => push("sslrootcert", "system"),
            Some(RootCert::File(p)) => push("sslrootcert", &path(p)),
            None => {}
        }
        if let Some(p) = &self.sslcert {
            push("sslcert", &path(p));
        }
        if let Some(p) = &self.sslkey {
            push("sslkey", &path(p));
        }
        if let Some(v) = self.sslnegotiation {
            push("sslnegotiation", v.as_str());
        }
        let flag = |b: bool| if b { "1" } else { "0" };
        if let Some(v) = self.sslsni {
            push("sslsni", flag(v));
        }
        if let Some(v) = self.ssl_min_protocol_version {
            push("ssl_min_protocol_version", v.as_str());
        }
        if let Some(v) = self.ssl_max_protocol_version {
            push("ssl_max_protocol_version", v.as_str());
        }
        if let Some(v) = self.channel_binding {
            push("channel_binding", v.as_str());
        }
        if let Some(v) = self.connect_timeout {
            // Whole seconds, rounded up so that a deadline set in code is never shortened.
            push("connect_timeout", &v.as_millis().div_ceil(1000).to_string());
        }
        if let Some(v) = self.tcp_user_timeout {
            push("tcp_user_timeout", &v.as_millis().to_string());
        }
        if let Some(v) = self.keepalives {
            push("keepalives", flag(v));
        }
        if let Some(v) = self.keepalives_idle {
            push("keepalives_idle", &v.as_secs().to_string());
        }
        if let Some(v) = self.keepalives_interval {
            push("keepalives_interval", &v.as_secs().to_string());
        }
        if let Some(v) = self.keepalives_count {
            push("keepalives_count", &v.to_string());
        }
        if let Some(v) = self.target_session_attrs {
            push("target_session_attrs", v.as_str());
        }
        if let Some(v) = self.load_balance_hosts_random {
            push("load_balance_hosts", if v { "random" } else { "disable" });
        }
        if !q.is_empty() {
            out.push('?');
            out.push_str(&q.join("&"));
        }
        out
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = Error;

    /// The same as [`ConnectionString::parse`].
    fn from_str(s: &str) -> Result<Self, Error> {
        ConnectionString::parse(s)
    }
}

/// Prints [`ConnectionString::redacted`]: a `postgresql://` URL with the password as `***`.
impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Every setting, with the password as `Some(***)`. (Where each value came from is left out:
/// see [`ConnectionString::source`].)
impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("hosts", &self.hosts)
            .field("hostaddrs", &self.hostaddrs)
            .field("ports", &self.ports)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("dbname", &self.dbname)
            .field("options", &self.options)
            .field("application_name", &self.application_name)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("sslnegotiation", &self.sslnegotiation)
            .field("sslsni", &self.sslsni)
            .field("ssl_min_protocol_version", &self.ssl_min_protocol_version)
            .field("ssl_max_protocol_version", &self.ssl_max_protocol_version)
            .field("channel_binding", &self.channel_binding)
            .field("connect_timeout", &self.connect_timeout)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("keepalives", &self.keepalives)
            .field("keepalives_idle", &self.keepalives_idle)
            .field("keepalives_interval", &self.keepalives_interval)
            .field("keepalives_count", &self.keepalives_count)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("load_balance_hosts_random", &self.load_balance_hosts_random)
            .finish()
    }
}

/// Splits either form into decoded (key, value) pairs, in order; later pairs override earlier
/// ones, as in libpq.
fn split(s: &str) -> Result<Vec<(String, String)>, Error> {
    let trimmed = s.trim();
    if let Some(pos) = trimmed.find("://") {
        let scheme = &trimmed[..pos];
        // In the key=value form a `://` can only appear after a `=`.
        if !scheme.contains(|c: char| c.is_whitespace() || c == '=') {
            if scheme.eq_ignore_ascii_case("postgresql") || scheme.eq_ignore_ascii_case("postgres")
            {
                return split_url(&trimmed[pos + 3..]);
            }
            if scheme.to_ascii_lowercase().starts_with("jdbc:") {
                return Err(
                    Error::config(format!("invalid connection string scheme `{scheme}`"))
                        .with_help(
                            "drop the `jdbc:` prefix: use `postgresql://user:password@host/dbname`",
                        ),
                );
            }
            // A scheme with `@` is a mangled URL that may hold credentials: don't echo it.
            let message = if scheme.contains('@') {
                "invalid connection string scheme".to_string()
            } else {
                format!("invalid connection string scheme `{scheme}`")
            };
            return Err(Error::config(message)
                .with_help("use `postgresql://user:password@host/dbname` (or `postgres://`)"));
        }
    }
    let lower = trimmed.get(..11).unwrap_or(trimmed).to_ascii_lowercase();
    if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
        return Err(Error::config(
            "invalid connection string: the URL must start with `postgresql://`",
        )
        .with_help("use `postgresql://user:password@host/dbname`"));
    }
    split_kv(trimmed)
}

/// Percent-decodes one part of a URL; errors name the part, never its text.
fn decode(part: &str, what: &str) -> Result<String, Error> {
    let b = part.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(Error::config(format!("invalid percent-encoding in the {what}"))
                    .with_help("write `%` as `%25`, and other special characters as `%XX` (e.g. `@` as `%40`)"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // libpq keeps `+` as it is (it is not a space).
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(part).collect();
    String::from_utf8(bytes).map_err(|_| {
        Error::config(format!(
            "invalid percent-encoding in the {what}: it does not decode to UTF-8"
        ))
        .with_help("percent-encode the UTF-8 bytes of each special character")
    })
}

/// Checks a port written after a URL host; `quote` says whether the text may be shown (it
/// may be a password when the user info is missing).
fn url_port(p: &str, host: &str, quote: bool) -> Result<(), Error> {
    // libpq: `host:` with nothing after the colon is the default port.
    if p.is_empty() || parse_port(p).is_some() {
        return Ok(());
    }
    if quote {
        return Err(
            Error::config(format!("invalid port \"{p}\" for host \"{host}\""))
                .with_help("the port must be a number from 1 to 65535, as in `host:5432`"),
        );
    }
    Err(Error::config(format!("invalid port after host \"{host}\"")).with_help(
        "the port must be a number from 1 to 65535; a password goes before the host, as in `postgresql://user:password@host/dbname`",
    ))
}

/// `postgresql://[user[:password]@][host[:port][,host[:port]...]][/dbname][?k=v&...]`, after
/// the scheme.
fn split_url(rest: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs = Vec::new();
    // As in libpq, the authority ends at the first `/`. The user info ends at an `@`: the last
    // one before the first `?` (so an unencoded `@` in the password works), or else the first
    // one (so an unencoded `?` in the password works) unless what follows the `?` looks like
    // query parameters (an unencoded `@` in a parameter value).
    let slash = rest.find('/').unwrap_or(rest.len());
    let region = &rest[..slash];
    let first_q = region.find('?').unwrap_or(region.len());
    let at = region[..first_q].rfind('@').or_else(|| {
        region
            .find('@')
            .filter(|&at| !region[first_q..at].contains(['=', '&']))
    });
    let (userinfo, after_user) = match at {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => {
            // An `@` after a `/` means a `/` inside the password: never quote it as a host.
            let query = rest.find('?').unwrap_or(rest.len());
            if slash < query && rest[slash..query].contains('@') {
                return Err(Error::config(
                    "could not tell the user name and password from the host: the URL has a `/` before its `@`",
                )
                .with_help("percent-encode `/` in the user name or password as `%2F` (and `@` as `%40`, `?` as `%3F`)"));
            }
            (None, rest)
        }
    };
    let (before_query, query) = match after_user.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (after_user, None),
    };
    let (hostlist, path) = match before_query.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (before_query, None),
    };
    if let Some(ui) = userinfo {
        let (user, password) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if !user.is_empty() {
            pairs.push(("user".into(), decode(user, "user name")?));
        }
        if let Some(p) = password {
            pairs.push(("password".into(), decode(p, "password")?));
        }
    }
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostlist.split(',') {
            let (host, port) = if let Some(bracketed) = spec.strip_prefix('[') {
                let (inner, after) = bracketed.split_once(']').ok_or_else(|| {
                    Error::config("invalid IPv6 host: missing `]`")
                        .with_help("write IPv6 hosts as `[::1]:5432`")
                })?;
                let host = decode(inner, "host")?;
                let port = match after {
                    "" => "",
                    _ => after.strip_prefix(':').ok_or_else(|| {
                        Error::config(format!("invalid text after the IPv6 host `[{host}]`"))
                            .with_help("write IPv6 hosts as `[::1]:5432`")
                    })?,
                };
                (host, port)
            } else {
                let (host, port) = spec.rsplit_once(':').unwrap_or((spec, ""));
                if host.contains(':') {
                    return Err(
                        Error::config("invalid host: an IPv6 address must be in brackets")
                            .with_help("write IPv6 hosts as `[::1]:5432`"),
                    );
                }
                (decode(host, "host")?, port)
            };
            url_port(port, &host, userinfo.is_some() || port.len() <= 5)?;
            hosts.push(host);
            ports.push(port);
        }
        pairs.push(("host".into(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".into(), ports.join(",")));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        pairs.push(("dbname".into(), decode(path, "database name")?));
    }
    for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Error::config(format!(
                "missing `=` after `{}` in the URL's parameters",
                decode(kv, "parameter name")?
            ))
            .with_help("write parameters as `?key=value&key2=value2`"));
        };
        let key = decode(k, "parameter name")?;
        let what = if key == "password" {
            "password".to_string()
        } else {
            format!("value of `{key}`")
        };
        let value = decode(v, &what)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// libpq's `key = value` form: whitespace-separated pairs; values may be single-quoted, and
/// `\` escapes the next character.
fn split_kv(s: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            if pairs.last().is_some_and(|(k, _)| k == "password") {
                // Most likely the rest of a password with a space: don't show it.
                return Err(Error::config(
                    "missing `=` in the connection string after the value of `password`",
                )
                .with_help(
                    "quote a value that contains spaces: password='...' (write `'` inside it as `\\'`)",
                ));
            }
            if pairs.is_empty() && !s.contains('=') {
                return Err(Error::config("invalid connection string: it is neither a `postgresql://` URL nor `key=value` pairs")
                    .with_help("use `postgresql://user:password@host/dbname` or `host=... user=... dbname=...`"));
            }
            return Err(Error::config(format!("missing `=` after `{key}` in the connection string"))
                .with_help("write settings as `key=value`, separated by spaces; quote values with spaces: key='a b'"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    '\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(
                    Error::config(format!("unterminated quoted value for `{key}`"))
                        .with_help("close the value with `'`; write a quote inside it as `\\'`"),
                );
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    value.push(chars[i + 1]);
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        if key.is_empty() {
            return Err(Error::config(
                "a setting without a key (`=value`) in the connection string",
            )
            .with_help("write settings as `key=value`"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// The password used in every error case: no form of it may appear in an error.
    const PW: &str = "npg_S3cr3t";

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[track_caller]
    fn check_env(input: &str, vars: &[(&str, &str)], f: impl FnOnce(&ConnectionString)) {
        match ConnectionString::parse_with_env(input, env_of(vars)) {
            Ok(cs) => f(&cs),
            Err(e) => panic!("{input:?}: {e:#}"),
        }
    }

    #[track_caller]
    fn check(input: &str, f: impl FnOnce(&ConnectionString)) {
        check_env(input, &[], f)
    }

    /// The error for `input`, after checking its kind, that it has a help line, and that it
    /// never shows the password (plain or percent-encoded).
    #[track_caller]
    fn err_env(input: &str, vars: &[(&str, &str)]) -> Error {
        let e = match ConnectionString::parse_with_env(input, env_of(vars)) {
            Ok(cs) => panic!("{input:?} parsed: {cs:?}"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::ConnectionString, "{input:?}: {e:#}");
        assert!(e.help().is_some(), "{input:?}: no help line: {e:#}");
        let all = format!("{e} {e:#} {e:?}");
        for secret in [PW, "S3cr3t", "npg%5FS3cr3t"] {
            assert!(
                !all.contains(secret),
                "{input:?}: leaked the password: {all}"
            );
        }
        e
    }

    /// The whole text a user sees: the message and `help: ...`.
    #[track_caller]
    fn err(input: &str) -> String {
        err_env(input, &[]).to_string()
    }

    /// Runs a table of (input, part of the message, part of the help).
    #[track_caller]
    fn errors(vars: &[(&str, &str)], cases: &[(&str, &str, &str)]) {
        for (input, message, help) in cases {
            let e = err_env(input, vars);
            assert!(
                e.message().contains(message),
                "{input:?}\n  message: {}\n  expected: {message}",
                e.message()
            );
            assert!(
                e.help().unwrap_or_default().contains(help),
                "{input:?}\n  help: {:?}\n  expected: {help}",
                e.help()
            );
        }
    }

    fn tcp(h: &str) -> Host {
        Host::Tcp(h.to_string())
    }

    #[test]
    fn both_schemes_in_any_case() {
        for scheme in ["postgresql", "postgres", "POSTGRESQL", "Postgres"] {
            check(&format!("{scheme}://u@h/db"), |cs| {
                assert_eq!(cs.user(), Some("u"));
                assert_eq!(cs.hosts(), &[tcp("h")]);
                assert_eq!(cs.dbname(), Some("db"));
            });
        }
        check(" postgresql://h ", |cs| assert_eq!(cs.hosts(), &[tcp("h")]));
        check("postgresql://", |cs| {
            assert!(cs.hosts().is_empty());
            assert_eq!(cs.dbname(), None);
        });
    }

    #[test]
    fn every_url_part_is_percent_decoded() {
        check(
            "postgresql://al%40ex:p%3Ass%2F%40%25@my%2Dhost:5433/my%20db?application%5Fname=a%26b%3Dc&options=-c%20search_path%3Dapp",
            |cs| {
                assert_eq!(cs.user(), Some("al@ex"));
                assert_eq!(cs.password().unwrap().expose(), "p:ss/@%");
                assert_eq!(cs.hosts(), &[tcp("my-host")]);
                assert_eq!(cs.ports(), &[5433]);
                assert_eq!(cs.dbname(), Some("my db"));
                assert_eq!(cs.application_name(), Some("a&b=c"));
                assert_eq!(cs.options(), Some("-c search_path=app"));
            },
        );
        // libpq keeps `+` (it is not a space), and UTF-8 decodes.
        check("postgresql://h/d%C3%A9b?application_name=a+b", |cs| {
            assert_eq!(cs.dbname(), Some("déb"));
            assert_eq!(cs.application_name(), Some("a+b"));
        });
        check("postgresql://h/db?password=p%40ss", |cs| {
            assert_eq!(cs.password().unwrap().expose(), "p@ss");
        });
    }

    #[test]
    fn user_info_ends_at_the_last_at_sign() {
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            ("postgresql://u:p@ss@host/db", Some("u"), "p@ss", "host"),
            ("postgresql://u:a@b@c@host", Some("u"), "a@b@c", "host"),
            ("postgresql://u:pa?ss@host/db", Some("u"), "pa?ss", "host"),
            ("postgresql://u:p:w@host/db", Some("u"), "p:w", "host"),
            ("postgresql://:pw@host/db", None, "pw", "host"),
        ];
        for (input, user, password, host) in cases {
            check(input, |cs| {
                assert_eq!(cs.user(), *user, "{input}");
                assert_eq!(cs.password().unwrap().expose(), *password, "{input}");
                assert_eq!(cs.hosts(), &[tcp(host)], "{input}");
            });
        }
        // An `@` in a parameter value is not the end of the user info.
        check("postgresql://h?application_name=a@b", |cs| {
            assert_eq!(cs.user(), None);
            assert_eq!(cs.hosts(), &[tcp("h")]);
            assert_eq!(cs.application_name(), Some("a@b"));
        });
        check("postgresql://u@h/db?sslrootcert=/etc/ca.pem", |cs| {
            assert_eq!(cs.user(), Some("u"));
            assert_eq!(
                cs.sslrootcert(),
                Some(&RootCert::File("/etc/ca.pem".into()))
            );
        });
        // An empty password is no password (libpq), and `user@` alone has none.
        check("postgresql://u:@h", |cs| assert_eq!(cs.password(), None));
        check("postgresql://u@h", |cs| assert_eq!(cs.password(), None));
    }

    #[test]
    fn multiple_hosts_and_ports() {
        let cases: &[(&str, &[&str], &[u16])] = &[
            (
                "postgresql://a:5433,b,c:6000/db",
                &["a", "b", "c"],
                &[5433, 5432, 6000],
            ),
            ("postgresql://a,b:7000/db", &["a", "b"], &[5432, 7000]),
            ("postgresql://a:7000,b:7000/db", &["a", "b"], &[7000]),
            ("postgresql://a:5432,b/db", &["a", "b"], &[5432]),
            ("postgresql://a,b/db", &["a", "b"], &[]),
            ("postgresql://a:/db", &["a"], &[]),
            ("postgresql://a,b/db?port=6000", &["a", "b"], &[6000]),
            ("host=a,b port=6000", &["a", "b"], &[6000]),
            ("host=a,b port=6000,6001", &["a", "b"], &[6000, 6001]),
            ("host=a,b port=,6001", &["a", "b"], &[5432, 6001]),
            ("host=a port=", &["a"], &[]),
        ];
        for (input, hosts, ports) in cases {
            check(input, |cs| {
                let want: Vec<Host> = hosts.iter().map(|h| tcp(h)).collect();
                assert_eq!(cs.hosts(), want.as_slice(), "{input}");
                assert_eq!(cs.ports(), *ports, "{input}");
            });
        }
        check("host=a,b,c port=6000", |cs| {
            assert_eq!(
                (0..3).map(|i| cs.port_for(i)).collect::<Vec<_>>(),
                [6000; 3]
            );
        });
        check("postgresql://a:1,b:2/db", |cs| {
            assert_eq!((cs.port_for(0), cs.port_for(1)), (1, 2));
        });
        check("host=a", |cs| assert_eq!(cs.port_for(0), 5432));
    }

    #[test]
    fn ipv6_hosts() {
        check("postgresql://[::1]:5433/db", |cs| {
            assert_eq!(cs.hosts(), &[tcp("::1")]);
            assert_eq!(cs.ports(), &[5433]);
        });
        check("postgresql://u@[2001:db8::1],[::1]:6000/db", |cs| {
            assert_eq!(cs.hosts(), &[tcp("2001:db8::1"), tcp("::1")]);
            assert_eq!(cs.ports(), &[5432, 6000]);
        });
        check("postgresql://[fe80::1%25eth0]/db", |cs| {
            assert_eq!(cs.hosts(), &[tcp("fe80::1%eth0")]);
        });
        check("host=::1", |cs| assert_eq!(cs.hosts(), &[tcp("::1")]));
        check("host=[::1]", |cs| assert_eq!(cs.hosts(), &[tcp("::1")]));
    }

    #[test]
    fn unix_socket_hosts() {
        let unix = |p: &str| Host::Unix(PathBuf::from(p));
        check("postgresql://%2Fvar%2Frun%2Fpostgresql/db", |cs| {
            assert_eq!(cs.hosts(), &[unix("/var/run/postgresql")]);
        });
        check("postgresql://%2Ftmp:5433/db", |cs| {
            assert_eq!(cs.hosts(), &[unix("/tmp")]);
            assert_eq!(cs.ports(), &[5433]);
        });
        check("postgresql:///db?host=/tmp&port=5433", |cs| {
            assert_eq!(cs.hosts(), &[unix("/tmp")]);
            assert_eq!(cs.ports(), &[5433]);
            assert_eq!(cs.dbname(), Some("db"));
        });
        check("postgresql:///db?host=%2Ftmp", |cs| {
            assert_eq!(cs.hosts(), &[unix("/tmp")]);
        });
        check("host=/tmp,db.example.com dbname=x", |cs| {
            assert_eq!(cs.hosts(), &[unix("/tmp"), tcp("db.example.com")]);
        });
    }

    #[test]
    fn query_parameters_override_the_url_and_the_last_one_wins() {
        check(
            "postgresql://a:1/db?host=b&port=2&hostaddr=10.0.0.1&dbname=other&user=x",
            |cs| {
                assert_eq!(cs.hosts(), &[tcp("b")]);
                assert_eq!(cs.ports(), &[2]);
                assert_eq!(cs.hostaddrs(), &[Some("10.0.0.1".parse().unwrap())]);
                assert_eq!(cs.dbname(), Some("other"));
                assert_eq!(cs.user(), Some("x"));
            },
        );
        check(
            "postgresql://h/db?sslmode=require&sslmode=verify-ca",
            |cs| {
                assert_eq!(cs.sslmode(), Some(SslMode::VerifyCa));
            },
        );
        check("host=a host=b sslmode=require sslmode=verify-full", |cs| {
            assert_eq!(cs.hosts(), &[tcp("b")]);
            assert_eq!(cs.sslmode(), Some(SslMode::VerifyFull));
        });
        check("postgresql://h/db?&&sslmode=require&", |cs| {
            assert_eq!(cs.sslmode(), Some(SslMode::Require));
        });
        check("postgresql://h?sslmode=require", |cs| {
            assert_eq!(cs.hosts(), &[tcp("h")]);
            assert_eq!(cs.dbname(), None);
        });
    }

    #[test]
    fn key_value_form_with_quotes_and_escapes() {
        let cases: &[(&str, &str)] = &[
            ("application_name=plain", "plain"),
            ("application_name='a b'", "a b"),
            (r"application_name='it\'s'", "it's"),
            (r"application_name='back\\slash'", r"back\slash"),
            (r"application_name=a\ b", "a b"),
            ("application_name = spaced", "spaced"),
            ("application_name =''", ""),
            ("  application_name='x'  ", "x"),
            ("application_name='a=b c'", "a=b c"),
            ("application_name=x://y", "x://y"),
        ];
        for (input, want) in cases {
            check(input, |cs| {
                assert_eq!(
                    cs.application_name(),
                    (!want.is_empty()).then_some(*want),
                    "{input}"
                );
            });
        }
        check(
            r"host=h port = 6543 user='a b' password='it\'s' dbname=d\ x options='-c x=1'",
            |cs| {
                assert_eq!(cs.hosts(), &[tcp("h")]);
                assert_eq!(cs.ports(), &[6543]);
                assert_eq!(cs.user(), Some("a b"));
                assert_eq!(cs.password().unwrap().expose(), "it's");
                assert_eq!(cs.dbname(), Some("d x"));
                assert_eq!(cs.options(), Some("-c x=1"));
            },
        );
        check("", |cs| assert!(cs.hosts().is_empty()));
        // libpq skips spaces after `=`: `host= dbname=x` sets host to `dbname=x`.
        check("host= dbname=x", |cs| {
            assert_eq!(cs.hosts(), &[tcp("dbname=x")]);
            assert_eq!(cs.dbname(), None);
        });
    }

    #[test]
    fn every_enum_value() {
        for mode in SslMode::ALL {
            check(&format!("sslmode={}", mode.as_str()), |cs| {
                assert_eq!(cs.sslmode(), Some(mode))
            });
        }
        for v in SslNegotiation::ALL {
            check(&format!("sslnegotiation={}", v.as_str()), |cs| {
                assert_eq!(cs.sslnegotiation(), Some(v))
            });
        }
        for v in ChannelBinding::ALL {
            check(&format!("channel_binding={}", v.as_str()), |cs| {
                assert_eq!(cs.channel_binding(), Some(v))
            });
        }
        for v in TargetSessionAttrs::ALL {
            check(&format!("target_session_attrs={}", v.as_str()), |cs| {
                assert_eq!(cs.target_session_attrs(), Some(v))
            });
        }
        let roots: &[(&str, Option<RootCert>)] = &[
            ("system", Some(RootCert::System)),
            ("./system", Some(RootCert::File("./system".into()))),
            ("System", Some(RootCert::File("System".into()))),
            (
                "/etc/ssl/ca.pem",
                Some(RootCert::File("/etc/ssl/ca.pem".into())),
            ),
            ("''", None),
        ];
        for (v, want) in roots {
            check(&format!("sslrootcert={v}"), |cs| {
                assert_eq!(cs.sslrootcert(), want.as_ref(), "{v}")
            });
        }
        let versions: &[(&str, Option<TlsVersion>, Option<TlsVersion>)] = &[
            ("TLSv1", Some(TlsVersion::Tls12), None),
            ("TLSv1.1", Some(TlsVersion::Tls12), None),
            ("TLSv1.2", Some(TlsVersion::Tls12), Some(TlsVersion::Tls12)),
            ("TLSv1.3", Some(TlsVersion::Tls13), Some(TlsVersion::Tls13)),
            ("tlsv1.3", Some(TlsVersion::Tls13), Some(TlsVersion::Tls13)),
        ];
        for (v, min, max) in versions {
            check(&format!("ssl_min_protocol_version={v}"), |cs| {
                assert_eq!(cs.ssl_min_protocol_version(), *min, "{v}")
            });
            if max.is_some() {
                check(&format!("ssl_max_protocol_version={v}"), |cs| {
                    assert_eq!(cs.ssl_max_protocol_version(), *max, "{v}")
                });
            }
        }
        for (v, b) in [("0", false), ("1", true)] {
            check(&format!("sslsni={v} keepalives={v}"), |cs| {
                assert_eq!(cs.sslsni(), Some(b));
                assert_eq!(cs.keepalives(), Some(b));
            });
        }
        for (v, b) in [("disable", false), ("random", true)] {
            check(&format!("load_balance_hosts={v}"), |cs| {
                assert_eq!(cs.load_balance_hosts_random(), Some(b))
            });
        }
        check("sslcert=/c.pem sslkey=/k.pem", |cs| {
            assert_eq!(cs.sslcert(), Some(std::path::Path::new("/c.pem")));
            assert_eq!(cs.sslkey(), Some(std::path::Path::new("/k.pem")));
        });
        check("hostaddr=10.0.0.1,,::1 host=a,b,c", |cs| {
            assert_eq!(
                cs.hostaddrs(),
                &[
                    Some("10.0.0.1".parse().unwrap()),
                    None,
                    Some("::1".parse().unwrap())
                ]
            );
        });
    }

    #[test]
    fn timeouts_and_keepalives_follow_libpq() {
        let secs = Duration::from_secs;
        let connect: &[(&str, Option<Duration>)] = &[
            ("10", Some(secs(10))),
            (" 10 ", Some(secs(10))),
            ("1", Some(secs(2))),
            ("2", Some(secs(2))),
            ("0", None),
            ("-5", None),
        ];
        for (v, want) in connect {
            check(&format!("connect_timeout='{v}'"), |cs| {
                assert_eq!(cs.connect_timeout(), *want, "{v}")
            });
        }
        check(
            "tcp_user_timeout=1500 keepalives_idle=30 keepalives_interval=5 keepalives_retries=3",
            |cs| {
                assert_eq!(cs.tcp_user_timeout(), Some(Duration::from_millis(1500)));
                assert_eq!(cs.keepalives_idle(), Some(secs(30)));
                assert_eq!(cs.keepalives_interval(), Some(secs(5)));
                assert_eq!(cs.keepalives_count(), Some(3));
                assert_eq!(cs.source("keepalives_count"), Source::ConnectionString);
                assert_eq!(cs.source("keepalives_retries"), Source::ConnectionString);
            },
        );
        // 0 is the OS default in libpq.
        check(
            "tcp_user_timeout=0 keepalives_idle=0 keepalives_interval=0 keepalives_count=0",
            |cs| {
                assert_eq!(cs.tcp_user_timeout(), None);
                assert_eq!(cs.keepalives_idle(), None);
                assert_eq!(cs.keepalives_interval(), None);
                assert_eq!(cs.keepalives_count(), None);
            },
        );
        check("keepalives_count=7", |cs| {
            assert_eq!(cs.keepalives_count(), Some(7))
        });
    }

    /// A valid value for every key, to show each is accepted in the string and the
    /// environment.
    fn sample(key: &str) -> &'static str {
        match key {
            "host" => "h",
            "hostaddr" => "10.0.0.1",
            "port" => "5433",
            "sslmode" => "verify-ca",
            "sslrootcert" => "system",
            "sslnegotiation" => "direct",
            "sslsni" | "keepalives" => "0",
            "ssl_min_protocol_version" | "ssl_max_protocol_version" => "TLSv1.3",
            "channel_binding" => "require",
            "connect_timeout"
            | "tcp_user_timeout"
            | "keepalives_idle"
            | "keepalives_interval"
            | "keepalives_count" => "7",
            "target_session_attrs" => "read-write",
            "load_balance_hosts" => "random",
            _ => "x",
        }
    }

    #[test]
    fn every_key_is_accepted_in_the_string_and_its_variable() {
        for info in KEYS {
            let value = sample(info.name);
            check(&format!("{}={value}", info.name), |cs| {
                assert_eq!(
                    cs.source(info.name),
                    Source::ConnectionString,
                    "{}",
                    info.name
                );
            });
            check(&format!("postgresql://h/db?{}={value}", info.name), |cs| {
                assert_eq!(
                    cs.source(info.name),
                    Source::ConnectionString,
                    "{}",
                    info.name
                );
            });
            if let Some(var) = info.env {
                check_env("", &[(var, value)], |cs| {
                    assert_eq!(cs.source(info.name), Source::Environment, "{var}");
                    assert_eq!(
                        cs.redacted(),
                        ConnectionString::parse(&format!("{}={value}", info.name))
                            .unwrap()
                            .redacted(),
                        "{var}"
                    );
                });
            }
        }
        let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a key is listed twice");
    }

    #[test]
    fn the_string_beats_the_environment_beats_the_default() {
        let env: &[(&str, &str)] = &[
            ("PGHOST", "envhost"),
            ("PGPORT", "6543"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", PW),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "verify-ca"),
            ("PGAPPNAME", "from-env"),
            ("PGCONNECT_TIMEOUT", "10"),
            ("PGSSLROOTCERT", "system"),
            ("PGCHANNELBINDING", "require"),
        ];
        check_env("postgresql://u@urlhost/db?sslmode=require", env, |cs| {
            assert_eq!(cs.hosts(), &[tcp("urlhost")]);
            assert_eq!(cs.source("host"), Source::ConnectionString);
            assert_eq!(cs.user(), Some("u"));
            assert_eq!(cs.dbname(), Some("db"));
            assert_eq!(cs.sslmode(), Some(SslMode::Require));
            assert_eq!(cs.source("sslmode"), Source::ConnectionString);
            assert_eq!(cs.ports(), &[6543]);
            assert_eq!(cs.source("port"), Source::Environment);
            assert_eq!(cs.password().unwrap().expose(), PW);
            assert_eq!(cs.source("password"), Source::Environment);
            assert_eq!(cs.application_name(), Some("from-env"));
            assert_eq!(cs.connect_timeout(), Some(Duration::from_secs(10)));
            assert_eq!(cs.sslrootcert(), Some(&RootCert::System));
            assert_eq!(cs.channel_binding(), Some(ChannelBinding::Require));
            assert_eq!(cs.source("sslnegotiation"), Source::Default);
            assert_eq!(cs.sslnegotiation(), None);
        });
        check_env("", env, |cs| {
            assert_eq!(cs.hosts(), &[tcp("envhost")]);
            assert_eq!(cs.user(), Some("envuser"));
            assert_eq!(cs.dbname(), Some("envdb"));
            assert_eq!(cs.sslmode(), Some(SslMode::VerifyCa));
        });
        // A key given in the string wins even when empty (libpq).
        check_env("host='' dbname=x", &[("PGHOST", "envhost")], |cs| {
            assert!(cs.hosts().is_empty());
            assert_eq!(cs.source("host"), Source::ConnectionString);
        });
        // parse() reads no environment at all.
        check("dbname=x", |cs| {
            assert!(cs.hosts().is_empty());
            assert_eq!(cs.source("host"), Source::Default);
            assert_eq!(cs.source("no_such_key"), Source::Default);
        });
        // The port list is checked against hosts from the environment too.
        let e = err_env("port=1,2,3", &[("PGHOST", "a,b")]);
        assert_eq!(e.message(), "could not match 3 port numbers to 2 hosts");
    }

    #[test]
    fn pgrequiressl() {
        check_env("host=h", &[("PGREQUIRESSL", "1")], |cs| {
            assert_eq!(cs.sslmode(), Some(SslMode::Require));
            assert_eq!(cs.source("sslmode"), Source::Environment);
        });
        check_env(
            "host=h",
            &[("PGREQUIRESSL", "1"), ("PGSSLMODE", "verify-full")],
            |cs| assert_eq!(cs.sslmode(), Some(SslMode::VerifyFull)),
        );
        check_env("host=h sslmode=verify-ca", &[("PGREQUIRESSL", "1")], |cs| {
            assert_eq!(cs.sslmode(), Some(SslMode::VerifyCa))
        });
        check_env("host=h", &[("PGREQUIRESSL", "0")], |cs| {
            assert_eq!(cs.sslmode(), None);
            assert_eq!(cs.source("sslmode"), Source::Default);
        });
        for input in ["host=h", "host=h sslmode=require"] {
            let e = err_env(input, &[("PGREQUIRESSL", "yes")]);
            assert!(e.message().contains("`PGREQUIRESSL`"), "{e}");
        }
    }

    #[test]
    fn invalid_environment_values_name_the_variable() {
        let e = err_env("host=h", &[("PGSSLMODE", "verify")]);
        assert_eq!(
            e.to_string(),
            "invalid value \"verify\" for the environment variable `PGSSLMODE`\nhelp: accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"
        );
        let cases: &[(&str, &str, &str)] = &[
            ("PGPORT", "abc", "a port number"),
            ("PGPORT", "0", "a port number"),
            ("PGHOSTADDR", "db.example.com", "IP addresses"),
            ("PGCONNECT_TIMEOUT", "10s", "seconds"),
            ("PGSSLSNI", "yes", "`0`, `1`"),
            ("PGSSLNEGOTIATION", "tls", "`postgres`, `direct`"),
            ("PGCHANNELBINDING", "on", "`disable`, `prefer`, `require`"),
            ("PGSSLMAXPROTOCOLVERSION", "TLSv1", "TLSv1.2"),
            ("PGSSLMINPROTOCOLVERSION", "SSLv3", "TLSv1.3"),
            ("PGTARGETSESSIONATTRS", "standby", "read-write"),
            ("PGLOADBALANCEHOSTS", "yes", "`random`"),
        ];
        for (var, value, help) in cases {
            let e = err_env("host=h", &[(var, value)]);
            assert!(e.message().contains(&format!("`{var}`")), "{var}: {e}");
            assert!(e.help().unwrap().contains(help), "{var}: {e}");
        }
        // The string's value wins, so a bad variable it overrides is never read.
        check_env("sslmode=require", &[("PGSSLMODE", "verify")], |cs| {
            assert_eq!(cs.sslmode(), Some(SslMode::Require))
        });
    }

    #[test]
    fn form_and_url_errors() {
        errors(
            &[],
            &[
                (
                    "mysql://u:npg_S3cr3t@h/db",
                    "invalid connection string scheme `mysql`",
                    "use `postgresql://user:password@host/dbname`",
                ),
                (
                    "http://h/db",
                    "invalid connection string scheme `http`",
                    "postgresql://",
                ),
                (
                    "jdbc:postgresql://h/db",
                    "invalid connection string scheme `jdbc:postgresql`",
                    "drop the `jdbc:` prefix",
                ),
                (
                    "JDBC:postgresql://h/db",
                    "scheme",
                    "drop the `jdbc:` prefix",
                ),
                (
                    "u:npg_S3cr3t@h://x",
                    "invalid connection string scheme",
                    "postgresql://",
                ),
                (
                    "postgres:/h/db",
                    "must start with `postgresql://`",
                    "postgresql://",
                ),
                (
                    "POSTGRESQL:h",
                    "must start with `postgresql://`",
                    "postgresql://",
                ),
                (
                    "just some words",
                    "neither a `postgresql://` URL nor `key=value` pairs",
                    "host=...",
                ),
                (
                    "postgresql://u:npg_S3cr3t%zz@h/db",
                    "invalid percent-encoding in the password",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t%2@h/db",
                    "invalid percent-encoding in the password",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t%ff@h/db",
                    "invalid percent-encoding in the password: it does not decode to UTF-8",
                    "UTF-8",
                ),
                (
                    "postgresql://u%zz:npg_S3cr3t@h/db",
                    "invalid percent-encoding in the user name",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h%zz/db",
                    "invalid percent-encoding in the host",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t@[::1%zz]/db",
                    "invalid percent-encoding in the host",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h/d%zz",
                    "invalid percent-encoding in the database name",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h/db?sslmode=%zz",
                    "invalid percent-encoding in the value of `sslmode`",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h/db?ssl%zz=1",
                    "invalid percent-encoding in the parameter name",
                    "%25",
                ),
                (
                    "postgresql://h/db?password=npg_S3cr3t%zz",
                    "invalid percent-encoding in the password",
                    "%25",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h:99999/db",
                    "invalid port \"99999\" for host \"h\"",
                    "1 to 65535",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h:0/db",
                    "invalid port \"0\" for host \"h\"",
                    "1 to 65535",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h:54x/db",
                    "invalid port \"54x\"",
                    "1 to 65535",
                ),
                (
                    "postgresql://u:npg_S3cr3t@a:1,b:-2/db",
                    "invalid port \"-2\" for host \"b\"",
                    "1 to 65535",
                ),
                (
                    "postgresql://u:npg_S3cr3t/db",
                    "invalid port after host \"u\"",
                    "user:password@host",
                ),
                (
                    "postgresql://u:npg_S3cr3t/x@h/db",
                    "could not tell the user name and password from the host",
                    "percent-encode `/`",
                ),
                (
                    "postgresql://u:npg_S3cr3t@[::1/db",
                    "missing `]`",
                    "[::1]:5432",
                ),
                (
                    "postgresql://u:npg_S3cr3t@[::1]x/db",
                    "invalid text after the IPv6 host `[::1]`",
                    "[::1]:5432",
                ),
                (
                    "postgresql://u:npg_S3cr3t@::1/db",
                    "an IPv6 address must be in brackets",
                    "[::1]:5432",
                ),
                (
                    "postgresql://u:npg_S3cr3t@a,,b/db",
                    "empty entry in the host list of `host`",
                    "host1,host2",
                ),
                (
                    "postgresql://u:npg_S3cr3t@h/db?sslmode",
                    "missing `=` after `sslmode` in the URL's parameters",
                    "?key=value",
                ),
            ],
        );
    }

    #[test]
    fn key_value_errors() {
        errors(
            &[],
            &[
                (
                    "host=h password='npg_S3cr3t",
                    "unterminated quoted value for `password`",
                    "\\'",
                ),
                (
                    "host=h password=npg S3cr3t",
                    "after the value of `password`",
                    "password='...'",
                ),
                (
                    "host=h password",
                    "missing `=` after `password`",
                    "key=value",
                ),
                ("host=h sslmode", "missing `=` after `sslmode`", "key=value"),
                ("host=h =x", "without a key", "key=value"),
                (
                    "host=a,,b",
                    "empty entry in the host list of `host`",
                    "host1,host2",
                ),
                (
                    "host=h port=70000",
                    "invalid value \"70000\" for `port`",
                    "1 to 65535",
                ),
                (
                    "host=h port=5432,x",
                    "invalid value \"x\" for `port`",
                    "1 to 65535",
                ),
                (
                    "host=h port=+5",
                    "invalid value \"+5\" for `port`",
                    "1 to 65535",
                ),
            ],
        );
    }

    #[test]
    fn value_errors() {
        errors(&[], &[
            ("postgresql://u:npg_S3cr3t@h/db?sslmode=verify", "invalid value \"verify\" for `sslmode`", "accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"),
            ("sslmode=VERIFY-FULL", "invalid value \"VERIFY-FULL\" for `sslmode`", "`verify-full`"),
            ("sslnegotiation=tls", "for `sslnegotiation`", "`postgres`, `direct`"),
            ("channel_binding=yes", "for `channel_binding`", "`disable`, `prefer`, `require`"),
            ("sslsni=true", "for `sslsni`", "`0`, `1`"),
            ("keepalives=2", "for `keepalives`", "`0`, `1`"),
            ("ssl_min_protocol_version=TLSv2", "for `ssl_min_protocol_version`", "`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`"),
            ("ssl_max_protocol_version=TLSv1.1", "TLS below 1.2 is not supported", "`TLSv1.2` or `TLSv1.3`"),
            ("ssl_max_protocol_version=TLSv1", "TLS below 1.2 is not supported", "`TLSv1.2` or `TLSv1.3`"),
            ("ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2", "invalid SSL protocol version range", "must not be above"),
            ("connect_timeout=soon", "invalid value \"soon\" for `connect_timeout`", "seconds"),
            ("connect_timeout=1.5", "for `connect_timeout`", "seconds"),
            ("tcp_user_timeout=-1", "for `tcp_user_timeout`", "milliseconds"),
            ("keepalives_idle=x", "for `keepalives_idle`", "seconds"),
            ("keepalives_interval=1m", "for `keepalives_interval`", "seconds"),
            ("keepalives_count=-1", "for `keepalives_count`", "whole number"),
            ("keepalives_retries=x", "for `keepalives_retries`", "whole number"),
            ("target_session_attrs=primary", "\"primary\" of `target_session_attrs` is not supported yet", "read-write"),
            ("target_session_attrs=prefer-standby", "not supported yet", "read-only"),
            ("target_session_attrs=bogus", "for `target_session_attrs`", "`any`, `read-write`, `read-only`"),
            ("load_balance_hosts=yes", "for `load_balance_hosts`", "`disable`, `random`"),
            ("host=h hostaddr=localhost", "invalid value \"localhost\" for `hostaddr`", "IP addresses"),
            ("host=a,b hostaddr=127.0.0.1", "could not match 2 host names to 1 hostaddr values", "one `hostaddr` per `host`"),
            ("host=a,b port=1,2,3", "could not match 3 port numbers to 2 hosts", "one port for all hosts"),
            ("hostaddr=10.0.0.1,10.0.0.2 port=1,2,3", "could not match 3 port numbers to 2 hosts", "one port"),
            ("host=h gssencmode=require", "GSSAPI encryption is never used", "remove `gssencmode`"),
            ("host=h gssencmode=maybe", "for `gssencmode`", "`disable`, `prefer`, `require`"),
            ("host=h sslcompression=yes", "for `sslcompression`", "`0`, `1`"),
            ("host=h client_encoding=LATIN1", "for `client_encoding`", "UTF8"),
        ]);
    }

    #[test]
    fn unknown_keys_name_the_parameter_meant() {
        let cases: &[(&str, &str)] = &[
            ("sslmod", "sslmode"),
            ("SSLMODE", "sslmode"),
            ("ssl", "sslmode"),
            ("ssl_mode", "sslmode"),
            ("sslaccept", "sslmode"),
            ("requiressl", "sslmode"),
            ("database", "dbname"),
            ("db", "dbname"),
            ("dbnme", "dbname"),
            ("username", "user"),
            ("usr", "user"),
            ("pass", "password"),
            ("pwd", "password"),
            ("passwrd", "password"),
            ("sslca", "sslrootcert"),
            ("ca", "sslrootcert"),
            ("sslrootcertificate", "sslrootcert"),
            ("sslcertificate", "sslcert"),
            ("application-name", "application_name"),
            ("appname", "application_name"),
            ("connection_timeout", "connect_timeout"),
            ("connecttimeout", "connect_timeout"),
            ("timeout", "connect_timeout"),
            ("hots", "host"),
            ("hostname", "host"),
            ("prot", "port"),
            ("chanel_binding", "channel_binding"),
            ("tcp_keepalives_idle", "keepalives_idle"),
            ("ssl_min_protocol", "ssl_min_protocol_version"),
            ("application", "application_name"),
            ("target_session", "target_session_attrs"),
        ];
        for (key, meant) in cases {
            for input in [
                format!("postgresql://u:{PW}@h/db?{key}=x"),
                format!("host=h password={PW} {key}=x"),
            ] {
                let e = err_env(&input, &[]);
                assert_eq!(e.message(), format!("unknown connection parameter `{key}`"));
                assert_eq!(
                    e.help(),
                    Some(format!("the parameter is named `{meant}`").as_str()),
                    "{key}"
                );
            }
        }
        assert_eq!(
            err("postgresql://h/db?sslmod=require"),
            "unknown connection parameter `sslmod`\nhelp: the parameter is named `sslmode`"
        );
        let e = err_env("host=h frobnicate=1", &[]);
        assert_eq!(e.message(), "unknown connection parameter `frobnicate`");
        assert!(e.help().unwrap().contains("README"));
        for (key, help) in [
            ("pgbouncer", "Prisma"),
            ("connection_limit", "Options::pool_size"),
            ("schema", "search_path"),
            ("statement_timeout", "options=-c statement_timeout"),
        ] {
            let e = err_env(&format!("postgresql://h/db?{key}=1"), &[]);
            assert_eq!(e.message(), format!("unknown connection parameter `{key}`"));
            assert!(e.help().unwrap().contains(help), "{key}: {e}");
        }
    }

    #[test]
    fn unsupported_libpq_keys_say_so() {
        for (key, _) in UNSUPPORTED {
            let e = err_env(&format!("host=h {key}={PW}"), &[]);
            assert_eq!(
                e.message(),
                format!("connection parameter `{key}` is not supported by neon-connect")
            );
        }
        errors(
            &[],
            &[
                (
                    "host=h sslpassword=npg_S3cr3t",
                    "`sslpassword` is not supported",
                    "decrypt the key",
                ),
                (
                    "host=h sslcrl=/crl.pem",
                    "`sslcrl` is not supported",
                    "revocation",
                ),
                (
                    "host=h service=prod",
                    "`service` is not supported",
                    "service files",
                ),
                (
                    "host=h require_auth=scram-sha-256",
                    "`require_auth` is not supported",
                    "channel_binding=require",
                ),
            ],
        );
    }

    #[test]
    fn harmless_libpq_keys_are_accepted_and_ignored() {
        for input in [
            "host=h gssencmode=disable",
            "host=h gssencmode=prefer",
            "host=h sslcompression=0",
            "host=h sslcompression=1",
            "host=h client_encoding=UTF8",
            "host=h client_encoding=utf8",
            "postgresql://h/db?client_encoding=UTF-8&gssencmode=disable",
        ] {
            check(input, |cs| {
                assert_eq!(cs.hosts(), &[tcp("h")]);
                assert_eq!(
                    cs,
                    &ConnectionString::parse("host=h")
                        .map(|mut c| {
                            c.sources = cs.sources.clone();
                            c.dbname = cs.dbname.clone();
                            c
                        })
                        .unwrap()
                );
            });
        }
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let env = [("PGPASSWORD", PW)];
        for input in [
            format!("postgresql://u:{PW}@h/db"),
            format!("host=h user=u password='{PW}' dbname=db"),
            format!("postgresql://u@h/db?password={PW}"),
            "postgresql://u@h/db".to_string(),
        ] {
            check_env(&input, &env, |cs| {
                let debug = format!("{cs:?}");
                let pretty = format!("{cs:#?}");
                for text in [&debug, &pretty, &cs.to_string(), &cs.redacted()] {
                    assert!(!text.contains("S3cr3t"), "{input}: {text}");
                }
                assert!(debug.contains("password: Some(***)"), "{debug}");
                assert_eq!(cs.to_string(), "postgresql://u:***@h/db");
                for field in [
                    "hosts",
                    "hostaddrs",
                    "ports",
                    "user",
                    "dbname",
                    "options",
                    "application_name",
                    "sslmode",
                    "sslrootcert",
                    "sslcert",
                    "sslkey",
                    "sslnegotiation",
                    "sslsni",
                    "ssl_min_protocol_version",
                    "ssl_max_protocol_version",
                    "channel_binding",
                    "connect_timeout",
                    "tcp_user_timeout",
                    "keepalives",
                    "keepalives_idle",
                    "keepalives_interval",
                    "keepalives_count",
                    "target_session_attrs",
                    "load_balance_hosts_random",
                ] {
                    assert!(
                        debug.contains(&format!("{field}: ")),
                        "{field} missing: {debug}"
                    );
                }
            });
        }
        check("host=h", |cs| {
            assert!(format!("{cs:?}").contains("password: None"))
        });
    }

    #[test]
    fn redacted_round_trips() {
        let inputs = [
            "",
            "postgresql://u@a:5433,b:5434/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem&channel_binding=require",
            "host=/tmp port=5433 dbname=x application_name='my app' options='-c search_path=a,b'",
            "postgresql://[::1]:6000/db?sslnegotiation=direct&sslsni=0&connect_timeout=7&target_session_attrs=read-write",
            "postgresql://h/db?hostaddr=10.0.0.1&ssl_min_protocol_version=TLSv1.3&keepalives=0&load_balance_hosts=random",
            r"host=a,b port=7000 user='we ird@:/?#&=+%\'' dbname='d b/é' application_name='x&y=z#w'",
            "host=a,b,c hostaddr=10.0.0.1,,::1",
            "postgresql://[fe80::1%25eth0]:5432,h2/db",
            "postgresql://a,b:7000/db",
            "port=5433 hostaddr=127.0.0.1",
            "hostaddr=10.0.0.1,10.0.0.2 port=1,2",
            "tcp_user_timeout=1500 keepalives_idle=30 keepalives_interval=5 keepalives_retries=4 sslcert=/c.pem sslkey=/k.pem sslrootcert=system ssl_max_protocol_version=TLSv1.2 host=h",
            "postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db?application_name=a%26b%3Dc+d",
            "postgresql://h/db?options=endpoint%3Dep-cool-123&sslmode=disable&connect_timeout=1",
            "sslrootcert=./system sslmode=allow target_session_attrs=any keepalives=1 sslsni=1",
        ];
        for input in inputs {
            let mut a = ConnectionString::parse(input).unwrap_or_else(|e| panic!("{input}: {e:#}"));
            let url = a.redacted();
            let mut b =
                ConnectionString::parse(&url).unwrap_or_else(|e| panic!("{input} -> {url}: {e:#}"));
            assert_eq!(b.redacted(), url, "{input}");
            a.sources.clear();
            b.sources.clear();
            assert_eq!(a, b, "{input} -> {url}");
        }
        check("postgresql://a,b:7000/db", |cs| {
            assert_eq!(cs.redacted(), "postgresql://a:5432,b:7000/db")
        });
        check("host=a,b port=7000 user=u@x", |cs| {
            assert_eq!(cs.redacted(), "postgresql://u%40x@a:7000,b:7000/")
        });
        check("postgresql://u:p@h", |cs| {
            assert_eq!(cs.redacted(), "postgresql://u:***@h/")
        });
    }

    #[test]
    fn from_str_display_and_setters() {
        let mut cs: ConnectionString = "postgresql://h/db".parse().unwrap();
        assert_eq!(cs.to_string(), "postgresql://h/db");
        assert_eq!(cs.source("password"), Source::Default);
        cs.set_password(Password::new(PW));
        cs.set_user("u");
        cs.set_dbname("d");
        cs.set_options("-c x=1");
        cs.set_application_name("app");
        cs.set_sslmode(SslMode::VerifyFull);
        cs.set_sslrootcert(RootCert::System);
        cs.set_sslnegotiation(SslNegotiation::Direct);
        cs.set_channel_binding(ChannelBinding::Require);
        cs.set_connect_timeout(Duration::from_millis(2500));
        cs.set_target_session_attrs(TargetSessionAttrs::ReadWrite);
        for key in [
            "password",
            "user",
            "dbname",
            "options",
            "application_name",
            "sslmode",
            "sslrootcert",
            "sslnegotiation",
            "channel_binding",
            "connect_timeout",
            "target_session_attrs",
        ] {
            assert_eq!(cs.source(key), Source::Code, "{key}");
        }
        assert_eq!(cs.password().unwrap().expose(), PW);
        assert_eq!(cs.connect_timeout(), Some(Duration::from_millis(2500)));
        assert_eq!(
            cs.to_string(),
            "postgresql://u:***@h/d?options=-c%20x%3D1&application_name=app&sslmode=verify-full&sslrootcert=system&sslnegotiation=direct&channel_binding=require&connect_timeout=3&target_session_attrs=read-write"
        );
        assert!("mysql://x".parse::<ConnectionString>().is_err());
    }

    #[test]
    fn levenshtein_distance() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "", 3),
            ("", "abc", 3),
            ("sslmode", "sslmode", 0),
            ("sslmod", "sslmode", 1),
            ("sslmdoe", "sslmode", 2),
            ("kitten", "sitting", 3),
            ("é", "e", 1),
        ] {
            assert_eq!(levenshtein(a, b), d, "{a} {b}");
        }
    }
}
