//! Turns what tokio-postgres, rustls and the OS report into an [`Error`] that names the
//! failure, the step and the fix. Classification walks the cause chain: rustls errors hide
//! inside `io::Error::get_ref()`, server errors are `DbError`s, and Neon's proxy sends all of
//! its own errors as SQLSTATE `XX000`, so those are told apart by their text.

use crate::error::{Error, ErrorKind, Step};
use crate::tls::{MissingAlpn, Roots, TlsPolicy, UnencryptedDataAfterSslResponse};
use std::error::Error as StdError;
use std::io;

/// One entry of the catalogue of diagnoses: the code builds its errors from it, and the
/// README's troubleshooting table is generated from it, so the two cannot drift.
#[derive(Debug)]
pub(crate) struct Diagnosis {
    pub(crate) id: &'static str,
    pub(crate) kind: ErrorKind,
    pub(crate) retryable: bool,
    /// What the user sees (the start of the message), for the README.
    pub(crate) shows: &'static str,
    /// What it means, for the README.
    pub(crate) means: &'static str,
    /// The `help:` line.
    pub(crate) help: &'static str,
}

macro_rules! catalogue {
    ($( $id:literal, $kind:ident, $retry:literal, $shows:literal, $means:literal, $help:literal; )*) => {
        &[$( Diagnosis { id: $id, kind: ErrorKind::$kind, retryable: $retry, shows: $shows, means: $means, help: $help } ),*]
    };
}

