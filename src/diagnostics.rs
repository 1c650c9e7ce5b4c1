//! Turns what tokio-postgres, rustls and the OS report into an [`Error`] that names the
//! failure, the step and the fix. Classification walks the cause chain: rustls errors hide
//! inside `io::Error::get_ref()`, server errors are `DbError`s, and Neon's proxy sends all of
//! its own errors as SQLSTATE `XX000`, so those are told apart by their text.

use crate::error::{Error, ErrorKind, Step};
use crate::tls::{MissingAlpn, Roots, TlsPolicy, UnencryptedDataAfterSslResponse};
use std::error::Error as StdError;
use std::io;

/// What we know about the attempt that failed.
pub(crate) struct Context<'a> {
    /// `host:port` as the user wrote it.
    pub(crate) host: &'a str,
    /// The host name alone (for TLS name checks and Neon endpoint ids).
    pub(crate) hostname: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) step: Option<Step>,
    pub(crate) policy: Option<&'a TlsPolicy>,
}

/// Every error in `err`'s chain, outermost first, including errors inside `io::Error`s.
pub(crate) fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        out.push(e);
        cur = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

fn find<'a, T: StdError + 'static>(chain: &[&'a (dyn StdError + 'static)]) -> Option<&'a T> {
    chain.iter().find_map(|e| e.downcast_ref::<T>())
}

/// Classifies a failed connection attempt.
pub(crate) fn classify(err: tokio_postgres::Error, cx: &Context<'_>) -> Error {
    let step = cx.step;
    let base = classify_inner(&err, cx);
    let base = match (base.step(), step) {
        (None, Some(s)) => base.with_step(s),
        _ => base,
    };
    base.with_host(cx.host).with_source(err)
}

fn classify_inner(err: &tokio_postgres::Error, cx: &Context<'_>) -> Error {
    let links = chain(err);
    let host = cx.host;

    if let Some(db) = err.as_db_error() {
        return classify_db(db, cx);
    }
    if find::<UnencryptedDataAfterSslResponse>(&links).is_some() {
        return Error::new(
            ErrorKind::TlsRefused,
            format!("received unencrypted data after SSL response from \"{host}\": refusing the connection"),
        )
        .with_step(Step::TlsRequest)
        .with_help(
            "something between you and the server injected plaintext before the TLS handshake \
             (a man-in-the-middle attempt or a broken proxy); check the network path and the host",
        );
    }
    if let Some(alpn) = find::<MissingAlpn>(&links) {
        return Error::new(ErrorKind::TlsHandshake, format!("{alpn} with \"{host}\""))
            .with_step(Step::TlsHandshake)
            .with_help(
                "the server does not speak direct TLS for PostgreSQL (it needs PostgreSQL 17+ or Neon's proxy); \
                 remove `sslnegotiation=direct`",
            );
    }
    if let Some(tls) = find::<rustls::Error>(&links) {
        return classify_rustls(tls, cx);
    }
    let text = links
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if text.contains("server does not support TLS") {
        return Error::new(
            ErrorKind::TlsRefused,
            format!("the server at \"{host}\" does not support TLS, and neon-connect never connects without it"),
        )
        .with_step(Step::TlsRequest)
        .with_help(
            "enable TLS on the server (`ssl = on` in postgresql.conf, with a certificate), or check that \
             host and port point at the right server; nothing else was sent to it",
        );
    }
    if text.contains("server did not use channel binding") {
        return Error::new(
            ErrorKind::Authentication,
            format!("`channel_binding=require` failed at \"{host}\": the server did not use channel binding"),
        )
        .with_step(Step::Authentication)
        .with_help(
            "the server must offer SCRAM-SHA-256-PLUS over TLS (password_encryption = scram-sha-256 and a \
             `hostssl ... scram-sha-256` line); a pooler or proxy in between can also prevent it; \
             remove `channel_binding=require` only if you trust the network path",
        );
    }
    if let Some(io) = find::<io::Error>(&links) {
        return classify_io(io, cx);
    }
    if err.is_closed() || text.contains("connection closed") {
        return Error::new(
            ErrorKind::Closed,
            format!(
                "the server at \"{host}\" closed the connection during {}",
                step_name(cx)
            ),
        )
        .retryable(true)
        .with_help(
            "the server may be restarting or overloaded; try again, and check the server's log",
        );
    }
    Error::new(
        ErrorKind::Server,
        format!(
            "connecting to \"{host}\" failed during {}: {text}",
            step_name(cx)
        ),
    )
}

