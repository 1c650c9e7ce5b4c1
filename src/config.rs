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
    "sslnegotiation", Some("PGSSLNEGOTIATION"), "postgres", "`postgres` (SSLRequest first) or `direct` (TLS at once, ALPN `postgresql`; PostgreSQL 17+, Neon)";
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

fn canonical(key: &str) -> Option<&'static str> {
    if key == "keepalives_retries" {
        return Some("keepalives_count");
    }
    KEYS.iter().find(|k| k.name == key).map(|k| k.name)
}

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

fn unknown_key(key: &str) -> Error {
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
        return Error::config(format!(
            "connection parameter `{key}` is not supported by neon-connect"
        ))
        .with_help(*why);
    }
    if key == "pgbouncer" {
        return Error::config("unknown connection parameter `pgbouncer`").with_help(
            "`pgbouncer=true` is a Prisma setting, not a libpq one; remove it (neon-connect detects Neon's -pooler hosts itself)",
        );
    }
    let lower = key.to_ascii_lowercase();
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
        });
    let e = Error::config(format!("unknown connection parameter `{key}`"));
    match meant {
        Some(name) => e.with_help(format!("the parameter is named `{name}`")),
        None => e.with_help(
            "see the connection string reference in the README for the accepted parameters",
        ),
    }
}

/// Where a raw value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Param(&'a str),
    Env(&'static str),
}

