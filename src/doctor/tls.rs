//! Step 4's inspection: the TLS request and an unverified handshake that show what the server
//! offers and the chain it presents, what `verify-full` would say of it, and the chain as
//! rows.

use super::report::StepReport;
use super::{format_duration, Target};
use crate::connect::host_label;
use crate::diagnostics::{self, Diagnosis, FailedAttempt};
use crate::error::{Error, Step};
use crate::tls::{self, MakeTls, Probe, Roots, TlsInfo, TlsPolicy, Verification};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) struct Inspection {
    pub(super) label: String,
    pub(super) result: Result<TlsInfo, Failed>,
    pub(super) elapsed: Duration,
}

/// Why the inspection handshake failed: in words, and as the final error when the inspection
/// alone settles it (a timeout, an answer no PostgreSQL server gives).
pub(super) struct Failed {
    pub(super) text: String,
    pub(super) error: Option<Error>,
}

impl From<String> for Failed {
    fn from(text: String) -> Failed {
        Failed { text, error: None }
    }
}

/// The TLS request (unless direct) and a handshake that does not verify, on `target`.
pub(super) async fn inspect(
    policy: &TlsPolicy,
    target: Target,
    deadline: Duration,
) -> Result<TlsInfo, Failed> {
    use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
    let mut stream = target.stream;
    let open = TlsPolicy {
        verification: Verification::Unverified,
        roots: Roots::Unused,
        client_cert: None,
        ..policy.clone()
    };
    let config = open
        .client_config()
        .map_err(|e| Failed::from(e.message().to_string()))?;
    let label = host_label(&target.name, target.port);
    let probe = Arc::new(Probe::default());
    let work = async {
        if !policy.direct {
            // SSLRequest: length 8, code 80877103.
            stream
                .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                .await
                .map_err(|e| Failed::from(format!("could not send the TLS request: {e}")))?;
            let mut answer = [0u8; 1];
            match stream.read_exact(&mut answer).await {
                Ok(_) if answer[0] == b'S' => {}
                Ok(_) if answer[0] == b'N' => {
                    return Err(Failed::from("the server answered N to the TLS request: it does not support TLS".to_string()))
                }
                Ok(_) if answer[0] == b'E' => {
                    return Err(Failed {
                        text: "the server answered the TLS request with an error message (not shown: it was not encrypted)".into(),
                        error: Some(diagnostics::diagnose(
                            Diagnosis::TlsErrorBeforeHandshake,
                            format!("the server at \"{label}\" answered the TLS request with an error"),
                        ).with_step(Step::TlsRequest).with_host(label.clone())),
                    })
                }
                Ok(_) => {
                    let shown = answer[0].escape_ascii().to_string();
                    return Err(Failed {
                        text: format!("the server answered '{shown}' to the TLS request, not S or N"),
                        error: Some(diagnostics::diagnose(
                            Diagnosis::NotPostgres,
                            format!("the server at \"{label}\" answered the TLS request with '{shown}', which no PostgreSQL server sends"),
                        ).with_step(Step::TlsRequest).with_host(label.clone())),
                    });
                }
                Err(e) => return Err(format!("the server closed the connection instead of answering the TLS request ({e})").into()),
            }
        }
        let mut make = MakeTls {
            config,
            policy: Arc::new(open.clone()),
            probe: probe.clone(),
        };
        let connect =
            <MakeTls as MakeTlsConnect<TcpStream>>::make_tls_connect(&mut make, &target.name)
                .map_err(|e| Failed::from(e.to_string()))?;
        let tls = connect.connect(stream).await.map_err(|e| {
            let mut text = e.to_string();
            if let Some(inner) = e.get_ref() {
                let inner = inner.to_string();
                if !text.contains(&inner) {
                    text = format!("{text}: {inner}");
                }
            }
            Failed::from(format!("TLS handshake failed: {text}"))
        })?;
        drop(tls);
        probe
            .tls_info()
            .ok_or_else(|| Failed::from("TLS handshake ended without details".to_string()))
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Failed {
            text: format!("no TLS answer in {}", format_duration(deadline)),
            error: Some(diagnostics::timeout(
                &label,
                probe.step().or(Some(Step::TlsRequest)),
                deadline,
            )),
        }),
    }
    .map(|mut info| {
        // The real policy, not the inspection's.
        info.verification = policy.verification;
        info.roots = policy.roots.describe();
        info
    })
}

