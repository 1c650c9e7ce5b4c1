//! The key table: every connection parameter we accept (its libpq name, environment variable,
//! default, meaning, how its value is read and how it is written back), the libpq parameters
//! we refuse and why, other drivers' names, and suggestions for near misses.
//!
//! Adding a parameter: one row here, its field with a getter (and setter) in `mod.rs`, and
//! the code that uses it.

use super::values::{
    parse_bool, parse_hosts, parse_int, parse_port, pick, ChannelBinding, Host, LoadBalanceHosts,
    Origin, Password, RootCert, SslCertMode, SslMode, SslNegotiation, TargetSessionAttrs,
    TlsVersion,
};
use super::ConnectionString;
use crate::error::Error;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Reads a raw (decoded) value into the connection string.
type Set = fn(&mut ConnectionString, &str, Origin<'_>) -> Result<(), Error>;
/// The value in libpq's spelling, as the redacted form and `Debug` show it (`None`: not set).
/// The password and `sslpassword` show as `***`.
type Show = fn(&ConnectionString) -> Option<String>;

/// One accepted connection parameter: the single table behind parsing, the environment, the
/// redacted form, `Debug` and the docs.
pub(crate) struct KeyInfo {
    pub(crate) name: &'static str,
    pub(crate) env: Option<&'static str>,
    /// The default, for the README's reference table (built by a test).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) default: &'static str,
    /// What the key does, for the README's reference table.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) doc: &'static str,
    pub(super) set: Set,
    pub(super) show: Show,
}

impl std::fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyInfo").field("name", &self.name).finish()
    }
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