impl Origin<'_> {
    fn invalid(self, value: &str, accepted: &str) -> Error {
        let what = match self {
            Origin::Param(k) => format!("`{k}`"),
            Origin::Env(v) => format!("the environment variable `{v}`"),
        };
        let shown = match self {
            Origin::Param("password") | Origin::Env("PGPASSWORD") => "***".to_string(),
            _ => format!("\"{value}\""),
        };
        Error::config(format!("invalid value {shown} for {what}"))
            .with_help(format!("accepted values: {accepted}"))
    }
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
    /// # Errors
    /// [`crate::ErrorKind::ConnectionString`], naming the key or the part that is wrong.
    pub fn parse(s: &str) -> Result<ConnectionString, Error> {
        Self::parse_with_env(s, |_| None)
    }

    /// Parses a connection string, then fills what it leaves out from `PG*` variables looked
    /// up through `env` (pass `|k| std::env::var(k).ok()` for the process environment).
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
                // libpq ignores these harmless ones; they cannot weaken anything.
                match (key.as_str(), value.as_str()) {
                    ("gssencmode", "disable" | "prefer") | ("sslcompression", "0" | "1") => {
                        continue
                    }
                    ("client_encoding", v)
                        if v.eq_ignore_ascii_case("utf8") || v.eq_ignore_ascii_case("utf-8") =>
                    {
                        continue
                    }
                    ("gssencmode", _) => return Err(Error::config(
                        "`gssencmode=require` is not supported: GSSAPI encryption is never used",
                    )
                    .with_help("remove `gssencmode`; connections are encrypted with TLS")),
                    ("client_encoding", _) => {
                        return Err(Origin::Param("client_encoding")
                            .invalid(value, "`UTF8` (tokio-postgres always uses UTF-8)"))
                    }
                    _ => return Err(unknown_key(key)),
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
        if cs.sslmode.is_none() {
            match env("PGREQUIRESSL").as_deref() {
                None | Some("0") => {}
                Some("1") => {
                    cs.sslmode = Some(SslMode::Require);
                    cs.mark("sslmode", Source::Environment);
                }
                Some(v) => return Err(Origin::Env("PGREQUIRESSL").invalid(v, "`0`, `1`")),
            }
        }
        cs.check()?;
        Ok(cs)
    }

    fn mark(&mut self, key: &'static str, source: Source) {
        self.sources.retain(|(k, _)| *k != key);
        self.sources.push((key, source));
    }

    fn set(&mut self, name: &'static str, value: &str, origin: Origin<'_>) -> Result<(), Error> {
        let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match name {
            "host" => {
                self.hosts = value
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| {
                        if h.starts_with('/') {
                            Host::Unix(PathBuf::from(h))
                        } else {
                            Host::Tcp(h.trim_start_matches('[').trim_end_matches(']').to_string())
                        }
                    })
                    .collect()
            }
            "hostaddr" => {
                self.hostaddrs = value
                    .split(',')
                    .map(|a| {
                        if a.is_empty() {
                            Ok(None)
                        } else {
                            a.parse::<IpAddr>().map(Some).map_err(|_| origin.invalid(a, "IP addresses, e.g. `10.0.0.5` or `::1`"))
                        }
                    })
                    .collect::<Result<_, _>>()?
            }
            "port" => {
                self.ports = value
                    .split(',')
                    .map(|p| {
                        if p.is_empty() {
                            return Ok(5432);
                        }
                        match p.parse::<u16>() {
                            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                            _ => Err(origin.invalid(p, "a port number from 1 to 65535")),
                        }
                    })
                    .collect::<Result<_, _>>()?
            }
            "user" => self.user = non_empty(value),
            "password" => self.password = Some(Password::new(value)),
            "dbname" => self.dbname = non_empty(value),
            "options" => self.options = non_empty(value),
            "application_name" => self.application_name = non_empty(value),
            "sslmode" => {
                self.sslmode = Some(match value {
                    "disable" => SslMode::Disable,
                    "allow" => SslMode::Allow,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => {
                        return Err(origin.invalid(
                            value,
                            "`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`",
                        ))
                    }
                })
            }
            "sslrootcert" => {
                self.sslrootcert = match value {
                    "" => None,
                    "system" => Some(RootCert::System),
                    path => Some(RootCert::File(PathBuf::from(path))),
                }
            }
            "sslcert" => self.sslcert = non_empty(value).map(PathBuf::from),
            "sslkey" => self.sslkey = non_empty(value).map(PathBuf::from),
            "sslnegotiation" => {
                self.sslnegotiation = Some(match value {
                    "postgres" => SslNegotiation::Postgres,
                    "direct" => SslNegotiation::Direct,
                    _ => return Err(origin.invalid(value, "`postgres`, `direct`")),
                })
            }
            "sslsni" => self.sslsni = Some(parse_bool(value, origin)?),
            "ssl_min_protocol_version" | "ssl_max_protocol_version" => {
                let v = match value {
                    "" => None,
                    "TLSv1" | "TLSv1.1" if name == "ssl_min_protocol_version" => Some(TlsVersion::Tls12),
                    "TLSv1" | "TLSv1.1" => {
                        return Err(origin
                            .invalid(value, "`TLSv1.2`, `TLSv1.3`")
                            .with_help("TLS below 1.2 is not supported (rustls never negotiates it); use `TLSv1.2` or `TLSv1.3`"))
                    }
                    "TLSv1.2" => Some(TlsVersion::Tls12),
                    "TLSv1.3" => Some(TlsVersion::Tls13),
                    _ => return Err(origin.invalid(value, "`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`")),
                };
                if name == "ssl_min_protocol_version" {
                    self.ssl_min_protocol_version = v;
                } else {
                    self.ssl_max_protocol_version = v;
                }
            }
            "channel_binding" => {
                self.channel_binding = Some(match value {
                    "disable" => ChannelBinding::Disable,
                    "prefer" => ChannelBinding::Prefer,
                    "require" => ChannelBinding::Require,
                    _ => return Err(origin.invalid(value, "`disable`, `prefer`, `require`")),
                })
            }
            "connect_timeout" => {
                let secs: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| origin.invalid(value, "a whole number of seconds (0 = no limit of our own)"))?;
                // libpq: 0 or negative waits forever, and the minimum is 2 seconds.
                self.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64));
            }
            "tcp_user_timeout" => {
                let ms: u64 = value.trim().parse().map_err(|_| origin.invalid(value, "a whole number of milliseconds"))?;
                self.tcp_user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "keepalives" => self.keepalives = Some(parse_bool(value, origin)?),
            "keepalives_idle" | "keepalives_interval" => {
                let secs: u64 = value.trim().parse().map_err(|_| origin.invalid(value, "a whole number of seconds"))?;
                let d = Some(Duration::from_secs(secs));
                if name == "keepalives_idle" {
                    self.keepalives_idle = d;
                } else {
                    self.keepalives_interval = d;
                }
            }
            "keepalives_count" => {
                self.keepalives_count =
                    Some(value.trim().parse().map_err(|_| origin.invalid(value, "a whole number"))?)
            }
            "target_session_attrs" => {
                self.target_session_attrs = Some(match value {
                    "any" => TargetSessionAttrs::Any,
                    "read-write" => TargetSessionAttrs::ReadWrite,
                    "read-only" => TargetSessionAttrs::ReadOnly,
                    "primary" | "standby" | "prefer-standby" => {
                        return Err(origin
                            .invalid(value, "`any`, `read-write`, `read-only`")
                            .with_help(format!("`target_session_attrs={value}` is not supported yet; use `any`, `read-write` or `read-only`")))
                    }
                    _ => return Err(origin.invalid(value, "`any`, `read-write`, `read-only`")),
                })
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

    /// libpq's structural checks across keys.
    fn check(&self) -> Result<(), Error> {
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

    /// The hosts, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    /// `hostaddr` values, one per host when given.
    pub fn hostaddrs(&self) -> &[Option<IpAddr>] {
        &self.hostaddrs
    }
    /// The ports as given (empty: 5432 for every host).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
    /// The port for host number `i` (libpq: one port applies to all hosts).
    pub fn port_for(&self, i: usize) -> u16 {
        match self.ports.as_slice() {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        }
    }
    /// The user name.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// The password (its `Debug` and `Display` print `***`).
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }
    /// The database name.
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }
    /// The server `options`.
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
    /// `sslrootcert` as given.
    pub fn sslrootcert(&self) -> Option<&RootCert> {
        self.sslrootcert.as_ref()
    }
    /// `sslcert` as given.
    pub fn sslcert(&self) -> Option<&std::path::Path> {
        self.sslcert.as_deref()
    }
    /// `sslkey` as given.
    pub fn sslkey(&self) -> Option<&std::path::Path> {
        self.sslkey.as_deref()
    }
    /// `sslnegotiation` as given.
    pub fn sslnegotiation(&self) -> Option<SslNegotiation> {
        self.sslnegotiation
    }
    /// `sslsni` as given.
    pub fn sslsni(&self) -> Option<bool> {
        self.sslsni
    }
    /// `ssl_min_protocol_version` as given.
    pub fn ssl_min_protocol_version(&self) -> Option<TlsVersion> {
        self.ssl_min_protocol_version
    }
    /// `ssl_max_protocol_version` as given.
    pub fn ssl_max_protocol_version(&self) -> Option<TlsVersion> {
        self.ssl_max_protocol_version
    }
    /// `channel_binding` as given.
    pub fn channel_binding(&self) -> Option<ChannelBinding> {
        self.channel_binding
    }
    /// `connect_timeout` as given (`None`: our default).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    /// `target_session_attrs` as given.
    pub fn target_session_attrs(&self) -> Option<TargetSessionAttrs> {
        self.target_session_attrs
    }
    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Source::Default, |(_, s)| *s)
    }
    /// Sets the password.
    pub fn set_password(&mut self, password: Password) {
        self.password = Some(password);
    }
    /// Sets the application name.
    pub fn set_application_name(&mut self, name: impl Into<String>) {
        self.application_name = Some(name.into());
    }
    /// Sets the per-host connect deadline.
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = Some(timeout);
    }

    /// The settings as a `postgresql://` URL with the password shown as `***`.
    pub fn redacted(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        const PART: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let enc = |s: &str| utf8_percent_encode(s, PART).to_string();
        let mut out = String::from("postgresql://");
        if let Some(u) = &self.user {
            out.push_str(&enc(u));
        }
        if self.password.is_some() {
            out.push_str(":***");
        }
        if self.user.is_some() || self.password.is_some() {
            out.push('@');
        }
        let tcp: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = match h {
                    Host::Tcp(n) if n.contains(':') => format!("[{n}]"),
                    Host::Tcp(n) => enc(n),
                    Host::Unix(p) => enc(&p.display().to_string()),
                };
                match self.ports.as_slice() {
                    [] => name,
                    [p] if i + 1 == self.hosts.len() => format!("{name}:{p}"),
                    [_] => name,
                    many => format!("{name}:{}", many.get(i).copied().unwrap_or(5432)),
                }
            })
            .collect();
        out.push_str(&tcp.join(","));
        if self.hosts.is_empty() && !self.ports.is_empty() {
            // keep the port when only hostaddr is given
        }
        out.push('/');
        if let Some(d) = &self.dbname {
            out.push_str(&enc(d));
        }
        let mut q: Vec<String> = Vec::new();
        const VALUE: &AsciiSet = &PART.remove(b'/').remove(b':').remove(b',');
        let mut push =
            |k: &str, v: String| q.push(format!("{k}={}", utf8_percent_encode(&v, VALUE)));
        if !self.hostaddrs.is_empty() {
            push(
                "hostaddr",
                self.hostaddrs
                    .iter()
                    .map(|a| a.map(|a| a.to_string()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if self.hosts.is_empty() && !self.ports.is_empty() {
            push(
                "port",
                self.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if let Some(v) = &self.options {
            push("options", v.clone());
        }
        if let Some(v) = &self.application_name {
            push("application_name", v.clone());
        }
        if let Some(v) = self.sslmode {
            push("sslmode", crate::tls::sslmode_name(v).to_string());
        }
        match &self.sslrootcert {
            Some(RootCert::System) => push("sslrootcert", "system".into()),
            Some(RootCert::File(p)) => push("sslrootcert", p.display().to_string()),
            None => {}
        }
        if let Some(p) = &self.sslcert {
            push("sslcert", p.display().to_string());
        }
        if let Some(p) = &self.sslkey {
            push("sslkey", p.display().to_string());
        }
        if let Some(v) = self.sslnegotiation {
            push(
                "sslnegotiation",
                if v == SslNegotiation::Direct {
                    "direct"
                } else {
                    "postgres"
                }
                .into(),
            );
        }
        if let Some(v) = self.sslsni {
            push("sslsni", if v { "1" } else { "0" }.into());
        }
        let ver = |v: TlsVersion| {
            if v == TlsVersion::Tls12 {
                "TLSv1.2"
            } else {
                "TLSv1.3"
            }
            .to_string()
        };
        if let Some(v) = self.ssl_min_protocol_version {
            push("ssl_min_protocol_version", ver(v));
        }
        if let Some(v) = self.ssl_max_protocol_version {
            push("ssl_max_protocol_version", ver(v));
        }
        if let Some(v) = self.channel_binding {
            push(
                "channel_binding",
                match v {
                    ChannelBinding::Disable => "disable",
                    ChannelBinding::Prefer => "prefer",
                    ChannelBinding::Require => "require",
                }
                .into(),
            );
        }
        if let Some(v) = self.connect_timeout {
            push("connect_timeout", v.as_secs().to_string());
        }
        if let Some(v) = self.tcp_user_timeout {
            push("tcp_user_timeout", v.as_millis().to_string());
        }
        if let Some(v) = self.keepalives {
            push("keepalives", if v { "1" } else { "0" }.into());
        }
        if let Some(v) = self.keepalives_idle {
            push("keepalives_idle", v.as_secs().to_string());
        }
        if let Some(v) = self.keepalives_interval {
            push("keepalives_interval", v.as_secs().to_string());
        }
        if let Some(v) = self.keepalives_count {
            push("keepalives_count", v.to_string());
        }
        if let Some(v) = self.target_session_attrs {
            push(
                "target_session_attrs",
                match v {
                    TargetSessionAttrs::Any => "any",
                    TargetSessionAttrs::ReadWrite => "read-write",
                    TargetSessionAttrs::ReadOnly => "read-only",
                }
                .into(),
            );
        }
        if let Some(v) = self.load_balance_hosts_random {
            push(
                "load_balance_hosts",
                if v { "random" } else { "disable" }.into(),
            );
        }
        if !q.is_empty() {
            out.push('?');
            out.push_str(&q.join("&"));
        }
        out
    }
}

fn parse_bool(value: &str, origin: Origin<'_>) -> Result<bool, Error> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(origin.invalid(value, "`0`, `1`")),
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ConnectionString::parse(s)
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

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
            .field("target_session_attrs", &self.target_session_attrs)
            .finish_non_exhaustive()
    }
}

/// Splits either form into decoded (key, value) pairs, in order; later pairs override earlier.
fn split(s: &str) -> Result<Vec<(String, String)>, Error> {
    let trimmed = s.trim();
    if let Some(pos) = trimmed.find("://") {
        let scheme = &trimmed[..pos];
        if scheme.eq_ignore_ascii_case("postgresql") || scheme.eq_ignore_ascii_case("postgres") {
            return split_url(&trimmed[pos + 3..]);
        }
        if scheme.to_ascii_lowercase().starts_with("jdbc:") {
            return Err(
                Error::config(format!("invalid connection string scheme `{scheme}`")).with_help(
                    "drop the `jdbc:` prefix: use `postgresql://user:password@host/dbname`",
                ),
            );
        }
        if !scheme.contains(char::is_whitespace) && !scheme.contains('=') {
            return Err(
                Error::config(format!("invalid connection string scheme `{scheme}`"))
                    .with_help("use `postgresql://user:password@host/dbname` (or `postgres://`)"),
            );
        }
    }
    if let Some(rest) = trimmed
        .strip_prefix("postgres:")
        .or_else(|| trimmed.strip_prefix("postgresql:"))
    {
        let _ = rest;
        return Err(Error::config(
            "invalid connection string: the URL must start with `postgresql://`",
        )
        .with_help("use `postgresql://user:password@host/dbname`"));
    }
    split_kv(trimmed)
}

fn decode(part: &str, what: &str) -> Result<String, Error> {
    let bytes: Vec<u8> = {
        // Reject malformed escapes instead of passing them through.
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
        percent_encoding::percent_decode_str(part).collect()
    };
    String::from_utf8(bytes).map_err(|_| {
        Error::config(format!(
            "invalid percent-encoding in the {what}: it does not decode to UTF-8"
        ))
        .with_help("percent-encode the UTF-8 bytes of each special character")
    })
}

fn split_url(rest: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs = Vec::new();
    // As in libpq, the authority ends at the first `/`. The user info ends at an `@`: the last
    // one before the first `?` (so an unencoded `@` in the password works), or else the first
    // one (so an unencoded `?` in the password works).
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let region = &rest[..authority_end];
    let first_q = region.find('?').unwrap_or(region.len());
    let at = region[..first_q].rfind('@').or_else(|| region.find('@'));
    let (userinfo, after_user) = match at {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => {
            // An `@` after a `/` means a `/` inside the password: never quote it as a host.
            let before_query = &rest[..rest.find('?').unwrap_or(rest.len())];
            if before_query[authority_end..].contains('@') {
                return Err(Error::config(
                    "could not tell the user name and password from the host: the URL has a `/` before its `@`",
                )
                .with_help("percent-encode `/` in the user name or password as `%2F` (and `@` as `%40`, `?` as `%3F`)"));
            }
            (None, rest)
        }
    };
    let (before_query, query) = match after_user.find('?') {
        Some(i) => (&after_user[..i], Some(&after_user[i + 1..])),
        None => (after_user, None),
    };
    let (hostlist, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    if let Some(ui) = userinfo {
        let (user, password) = match ui.find(':') {
            Some(i) => (&ui[..i], Some(&ui[i + 1..])),
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
            let (host, port) = if let Some(stripped) = spec.strip_prefix('[') {
                let end = stripped.find(']').ok_or_else(|| {
                    Error::config("invalid IPv6 host: missing `]`")
                        .with_help("write IPv6 hosts as `[::1]:5432`")
                })?;
                let host = &stripped[..end];
                let after = &stripped[end + 1..];
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if after.is_empty() => None,
                    None => {
                        return Err(Error::config(format!(
                            "invalid text after the IPv6 host `[{host}]`"
                        ))
                        .with_help("write IPv6 hosts as `[::1]:5432`"))
                    }
                };
                (host.to_string(), port)
            } else {
                match spec.rfind(':') {
                    Some(i) => (decode(&spec[..i], "host")?, Some(&spec[i + 1..])),
                    None => (decode(spec, "host")?, None),
                }
            };
            hosts.push(host);
            ports.push(port.map(str::to_string));
        }
        for (h, p) in hosts.iter().zip(&ports) {
            if let Some(p) = p {
                if p.is_empty()
                    || !p.bytes().all(|b| b.is_ascii_digit())
                    || p.parse::<u16>().map_or(true, |n| n == 0)
                {
                    return Err(
                        Error::config(format!("invalid port \"{p}\" for host \"{h}\"")).with_help(
                            "the port must be a number from 1 to 65535, as in `host:5432`",
                        ),
                    );
                }
            }
        }
        pairs.push(("host".into(), hosts.join(",")));
        if ports.iter().any(Option::is_some) {
            let list: Vec<String> = ports.into_iter().map(|p| p.unwrap_or_default()).collect();
            pairs.push(("port".into(), list.join(",")));
        }
    }
    if let Some(path) = path {
        if !path.is_empty() {
            pairs.push(("dbname".into(), decode(path, "database name")?));
        }
    }
    if let Some(q) = query {
        for kv in q.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = match kv.find('=') {
                Some(i) => (&kv[..i], &kv[i + 1..]),
                None => {
                    return Err(Error::config(format!(
                        "missing `=` after `{}` in the URL's parameters",
                        decode(kv, "parameter name")?
                    ))
                    .with_help("write parameters as `?key=value&key2=value2`"))
                }
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
    }
    Ok(pairs)
}

fn split_kv(s: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs = Vec::new();
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
