//! Turns what tokio-postgres, rustls and the OS report into an [`Error`] that names the
//! failure, the step and the fix. Classification walks the cause chain: rustls errors hide
//! inside `io::Error::get_ref()`, server errors are `DbError`s, and Neon's proxy sends all of
//! its own errors as SQLSTATE `XX000`, so those are told apart by their text.

use crate::error::{Error, Step};
use crate::tls::{
    CertificateNotRequested, ConnectPhaseLimit, MissingAlpn, RevocationError, Roots, TlsPolicy,
    UnencryptedDataAfterSslResponse,
};
use std::error::Error as StdError;
use std::io;

mod catalogue;
pub(crate) mod query;
mod sqlstate;

pub use catalogue::Diagnosis;

/// An error for diagnosis `d` with this `message`: kind, help and retryability come from the
/// catalogue.
pub(crate) fn diagnose(d: Diagnosis, message: impl Into<String>) -> Error {
    Error::new(d.kind(), message)
        .with_help(d.help())
        .retryable(d.is_retryable())
        .with_diagnosis(d)
}

/// What we know about the attempt that failed.
pub(crate) struct FailedAttempt<'a> {
    /// `host:port` as the user wrote it.
    pub(crate) host: &'a str,
    /// The host name alone (for TLS name checks and Neon endpoint ids).
    pub(crate) hostname: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) step: Option<Step>,
    pub(crate) policy: Option<&'a TlsPolicy>,
    /// What TLS negotiated, when the handshake completed.
    pub(crate) tls: Option<crate::tls::TlsInfo>,
    /// The startup `options`, if any.
    pub(crate) options: Option<&'a str>,
    /// The deadline the attempt had (for timeout messages).
    pub(crate) deadline: std::time::Duration,
    /// Whether the host is a Unix socket directory (`hostname` is then the socket's path).
    pub(crate) unix_socket: bool,
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
pub(crate) fn classify(err: tokio_postgres::Error, cx: &FailedAttempt<'_>) -> Error {
    let step = cx.step;
    let base = classify_inner(&err, cx);
    let base = match (base.step(), step) {
        (None, Some(s)) => base.with_step(s),
        _ => base,
    };
    base.with_host(cx.host).with_source(err)
}

fn classify_inner(err: &tokio_postgres::Error, cx: &FailedAttempt<'_>) -> Error {
    let links = chain(err);
    let host = cx.host;

    if let Some(db) = err.as_db_error() {
        return classify_db(db, cx);
    }
    if find::<UnencryptedDataAfterSslResponse>(&links).is_some() {
        return diagnose(
            Diagnosis::TlsInjectedPlaintext,
            format!("received unencrypted data after SSL response from \"{host}\": refusing the connection"),
        )
        .with_step(Step::TlsRequest);
    }
    if let Some(alpn) = find::<MissingAlpn>(&links) {
        return diagnose(Diagnosis::TlsAlpn, format!("{alpn} with \"{host}\""))
            .with_step(Step::TlsHandshake);
    }
    if let Some(limit) = find::<ConnectPhaseLimit>(&links) {
        return diagnose(
            Diagnosis::ServerMessageTooLarge,
            format!("refused \"{host}\": {limit}"),
        )
        .with_step(if limit.during_authentication {
            Step::Authentication
        } else {
            Step::Startup
        });
    }
    if find::<CertificateNotRequested>(&links).is_some() {
        return diagnose(
            Diagnosis::TlsClientCertificateNotRequested,
            format!("server did not request an SSL certificate: \"{host}\" finished the TLS handshake without asking for one (sslcertmode=require)"),
        )
        .with_step(Step::TlsHandshake);
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
        // tokio-postgres treats every answer but `S` alike without reading it; an `N` is the
        // usual one. We never show a pre-TLS error's text (CVE-2024-10977).
        return diagnose(
            Diagnosis::TlsServerWithoutTls,
            format!("the server at \"{host}\" does not support TLS, and neon-connect never connects without it"),
        )
        .with_step(Step::TlsRequest);
    }
    if text.contains("server did not use channel binding") {
        let no_hash = cx
            .tls
            .as_ref()
            .is_some_and(|t| t.channel_binding_digest.is_none());
        if no_hash {
            return diagnose(
                Diagnosis::ChannelBindingNoHash,
                format!("`channel_binding=require` cannot work with \"{host}\": its certificate's signature algorithm gives no channel binding hash"),
            )
            .with_step(Step::Authentication);
        }
        let sni_missing = cx.tls.as_ref().is_some_and(|t| !t.sni_sent);
        if sni_missing {
            return diagnose(
                Diagnosis::ChannelBindingCleartext,
                format!("`channel_binding=require` failed at \"{host}\": the server asked for a cleartext password (no SNI was sent, so a Neon proxy cannot tell the endpoint)"),
            )
            .with_step(Step::Authentication);
        }
        return diagnose(
            Diagnosis::ChannelBindingNotOffered,
            format!("`channel_binding=require` failed at \"{host}\": the server did not use channel binding"),
        )
        .with_step(Step::Authentication);
    }
    if text.contains("password missing") {
        let user = cx.user.unwrap_or("(default user)");
        return diagnose(
            Diagnosis::PasswordMissing,
            format!("the server \"{host}\" asks for a password for user \"{user}\", and none was given (not in the connection string, PGPASSWORD or the password file)"),
        )
        .with_step(Step::Authentication);
    }
    if text.contains("error parsing response from server")
        || text.contains("unexpected message from server")
        || text.contains("invalid message length")
    {
        return diagnose(
            Diagnosis::ProtocolViolation,
            format!(
                "the server \"{host}\" sent a message that is not valid PostgreSQL protocol during {}: {text}",
                step_name(cx)
            ),
        );
    }
    if let Some(io) = find::<io::Error>(&links) {
        return classify_io(io, cx);
    }
    if err.is_closed() || text.contains("connection closed") {
        return diagnose(
            Diagnosis::NetworkClosed,
            format!(
                "the server at \"{host}\" closed the connection during {}",
                step_name(cx)
            ),
        );
    }
    diagnose(
        Diagnosis::ServerOther,
        format!(
            "connecting to \"{host}\" failed during {}: {text}",
            step_name(cx)
        ),
    )
}