/// Every diagnosis the crate makes while connecting.
pub(crate) static CATALOGUE: &[Diagnosis] = catalogue![
    "tls-server-without-tls", TlsRefused, false,
        "the server at \"host:5432\" does not support TLS, and neon-connect never connects without it",
        "the server answered the TLS request with `N`; nothing else (no user name, no password) was sent",
        "enable TLS on the server (`ssl = on` in postgresql.conf, with a certificate), or check that host and port point at the right server";
    "tls-error-before-handshake", TlsRefused, false,
        "the server at \"host:5432\" answered the TLS request with an error",
        "an error before encryption may be forged by anyone on the path (CVE-2024-10977), so its text is not shown; often the server is overloaded or restarting",
        "try again; if it persists, check the server's log (too many connections, restarts)";
    "not-postgres", TlsRefused, false,
        "the server at \"host:5432\" answered the TLS request with 'H', which no PostgreSQL server sends",
        "another program (a web server, a load balancer) listens on this port; found by `neon-doctor`, which reads the answer tokio-postgres hides",
        "check the port (PostgreSQL's is 5432) and that the host is the database, not a web or API endpoint";
    "tls-injected-plaintext", TlsRefused, false,
        "received unencrypted data after SSL response from \"host:5432\"",
        "bytes arrived between the server's `S` and the TLS handshake: unencrypted, so possibly injected (CVE-2021-23222)",
        "something between you and the server injected plaintext before the TLS handshake (a man-in-the-middle attempt or a broken proxy); check the network path";
    "tls-alpn", TlsHandshake, false,
        "direct SSL connection was established without ALPN protocol negotiation extension",
        "`sslnegotiation=direct` needs a server that speaks direct TLS for PostgreSQL and answers ALPN `postgresql`",
        "remove `sslnegotiation=direct` (the server needs PostgreSQL 17+ or Neon's proxy for it)";
    "tls-direct-unsupported", TlsHandshake, false,
        "the server at \"host:5432\" hung up on direct TLS: it does not speak it",
        "`sslnegotiation=direct` starts TLS without the TLS request; servers before PostgreSQL 17 (and most poolers) read the TLS hello as a malformed startup packet and hang up",
        "remove `sslnegotiation=direct` (direct TLS needs PostgreSQL 17+ or Neon's proxy; for Neon hosts neon-connect uses it by default and falls back by itself)";
    "tls-handshake", TlsHandshake, false,
        "the TLS handshake with \"host:5432\" failed",
        "the server aborted or garbled the handshake (protocol versions, a client certificate it wants, not a TLS server)",
        "check the server's TLS settings and log; `ssl_min_protocol_version`/`ssl_max_protocol_version` must overlap";
    "tls-client-certificate-required", TlsHandshake, false,
        "the server \"host:5432\" requires a client certificate",
        "pg_hba.conf asks for `clientcert`, and none was given",
        "set `sslcert` and `sslkey` to your client certificate and key";
    "certificate-unknown-issuer", Certificate, false,
        "the certificate of \"host:5432\" was not issued by a trusted authority (checked against the system root store)",
        "no root in the system store signed the server's chain: a private CA, a self-signed certificate, or a server that omits its intermediate",
        "if the server uses a private CA, set `sslrootcert=/path/to/ca.pem`; if it uses a public CA, the server may be omitting its intermediate certificate";
    "certificate-unknown-issuer-file", Certificate, false,
        "the certificate of \"host:5432\" was not issued by a trusted authority (checked against the root certificate file ca.pem)",
        "the `sslrootcert` file does not hold the CA that signed the server's chain",
        "check that the `sslrootcert` file holds the CA that signed the server's certificate (and that the server sends its intermediates)";
    "certificate-wrong-name", Certificate, false,
        "the certificate of \"host:5432\" is not valid for the name \"host\"; it is valid for ...",
        "`verify-full` checks that the certificate names the host you connect to",
        "connect with a host name the certificate holds (not an IP address or an alias); `hostaddr` can pin the address while `host` keeps the name";
    "certificate-expired", Certificate, false,
        "the certificate of \"host:5432\" has expired (it expired at ..., now is ...)",
        "the server's certificate is past its end date (or this machine's clock is wrong)",
        "renew the server's certificate (or fix this machine's clock if it is wrong)";
    "certificate-not-yet-valid", Certificate, false,
        "the certificate of \"host:5432\" is not valid yet (valid from ..., now is ...)",
        "the certificate's start date is in the future (or this machine's clock is wrong)",
        "check this machine's clock, or the server certificate's start date";
    "certificate-ca-as-leaf", Certificate, false,
        "the server \"host:5432\" presented a CA certificate as its own certificate",
        "the server's certificate has CA:TRUE; rustls (unlike OpenSSL) refuses a CA as an end-entity certificate",
        "give the server a leaf certificate signed by the CA (CA:FALSE), not the CA certificate itself";
    "certificate-v1", Certificate, false,
        "the certificate of \"host:5432\" is an X.509 v1 certificate, which is not supported",
        "v1 certificates carry no extensions (no subjectAltName), and rustls refuses them",
        "reissue the server certificate as X.509 v3 (with subjectAltName)";
    "certificate-other", Certificate, false,
        "the certificate of \"host:5432\" was rejected: ...",
        "the certificate failed verification for another reason (named in the message)",
        "check the server's certificate chain against the roots named in the message";
    "dns", Dns, false,
        "could not resolve the host name \"host\"",
        "the name does not exist, or this machine's DNS does not answer",
        "check the host name for typos (copy it again from your provider's console) and this machine's DNS";
    "network-refused", Network, true,
        "connection refused by \"host:5432\"",
        "nothing listens on that port (or a firewall rejects it); a server that is starting looks the same, so it is retried",
        "check the host and port, and that the server is running (a firewall that rejects port 5432 looks the same)";
    "network-unreachable", Network, true,
        "\"host:5432\" is unreachable",
        "no route to the host from this machine",
        "check the network route to the host (VPN, firewall, IPv6 availability)";
    "network-reset", Network, true,
        "the connection to \"host:5432\" was reset during ...",
        "the server or something on the network path cut the connection",
        "the server or something on the network path cut the connection; try again, and check the server's log";
    "network-closed", Closed, true,
        "the server at \"host:5432\" closed the connection during ...",
        "the server hung up (restarting, overloaded, or refusing this client)",
        "the server may be restarting, overloaded, or refusing this client; check the server's log";
    "network-other", Network, true,
        "network error with \"host:5432\" during ...",
        "another I/O error (named in the message)",
        "check the network path to the server and try again";
    "timeout-tcp", Timeout, true,
        "timed out after 15.0s during the TCP connect with \"host:5432\"",
        "no answer at all: a firewall that drops packets, a wrong address, or a host that is down",
        "the host does not answer on this port: check host, port and firewalls (Neon uses 5432)";
    "timeout-tls", Timeout, true,
        "timed out after 15.0s during the TLS request with \"host:5432\"",
        "the TCP connection opened but TLS never completed",
        "the server accepted the TCP connection but did not complete TLS: check that this port is PostgreSQL (or Neon's proxy) and not another service";
    "timeout-login", Timeout, true,
        "timed out after 15.0s during the authentication with \"host:5432\"",
        "TLS completed but the login did not: a Neon compute waking from scale-to-zero, or an overloaded server",
        "the server is slow to log in (a Neon compute waking from scale-to-zero can take seconds); raise `connect_timeout` if this persists";
    "auth-password", Authentication, false,
        "password authentication failed for user \"alex\" at \"host:5432\"",
        "the password (or user name) is wrong; Neon's proxy says the same with SQLSTATE XX000",
        "check the password in the connection string (or PGPASSWORD); reset it in the console if unsure";
    "auth-rejected", Authentication, false,
        "the server \"host:5432\" refused user \"alex\": ...",
        "pg_hba.conf has no line that lets this user in from here",
        "check pg_hba.conf on the server: it must allow this user and database over `hostssl`";
    "channel-binding-not-offered", Authentication, false,
        "`channel_binding=require` failed at \"host:5432\": the server did not offer SCRAM-SHA-256-PLUS",
        "the server (or a pooler in front of it) authenticated without channel binding",
        "the server must offer SCRAM-SHA-256-PLUS over TLS (password_encryption = scram-sha-256 and a `hostssl ... scram-sha-256` line); a pooler or proxy in between can also prevent it";
    "channel-binding-no-hash", Authentication, false,
        "`channel_binding=require` cannot work with \"host:5432\": its certificate's signature algorithm gives no channel binding hash",
        "tls-server-end-point needs a hash from the certificate's signature algorithm; Ed25519 and similar have none",
        "reissue the server certificate with an RSA or ECDSA signature (SHA-256/384/512), or drop `channel_binding=require`";
    "channel-binding-cleartext", Authentication, false,
        "`channel_binding=require` failed at \"host:5432\": the server asked for a cleartext password",
        "a cleartext password request cannot be bound to the channel; Neon's proxy asks for one when it got no endpoint ID (no SNI)",
        "connect by host name (not an IP address) so SNI is sent, or add `options=endpoint%3D<endpoint-id>`";
    "database-missing", Server, false,
        "the database does not exist at \"host:5432\": ...",
        "the database name in the URL path or `dbname` is wrong",
        "check the database name (the path of the URL, or `dbname`)";
    "too-many-connections", Server, true,
        "the server \"host:5432\" has too many connections: ...",
        "max_connections is reached",
        "lower the pool size, close idle connections, or use a pooled (-pooler) endpoint";
    "server-starting", Server, true,
        "the server \"host:5432\" is starting up or shutting down: ...",
        "SQLSTATE 57P03: try again in a moment",
        "wait a moment and try again";
    "server-terminated", Closed, true,
        "the server \"host:5432\" terminated the connection: ...",
        "SQLSTATE 57P01/57P02: a restart, an administrator, or Neon's scale-to-zero ended the session",
        "the server restarted or an administrator (or Neon's scale-to-zero) ended the session; reconnect";
    "server-other", Server, false,
        "the server \"host:5432\" refused the connection: ... (SQLSTATE ...)",
        "the server's own message says why",
        "see the server's message";
    "neon-endpoint-not-specified", Server, false,
        "Neon could not tell which endpoint \"host:5432\" is for: no SNI reached its proxy",
        "Neon's proxy finds the endpoint from the TLS server name (SNI); an IP address host, `hostaddr` without `host`, or `sslsni=0` sends none",
        "connect with the endpoint's host name (ep-....neon.tech) so SNI is sent, or add `options=endpoint%3D<endpoint-id>` (the first label of the host name, without -pooler)";
    "neon-endpoint-disabled", Server, false,
        "the Neon endpoint at \"host:5432\" is disabled",
        "the compute endpoint was disabled in the console or by the API",
        "enable the endpoint in the Neon console (or via the API), then reconnect";
    "neon-endpoint-not-found", Server, false,
        "no Neon endpoint exists for \"host:5432\"",
        "the endpoint ID in the host name does not exist (deleted, or a typo)",
        "copy the connection string again from the Neon console: the endpoint in the host name does not exist";
    "neon-quota", Server, false,
        "the Neon endpoint at \"host:5432\" is temporarily unavailable (quota or maintenance)",
        "a compute-time or data-transfer quota is used up, or the project is under maintenance",
        "check your project's quotas and status in the Neon console, or contact Neon support";
    "neon-compute-unreachable", Server, true,
        "Neon's proxy could not reach the compute for \"host:5432\"",
        "the compute is waking from scale-to-zero or restarting; the proxy already retried for a few seconds",
        "retry in a few seconds (neon-connect retries within `connect_timeout`); raise `connect_timeout` for slow cold starts";
    "neon-rate-limited", Server, true,
        "Neon's proxy is limiting connection attempts to \"host:5432\"",
        "too many connection attempts at once (or too many connections) to this endpoint",
        "open fewer connections at once (a smaller pool, or the -pooler endpoint) and retry with backoff";
    "neon-ip-not-allowed", Authentication, false,
        "Neon refused this machine's IP address for \"host:5432\"",
        "the project's IP allowlist does not include this machine's address",
        "add this machine's IP address (IPv4 or IPv6, whichever it uses) to the allowed list in the Neon console";
    "neon-channel-binding-mismatch", Authentication, false,
        "channel binding failed at \"host:5432\": the TLS channel the server saw is not the one we saw",
        "the certificate we verified is not the one the server presented: something terminated TLS in between (interception, or a TLS-inspecting proxy)",
        "treat this as a possible interception: check the network path (corporate TLS inspection, a proxy) before connecting without channel binding";
    "neon-pooler-startup-parameter", Server, false,
        "the pooled endpoint \"host:5432\" refused a startup parameter: ...",
        "PgBouncer in transaction mode (Neon's -pooler hosts) accepts only a few startup parameters",
        "remove `options` (set it with SQL per transaction instead), or use the direct host (without -pooler)";
    "neon-insecure", TlsRefused, false,
        "the server at \"host:5432\" says the connection is insecure",
        "Neon's proxy refuses connections without TLS (\"connection is insecure (try using `sslmode=require`)\")",
        "neon-connect always uses TLS over TCP; if you see this, something between you and Neon stripped TLS";
    "pool-timeout", Pool, true,
        "timed out after 10.0s waiting for a free connection: all 10 connections of the pool are in use (3 waiting)",
        "every connection was checked out for the whole wait",
        "return connections sooner (drop clients after each request and avoid holding them across slow work), raise `pool_size`, or raise `wait_timeout`";
];

