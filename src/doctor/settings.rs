//! Step 1's findings: each setting with where it came from, the TLS policy, and warnings.

use super::report::StepReport;
use crate::config::{ConnectionString, Host, Source, SslMode, SslNegotiation};
use crate::tls::{self, Roots, TlsPolicy, Verification};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// The libpq key, its environment variable, and the label shown.
const SETTINGS: [(&str, &str, &str); 9] = [
    ("host", "PGHOST", "host"),
    ("port", "PGPORT", "port"),
    ("user", "PGUSER", "user"),
    ("password", "PGPASSWORD", "password"),
    ("dbname", "PGDATABASE", "database"),
    ("sslmode", "PGSSLMODE", "sslmode"),
    ("sslnegotiation", "PGSSLNEGOTIATION", "sslnegotiation"),
    ("channel_binding", "PGCHANNELBINDING", "channel_binding"),
    ("sslrootcert", "PGSSLROOTCERT", "sslrootcert"),
];

pub(super) fn describe_settings(step: &mut StepReport, cs: &ConnectionString) {
    let hosts = cs
        .targets()
        .map(|t| match &t.host {
            Some(Host::Unix(dir)) => format!("{} (Unix socket)", dir.display()),
            _ => t.label(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut sources = Map::new();
    for (key, env, label) in SETTINGS {
        let source = cs.source(key);
        let from = match source {
            Source::ConnectionString => "connection string".to_string(),
            Source::Environment => env.to_string(),
            Source::Code => "code".to_string(),
            Source::PasswordFile => "password file".to_string(),
            _ if key == "sslmode" => "default: none given".to_string(),
            _ => "default".to_string(),
        };
        let value = match key {
            "host" => hosts.clone(),
            "port" => match cs.ports() {
                [] => "5432".into(),
                ports => ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            },
            "user" => cs.user().unwrap_or("(not set)").to_string(),
            "password" => match (cs.password(), source) {
                (None, _) => "not set".into(),
                (Some(_), Source::PasswordFile) => "set (from the password file)".into(),
                (Some(_), _) => "set".into(),
            },
            "dbname" => cs.dbname().unwrap_or("(the user name)").to_string(),
            "sslmode" => cs
                .sslmode()
                .map_or("verify-full", SslMode::as_str)
                .to_string(),
            "sslnegotiation" => match cs.sslnegotiation() {
                Some(SslNegotiation::Direct) => "direct".into(),
                Some(_) => "postgres".into(),
                None if crate::neon::direct_tls_by_default(cs) => {
                    "direct (Neon hosts; the TLS request if a host does not speak it)".into()
                }
                None => "postgres".into(),
            },
            "channel_binding" => cs
                .channel_binding()
                .map_or("prefer", |c| c.as_str())
                .to_string(),
            "sslrootcert" => match cs.sslrootcert() {
                Some(crate::config::RootCert::System) => "system".into(),
                Some(crate::config::RootCert::File(p)) => p.display().to_string(),
                None => "(not set)".into(),
            },
            _ => String::new(),
        };
        // The port is part of the host row; its source stays in the JSON.
        if key != "port" {
            step.text(label, format!("{value}   ({from})"));
        }
        sources.insert(key.to_string(), json!({"value": value, "source": from}));
    }
    step.details
        .insert("settings".into(), Value::Object(sources));
}

pub(super) fn describe_policy(step: &mut StepReport, policy: &TlsPolicy) {
    let roots = match tls::root_store(&policy.roots) {
        Ok(store) if policy.roots != Roots::Unused => {
            let n = store.len();
            let plural = if n == 1 { "" } else { "s" };
            format!("{} ({n} certificate{plural})", policy.roots.describe())
        }
        _ => policy.roots.describe(),
    };
    step.row("roots", "roots", roots);
    step.row(
        "verification",
        "will check",
        match policy.verification {
            Verification::Full => "the certificate chain and the host name (verify-full)",
            Verification::Chain => "the certificate chain, not the host name",
            Verification::Unverified => "nothing: encrypted, but the server is not verified",
        },
    );
}

pub(super) fn warnings(cs: &ConnectionString, policy: &TlsPolicy) -> Vec<String> {
    let mut out = Vec::new();
    match cs.sslmode() {
        Some(SslMode::Prefer | SslMode::Allow) => out.push(format!(
            "sslmode={} is treated as `require` (never plaintext); write `sslmode=verify-full` to also check the server's identity",
            cs.sslmode().map_or("", SslMode::as_str)
        )),
        _ if policy.verification == Verification::Unverified => out.push(
            "the server's certificate will not be verified (sslmode=require without a root file): anyone on the network path could pose as the server; use `sslmode=verify-full`".into(),
        ),
        Some(SslMode::VerifyCa) => out.push(
            "verify-ca checks the chain but not the host name: any certificate from the same CA passes; use `sslmode=verify-full`".into(),
        ),
        _ => {}
    }
    for host in cs.hosts() {
        if let Host::Tcp(name) = host {
            if crate::neon::is_pooler(name) {
                out.push(format!(
                    "{name} is a pooled endpoint (PgBouncer, transaction mode): SET, LISTEN, SQL PREPARE, advisory locks and temporary tables do not survive a transaction{}; use the endpoint without -pooler for sessions and migrations",
                    if cs.options().is_some() { ", and the startup `options` are refused there" } else { "" }
                ));
            }
            if name.parse::<IpAddr>().is_ok() && !cs.options().unwrap_or("").contains("endpoint=") {
                out.push(format!(
                    "the host is an IP address ({name}), so no server name (SNI) is sent: a Neon endpoint cannot be found without it (\"Endpoint ID is not specified\"); use the endpoint's host name, or add `options=endpoint%3D<endpoint-id>`"
                ));
            }
        }
    }
    if !policy.sni && cs.hosts().iter().any(|h| matches!(h, Host::Tcp(_))) {
        out.push(
            "sslsni=0: no server name is sent; Neon's proxy needs it to find the endpoint".into(),
        );
    }
    out
}