fn step_name(cx: &FailedAttempt<'_>) -> &'static str {
    cx.step.map_or("connection setup", Step::as_str)
}

pub(crate) fn classify_io(io: &io::Error, cx: &FailedAttempt<'_>) -> Error {
    let host = cx.host;
    // tokio-postgres's own `target_session_attrs` check.
    let text = io.to_string();
    if io.kind() == io::ErrorKind::PermissionDenied
        && (text.contains("does not allow writes") || text.contains("is not read only"))
    {
        let (what, wanted) = if text.contains("does not allow writes") {
            (
                "does not allow writes (a standby, or read-only)",
                "read-write",
            )
        } else {
            ("is not read-only (a primary)", "read-only")
        };
        return diagnose(
            Diagnosis::TargetSessionAttrsUnmatched,
            format!("the server \"{host}\" {what}, and `target_session_attrs={wanted}` asks for one that is not"),
        )
        .with_step(Step::Startup);
    }
    if cx.unix_socket && io.kind() == io::ErrorKind::NotFound {
        return diagnose(
            Diagnosis::UnixSocketMissing,
            format!(
                "no PostgreSQL server socket exists at \"{host}\" ({})",
                cx.hostname
            ),
        )
        .with_step(Step::Tcp);
    }
    let hung_up = matches!(
        io.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    );
    if hung_up && cx.step == Some(Step::TlsHandshake) && cx.policy.is_some_and(|p| p.direct) {
        return diagnose(
            Diagnosis::TlsDirectUnsupported,
            format!("the server at \"{host}\" hung up on direct TLS: it does not speak it"),
        )
        .with_step(Step::TlsHandshake);
    }
    match io.kind() {
        io::ErrorKind::ConnectionRefused => diagnose(
            Diagnosis::NetworkRefused,
            format!("connection refused by \"{host}\""),
        ),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => diagnose(
            Diagnosis::NetworkReset,
            format!(
                "the connection to \"{host}\" was reset during {}",
                step_name(cx)
            ),
        ),
        io::ErrorKind::UnexpectedEof => diagnose(
            Diagnosis::NetworkClosed,
            format!(
                "the server at \"{host}\" closed the connection during {}",
                step_name(cx)
            ),
        ),
        io::ErrorKind::TimedOut => timeout(host, cx.step, cx.deadline),
        _ if matches!(io.raw_os_error(), Some(101) | Some(113)) => diagnose(
            Diagnosis::NetworkUnreachable,
            format!("\"{host}\" is unreachable"),
        ),
        _ => diagnose(
            Diagnosis::NetworkOther,
            format!(
                "network error with \"{host}\" during {}: {io}",
                step_name(cx)
            ),
        ),
    }
}

pub(crate) fn classify_rustls(tls: &rustls::Error, cx: &FailedAttempt<'_>) -> Error {
    use rustls::CertificateError as C;
    let host = cx.host;
    let roots = cx
        .policy
        .map(|p| p.roots.describe())
        .unwrap_or_else(|| "the configured roots".into());
    let cert = |d: Diagnosis, msg: String| diagnose(d, msg).with_step(Step::TlsHandshake);
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                let d = match cx.policy.map(|p| &p.roots) {
                    Some(Roots::System) => Diagnosis::CertificateUnknownIssuer,
                    _ => Diagnosis::CertificateUnknownIssuerFile,
                };
                cert(
                    d,
                    format!("the certificate of \"{host}\" was not issued by a trusted authority (checked against {roots})"),
                )
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                let ip = cx.hostname;
                // An IP address written as a DNS name does not match an IP host: that needs its
                // own fix, hence its own help.
                let mut help = None;
                let presented = match c {
                    C::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                        let names: Vec<&str> = presented.iter().map(|p| presented_name(p)).collect();
                        let ip_as_dns = ip.parse::<std::net::IpAddr>().is_ok()
                            && presented.iter().any(|p| p.starts_with("DnsName") && presented_name(p) == ip);
                        if ip_as_dns {
                            help = Some(format!("reissue the server certificate with {ip} as an IP address subjectAltName (IP:{ip}, not DNS:{ip}), or connect with a host name it holds"));
                            format!("; it is valid for {ip} only as a DNS name, and an IP address host must be an IP address entry of its subjectAltName")
                        } else {
                            format!("; it is valid for {}", names.join(", "))
                        }
                    }
                    C::NotValidForNameContext { .. } => "; it is valid for no name: the certificate has no subjectAltName (a name only in its Common Name is never used): reissue it with the host name as a subjectAltName".to_string(),
                    _ => String::new(),
                };
                let wrong = cert(
                    Diagnosis::CertificateWrongName,
                    format!("the certificate of \"{host}\" is not valid for the name \"{ip}\"{presented}"),
                );
                match help {
                    Some(help) => wrong.with_help(help),
                    None => wrong,
                }
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
                cert(Diagnosis::CertificateExpired, format!("the certificate of \"{host}\" has expired{when}"))
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
                cert(Diagnosis::CertificateNotYetValid, format!("the certificate of \"{host}\" is not valid yet{when}"))
            }
            C::Other(other) if other.0.downcast_ref::<RevocationError>().is_some() => {
                let why = other.0.downcast_ref::<RevocationError>().expect("checked above");
                let d = match why {
                    RevocationError::Revoked { .. } => Diagnosis::CertificateRevoked,
                    _ => Diagnosis::CertificateRevocationUnchecked,
                };
                cert(d, format!("the certificate of \"{host}\" was refused: {why}"))
            }
            C::Revoked => cert(
                Diagnosis::CertificateRevoked,
                format!("the certificate of \"{host}\" (or one of its chain) is revoked"),
            ),
            C::UnknownRevocationStatus
            | C::ExpiredRevocationList
            | C::ExpiredRevocationListContext { .. } => cert(
                Diagnosis::CertificateRevocationUnchecked,
                format!("the certificate of \"{host}\" was refused: {c}"),
            ),
            C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => cert(
                Diagnosis::CertificateCaAsLeaf,
                format!("the server \"{host}\" presented a CA certificate as its own certificate"),
            ),
            // webpki's error is not reachable as a type without depending on rustls-webpki
            // ourselves; its name is stable.
            C::Other(other) if format!("{other:?}").contains("MaximumPathDepthExceeded") => cert(
                Diagnosis::CertificateChainTooDeep,
                format!("the certificate chain of \"{host}\" is longer than rustls allows: more than 6 intermediate certificates between the server's certificate and a trusted root (checked against {roots})"),
            ),
            C::Other(other) if format!("{other:?}").contains("UnsupportedCertVersion") => cert(
                Diagnosis::CertificateV1,
                format!("the certificate of \"{host}\" is an X.509 v1 certificate, which is not supported"),
            ),
            other => cert(
                Diagnosis::CertificateOther,
                format!("the certificate of \"{host}\" was rejected: {other:?} (checked against {roots})"),
            ),
        },
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnsupportedCertificate
            | rustls::AlertDescription::CertificateRevoked
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::AccessDenied),
        ) if cx.policy.is_some_and(|p| p.client_cert.is_some()) => diagnose(
            Diagnosis::TlsClientCertificateRejected,
            format!("the server \"{host}\" rejected the client certificate: the server sent the alert \"{}\"", alert_words(*alert)),
        )
        .with_step(Step::TlsHandshake),
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
        | rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
            | rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled,
        ) => diagnose(
            Diagnosis::TlsVersionUnsupported,
            format!("the server \"{host}\" offers only TLS versions below 1.2 (or none that this connection allows), and TLS 1.0 and 1.1 are never accepted"),
        )
        .with_step(Step::TlsHandshake),
        // rustls refuses a handshake message over 64 KiB before parsing it, so which message it
        // was is unknown; in practice the server's Certificate, or its CertificateRequest with
        // a long list of CA names.
        rustls::Error::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge) => diagnose(
            Diagnosis::CertificateTooLarge,
            format!("the server \"{host}\" sent a TLS handshake message over 64 KiB, more than rustls reads: its certificate chain is too large (or its list of CAs for client certificates)"),
        )
        .with_step(Step::TlsHandshake),
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => diagnose(
            Diagnosis::TlsClientCertificateRequired,
            format!("the server \"{host}\" requires a client certificate"),
        )
        .with_step(Step::TlsHandshake),
        rustls::Error::AlertReceived(alert) => diagnose(
            Diagnosis::TlsHandshake,
            format!("the TLS handshake with \"{host}\" failed: the server sent the alert \"{}\"", alert_words(*alert)),
        )
        .with_step(Step::TlsHandshake),
        other => diagnose(Diagnosis::TlsHandshake, format!("the TLS handshake with \"{host}\" failed: {other}"))
            .with_step(Step::TlsHandshake),
    }
}

