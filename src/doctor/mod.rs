//! The doctor's engine: the "SSL required" checklist, run for the user.
//!
//! Six steps, each ending in pass or fail: the connection string (redacted, with where each
//! value came from), DNS, TCP, TLS (what was negotiated, the certificate chain, the verdict),
//! authentication and a query. The first failing step carries the library's own diagnosis and
//! fix: the TLS, authentication and query steps come from one real connection made exactly as
//! the pool makes it, so the doctor says what the library would.
//!
//! [`check`] runs the steps and returns a [`Report`]; the `neon-doctor` program
//! (`src/bin/neon-doctor/`) adds the arguments, the terminal output and the JSON. Built with
//! the `cli` feature.

mod report;
mod settings;
mod tls;

pub use report::{causes, Report, Status, StepReport, STEPS};

use crate::config::Host;
use crate::connect::{addresses, host_label, Connected, Connector};
use crate::diagnostics::{self, FailedAttempt};
use crate::error::{Error, Step};
use crate::tls::{TlsPolicy, Verification};
use crate::Options;
use report::ms;
use serde_json::{json, Value};
use settings::{describe_policy, describe_settings, warnings};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls::{describe_tls, inspect, verify_full_verdict, Failed, Inspection};
use tokio::net::TcpStream;

/// Told about the check as it runs, so a program can show it live.
pub trait Progress {
    /// A step ended (passed, failed or was skipped).
    fn step_finished(&self, step: &StepReport);
    /// A slow part of a step started (a DNS lookup, a connection to a waking compute).
    fn waiting(&self, what: &str);
    /// The slow part ended.
    fn done_waiting(&self);
}

/// Runs the six steps on a connection string (URL or `key=value`; empty: the `PG*`
/// variables), as the library would connect: the first failing step carries the library's
/// own error, and the steps after it are skipped.
pub async fn check(input: &str, progress: &dyn Progress) -> Report {
    let started = Instant::now();
    let mut doctor = Doctor {
        progress,
        steps: Vec::new(),
    };
    doctor.run(input).await;
    while doctor.steps.len() < STEPS.len() {
        let skipped = StepReport::skipped(doctor.steps.len());
        doctor.finish(skipped, None);
    }
    Report {
        steps: doctor.steps,
        elapsed: started.elapsed(),
    }
}

struct Doctor<'a> {
    progress: &'a dyn Progress,
    steps: Vec<StepReport>,
}

/// What the DNS and TCP steps found, for the steps after them.
pub(super) struct Target {
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) stream: TcpStream,
}