fn secs(value: &str, origin: Origin<'_>) -> Result<Option<Duration>, Error> {
    let n: u64 = parse_int(value, origin, "a whole number of seconds")?;
    Ok((n > 0).then(|| Duration::from_secs(n)))
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

fn tls_version(cs_min: bool, value: &str, origin: Origin<'_>) -> Result<Option<TlsVersion>, Error> {
    // libpq compares these without regard to case.
    Ok(match value.to_ascii_lowercase().as_str() {
        "" => None,
        // rustls goes no lower than TLS 1.2, which only raises the minimum.
        "tlsv1" | "tlsv1.1" if cs_min => Some(TlsVersion::Tls12),
        "tlsv1" | "tlsv1.1" => {
            return Err(Error::config(format!(
                "invalid value \"{value}\" for {}: TLS below 1.2 is not supported",
                origin.name()
            ))
            .with_help("use `TLSv1.2` or `TLSv1.3` (rustls never negotiates older versions)"))
        }
        "tlsv1.2" => Some(TlsVersion::Tls12),
        "tlsv1.3" => Some(TlsVersion::Tls13),
        _ => {
            let accepted = if cs_min {
                "`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`"
            } else {
                "`TLSv1.2`, `TLSv1.3`"
            };
            return Err(origin.invalid(value, accepted));
        }
    })
}

/// Every key we accept, in the order the docs (and the redacted form) list them.
pub(crate) static KEYS: &[KeyInfo] = &[
    KeyInfo {
        name: "host",
        env: Some("PGHOST"),
        default: "(none: an error)",
        doc: "host name, IP address, or Unix socket directory (starts with `/`); a comma list for several hosts",
        set: |cs, v, o| {
            cs.hosts = parse_hosts(v, o)?;
            Ok(())
        },
        show: |cs| {
            let hosts: Vec<String> = cs
                .hosts
                .iter()
                .map(|h| match h {
                    Host::Tcp(n) => n.clone(),
                    Host::Unix(p) => path(p),
                })
                .collect();
            (!hosts.is_empty()).then(|| hosts.join(","))
        },
    },
    KeyInfo {
        name: "hostaddr",
        env: Some("PGHOSTADDR"),
        default: "(none)",
        doc: "IP address to connect to instead of resolving `host`; `host` is still the name TLS checks",
        set: |cs, v, o| {
            cs.hostaddrs = if v.is_empty() {
                Vec::new()
            } else {
                v.split(',')
                    .map(|a| {
                        if a.is_empty() {
                            return Ok(None);
                        }
                        a.parse::<IpAddr>().map(Some).map_err(|_| {
                            o.invalid(a, "IP addresses, e.g. `10.0.0.5` or `::1` (names go in `host`)")
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            Ok(())
        },
        show: |cs| {
            (!cs.hostaddrs.is_empty()).then(|| {
                cs.hostaddrs
                    .iter()
                    .map(|a| a.map(|a| a.to_string()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        },
    },
    KeyInfo {
        name: "port",
        env: Some("PGPORT"),
        default: "5432",
        doc: "port, or a comma list with one port per host",
        set: |cs, v, o| {
            cs.ports = if v.is_empty() {
                Vec::new()
            } else {
                v.split(',')
                    .map(|p| {
                        if p.is_empty() {
                            return Ok(5432);
                        }
                        parse_port(p).ok_or_else(|| o.invalid(p, "a port number from 1 to 65535"))
                    })
                    .collect::<Result<_, _>>()?
            };
            Ok(())
        },
        show: |cs| {
            (!cs.ports.is_empty())
                .then(|| cs.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
        },
    },
    KeyInfo {
        name: "user",
        env: Some("PGUSER"),
        default: "the OS user",
        doc: "role to log in as",
        set: |cs, v, _| {
            cs.user = non_empty(v);
            Ok(())
        },
        show: |cs| cs.user.clone(),
    },
    KeyInfo {
        name: "password",
        env: Some("PGPASSWORD"),
        default: "(none)",
        doc: "password (never printed by this crate)",
        // libpq: an empty password is no password.
        set: |cs, v, _| {
            cs.password = non_empty(v).map(Password);
            Ok(())
        },
        show: |cs| cs.password.as_ref().map(|_| "***".to_string()),
    },
    KeyInfo {
        name: "dbname",
        env: Some("PGDATABASE"),
        default: "the user name",
        doc: "database",
        set: |cs, v, _| {
            cs.dbname = non_empty(v);
            Ok(())
        },
        show: |cs| cs.dbname.clone(),
    },
    KeyInfo {
        name: "options",
        env: Some("PGOPTIONS"),
        default: "(none)",
        doc: "command-line options for the server, e.g. `-c search_path=app` or Neon's `endpoint=<id>`",
        set: |cs, v, _| {
            cs.options = non_empty(v);
            Ok(())
        },
        show: |cs| cs.options.clone(),
    },
    KeyInfo {
        name: "application_name",
        env: Some("PGAPPNAME"),
        default: "(none)",
        doc: "name the server shows in `pg_stat_activity`",
        set: |cs, v, _| {
            cs.application_name = non_empty(v);
            Ok(())
        },
        show: |cs| cs.application_name.clone(),
    },
    KeyInfo {
        name: "sslmode",
        env: Some("PGSSLMODE"),
        default: "verify-full",
        doc: "`disable` (refused), `allow`/`prefer` (treated as `require`), `require`, `verify-ca`, `verify-full`",
        set: |cs, v, o| {
            cs.sslmode = Some(pick(v, &SslMode::ALL, SslMode::as_str, o)?);
            Ok(())
        },
        show: |cs| cs.sslmode.map(|m| m.as_str().to_string()),
    },
    KeyInfo {
        name: "sslrootcert",
        env: Some("PGSSLROOTCERT"),
        default: "the system store",
        doc: "PEM file of trusted roots, or `system` for the system store",
        set: |cs, v, _| {
            // libpq: only the exact word `system` is special; `./system` is a file.
            cs.sslrootcert = match v {
                "" => None,
                "system" => Some(RootCert::System),
                p => Some(RootCert::File(PathBuf::from(p))),
            };
            Ok(())
        },
        show: |cs| {
            cs.sslrootcert.as_ref().map(|r| match r {
                RootCert::System => "system".to_string(),
                RootCert::File(p) => path(p),
            })
        },
    },
    KeyInfo {
        name: "sslcert",
        env: Some("PGSSLCERT"),
        default: "`~/.postgresql/postgresql.crt` when it exists",
        doc: "client certificate (PEM or DER)",
        set: |cs, v, _| {
            cs.sslcert = non_empty(v).map(PathBuf::from);
            Ok(())
        },
        show: |cs| cs.sslcert.as_deref().map(path),
    },
    KeyInfo {
        name: "sslkey",
        env: Some("PGSSLKEY"),
        default: "`~/.postgresql/postgresql.key` (for a certificate)",
        doc: "client private key (PEM or DER: PKCS#8, encrypted PKCS#8, PKCS#1, SEC1; must not be readable by group or others)",
        set: |cs, v, _| {
            cs.sslkey = non_empty(v).map(PathBuf::from);
            Ok(())
        },
        show: |cs| cs.sslkey.as_deref().map(path),
    },
    KeyInfo {
        name: "sslpassword",
        env: None,
        default: "(none)",
        doc: "passphrase of an encrypted `sslkey` (PKCS#8 `BEGIN ENCRYPTED PRIVATE KEY`); never printed; no environment variable, as in libpq",
        set: |cs, v, _| {
            cs.sslpassword = non_empty(v).map(Password);
            Ok(())
        },
        show: |cs| cs.sslpassword.as_ref().map(|_| "***".to_string()),
    },
    KeyInfo {
        name: "sslcertmode",
        env: Some("PGSSLCERTMODE"),
        default: "allow",
        doc: "`disable` (never send a client certificate), `allow` (send it when the server asks), `require` (fail with \"server did not request an SSL certificate\" unless the server asked)",
        set: |cs, v, o| {
            cs.sslcertmode = Some(pick(v, &SslCertMode::ALL, SslCertMode::as_str, o)?);
            Ok(())
        },
        show: |cs| cs.sslcertmode.map(|m| m.as_str().to_string()),
    },
    KeyInfo {
        name: "sslcrl",
        env: Some("PGSSLCRL"),
        default: "`~/.postgresql/root.crl` when it exists and the roots come from a file",
        doc: "PEM file of certificate revocation lists checked against the server's whole chain (`verify-ca`, `verify-full`, `require` with a root file); a missing file is ignored as in libpq, an unreadable one is an error",
        set: |cs, v, _| {
            cs.sslcrl = non_empty(v).map(PathBuf::from);
            Ok(())
        },
        show: |cs| cs.sslcrl.as_deref().map(path),
    },
    KeyInfo {
        name: "sslcrldir",
        env: Some("PGSSLCRLDIR"),
        default: "(none)",
        doc: "directory of PEM certificate revocation lists (every file in it; `openssl rehash` is not needed), checked as `sslcrl`",
        set: |cs, v, _| {
            cs.sslcrldir = non_empty(v).map(PathBuf::from);
            Ok(())
        },
        show: |cs| cs.sslcrldir.as_deref().map(path),
    },
    KeyInfo {
        name: "sslnegotiation",
        env: Some("PGSSLNEGOTIATION"),
        default: "postgres; direct for Neon hosts (`*.neon.tech`, `*.neon.build`; falls back once per host)",
        doc: "`postgres` (SSLRequest first) or `direct` (TLS at once, ALPN `postgresql`; PostgreSQL 17+, Neon); written out, no fallback",
        set: |cs, v, o| {
            cs.sslnegotiation = Some(pick(v, &SslNegotiation::ALL, SslNegotiation::as_str, o)?);
            Ok(())
        },
        show: |cs| cs.sslnegotiation.map(|m| m.as_str().to_string()),
    },
    KeyInfo {
        name: "sslsni",
        env: Some("PGSSLSNI"),
        default: "1",
        doc: "`1` sends the host name in TLS (SNI; Neon needs it), `0` does not",
        set: |cs, v, o| {
            cs.sslsni = Some(parse_bool(v, o)?);
            Ok(())
        },
        show: |cs| cs.sslsni.map(flag),
    },
    KeyInfo {
        name: "ssl_min_protocol_version",
        env: Some("PGSSLMINPROTOCOLVERSION"),
        default: "TLSv1.2",
        doc: "`TLSv1.2` or `TLSv1.3` (`TLSv1`/`TLSv1.1` mean TLSv1.2: rustls goes no lower)",
        set: |cs, v, o| {
            cs.ssl_min_protocol_version = tls_version(true, v, o)?;
            Ok(())
        },
        show: |cs| cs.ssl_min_protocol_version.map(|v| v.as_str().to_string()),
    },
    KeyInfo {
        name: "ssl_max_protocol_version",
        env: Some("PGSSLMAXPROTOCOLVERSION"),
        default: "(none)",
        doc: "`TLSv1.2` or `TLSv1.3`",
        set: |cs, v, o| {
            cs.ssl_max_protocol_version = tls_version(false, v, o)?;
            Ok(())
        },
        show: |cs| cs.ssl_max_protocol_version.map(|v| v.as_str().to_string()),
    },
    KeyInfo {
        name: "channel_binding",
        env: Some("PGCHANNELBINDING"),
        default: "prefer",
        doc: "`disable`, `prefer`, `require` (SCRAM-SHA-256-PLUS bound to the TLS certificate)",
        set: |cs, v, o| {
            cs.channel_binding = Some(pick(v, &ChannelBinding::ALL, ChannelBinding::as_str, o)?);
            Ok(())
        },
        show: |cs| cs.channel_binding.map(|m| m.as_str().to_string()),
    },
    KeyInfo {
        name: "connect_timeout",
        env: Some("PGCONNECT_TIMEOUT"),
        default: "15",
        doc: "seconds for each host's whole handshake (TCP, TLS, login); libpq's minimum of 2 applies",
        set: |cs, v, o| {
            let secs: i64 = parse_int(v, o, "a whole number of seconds (0: no limit)")?;
            // libpq: 0 or negative waits forever, and the minimum is 2 seconds.
            cs.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64));
            Ok(())
        },
        // Whole seconds, rounded up so that a deadline set in code is never shortened.
        show: |cs| cs.connect_timeout.map(|v| v.as_millis().div_ceil(1000).to_string()),
    },
    KeyInfo {
        name: "tcp_user_timeout",
        env: None,
        default: "30000 (libpq: the OS default)",
        doc: "milliseconds, as in libpq (tokio-postgres reads seconds; we convert)",
        set: |cs, v, o| {
            // Milliseconds, as in libpq (tokio-postgres reads seconds); 0: the OS default.
            let ms: u64 = parse_int(v, o, "a whole number of milliseconds")?;
            cs.tcp_user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            Ok(())
        },
        show: |cs| cs.tcp_user_timeout.map(|v| v.as_millis().to_string()),
    },
    KeyInfo {
        name: "keepalives",
        env: None,
        default: "1",
        doc: "`1` or `0`: TCP keepalives",
        set: |cs, v, o| {
            cs.keepalives = Some(parse_bool(v, o)?);
            Ok(())
        },
        show: |cs| cs.keepalives.map(flag),
    },
    KeyInfo {
        name: "keepalives_idle",
        env: None,
        default: "15 (libpq: the OS default, 7200 on Linux)",
        doc: "seconds of idle before keepalives",
        set: |cs, v, o| {
            cs.keepalives_idle = secs(v, o)?;
            Ok(())
        },
        show: |cs| cs.keepalives_idle.map(|v| v.as_secs().to_string()),
    },
    KeyInfo {
        name: "keepalives_interval",
        env: None,
        default: "5 (libpq: the OS default, 75 on Linux)",
        doc: "seconds between keepalives",
        set: |cs, v, o| {
            cs.keepalives_interval = secs(v, o)?;
            Ok(())
        },
        show: |cs| cs.keepalives_interval.map(|v| v.as_secs().to_string()),
    },
    KeyInfo {
        name: "keepalives_count",
        env: None,
        default: "3 (libpq: the OS default, 9 on Linux)",
        doc: "keepalives lost before the connection is dropped (`keepalives_retries` is accepted too)",
        set: |cs, v, o| {
            let n: u32 = parse_int(v, o, "a whole number")?;
            cs.keepalives_count = (n > 0).then_some(n);
            Ok(())
        },
        show: |cs| cs.keepalives_count.map(|v| v.to_string()),
    },
    KeyInfo {
        name: "target_session_attrs",
        env: Some("PGTARGETSESSIONATTRS"),
        default: "any",
        doc: "`any`, `read-write`, `read-only`, `primary`, `standby` or `prefer-standby` (a standby if there is one); checked by the crate after connecting, as libpq 14+ does",
        set: |cs, v, o| {
            cs.target_session_attrs =
                Some(pick(v, &TargetSessionAttrs::ALL, TargetSessionAttrs::as_str, o)?);
            Ok(())
        },
        show: |cs| cs.target_session_attrs.map(|v| v.as_str().to_string()),
    },
    KeyInfo {
        name: "load_balance_hosts",
        env: Some("PGLOADBALANCEHOSTS"),
        default: "disable",
        doc: "`disable` (hosts in order) or `random`",
        set: |cs, v, o| {
            cs.load_balance_hosts = Some(pick(v, &LoadBalanceHosts::ALL, LoadBalanceHosts::as_str, o)?);
            Ok(())
        },
        show: |cs| cs.load_balance_hosts.map(|v| v.as_str().to_string()),
    },
];

/// The table entry of a canonical key name.
pub(super) fn info(name: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.name == name)
}

/// libpq parameters we refuse, with why.
pub(super) static UNSUPPORTED: &[(&str, &str)] = &[
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
#[cfg(test)]
pub(crate) fn reference_table() -> String {
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
pub(super) fn canonical(key: &str) -> Option<&'static str> {
    if key == "keepalives_retries" {
        return Some("keepalives_count");
    }
    KEYS.iter().find(|k| k.name == key).map(|k| k.name)
}

/// Edit distance (insertions, deletions, substitutions) between two keys.
pub(super) fn levenshtein(a: &str, b: &str) -> usize {
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
pub(super) fn unknown_key(key: &str) -> Error {
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
pub(super) fn ignored(key: &str, value: &str) -> Option<Result<(), Error>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_reference_table_matches_the_key_table() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&reference_table()),
            "README's connection string reference is out of date; paste:\n{}",
            reference_table()
        );
    }

    #[test]
    fn every_key_reads_back_what_it_shows() {
        // For each key: a value set through the table shows as the same libpq spelling.
        let samples = [
            ("host", "a,b"),
            ("hostaddr", "10.0.0.1"),
            ("port", "5432,7000"),
            ("user", "alex"),
            ("dbname", "db"),
            ("options", "-c search_path=app"),
            ("application_name", "billing"),
            ("sslmode", "verify-ca"),
            ("sslrootcert", "/ca.pem"),
            ("sslcert", "/c.pem"),
            ("sslkey", "/k.pem"),
            ("sslpassword", "***"),
            ("sslcertmode", "require"),
            ("sslcrl", "/crl.pem"),
            ("sslcrldir", "/crls"),
            ("sslnegotiation", "direct"),
            ("sslsni", "0"),
            ("ssl_min_protocol_version", "TLSv1.3"),
            ("ssl_max_protocol_version", "TLSv1.3"),
            ("channel_binding", "require"),
            ("connect_timeout", "7"),
            ("tcp_user_timeout", "1500"),
            ("keepalives", "0"),
            ("keepalives_idle", "30"),
            ("keepalives_interval", "5"),
            ("keepalives_count", "4"),
            ("target_session_attrs", "read-write"),
            ("load_balance_hosts", "random"),
        ];
        assert_eq!(samples.len() + 1, KEYS.len(), "a key has no sample");
        for (key, value) in samples {
            // Two hosts, so that two ports (or one hostaddr per host) are valid.
            let hosts = match key {
                "host" => "",
                "hostaddr" => "host=a",
                _ => "host=a,b",
            };
            let cs = ConnectionString::parse(&format!("{hosts} {key}='{value}'")).unwrap();
            let info = info(key).unwrap();
            assert_eq!((info.show)(&cs).as_deref(), Some(value), "{key}");
        }
    }
}