/// The catalogue entry `id` (every id used in this crate is in the catalogue; a test checks).
pub(crate) fn entry(id: &str) -> &'static Diagnosis {
    CATALOGUE
        .iter()
        .find(|d| d.id == id)
        .unwrap_or(&CATALOGUE[CATALOGUE.len() - 1])
}

/// An error for diagnosis `id` with this `message`: kind, help and retryability come from the catalogue.
pub(crate) fn diagnose(id: &'static str, message: impl Into<String>) -> Error {
    let d = entry(id);
    Error::new(d.kind, message)
        .with_help(d.help)
        .retryable(d.retryable)
        .with_diagnosis(d.id)
}

/// Every diagnosis this crate makes, as a Markdown table: id, what you see, what it means, the
/// fix, and whether it is retried (the README's troubleshooting section is this table).
pub fn troubleshooting_table() -> String {
    let mut out = String::from(
        "| diagnosis (`Error::diagnosis()`) | what you see | what it means | the fix (the `help:` line) | retried |\n|---|---|---|---|---|\n",
    );
    for d in CATALOGUE {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            d.id,
            d.shows.replace('|', "\\|"),
            d.means.replace('|', "\\|"),
            d.help.replace('|', "\\|"),
            if d.retryable { "yes" } else { "no" }
        ));
    }
    out
}

