//! Everything the crate knows about Neon: which hosts are Neon's, the endpoint ID in a host
//! name, pooled (`-pooler`) endpoints, direct TLS by default, and the texts Neon's proxy
//! sends (all with SQLSTATE `XX000`, so they are told apart by their words).

use crate::config::{ConnectionString, Host};
use crate::diagnostics::{diagnose, Diagnosis, FailedAttempt};
use crate::error::{Error, Step};

/// The domains of Neon's endpoints (production, and Neon's own staging).
const DOMAINS: [&str; 2] = [".neon.tech", ".neon.build"];

/// Whether `host` is a Neon endpoint's host name.
pub(crate) fn is_neon_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    DOMAINS.iter().any(|d| host.ends_with(d))
}

/// The Neon endpoint ID in a host name: its first label without `-pooler`.
pub(crate) fn endpoint_id(hostname: &str) -> Option<&str> {
    if !is_neon_host(hostname) {
        return None;
    }
    let first = hostname.split('.').next()?;
    Some(first.strip_suffix("-pooler").unwrap_or(first))
}

/// Whether `host` is a Neon pooled endpoint (PgBouncer in transaction mode): its first DNS
/// label ends with `-pooler`, as in `ep-x-pooler.us-east-2.aws.neon.tech`.
pub(crate) fn is_pooler(host: &str) -> bool {
    host.split('.')
        .next()
        .is_some_and(|label| label.ends_with("-pooler"))
}

/// Whether any host of `cs` is a pooled endpoint.
pub(crate) fn any_pooler(cs: &ConnectionString) -> bool {
    cs.hosts()
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if is_pooler(name)))
}

/// Whether direct TLS is the default for `cs`: every host is a Neon endpoint, whose proxy
/// speaks it, saving the TLS request's round trip on every connection. A host that turns out
/// not to speak it is tried again with the TLS request (see `connect`).
pub(crate) fn direct_tls_by_default(cs: &ConnectionString) -> bool {
    let mut any = false;
    for host in cs.hosts() {
        match host {
            Host::Tcp(name) if is_neon_host(name) => any = true,
            _ => return false,
        }
    }
    any
}

/// Warns (once per process) about session features that break behind a transaction-mode
/// pooler. The pool itself needs nothing session-level: its recycle check is the socket state
/// and an empty query, which PgBouncer runs in any mode.
pub(crate) fn warn_if_pooled(cs: &ConnectionString) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Some(warning) = pooled_warning(cs) {
        WARNED.call_once(|| {
            tracing::warn!(target: "neon_connect", "{warning}");
        });
    }
}

/// The warning for a pooled (-pooler) endpoint, for `Pool::warnings`.
pub(crate) fn pooled_warning(cs: &ConnectionString) -> Option<String> {
    any_pooler(cs).then(|| {
        let options = if cs.options().is_some() {
            "the startup `options` of this connection string are refused or ignored there; "
        } else {
            ""
        };
        format!("connecting to a pooled (-pooler) endpoint: PgBouncer in transaction mode; {options}session state (SET, LISTEN, SQL PREPARE, advisory locks, temporary tables) does not survive the transaction: use SET LOCAL, or the direct endpoint for sessions and migrations")
    })
}