fn step_name(cx: &Context<'_>) -> &'static str {
    cx.step.map_or("connection setup", Step::as_str)
}

fn classify_io(io: &io::Error, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let (kind, msg, help, retry) = match io.kind() {
        io::ErrorKind::ConnectionRefused => (
            ErrorKind::Network,
            format!("connection refused by \"{host}\""),
            "nothing is listening there: check the host and port, and that the server is running \
             (a firewall that rejects port 5432 looks the same)",
            true,
        ),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => (
            ErrorKind::Network,
            format!("the connection to \"{host}\" was reset during {}", step_name(cx)),
            "the server or something on the network path cut the connection; try again, and check the server's log",
            true,
        ),
        io::ErrorKind::UnexpectedEof => (
            ErrorKind::Closed,
            format!("the server at \"{host}\" closed the connection during {}", step_name(cx)),
            "the server may be restarting, overloaded, or refusing this client; check the server's log",
            true,
        ),
        io::ErrorKind::TimedOut => (
            ErrorKind::Timeout,
            format!("timed out during {} with \"{host}\"", step_name(cx)),
            "check that the host is reachable from here (a firewall that drops port 5432 looks like this)",
            true,
        ),
        _ if io.raw_os_error() == Some(101) || io.raw_os_error() == Some(113) => (
            ErrorKind::Network,
            format!("\"{host}\" is unreachable"),
            "check the network route to the host (VPN, firewall, IPv6 availability)",
            true,
        ),
        _ => (
            ErrorKind::Network,
            format!("network error with \"{host}\" during {}: {io}", step_name(cx)),
            "check the network path to the server and try again",
            true,
        ),
    };
    Error::new(kind, msg).with_help(help).retryable(retry)
}

fn classify_rustls(tls: &rustls::Error, cx: &Context<'_>) -> Error {
    use rustls::CertificateError as C;
    let host = cx.host;
    let roots = cx
        .policy
        .map(|p| p.roots.describe())
        .unwrap_or_else(|| "the configured roots".into());
    let cert_err = |msg: String, help: String| {
        Error::new(ErrorKind::Certificate, msg)
            .with_step(Step::TlsHandshake)
            .with_help(help)
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                let private_hint = match cx.policy.map(|p| &p.roots) {
                    Some(Roots::System) => "if the server uses a private CA, set `sslrootcert=/path/to/ca.pem`; \
                        if it uses a public CA, the server may be omitting its intermediate certificate",
                    _ => "check that this file holds the CA that signed the server's certificate \
                        (and that the server sends its intermediate certificates)",
                };
                cert_err(
                    format!(
                        "the certificate of \"{host}\" was not issued by a trusted authority (checked against {roots})"
                    ),
                    private_hint.to_string(),
                )
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                let presented = match c {
                    C::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                        format!("; it is valid for {}", presented.join(", "))
                    }
                    _ => String::new(),
                };
                cert_err(
                    format!(
                        "the certificate of \"{host}\" is not valid for the name \"{}\"{presented}",
                        cx.hostname
                    ),
                    "connect with a host name the certificate holds (not an IP address or an alias); \
                     `hostaddr` can pin the address while `host` keeps the name"
                        .to_string(),
                )
            }
            C::Expired | C::ExpiredContext { .. } => {
                let when = match c {
                    C::ExpiredContext { time, not_after } => format!(
                        " (it expired at {}, now is {})",
                        fmt_time(not_after.as_secs()),
                        fmt_time(time.as_secs())
                    ),
                    _ => String::new(),
                };
                cert_err(
                    format!("the certificate of \"{host}\" has expired{when}"),
                    "renew the server's certificate (or fix this machine's clock if it is wrong)".into(),
                )
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                let when = match c {
                    C::NotValidYetContext { time, not_before } => format!(
                        " (valid from {}, now is {})",
                        fmt_time(not_before.as_secs()),
                        fmt_time(time.as_secs())
                    ),
                    _ => String::new(),
                };
                cert_err(
                    format!("the certificate of \"{host}\" is not valid yet{when}"),
                    "check this machine's clock, or the server certificate's start date".into(),
                )
            }
            C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => cert_err(
                format!("the server \"{host}\" presented a CA certificate as its own certificate"),
                "give the server a leaf certificate signed by the CA (CA:FALSE), not the CA certificate itself".into(),
            ),
            C::Other(other) if other.to_string().contains("UnsupportedCertVersion") => cert_err(
                format!("the certificate of \"{host}\" is an X.509 v1 certificate, which is not supported"),
                "reissue the server certificate as X.509 v3 (with subjectAltName)".into(),
            ),
            other => cert_err(
                format!("the certificate of \"{host}\" was rejected: {other:?}"),
                format!("check the server's certificate chain against {roots}"),
            ),
        },
        rustls::Error::AlertReceived(alert) => {
            let (msg, help) = match alert {
                rustls::AlertDescription::CertificateRequired => (
                    format!("the server \"{host}\" requires a client certificate"),
                    "set `sslcert` and `sslkey` to your client certificate and key".to_string(),
                ),
                rustls::AlertDescription::UnknownCA | rustls::AlertDescription::BadCertificate => (
                    format!("the server \"{host}\" rejected our client certificate ({alert:?})"),
                    "use a client certificate signed by a CA the server trusts (its `ssl_ca_file`)".to_string(),
                ),
                rustls::AlertDescription::ProtocolVersion => (
                    format!("the server \"{host}\" does not support our TLS versions"),
                    "neon-connect speaks TLS 1.2 and 1.3; check `ssl_min_protocol_version` on both sides".to_string(),
                ),
                other => (
                    format!("the server \"{host}\" aborted the TLS handshake ({other:?})"),
                    "check the server's TLS settings and log".to_string(),
                ),
            };
            Error::new(ErrorKind::TlsHandshake, msg)
                .with_step(Step::TlsHandshake)
                .with_help(help)
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => Error::new(
            ErrorKind::TlsHandshake,
            format!("the server at \"{host}\" did not answer with valid TLS"),
        )
        .with_step(Step::TlsHandshake)
        .with_help("check that host and port point at a PostgreSQL server or Neon's proxy"),
        other => Error::new(
            ErrorKind::TlsHandshake,
            format!("the TLS handshake with \"{host}\" failed: {other}"),
        )
        .with_step(Step::TlsHandshake)
        .with_help("check the server's TLS settings and log"),
    }
}