impl Doctor<'_> {
    fn finish(&mut self, mut step: StepReport, started: Option<Instant>) -> bool {
        if step.elapsed.is_none() {
            step.elapsed = started.map(|s| s.elapsed());
        }
        self.progress.step_finished(&step);
        let ok = step.status == Status::Pass;
        self.steps.push(step);
        ok
    }

    /// Awaits `work`, telling the progress observer that a slow part is running.
    async fn waiting<T>(&self, what: &str, work: impl std::future::Future<Output = T>) -> T {
        self.progress.waiting(what);
        let result = work.await;
        self.progress.done_waiting();
        result
    }

    async fn run(&mut self, input: &str) {
        let Some(connector) = self.connection_string(input).await else {
            return;
        };
        let cs = &connector.cs;
        if cs.hosts().iter().all(|h| matches!(h, Host::Unix(_))) && !cs.hosts().is_empty() {
            self.unix_socket(&connector).await;
            return;
        }
        let Some(addresses) = self.dns(&connector).await else {
            return;
        };
        let Some(target) = self.tcp(&connector, addresses).await else {
            return;
        };
        let inspected = self.inspect_tls(&connector, target).await;
        self.connect_and_query(&connector, inspected).await;
    }

    /// Step 1. `None` when it failed.
    async fn connection_string(&mut self, input: &str) -> Option<Arc<Connector>> {
        let started = Instant::now();
        let mut step = StepReport::new(0);
        let options = match Options::new(input) {
            Ok(o) => o,
            Err(e) => {
                step.fail(e);
                self.finish(step, Some(started));
                return None;
            }
        };
        let cs = options.connection_string();
        step.row("connection_string", "as read", cs.redacted());
        describe_settings(&mut step, cs);
        // The roots are part of this step (the settings), not of a later one.
        let connector = match options.connector().await {
            Ok(c) => c.roots_ready().await.map(|()| c),
            Err(e) => Err(e),
        };
        let connector = match connector {
            Ok(c) => c,
            Err(e) => {
                step.fail(e);
                self.finish(step, Some(started));
                return None;
            }
        };
        describe_policy(&mut step, &connector.policy);
        step.warnings = warnings(cs, &connector.policy);
        self.finish(step, Some(started)).then_some(connector)
    }

    /// Step 2: every TCP host's addresses. `None` when no host resolved.
    async fn dns(&mut self, connector: &Connector) -> Option<Vec<(String, u16, Vec<IpAddr>)>> {
        let started = Instant::now();
        let mut step = StepReport::new(1);
        let cs = &connector.cs;
        let mut found = Vec::new();
        let mut hosts_json = Vec::new();
        let mut first_error = None;
        for target in cs.targets() {
            let port = target.port;
            let name = target.name();
            let (result, how) = match (&target.host, target.hostaddr) {
                (Some(Host::Unix(_)), _) => continue,
                (_, Some(_)) => (addresses(&target, connector.timeout).await, "hostaddr"),
                _ => {
                    let result = self
                        .waiting(
                            &format!("resolving {name}"),
                            addresses(&target, connector.timeout),
                        )
                        .await;
                    let how = if name.parse::<IpAddr>().is_ok() {
                        "an IP address"
                    } else {
                        "resolved"
                    };
                    (result, how)
                }
            };
            let label = host_label(&name, port);
            match result {
                Ok(ips) => {
                    let list = ips.iter().map(IpAddr::to_string).collect::<Vec<_>>();
                    step.text(
                        &label,
                        match how {
                            "resolved" => format!("→ {}", list.join(", ")),
                            "hostaddr" => format!("→ {} (hostaddr: no lookup)", list.join(", ")),
                            _ => format!("{} (no lookup needed)", list.join(", ")),
                        },
                    );
                    hosts_json.push(json!({"host": label, "addresses": list, "source": how}));
                    found.push((name, port, ips));
                }
                Err(e) => {
                    step.text(&label, format!("not resolved: {}", e.message()));
                    hosts_json.push(json!({"host": label, "error": e.message()}));
                    first_error.get_or_insert(e);
                }
            }
        }
        step.details
            .insert("hosts".into(), Value::Array(hosts_json));
        if found.is_empty() {
            if let Some(e) = first_error {
                step.fail(e);
            }
        }
        self.finish(step, Some(started)).then_some(found)
    }

    /// Step 3: every address, until one accepts. `None` when none did.
    async fn tcp(
        &mut self,
        connector: &Connector,
        hosts: Vec<(String, u16, Vec<IpAddr>)>,
    ) -> Option<Target> {
        let started = Instant::now();
        let mut step = StepReport::new(2);
        let mut tried = Vec::new();
        let mut target = None;
        let mut last_error = None;
        'hosts: for (name, port, ips) in hosts {
            for ip in ips {
                let addr = SocketAddr::new(ip, port);
                let began = Instant::now();
                let result = self
                    .waiting(
                        &format!("connecting to {addr}"),
                        tokio::time::timeout(connector.timeout, TcpStream::connect(addr)),
                    )
                    .await;
                let took = began.elapsed();
                let label = host_label(&name, port);
                match result {
                    Ok(Ok(stream)) => {
                        step.text(
                            &addr.to_string(),
                            format!("reachable in {}", format_duration(took)),
                        );
                        tried.push(json!({"address": addr.to_string(), "reachable": true, "elapsed_ms": ms(took)}));
                        target = Some(Target { name, port, stream });
                        break 'hosts;
                    }
                    Ok(Err(e)) => {
                        let cx = context(&label, &name, Step::Tcp, None);
                        let error = diagnostics::classify_io(&e, &cx)
                            .with_step(Step::Tcp)
                            .with_host(label)
                            .with_source(e);
                        step.text(
                            &addr.to_string(),
                            format!(
                                "not reachable after {}: {}",
                                format_duration(took),
                                error.message()
                            ),
                        );
                        tried.push(json!({"address": addr.to_string(), "reachable": false, "elapsed_ms": ms(took), "error": error.message()}));
                        last_error = Some(error);
                    }
                    Err(_) => {
                        let error =
                            diagnostics::timeout(&label, Some(Step::Tcp), connector.timeout);
                        step.text(
                            &addr.to_string(),
                            format!("no answer in {}", format_duration(took)),
                        );
                        tried.push(json!({"address": addr.to_string(), "reachable": false, "elapsed_ms": ms(took), "error": error.message()}));
                        last_error = Some(error);
                    }
                }
            }
        }
        step.details.insert("addresses".into(), Value::Array(tried));
        if target.is_none() {
            if let Some(e) = last_error {
                step.fail(e);
            }
        }
        self.finish(step, Some(started));
        target
    }

    /// Step 4, first half: the TLS request and handshake on the reachable address with
    /// verification off, to see what the server offers and which certificates it presents.
    /// The verdict comes from the real connection (see `connect_and_query`).
    async fn inspect_tls(&mut self, connector: &Connector, target: Target) -> Inspection {
        let started = Instant::now();
        let policy = &connector.policy;
        let label = host_label(&target.name, target.port);
        let result = self
            .waiting("TLS handshake", inspect(policy, target, connector.timeout))
            .await;
        Inspection {
            label,
            result,
            elapsed: started.elapsed(),
        }
    }

    /// Step 4's verdict, then steps 5 and 6, from one connection made as the pool makes it.
    async fn connect_and_query(&mut self, connector: &Connector, mut inspection: Inspection) {
        let mut tls_step = StepReport::new(3);
        tls_step.elapsed = Some(inspection.elapsed);
        let policy = &connector.policy;
        tls_step.row(
            "negotiation",
            "negotiation",
            if policy.auto_direct {
                "direct TLS (ALPN postgresql; the default for Neon hosts, with a fallback to the TLS request)"
            } else if policy.direct {
                "direct TLS (sslnegotiation=direct, ALPN postgresql)"
            } else {
                "TLS request (SSLRequest), then the TLS handshake"
            },
        );
        let mut verify_full_would = None;
        match &mut inspection.result {
            Ok(info) => {
                if !policy.direct {
                    tls_step.text("server's answer", "S (TLS accepted)");
                }
                describe_tls(&mut tls_step, info);
                if policy.verification != Verification::Full {
                    verify_full_would = Some(verify_full_verdict(policy, &inspection.label, info));
                }
            }
            Err(failed) => {
                tls_step.row("inspection", "handshake", failed.text.clone());
                if let Some(error) = failed.error.take() {
                    tls_step.row("verdict", "verdict", "failed");
                    tls_step.fail(error);
                    self.finish(tls_step, None);
                    return;
                }
            }
        }

        let began = Instant::now();
        let connected = self
            .waiting(
                "connecting (TLS, authentication; a Neon compute may be waking up)",
                connector.connect(),
            )
            .await;
        let took = began.elapsed();
        let unix = inspection.label.is_empty();
        let verdict = match policy.verification {
            Verification::Unverified => "encrypted; the certificate was not verified".to_string(),
            v => format!("{v} against {}", policy.roots.describe()),
        };
        let mode = connector
            .cs
            .sslmode()
            .map_or("verify-full (default)", |m| m.as_str());
        let Connected {
            client,
            connection,
            info,
            ..
        } = match connected {
            Ok(c) => c,
            Err(e) => {
                // The login passed when the session failed to start (a missing database is
                // checked after authentication): the query step is where it shows.
                let failed_at = match e.step() {
                    Some(Step::Authentication) => 4,
                    Some(Step::Startup) | Some(Step::Pool) => 5,
                    _ => 3,
                };
                if failed_at > 3 {
                    if unix {
                        tls_step.row("verdict", "verdict", UNIX_TLS);
                    } else {
                        tls_step.row("verdict", "verdict", format!("{mode}: {verdict}"));
                    }
                    if let Some(would) = verify_full_would {
                        tls_step.row("verify_full", "verify-full would", would);
                    }
                    self.finish(tls_step, None);
                    let mut auth = StepReport::new(4);
                    auth.elapsed = Some(took);
                    if failed_at == 4 {
                        auth.fail(e);
                        self.finish(auth, None);
                    } else {
                        auth.row(
                            "method",
                            "method",
                            "accepted (the session then failed to start)",
                        );
                        self.finish(auth, None);
                        let mut query = StepReport::new(5);
                        query.fail(e);
                        self.finish(query, None);
                    }
                } else {
                    tls_step.row("verdict", "verdict", format!("{mode}: failed"));
                    if let Some(would) = verify_full_would {
                        tls_step.row("verify_full", "verify-full would", would);
                    }
                    tls_step.fail(e);
                    self.finish(tls_step, None);
                }
                return;
            }
        };
        if policy.auto_direct && info.tls.as_ref().is_some_and(|t| !t.direct) {
            tls_step.row(
                "negotiation_used",
                "used",
                "the TLS request: this host hung up on direct TLS",
            );
        }
        if unix {
            tls_step.row("verdict", "verdict", UNIX_TLS);
        } else {
            tls_step.row("verdict", "verdict", format!("{mode}: {verdict}"));
        }
        if let Some(would) = verify_full_would {
            tls_step.row("verify_full", "verify-full would", would);
        }
        self.finish(tls_step, None);

        let connection = tokio::spawn(connection);
        let mut auth = StepReport::new(4);
        auth.elapsed = Some(took);
        auth.row("method", "method", info.authentication.unwrap_or("unknown"));
        auth.row(
            "user",
            "user",
            connector.cs.user().unwrap_or_default().to_string(),
        );
        if info.channel_binding_required {
            auth.text(
                "channel binding",
                "required by channel_binding=require, and used",
            );
        }
        auth.details.insert(
            "channel_binding_required".into(),
            info.channel_binding_required.into(),
        );
        auth.details.insert("attempts".into(), info.attempts.into());
        if info.attempts > 1 {
            auth.text(
                "attempts",
                format!(
                    "{} (the first ones failed with errors worth retrying, such as a compute waking up)",
                    info.attempts
                ),
            );
        }
        self.finish(auth, None);

        let started = Instant::now();
        let mut query = StepReport::new(5);
        match client.query_one("SELECT version()", &[]).await {
            Ok(row) => {
                query.row("version", "server", row.get::<_, String>(0));
                if let Some(role) = info.server_role {
                    query.row("server_role", "role", role.as_str());
                }
            }
            Err(e) => {
                query.fail(
                    Error::new(crate::ErrorKind::Server, "`SELECT version()` failed")
                        .with_step(Step::Startup)
                        .with_help(
                            "the connection opened but cannot run queries: check the server's log",
                        )
                        .with_source(e),
                );
                self.finish(query, Some(started));
                connection.abort();
                return;
            }
        }
        let ssl = client
            .query_opt(
                "SELECT ssl, coalesce(version, ''), coalesce(cipher, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await;
        match ssl {
            Ok(Some(row)) if row.get::<_, bool>(0) => {
                let seen = format!("{} {}", row.get::<_, String>(1), row.get::<_, String>(2));
                query.row(
                    "server_sees",
                    "server sees",
                    format!("an encrypted session ({seen})"),
                );
                query.details.insert("server_sees_tls".into(), true.into());
            }
            Ok(_) => {
                query.row(
                    "server_sees",
                    "server sees",
                    "an unencrypted session: a proxy in front of it (Neon's, PgBouncer) ends TLS; the hop from this machine is TLS (step 4)",
                );
                query.details.insert("server_sees_tls".into(), false.into());
            }
            Err(e) => {
                let why = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string());
                query.row(
                    "server_sees",
                    "server sees",
                    format!("unknown (pg_stat_ssl: {why})"),
                );
            }
        }
        self.finish(query, Some(started));
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
    }

    /// Steps 2 to 6 for a Unix socket: no DNS, no TCP, no TLS (as in libpq).
    async fn unix_socket(&mut self, connector: &Connector) {
        let mut dns = StepReport::new(1);
        dns.text("host", "a Unix socket: no lookup");
        self.finish(dns, None);
        let mut tcp = StepReport::new(2);
        // The socket file itself: a missing one is said here, not as a network error later.
        let sockets: Vec<(String, std::path::PathBuf)> = connector
            .cs
            .targets()
            .filter_map(|t| match &t.host {
                Some(Host::Unix(dir)) => {
                    Some((t.label(), dir.join(format!(".s.PGSQL.{}", t.port))))
                }
                _ => None,
            })
            .collect();
        let present = sockets.iter().find(|(_, path)| path.exists());
        match (present, sockets.first()) {
            (Some((_, path)), _) => tcp.text("socket", format!("{} exists", path.display())),
            (None, Some((label, path))) => {
                tcp.text("socket", format!("{} does not exist", path.display()));
                tcp.fail(
                    diagnostics::diagnose(
                        diagnostics::Diagnosis::UnixSocketMissing,
                        format!(
                            "no PostgreSQL server socket exists at \"{label}\" ({})",
                            path.display()
                        ),
                    )
                    .with_step(Step::Tcp)
                    .with_host(label.clone()),
                );
                self.finish(tcp, None);
                return;
            }
            (None, None) => {}
        }
        self.finish(tcp, None);
        let inspection = Inspection {
            label: String::new(),
            result: Err(Failed::from("not used over a Unix socket".to_string())),
            elapsed: Duration::ZERO,
        };
        self.connect_and_query(connector, inspection).await;
    }
}

/// The TLS verdict over a Unix socket, where libpq uses no TLS either.
const UNIX_TLS: &str = "not used: a Unix socket is local to this machine (as in libpq)";

pub(crate) fn context<'a>(
    label: &'a str,
    name: &'a str,
    step: Step,
    policy: Option<&'a TlsPolicy>,
) -> FailedAttempt<'a> {
    FailedAttempt {
        host: label,
        hostname: name,
        user: None,
        step: Some(step),
        policy,
        tls: None,
        options: None,
        deadline: Duration::ZERO,
        unix_socket: false,
    }
}

/// A duration as the report shows it: `0.7 ms`, `52 ms`, `1.5 s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