/// What we know about the attempt that failed.
pub(crate) struct Context<'a> {
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
        return diagnose(
            "tls-injected-plaintext",
            format!("received unencrypted data after SSL response from \"{host}\": refusing the connection"),
        )
        .with_step(Step::TlsRequest);
    }
    if let Some(alpn) = find::<MissingAlpn>(&links) {
        return diagnose("tls-alpn", format!("{alpn} with \"{host}\""))
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
            "tls-server-without-tls",
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
                "channel-binding-no-hash",
                format!("`channel_binding=require` cannot work with \"{host}\": its certificate's signature algorithm gives no channel binding hash"),
            )
            .with_step(Step::Authentication);
        }
        let sni_missing = cx.tls.as_ref().is_some_and(|t| !t.sni_sent);
        if sni_missing {
            return diagnose(
                "channel-binding-cleartext",
                format!("`channel_binding=require` failed at \"{host}\": the server asked for a cleartext password (no SNI was sent, so a Neon proxy cannot tell the endpoint)"),
            )
            .with_step(Step::Authentication);
        }
        return diagnose(
            "channel-binding-not-offered",
            format!("`channel_binding=require` failed at \"{host}\": the server did not use channel binding"),
        )
        .with_step(Step::Authentication);
    }
    if let Some(io) = find::<io::Error>(&links) {
        return classify_io(io, cx);
    }
    if err.is_closed() || text.contains("connection closed") {
        return diagnose(
            "network-closed",
            format!(
                "the server at \"{host}\" closed the connection during {}",
                step_name(cx)
            ),
        );
    }
    diagnose(
        "server-other",
        format!(
            "connecting to \"{host}\" failed during {}: {text}",
            step_name(cx)
        ),
    )
}