fn classify_db(db: &tokio_postgres::error::DbError, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let code = db.code().code();
    let text = db.message();
    let user = cx.user.unwrap_or("(default user)");
    let server = |kind: ErrorKind, msg: String, help: &str| {
        Error::new(kind, msg).with_help(help.to_string())
    };
    match code {
        "28P01" => server(
            ErrorKind::Authentication,
            format!("password authentication failed for user \"{user}\" at \"{host}\""),
            "check the password in the connection string (or PGPASSWORD); reset it in the console if unsure",
        )
        .with_step(Step::Authentication),
        "28000" => server(
            ErrorKind::Authentication,
            format!("the server \"{host}\" refused user \"{user}\": {text}"),
            "check pg_hba.conf on the server: it must allow this user and database over `hostssl`",
        )
        .with_step(Step::Authentication),
        "3D000" => server(
            ErrorKind::Server,
            format!("the database does not exist at \"{host}\": {text}"),
            "check the database name (the path of the URL, or `dbname`)",
        )
        .with_step(Step::Startup),
        "53300" => server(
            ErrorKind::Server,
            format!("the server \"{host}\" has too many connections: {text}"),
            "lower the pool size, close idle connections, or use a pooled (-pooler) endpoint",
        )
        .retryable(true),
        "57P03" => server(
            ErrorKind::Server,
            format!("the server \"{host}\" is starting up or shutting down: {text}"),
            "wait a moment and try again",
        )
        .retryable(true),
        "57P01" | "57P02" => server(
            ErrorKind::Closed,
            format!("the server \"{host}\" terminated the connection: {text}"),
            "the server restarted or an administrator (or Neon's scale-to-zero) ended the session; reconnect",
        )
        .retryable(true),
        _ => server(
            ErrorKind::Server,
            format!("the server \"{host}\" refused the connection: {text} (SQLSTATE {code})"),
            "see the server's message above",
        ),
    }
}

/// `2024-01-31 12:00:00 UTC` from Unix seconds.
pub(crate) fn fmt_time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A timeout at `step`.
pub(crate) fn timeout(host: &str, step: Option<Step>, after: std::time::Duration) -> Error {
    let step_text = step.map_or("connection setup", Step::as_str);
    let help = match step {
        Some(Step::Tcp) | None => {
            "the host does not answer on this port: check host, port and firewalls (Neon uses 5432)"
        }
        Some(Step::TlsRequest) | Some(Step::TlsHandshake) => {
            "the server accepted the TCP connection but did not complete TLS: check that this port is \
             PostgreSQL (or Neon's proxy) and not another service"
        }
        _ => {
            "the server is slow to log in (a Neon compute waking from scale-to-zero can take seconds); \
             raise `connect_timeout` if this persists"
        }
    };
    Error::new(
        ErrorKind::Timeout,
        format!(
            "timed out after {:.1}s during the {step_text} with \"{host}\"",
            after.as_secs_f64()
        ),
    )
    .with_step(step.unwrap_or(Step::Tcp))
    .with_host(host)
    .with_help(help)
    .retryable(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Verification;

    #[test]
    fn formats_unix_time() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_580_515_200), "2020-02-01 00:00:00 UTC");
    }

    #[test]
    fn verification_words() {
        assert_eq!(Verification::None.to_string(), "not verified");
    }
}