/// What `verify-full` would say of the presented chain, for a weaker mode: checked against
/// the configured roots, or the system store when there are none.
pub(super) fn verify_full_verdict(policy: &TlsPolicy, label: &str, info: &TlsInfo) -> String {
    use rustls::client::danger::ServerCertVerifier;
    let roots = match &policy.roots {
        Roots::Unused => Roots::System,
        other => other.clone(),
    };
    let store = match tls::root_store(&roots) {
        Ok(s) => s,
        Err(e) => return format!("cannot tell: {}", e.message()),
    };
    let verifier =
        match rustls::client::WebPkiServerVerifier::builder_with_provider(store, tls::provider())
            .build()
        {
            Ok(v) => v,
            Err(e) => return format!("cannot tell: {e}"),
        };
    let hostname = label
        .rsplit_once(':')
        .map_or(label, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(hostname.clone()) else {
        return format!("cannot tell: \"{hostname}\" is not a valid server name");
    };
    let Some((leaf, rest)) = info.peer_certificates.split_first() else {
        return "cannot tell: the server presented no certificate".into();
    };
    match verifier.verify_server_cert(
        leaf,
        rest,
        &server_name,
        &[],
        rustls::pki_types::UnixTime::now(),
    ) {
        Ok(_) => format!(
            "pass: chain and host name verified against {}",
            roots.describe()
        ),
        Err(e) => {
            let checked = TlsPolicy {
                roots,
                ..policy.clone()
            };
            let cx = FailedAttempt {
                host: label,
                hostname: &hostname,
                user: None,
                step: Some(Step::TlsHandshake),
                policy: Some(&checked),
                tls: None,
                options: None,
                deadline: Duration::ZERO,
                unix_socket: false,
            };
            let error = diagnostics::classify_rustls(&e, &cx);
            format!("fail: {}", error.message())
        }
    }
}

pub(super) fn describe_tls(step: &mut StepReport, info: &TlsInfo) {
    step.row("protocol", "protocol", &info.protocol);
    step.row("cipher_suite", "cipher suite", &info.cipher_suite);
    step.row(
        "alpn",
        "ALPN",
        info.alpn.clone().unwrap_or_else(|| "none".into()),
    );
    step.row(
        "sni",
        "SNI",
        if info.sni_sent { "sent" } else { "not sent" },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut chain = Vec::new();
    for (i, der) in info.peer_certificates.iter().enumerate() {
        let Some(c) = CertSummary::parse(der) else {
            step.text(&format!("certificate {i}"), "(could not be parsed)");
            continue;
        };
        let days = (c.not_after as i64 - now as i64).div_euclid(86_400);
        let left = if now > c.not_after {
            format!("EXPIRED {} days ago", -days)
        } else if now < c.not_before {
            "NOT VALID YET".to_string()
        } else {
            format!("{days} days left")
        };
        step.text(&format!("certificate {i}"), c.subject.clone());
        step.text("  issued by", c.issuer.clone());
        if !c.names.is_empty() {
            step.text("  names", c.names.join(", "));
        }
        step.text(
            "  valid",
            format!(
                "{} to {} ({left})",
                diagnostics::fmt_time(c.not_before),
                diagnostics::fmt_time(c.not_after)
            ),
        );
        chain.push(json!({
            "subject": c.subject,
            "issuer": c.issuer,
            "names": c.names,
            "not_before": diagnostics::fmt_time(c.not_before),
            "not_after": diagnostics::fmt_time(c.not_after),
            "days_left": days,
        }));
    }
    step.details
        .insert("certificates".into(), Value::Array(chain));
}

struct CertSummary {
    subject: String,
    issuer: String,
    names: Vec<String>,
    not_before: u64,
    not_after: u64,
}

impl CertSummary {
    fn parse(der: &[u8]) -> Option<CertSummary> {
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::{name::GeneralName, SubjectAltName};
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut names = Vec::new();
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id != x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                continue;
            }
            let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
                continue;
            };
            for name in san.0 {
                match name {
                    GeneralName::DnsName(d) => names.push(d.to_string()),
                    GeneralName::IpAddress(ip) => {
                        let b = ip.as_bytes();
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            names.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(CertSummary {
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            names,
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        })
    }
}
