//! The typed values of connection parameters (`sslmode`, hosts, TLS versions, ...), where a
//! value came from, and the parsers that turn libpq's spellings into them.

use crate::error::Error;
use std::fmt;
use std::path::PathBuf;

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

/// libpq's `sslcertmode` (PostgreSQL 16+): whether a client certificate is sent.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslCertMode {
    /// Never send one, even when `sslcert` and `sslkey` are given.
    Disable,
    /// Send one when the server asks and one is configured (the default).
    Allow,
    /// Fail unless the server asked for a certificate.
    Require,
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

/// libpq's `load_balance_hosts`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadBalanceHosts {
    /// `disable`: hosts are tried in the order given (the default).
    Disable,
    /// `random`: hosts are tried in a random order, to spread connections.
    Random,
}

impl LoadBalanceHosts {
    pub(crate) const ALL: [LoadBalanceHosts; 2] =
        [LoadBalanceHosts::Disable, LoadBalanceHosts::Random];

    /// The libpq spelling: `disable` or `random`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::Disable => "disable",
            LoadBalanceHosts::Random => "random",
        }
    }
}

/// `target_session_attrs`: which kind of server a connection must reach, with libpq's
/// (14+) meaning. The crate checks every value itself after connecting (see `connect.rs`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetSessionAttrs {
    /// `any`: whichever server answers first.
    Any,
    /// `read-write`: a server that accepts writes by default (not a standby, and not
    /// `default_transaction_read_only`).
    ReadWrite,
    /// `read-only`: a server that does not (a standby, or `default_transaction_read_only`).
    ReadOnly,
    /// `primary`: a server that is not in recovery (writable or not).
    Primary,
    /// `standby`: a server in hot standby (recovery).
    Standby,
    /// `prefer-standby`: a standby if any host is one, else any server (libpq's second pass
    /// over the hosts).
    PreferStandby,
}

impl SslMode {
    /// Every value, in libpq's order.
    pub(crate) const ALL: [SslMode; 6] = [
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
    pub(crate) const ALL: [SslNegotiation; 2] = [SslNegotiation::Postgres, SslNegotiation::Direct];

    /// The libpq spelling: `postgres` or `direct`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslNegotiation::Postgres => "postgres",
            SslNegotiation::Direct => "direct",
        }
    }
}

impl SslCertMode {
    pub(crate) const ALL: [SslCertMode; 3] = [
        SslCertMode::Disable,
        SslCertMode::Allow,
        SslCertMode::Require,
    ];

    /// The libpq spelling: `disable`, `allow` or `require`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslCertMode::Disable => "disable",
            SslCertMode::Allow => "allow",
            SslCertMode::Require => "require",
        }
    }
}

impl ChannelBinding {
    pub(crate) const ALL: [ChannelBinding; 3] = [
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
    pub(crate) const ALL: [TargetSessionAttrs; 6] = [
        TargetSessionAttrs::Any,
        TargetSessionAttrs::ReadWrite,
        TargetSessionAttrs::ReadOnly,
        TargetSessionAttrs::Primary,
        TargetSessionAttrs::Standby,
        TargetSessionAttrs::PreferStandby,
    ];

    /// The libpq spelling: `any`, `read-write`, `read-only`, `primary`, `standby` or
    /// `prefer-standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server of `role` is what this value asks for (for `prefer-standby`: in the
    /// first pass over the hosts, which wants a standby).
    pub fn accepts(self, role: ServerRole) -> bool {
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => role == ServerRole::Primary,
            TargetSessionAttrs::ReadOnly => role != ServerRole::Primary,
            TargetSessionAttrs::Primary => role != ServerRole::Standby,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => {
                role == ServerRole::Standby
            }
        }
    }

    /// What this value asks for, in words: "a server that accepts writes", "a standby", ...
    pub(crate) fn wants(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any server",
            TargetSessionAttrs::ReadWrite => "a server that accepts writes",
            TargetSessionAttrs::ReadOnly => "a read-only server",
            TargetSessionAttrs::Primary => "a primary",
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => "a standby",
        }
    }
}

/// What kind of server a connection reached, as libpq's `target_session_attrs` checks see it:
/// from the `in_hot_standby` and `default_transaction_read_only` the server reports
/// (PostgreSQL 14+), else from `pg_is_in_recovery()` and `transaction_read_only`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerRole {
    /// Not in recovery, and accepts writes by default.
    Primary,
    /// Not in recovery, but `default_transaction_read_only` is on.
    ReadOnlyPrimary,
    /// In hot standby (recovery): read-only.
    Standby,
}