fn step_name(cx: &Context<'_>) -> &'static str {
    cx.step.map_or("connection setup", Step::as_str)
}

pub(crate) fn classify_io(io: &io::Error, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let hung_up = matches!(
        io.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    );
    if hung_up && cx.step == Some(Step::TlsHandshake) && cx.policy.is_some_and(|p| p.direct) {
        return diagnose(
            "tls-direct-unsupported",
            format!("the server at \"{host}\" hung up on direct TLS: it does not speak it"),
        )
        .with_step(Step::TlsHandshake);
    }
    match io.kind() {
        io::ErrorKind::ConnectionRefused => diagnose(
            "network-refused",
            format!("connection refused by \"{host}\""),
        ),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => diagnose(
            "network-reset",
            format!(
                "the connection to \"{host}\" was reset during {}",
                step_name(cx)
            ),
        ),
        io::ErrorKind::UnexpectedEof => diagnose(
            "network-closed",
            format!(
                "the server at \"{host}\" closed the connection during {}",
                step_name(cx)
            ),
        ),
        io::ErrorKind::TimedOut => timeout(host, cx.step, std::time::Duration::ZERO),
        _ if matches!(io.raw_os_error(), Some(101) | Some(113)) => {
            diagnose("network-unreachable", format!("\"{host}\" is unreachable"))
        }
        _ => diagnose(
            "network-other",
            format!(
                "network error with \"{host}\" during {}: {io}",
                step_name(cx)
            ),
        ),
    }
}

pub(crate) fn classify_rustls(tls: &rustls::Error, cx: &Context<'_>) -> Error {
    use rustls::CertificateError as C;
    let host = cx.host;
    let roots = cx
        .policy
        .map(|p| p.roots.describe())
        .unwrap_or_else(|| "the configured roots".into());
    let cert = |id: &'static str, msg: String| diagnose(id, msg).with_step(Step::TlsHandshake);
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                let id = match cx.policy.map(|p| &p.roots) {
                    Some(Roots::System) => "certificate-unknown-issuer",
                    _ => "certificate-unknown-issuer-file",
                };
                cert(
                    id,
                    format!("the certificate of \"{host}\" was not issued by a trusted authority (checked against {roots})"),
                )
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                let presented = match c {
                    C::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                        let names: Vec<&str> = presented.iter().map(|p| presented_name(p)).collect();
                        format!("; it is valid for {}", names.join(", "))
                    }
                    _ => String::new(),
                };
                cert(
                    "certificate-wrong-name",
                    format!("the certificate of \"{host}\" is not valid for the name \"{}\"{presented}", cx.hostname),
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
                cert("certificate-expired", format!("the certificate of \"{host}\" has expired{when}"))
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
                cert("certificate-not-yet-valid", format!("the certificate of \"{host}\" is not valid yet{when}"))
            }
            C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => cert(
                "certificate-ca-as-leaf",
                format!("the server \"{host}\" presented a CA certificate as its own certificate"),
            ),
            C::Other(other) if format!("{other:?}").contains("UnsupportedCertVersion") => cert(
                "certificate-v1",
                format!("the certificate of \"{host}\" is an X.509 v1 certificate, which is not supported"),
            ),
            other => cert(
                "certificate-other",
                format!("the certificate of \"{host}\" was rejected: {other:?} (checked against {roots})"),
            ),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => diagnose(
            "tls-client-certificate-required",
            format!("the server \"{host}\" requires a client certificate"),
        )
        .with_step(Step::TlsHandshake),
        rustls::Error::AlertReceived(alert) => diagnose(
            "tls-handshake",
            format!("the TLS handshake with \"{host}\" failed: the server sent the alert {alert:?}"),
        )
        .with_step(Step::TlsHandshake),
        other => diagnose("tls-handshake", format!("the TLS handshake with \"{host}\" failed: {other}"))
            .with_step(Step::TlsHandshake),
    }
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