/// Classifies an error Neon's proxy sent (SQLSTATE `XX000`) by its text.
pub(crate) fn classify_proxy_error(text: &str, cx: &FailedAttempt<'_>) -> Error {
    let host = cx.host;
    let user = cx.user.unwrap_or("(default user)");
    let t = text.to_ascii_lowercase();
    // The compute's own errors, forwarded by the proxy with XX000: classify them as the
    // compute's SQLSTATE would be.
    if let Some(code) = compute_sqlstate(&t) {
        return crate::diagnostics::classify_sqlstate(code, text, cx);
    }
    if t.contains("inconsistent project name inferred from sni") {
        return diagnose(
            Diagnosis::NeonEndpointOptionMismatch,
            format!(
                "the endpoint in `options=endpoint=...` does not match the host \"{host}\": {text}"
            ),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("from a blocked network") {
        return diagnose(
            Diagnosis::NeonBlockedNetwork,
            format!("Neon refused \"{host}\": this connection comes from a blocked network"),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("endpoint id is not specified") {
        let why = match cx.tls.as_ref() {
            Some(tls) if !tls.sni_sent => "no SNI was sent: the host is an IP address, `hostaddr` was given without a name, or `sslsni=0`",
            _ => "no SNI reached its proxy",
        };
        let e = diagnose(
            Diagnosis::NeonEndpointNotSpecified,
            format!("Neon could not tell which endpoint \"{host}\" is for: {why}"),
        )
        .with_step(Step::Authentication);
        return match endpoint_id(cx.hostname) {
            Some(id) => e.with_help(format!(
                "connect with the endpoint's host name so SNI is sent, or add `options=endpoint%3D{id}` to the connection string"
            )),
            None => e,
        };
    }
    if t.contains("password authentication failed") {
        return diagnose(
            Diagnosis::AuthPassword,
            format!("password authentication failed for user \"{user}\" at \"{host}\""),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("endpoint is disabled") || t.contains("endpoint has been disabled") {
        return diagnose(
            Diagnosis::NeonEndpointDisabled,
            format!("the Neon endpoint at \"{host}\" is disabled"),
        );
    }
    if t.contains("endpoint cannot be found")
        || t.contains("endpoint not found")
        || t.contains("endpoint could not be found")
    {
        return diagnose(
            Diagnosis::NeonEndpointNotFound,
            format!("no Neon endpoint exists for \"{host}\""),
        );
    }
    if t.contains("temporarily unavailable") || t.contains("quota") || t.contains("maintenance") {
        return diagnose(
            Diagnosis::NeonQuota,
            format!("the Neon endpoint at \"{host}\" is temporarily unavailable (quota or maintenance): {text}"),
        );
    }
    if t.contains("couldn't connect to compute node") || t.contains("could not connect to compute")
    {
        // The proxy already retried for a few seconds.
        return diagnose(
            Diagnosis::NeonComputeUnreachable,
            format!("Neon's proxy could not reach the compute for \"{host}\""),
        );
    }
    if t.contains("control plane request failed")
        || t.contains("error communicating with the server")
    {
        return diagnose(
            Diagnosis::NeonControlPlane,
            format!("Neon's control plane did not answer for \"{host}\": {text}"),
        );
    }
    if t.contains("too many connections")
        || t.contains("failed to acquire permit")
        || t.contains("rate limit")
    {
        return diagnose(
            Diagnosis::NeonRateLimited,
            format!("Neon's proxy is limiting connection attempts to \"{host}\": {text}"),
        );
    }
    if t.contains("is not allowed to connect to this endpoint")
        || t.contains("ip address") && t.contains("not allowed")
    {
        return diagnose(
            Diagnosis::NeonIpNotAllowed,
            format!("Neon refused this machine's IP address for \"{host}\": {text}"),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("secure channel data mismatch") {
        return diagnose(
            Diagnosis::NeonChannelBindingMismatch,
            format!("channel binding failed at \"{host}\": the TLS channel the server saw is not the one we saw (possible interception)"),
        )
        .with_step(Step::Authentication);
    }
    if t.contains("unsupported startup parameter") {
        let d = if is_pooler(cx.hostname) || cx.options.is_some() {
            Diagnosis::NeonPoolerStartupParameter
        } else {
            Diagnosis::ServerOther
        };
        return diagnose(
            d,
            format!("the pooled endpoint \"{host}\" refused a startup parameter: {text}"),
        );
    }
    if t.contains("connection is insecure") {
        return diagnose(
            Diagnosis::NeonInsecure,
            format!("the server at \"{host}\" says the connection is insecure: {text}"),
        );
    }
    diagnose(
        Diagnosis::ServerOther,
        format!("the server \"{host}\" refused the connection: {text} (SQLSTATE XX000)"),
    )
}

/// The SQLSTATE a compute sent with a text Neon's proxy forwards as `XX000` (lowercased).
fn compute_sqlstate(t: &str) -> Option<&'static str> {
    if t.contains("the database system is starting up")
        || t.contains("the database system is shutting down")
    {
        Some("57P03")
    } else if t.contains("too many connections for role")
        || t.contains("too many connections for database")
        || t.contains("remaining connection slots are reserved")
        || t.contains("sorry, too many clients already")
    {
        Some("53300")
    } else if t.starts_with("database \"") && t.contains("\" does not exist") {
        Some("3D000")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooler_hosts_are_told_by_their_first_label() {
        assert!(is_pooler(
            "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
        ));
        assert!(!is_pooler(
            "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
        ));
        assert!(!is_pooler("ep-x.pooler.example.com"));
        assert!(!is_pooler("ep-x.us-east-2-pooler.aws.neon.tech"));
    }

    #[test]
    fn endpoint_ids() {
        assert_eq!(
            endpoint_id("ep-cool-name-123-pooler.us-east-2.aws.neon.tech"),
            Some("ep-cool-name-123")
        );
        assert_eq!(
            endpoint_id("ep-x.c-2.eu-central-1.aws.neon.tech"),
            Some("ep-x")
        );
        assert_eq!(
            endpoint_id("ep-x.eu-central-1.aws.neon.build"),
            Some("ep-x")
        );
        assert_eq!(endpoint_id("db.example.com"), None);
    }

    #[test]
    fn direct_tls_is_the_default_only_when_every_host_is_neon() {
        let default = |s: &str| direct_tls_by_default(&ConnectionString::parse(s).unwrap());
        assert!(default("postgresql://ep-x.us-east-2.aws.neon.tech/db"));
        assert!(default("postgresql://ep-x.eu-central-1.aws.NEON.build/db"));
        assert!(!default(
            "postgresql://ep-x.aws.neon.tech,db.example.com/db"
        ));
        assert!(!default("postgresql://db.example.com/db"));
        assert!(!default("host=/tmp"));
    }
}