/// A TLS alert as words (`UnknownCA` as "unknown CA", `CertificateRevoked` as "certificate
/// revoked"), close to what the server's log says, not a Rust name.
fn alert_words(alert: rustls::AlertDescription) -> String {
    let name = format!("{alert:?}");
    let mut out = String::new();
    let mut prev: Option<char> = None;
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if c.is_uppercase()
            && prev.is_some_and(|p| p.is_lowercase() || (p.is_uppercase() && next_lower))
        {
            out.push(' ');
        }
        out.push(c);
        prev = Some(c);
    }
    // Words in lowercase; acronyms (CA) as they are.
    out.split(' ')
        .map(|w| {
            if w.len() > 1 && w.chars().all(|c| c.is_uppercase()) {
                w.to_string()
            } else {
                w.to_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A name from rustls' `NotValidForNameContext::presented` (`DnsName("a.example")`,
/// `IpAddress(10.0.0.1)`) as a person writes it.
fn presented_name(p: &str) -> &str {
    let inner = p
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(p);
    inner.trim_matches('"')
}

fn classify_db(db: &tokio_postgres::error::DbError, cx: &FailedAttempt<'_>) -> Error {
    let host = cx.host;
    let text = db.message();
    // PostgreSQL's text when the SCRAM-PLUS binding data differs from its own certificate's
    // hash: a TLS terminator sits between us (tests/hostile.rs, interception test).
    if text.contains("SCRAM channel binding check failed") {
        return diagnose(
            Diagnosis::NeonChannelBindingMismatch,
            format!("channel binding failed at \"{host}\": the TLS channel the server saw is not the one we saw (possible interception): {text}"),
        )
        .with_step(Step::Authentication);
    }
    classify_sqlstate(db.code().code(), text, cx)
}

/// Classifies a server error at login by its SQLSTATE (and, for a few, its text). Neon's
/// proxy forwards the compute's errors as `XX000`: `neon.rs` maps their texts back to the
/// compute's code and comes here, so both read the same.
pub(crate) fn classify_sqlstate(code: &str, text: &str, cx: &FailedAttempt<'_>) -> Error {
    let host = cx.host;
    let user = cx.user.unwrap_or("(default user)");
    match code {
        "28P01" => diagnose(
            Diagnosis::AuthPassword,
            format!("password authentication failed for user \"{user}\" at \"{host}\""),
        )
        .with_step(Step::Authentication),
        "28000" => diagnose(
            Diagnosis::AuthRejected,
            format!("the server \"{host}\" refused user \"{user}\": {text}"),
        )
        .with_step(Step::Authentication),
        "3D000" => diagnose(
            Diagnosis::DatabaseMissing,
            format!("the database does not exist at \"{host}\": {text}"),
        )
        .with_step(Step::Startup),
        "53300" if text.contains("for role") => diagnose(
            Diagnosis::RoleConnectionLimit,
            format!("the server \"{host}\" refused user \"{user}\": {text}"),
        ),
        "53300" => diagnose(
            Diagnosis::TooManyConnections,
            format!("the server \"{host}\" has too many connections: {text}"),
        ),
        "57P03" => diagnose(
            Diagnosis::ServerStarting,
            format!("the server \"{host}\" is starting up or shutting down: {text}"),
        ),
        "57P01" | "57P02" => diagnose(
            Diagnosis::ServerTerminated,
            format!("the server \"{host}\" terminated the connection: {text}"),
        ),
        "XX000" => crate::neon::classify_proxy_error(text, cx),
        _ => diagnose(
            Diagnosis::ServerOther,
            format!("the server \"{host}\" refused the connection: {text} (SQLSTATE {code})"),
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
    let id = match step {
        Some(Step::Tcp) | Some(Step::Dns) | None => Diagnosis::TimeoutTcp,
        Some(Step::TlsRequest) | Some(Step::TlsHandshake) => Diagnosis::TimeoutTls,
        _ => Diagnosis::TimeoutLogin,
    };
    diagnose(
        id,
        format!(
            "timed out after {:.1}s during the {step_text} with \"{host}\"",
            after.as_secs_f64()
        ),
    )
    .with_step(step.unwrap_or(Step::Tcp))
    .with_host(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Verification;

    #[test]
    fn alerts_read_as_words_not_rust_names() {
        use rustls::AlertDescription as A;
        assert_eq!(alert_words(A::BadCertificate), "bad certificate");
        assert_eq!(alert_words(A::UnknownCA), "unknown CA");
        assert_eq!(alert_words(A::CertificateRevoked), "certificate revoked");
        assert_eq!(alert_words(A::AccessDenied), "access denied");
        assert_eq!(alert_words(A::HandshakeFailure), "handshake failure");
    }

    #[test]
    fn formats_unix_time() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_580_515_200), "2020-02-01 00:00:00 UTC");
    }

    #[test]
    fn verification_words() {
        assert_eq!(Verification::Unverified.to_string(), "not verified");
    }

    fn attempt(hostname: &str) -> FailedAttempt<'_> {
        FailedAttempt {
            host: "db:5432",
            hostname,
            user: None,
            step: Some(Step::TlsHandshake),
            policy: None,
            tls: None,
            options: None,
            deadline: std::time::Duration::from_secs(15),
            unix_socket: false,
        }
    }

    /// Certificate failures that cannot be provoked with the fixture's certificates are
    /// classified from the rustls errors they produce.
    #[test]
    fn certificate_names_that_cannot_match() {
        use rustls::pki_types::ServerName;
        let no_san =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("db").unwrap().to_owned(),
                presented: vec![],
            });
        let e = classify_rustls(&no_san, &attempt("db"));
        assert_eq!(e.diagnosis(), Some(Diagnosis::CertificateWrongName));
        assert!(
            e.message()
                .contains("has no subjectAltName (a name only in its Common Name is never used)"),
            "{e}"
        );

        let ip_as_dns =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("10.0.0.5").unwrap().to_owned(),
                presented: vec!["DnsName(\"10.0.0.5\")".into()],
            });
        let e = classify_rustls(&ip_as_dns, &attempt("10.0.0.5"));
        assert!(
            e.message()
                .contains("it is valid for 10.0.0.5 only as a DNS name"),
            "{e}"
        );
        assert!(
            e.help().unwrap().contains("IP:10.0.0.5, not DNS:10.0.0.5"),
            "{e}"
        );
    }

    #[test]
    fn servers_that_speak_only_old_tls() {
        for err in [
            rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
            rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13,
            ),
        ] {
            let e = classify_rustls(&err, &attempt("db"));
            assert_eq!(
                e.diagnosis(),
                Some(Diagnosis::TlsVersionUnsupported),
                "{err:?}"
            );
            assert!(e.message().contains("TLS 1.0 and 1.1 are never accepted"));
        }
    }
}