/// The Neon endpoint ID in a host name: its first label without `-pooler`.
pub(crate) fn neon_endpoint_id(hostname: &str) -> Option<&str> {
    if !hostname.ends_with(".neon.tech") && !hostname.ends_with(".neon.build") {
        return None;
    }
    let first = hostname.split('.').next()?;
    Some(first.strip_suffix("-pooler").unwrap_or(first))
}

fn classify_db(db: &tokio_postgres::error::DbError, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let code = db.code().code();
    let text = db.message();
    let user = cx.user.unwrap_or("(default user)");
    // PostgreSQL's text when the SCRAM-PLUS binding data differs from its own certificate's
    // hash: a TLS terminator sits between us (tests/hostile.rs, interception test).
    if text.contains("SCRAM channel binding check failed") {
        return diagnose(
            "neon-channel-binding-mismatch",
            format!("channel binding failed at \"{host}\": the TLS channel the server saw is not the one we saw (possible interception): {text}"),
        )
        .with_step(Step::Authentication);
    }
    match code {
        "28P01" => diagnose(
            "auth-password",
            format!("password authentication failed for user \"{user}\" at \"{host}\""),
        )
        .with_step(Step::Authentication),
        "28000" => diagnose(
            "auth-rejected",
            format!("the server \"{host}\" refused user \"{user}\": {text}"),
        )
        .with_step(Step::Authentication),
        "3D000" => diagnose(
            "database-missing",
            format!("the database does not exist at \"{host}\": {text}"),
        )
        .with_step(Step::Startup),
        "53300" => diagnose(
            "too-many-connections",
            format!("the server \"{host}\" has too many connections: {text}"),
        ),
        "57P03" => diagnose(
            "server-starting",
            format!("the server \"{host}\" is starting up or shutting down: {text}"),
        ),
        "57P01" | "57P02" => diagnose(
            "server-terminated",
            format!("the server \"{host}\" terminated the connection: {text}"),
        ),
        "XX000" => classify_neon(text, cx),
        _ => diagnose(
            "server-other",
            format!("the server \"{host}\" refused the connection: {text} (SQLSTATE {code})"),
        ),
    }
}