impl ServerRole {
    /// In words: `primary`, `read-only primary` or `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Primary => "primary",
            ServerRole::ReadOnlyPrimary => "read-only primary",
            ServerRole::Standby => "standby",
        }
    }

    /// From what the server said: whether it is in hot standby, and whether sessions are
    /// read-only by default.
    pub(crate) fn from_flags(in_hot_standby: bool, read_only: bool) -> ServerRole {
        match (in_hot_standby, read_only) {
            (true, _) => ServerRole::Standby,
            (false, true) => ServerRole::ReadOnlyPrimary,
            (false, false) => ServerRole::Primary,
        }
    }
}

impl std::fmt::Display for ServerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// Set in code, through a setter such as [`ConnectionString::set_password`](crate::ConnectionString::set_password).
    Code,
    /// The password file (`PGPASSFILE`, or `~/.pgpass`).
    PasswordFile,
}

/// A password. Its `Debug` and `Display` print `***`; read it with [`Password::expose`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Password(pub(super) String);

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

/// Where a raw value came from, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    /// A key of the connection string, as the user spelled it.
    Param(&'a str),
    /// An environment variable.
    Env(&'static str),
}

impl Origin<'_> {
    /// "`sslmode`" or "the environment variable `PGSSLMODE`".
    pub(super) fn name(self) -> String {
        match self {
            Origin::Param(k) => format!("`{k}`"),
            Origin::Env(v) => format!("the environment variable `{v}`"),
        }
    }

    /// `invalid value "x" for <origin>` with the accepted values as help. Never shows a
    /// password.
    pub(super) fn invalid(self, value: &str, accepted: &str) -> Error {
        let shown = match self {
            Origin::Param("password") | Origin::Env("PGPASSWORD") => "***".to_string(),
            _ => format!("\"{value}\""),
        };
        Error::config(format!("invalid value {shown} for {}", self.name()))
            .with_help(format!("accepted values: {accepted}"))
    }
}

/// "`a`, `b`, `c`".
pub(super) fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of `all` whose libpq spelling is `value`.
pub(super) fn pick<T: Copy>(
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
pub(super) fn parse_bool(value: &str, origin: Origin<'_>) -> Result<bool, Error> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(origin.invalid(value, "`0`, `1`")),
    }
}

/// A whole number (surrounding spaces allowed, as libpq does).
pub(super) fn parse_int<T: std::str::FromStr>(
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
pub(super) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|n| *n > 0)
}

/// A comma list of hosts; a host starting with `/` is a Unix socket directory.
pub(super) fn parse_hosts(value: &str, origin: Origin<'_>) -> Result<Vec<Host>, Error> {
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
            if h.contains('\0') {
                return Err(Error::config(format!(
                    "a host in {} contains a NUL character",
                    origin.name()
                ))
                .with_help("remove the NUL (`%00` in a URL) from the host"));
            }
            Ok(if h.starts_with('/') {
                Host::Unix(PathBuf::from(h))
            } else {
                let h = h
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h);
                check_host_name(h, origin)?;
                Host::Tcp(h.to_string())
            })
        })
        .collect()
}

/// Refuses host names no server can have, before anything is looked up: a password that
/// spilled into the host (an unencoded `@`, `#`, `/` or `?` in the URL's password, or a
/// whole URL given as `host`/`PGHOST`) must not reach DNS, logs or error messages, so such a
/// host is never quoted. An IPv4 address with leading zeros is ambiguous (some resolvers read
/// `010` as octal).
fn check_host_name(h: &str, origin: Origin<'_>) -> Result<(), Error> {
    if h.contains("://") {
        return Err(Error::config(format!(
            "{} holds a whole connection URL, not a host name (not shown: it may contain a password)",
            origin.name()
        ))
        .with_help(
            "give the URL itself as the connection string (or DATABASE_URL), not as `host`/PGHOST",
        ));
    }
    if h.contains(['@', '#', '/', '?']) || h.chars().any(char::is_whitespace) {
        return Err(Error::config(format!(
            "{} holds something that is not a host name (not shown: it looks like part of a password)",
            origin.name()
        ))
        .with_help(
            "percent-encode special characters in the URL's password (`@` as `%40`, `#` as `%23`, `/` as `%2F`, `?` as `%3F`, `:` as `%3A`)",
        ));
    }
    let octets: Vec<&str> = h.split('.').collect();
    let dotted_quad = octets.len() == 4
        && octets
            .iter()
            .all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
    if dotted_quad && octets.iter().any(|o| o.len() > 1 && o.starts_with('0')) {
        let plain: Vec<String> = octets
            .iter()
            .map(|o| o.trim_start_matches('0'))
            .map(|o| {
                if o.is_empty() {
                    "0".to_string()
                } else {
                    o.to_string()
                }
            })
            .collect();
        return Err(Error::config(format!(
            "the host \"{h}\" in {} is not a valid IP address: leading zeros are ambiguous (some resolvers read them as octal)",
            origin.name()
        ))
        .with_help(format!("write it without leading zeros: `{}`", plain.join("."))));
    }
    Ok(())
}