/// Neon's proxy sends all of its own errors with SQLSTATE XX000: tell them apart by text.
fn classify_neon(text: &str, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let user = cx.user.unwrap_or("(default user)");
    let t = text.to_ascii_lowercase();
    if t.contains("endpoint id is not specified") {
        let why = match cx.tls.as_ref() {
            Some(tls) if !tls.sni_sent => "no SNI was sent: the host is an IP address, `hostaddr` was given without a name, or `sslsni=0`",
            _ => "no SNI reached its proxy",
        };
        let e = diagnose(
            "neon-endpoint-not-specified",
            format!("Neon could not tell which endpoint \"{host}\" is for: {why}"),
        )
        .with_step(Step::Authentication);
        return match neon_endpoint_id(cx.hostname) {
            Some(id) => e.with_help(format!(
                "connect with the endpoint's host name so SNI is sent, or add `options=endpoint%3D{id}` to the connection string"
            )),
            None => e,
        };
    }
    if t.contains("password authentication failed") {
        return diagnose(
            "auth-password",
            format!("password authentication failed for user \"{user}\" at \"{host}\""),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("endpoint is disabled") {
        return diagnose(
            "neon-endpoint-disabled",
            format!("the Neon endpoint at \"{host}\" is disabled"),
        );
    }
    if t.contains("endpoint cannot be found") || t.contains("endpoint not found") {
        return diagnose(
            "neon-endpoint-not-found",
            format!("no Neon endpoint exists for \"{host}\""),
        );
    }
    if t.contains("temporarily unavailable") || t.contains("quota") || t.contains("maintenance") {
        return diagnose(
            "neon-quota",
            format!("the Neon endpoint at \"{host}\" is temporarily unavailable (quota or maintenance): {text}"),
        );
    }
    if t.contains("couldn't connect to compute node") || t.contains("could not connect to compute")
    {
        return diagnose(
            "neon-compute-unreachable",
            format!("Neon's proxy could not reach the compute for \"{host}\""),
        );
    }
    if t.contains("too many connections")
        || t.contains("failed to acquire permit")
        || t.contains("rate limit")
    {
        return diagnose(
            "neon-rate-limited",
            format!("Neon's proxy is limiting connection attempts to \"{host}\": {text}"),
        );
    }
    if t.contains("is not allowed to connect to this endpoint")
        || t.contains("ip address") && t.contains("not allowed")
    {
        return diagnose(
            "neon-ip-not-allowed",
            format!("Neon refused this machine's IP address for \"{host}\": {text}"),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("secure channel data mismatch") {
        return diagnose(
            "neon-channel-binding-mismatch",
            format!("channel binding failed at \"{host}\": the TLS channel the server saw is not the one we saw (possible interception)"),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("unsupported startup parameter") {
        let id = if cx
            .hostname
            .split('.')
            .next()
            .is_some_and(|l| l.ends_with("-pooler"))
            || cx.options.is_some()
        {
            "neon-pooler-startup-parameter"
        } else {
            "server-other"
        };
        return diagnose(
            id,
            format!("the pooled endpoint \"{host}\" refused a startup parameter: {text}"),
        );
    }
    if t.contains("connection is insecure") {
        return diagnose(
            "neon-insecure",
            format!("the server at \"{host}\" says the connection is insecure: {text}"),
        );
    }
    diagnose(
        "server-other",
        format!("the server \"{host}\" refused the connection: {text} (SQLSTATE XX000)"),
    )
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
        Some(Step::Tcp) | Some(Step::Dns) | None => "timeout-tcp",
        Some(Step::TlsRequest) | Some(Step::TlsHandshake) => "timeout-tls",
        _ => "timeout-login",
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
    fn formats_unix_time() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_580_515_200), "2020-02-01 00:00:00 UTC");
    }

    #[test]
    fn every_id_used_in_the_code_is_in_the_catalogue() {
        let src = concat!(
            include_str!("diagnostics.rs"),
            include_str!("connect.rs"),
            include_str!("pool.rs")
        );
        let mut ids = Vec::new();
        for part in src.split("diagnose(").skip(1) {
            let part = part.trim_start();
            if let Some(rest) = part.strip_prefix('"') {
                let id = &rest[..rest.find('"').unwrap()];
                if !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    ids.push(id);
                }
            }
        }
        assert!(ids.len() > 30, "{ids:?}");
        for id in ids {
            assert!(
                CATALOGUE.iter().any(|d| d.id == id),
                "`{id}` is not in the catalogue"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.id), "duplicate id {}", d.id);
        }
    }

    #[test]
    fn neon_endpoint_ids() {
        assert_eq!(
            neon_endpoint_id("ep-cool-name-123-pooler.us-east-2.aws.neon.tech"),
            Some("ep-cool-name-123")
        );
        assert_eq!(
            neon_endpoint_id("ep-x.c-2.eu-central-1.aws.neon.tech"),
            Some("ep-x")
        );
        assert_eq!(neon_endpoint_id("db.example.com"), None);
    }

    #[test]
    fn verification_words() {
        assert_eq!(Verification::None.to_string(), "not verified");
    }
}
