//! `neon-doctor`: the "SSL required" checklist, run for the user.
//!
//! Six steps, each ending in pass or fail: the connection string (redacted, with where each
//! value came from), DNS, TCP, TLS (what was negotiated, the certificate chain, the verdict),
//! authentication and a query. The first failing step carries the library's own diagnosis and
//! fix: the TLS, authentication and query steps come from one real connection made exactly as
//! the pool makes it, so the doctor says what the library would.
//!
//! Built with the `cli` feature; the program is `src/bin/neon-doctor.rs`.

use crate::config::{ConnectionString, Host, Source, SslMode, SslNegotiation};
use crate::connect::{addresses, host_label, Connected, Connector};
use crate::diagnostics::{self, Diagnosis, FailedAttempt};
use crate::error::{Error, Step};
use crate::tls::{self, MakeTls, Probe, Roots, TlsInfo, TlsPolicy, Verification};
use crate::Options;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "\
neon-doctor: checks a PostgreSQL connection string step by step and says what to fix

usage: neon-doctor [--json] [--color=auto|always|never] [CONNECTION_STRING]

The connection string is a URL (postgresql://user:password@host/db?sslmode=verify-full) or
libpq's key=value form. Without one, DATABASE_URL is read, then the PG* variables, as the
library does. Prefer DATABASE_URL: a password on the command line shows in `ps` and in the
shell history.

Steps: connection string, DNS, TCP, TLS, authentication, query. Each ends in pass or fail;
the first failure prints the diagnosis and the fix, and the exit code is 1.

options:
  --json            print the report as JSON (for scripts and CI)
  --color=WHEN      colour the text report: auto (on a terminal, unless NO_COLOR is set),
                    always or never
  -h, --help        this text
  -V, --version     the version
";

/// The program: parses the arguments, runs the checks, prints the report. Exit code 0 when
/// every step passed, 1 when one failed, 2 for bad arguments.
pub fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("neon-doctor: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("neon-doctor: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let colour = match args.colour {
        Some(on) => on,
        None => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let printer = Printer {
        style: Style(colour),
        live: !args.json,
        progress: std::io::stderr().is_terminal(),
    };
    let report = runtime.block_on(check(&args.input, &printer));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        );
    } else {
        printer.summary(&report);
    }
    // Do not wait for connection tasks still shutting down.
    runtime.shutdown_background();
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

struct Args {
    input: String,
    json: bool,
    colour: Option<bool>,
}

impl Args {
    /// `Ok(None)`: help or version was printed.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut input = None;
        let mut json = false;
        let mut colour = None;
        for arg in args {
            match arg.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                "-V" | "--version" => {
                    println!("neon-doctor {}", env!("CARGO_PKG_VERSION"));
                    return Ok(None);
                }
                "--json" => json = true,
                "--no-color" | "--color=never" => colour = Some(false),
                "--color=always" => colour = Some(true),
                "--color=auto" => colour = None,
                s if s.starts_with('-') && s.len() > 1 => {
                    return Err(format!("unknown option {s}"))
                }
                s => {
                    if input.is_some() {
                        return Err("give one connection string (quote it for the shell)".into());
                    }
                    input = Some(s.to_string());
                }
            }
        }
        let input = input
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .unwrap_or_default();
        Ok(Some(Args {
            input,
            json,
            colour,
        }))
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// The six steps: JSON name and title.
const STEPS: [(&str, &str); 6] = [
    ("connection_string", "Connection string"),
    ("dns", "DNS"),
    ("tcp", "TCP"),
    ("tls", "TLS"),
    ("authentication", "Authentication"),
    ("query", "Query"),
];

struct StepReport {
    index: usize,
    status: Status,
    elapsed: Option<Duration>,
    /// Label and value, in order, for the text report.
    rows: Vec<(String, String)>,
    details: Map<String, Value>,
    warnings: Vec<String>,
    error: Option<Error>,
}

impl StepReport {
    fn new(index: usize) -> StepReport {
        StepReport {
            index,
            status: Status::Pass,
            elapsed: None,
            rows: Vec::new(),
            details: Map::new(),
            warnings: Vec::new(),
            error: None,
        }
    }

    fn skipped(index: usize) -> StepReport {
        StepReport {
            status: Status::Skipped,
            ..StepReport::new(index)
        }
    }

    /// A row of the text report, and the same value in JSON under `key`.
    fn row(&mut self, key: &str, label: &str, value: impl Into<String>) {
        let value = value.into();
        self.details
            .insert(key.to_string(), Value::String(value.clone()));
        self.rows.push((label.to_string(), value));
    }

    /// A row of the text report only (its JSON is set with `details`).
    fn text(&mut self, label: &str, value: impl Into<String>) {
        self.rows.push((label.to_string(), value.into()));
    }

    fn fail(&mut self, error: Error) {
        self.status = Status::Fail;
        self.error = Some(error);
    }

    fn name(&self) -> &'static str {
        STEPS[self.index].0
    }

    fn title(&self) -> &'static str {
        STEPS[self.index].1
    }

    fn to_json(&self) -> Value {
        json!({
            "step": self.name(),
            "title": self.title(),
            "status": self.status.as_str(),
            "elapsed_ms": self.elapsed.map(ms),
            "details": self.details,
            "warnings": self.warnings,
            "error": self.error.as_ref().map(error_json),
        })
    }
}

struct Report {
    steps: Vec<StepReport>,
    elapsed: Duration,
}

impl Report {
    fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.status == Status::Pass)
    }

    fn failed(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == Status::Fail)
    }

    fn to_json(&self) -> Value {
        let failed = self.failed();
        json!({
            "ok": self.ok(),
            "failed_step": failed.map(StepReport::name),
            "elapsed_ms": ms(self.elapsed),
            "error": failed.and_then(|s| s.error.as_ref()).map(error_json),
            "steps": self.steps.iter().map(StepReport::to_json).collect::<Vec<_>>(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn error_json(e: &Error) -> Value {
    json!({
        "kind": e.kind().as_str(),
        "step": e.step().map(Step::as_str),
        "diagnosis": e.diagnosis().map(Diagnosis::id),
        "message": e.message(),
        "help": e.help(),
        "retryable": e.is_retryable(),
        "causes": causes(e),
        "attempts": e.attempts().iter().map(|a| a.message().to_string()).collect::<Vec<_>>(),
    })
}

/// The error's cause chain, each text once (never a password: the chain holds none).
fn causes(e: &Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !e.message().contains(&text) && !out.contains(&text) {
            out.push(text);
        }
        cur = c.source();
    }
    out
}

/// Runs every step, printing each as it ends (text mode).
async fn check(input: &str, printer: &Printer) -> Report {
    let started = Instant::now();
    let mut doctor = Doctor {
        printer,
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
    printer: &'a Printer,
    steps: Vec<StepReport>,
}

/// What the DNS and TCP steps found, for the steps after them.
struct Target {
    name: String,
    port: u16,
    addr: SocketAddr,
    stream: TcpStream,
}

impl Doctor<'_> {
    fn finish(&mut self, mut step: StepReport, started: Option<Instant>) -> bool {
        if step.elapsed.is_none() {
            step.elapsed = started.map(|s| s.elapsed());
        }
        self.printer.step(&step);
        let ok = step.status == Status::Pass;
        self.steps.push(step);
        ok
    }

    async fn run(&mut self, input: &str) {
        let Some((options, connector)) = self.connection_string(input).await else {
            return;
        };
        let cs = &connector.cs;
        if cs.hosts().iter().all(|h| matches!(h, Host::Unix(_))) && !cs.hosts().is_empty() {
            self.unix_socket(&connector, &options).await;
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
    async fn connection_string(&mut self, input: &str) -> Option<(Options, Arc<Connector>)> {
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
        let connector = match options.connector().await {
            Ok(c) => c,
            Err(e) => {
                step.fail(e);
                self.finish(step, Some(started));
                return None;
            }
        };
        describe_policy(&mut step, &connector.policy);
        step.warnings = warnings(cs, &connector.policy);
        self.finish(step, Some(started))
            .then_some((options, connector))
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
                        .printer
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
                    .printer
                    .waiting(
                        &format!("connecting to {addr}"),
                        tokio::time::timeout(connector.timeout, TcpStream::connect(addr)),
                    )
                    .await;
                let took = began.elapsed();
                let label = host_label(&name, port);
                match result {
                    Ok(Ok(stream)) => {
                        step.text(&addr.to_string(), format!("reachable in {}", fmt_ms(took)));
                        tried.push(json!({"address": addr.to_string(), "reachable": true, "elapsed_ms": ms(took)}));
                        target = Some(Target {
                            name,
                            port,
                            addr,
                            stream,
                        });
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
                            format!("not reachable after {}: {}", fmt_ms(took), error.message()),
                        );
                        tried.push(json!({"address": addr.to_string(), "reachable": false, "elapsed_ms": ms(took), "error": error.message()}));
                        last_error = Some(error);
                    }
                    Err(_) => {
                        let error =
                            diagnostics::timeout(&label, Some(Step::Tcp), connector.timeout);
                        step.text(&addr.to_string(), format!("no answer in {}", fmt_ms(took)));
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
            .printer
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
            .printer
            .waiting(
                "connecting (TLS, authentication; a Neon compute may be waking up)",
                connector.connect(),
            )
            .await;
        let took = began.elapsed();
        let verdict = match policy.verification {
            Verification::None => "encrypted; the certificate was not verified".to_string(),
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
        } = match connected {
            Ok(c) => c,
            Err(e) => {
                let failed_at = match e.step() {
                    Some(Step::Authentication) | Some(Step::Startup) => 4,
                    Some(Step::Pool) => 5,
                    _ => 3,
                };
                if failed_at > 3 {
                    tls_step.row("verdict", "verdict", format!("{mode}: {verdict}"));
                    if let Some(would) = verify_full_would {
                        tls_step.row("verify_full", "verify-full would", would);
                    }
                    self.finish(tls_step, None);
                    let mut auth = StepReport::new(4);
                    auth.elapsed = Some(took);
                    auth.fail(e);
                    self.finish(auth, None);
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
        tls_step.row("verdict", "verdict", format!("{mode}: {verdict}"));
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
            Ok(row) => query.row("version", "server", row.get::<_, String>(0)),
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
    async fn unix_socket(&mut self, connector: &Connector, _options: &Options) {
        let mut dns = StepReport::new(1);
        dns.text("host", "a Unix socket: no lookup");
        self.finish(dns, None);
        let mut tcp = StepReport::new(2);
        tcp.text("host", "a Unix socket: no TCP");
        self.finish(tcp, None);
        let inspection = Inspection {
            label: String::new(),
            result: Err(Failed::from("not used over a Unix socket".to_string())),
            elapsed: Duration::ZERO,
        };
        self.connect_and_query(connector, inspection).await;
    }
}

struct Inspection {
    label: String,
    result: Result<TlsInfo, Failed>,
    elapsed: Duration,
}

/// Why the inspection handshake failed: in words, and as the final error when the inspection
/// alone settles it (a timeout, an answer no PostgreSQL server gives).
struct Failed {
    text: String,
    error: Option<Error>,
}

impl From<String> for Failed {
    fn from(text: String) -> Failed {
        Failed { text, error: None }
    }
}

/// The TLS request (unless direct) and a handshake that does not verify, on `target`.
async fn inspect(
    policy: &TlsPolicy,
    target: Target,
    deadline: Duration,
) -> Result<TlsInfo, Failed> {
    use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
    let mut stream = target.stream;
    let open = TlsPolicy {
        verification: Verification::None,
        roots: Roots::None,
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
            text: format!("no TLS answer in {}", fmt_ms(deadline)),
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
        let _ = target.addr;
        info
    })
}

/// What `verify-full` would say of the presented chain, for a weaker mode: checked against
/// the configured roots, or the system store when there are none.
fn verify_full_verdict(policy: &TlsPolicy, label: &str, info: &TlsInfo) -> String {
    use rustls::client::danger::ServerCertVerifier;
    let roots = match &policy.roots {
        Roots::None => Roots::System,
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
            };
            let error = diagnostics::classify_rustls(&e, &cx);
            format!("fail: {}", error.message())
        }
    }
}

fn context<'a>(
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
    }
}

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

fn describe_settings(step: &mut StepReport, cs: &ConnectionString) {
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
                _ => "postgres".into(),
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

fn describe_policy(step: &mut StepReport, policy: &TlsPolicy) {
    let roots = match tls::root_store(&policy.roots) {
        Ok(store) if policy.roots != Roots::None => {
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
            Verification::None => "nothing: encrypted, but the server is not verified",
        },
    );
}

fn warnings(cs: &ConnectionString, policy: &TlsPolicy) -> Vec<String> {
    let mut out = Vec::new();
    match cs.sslmode() {
        Some(SslMode::Prefer | SslMode::Allow) => out.push(format!(
            "sslmode={} is treated as `require` (never plaintext); write `sslmode=verify-full` to also check the server's identity",
            cs.sslmode().map_or("", SslMode::as_str)
        )),
        _ if policy.verification == Verification::None => out.push(
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

fn describe_tls(step: &mut StepReport, info: &TlsInfo) {
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

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// ANSI colours, or none.
#[derive(Clone, Copy)]
struct Style(bool);

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(self, t: &str) -> String {
        self.paint("1;31", t)
    }
    fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
    fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
}

/// Prints the text report as the steps end, and a progress line on a terminal while a step
/// waits.
struct Printer {
    style: Style,
    /// Print steps as they end (text mode).
    live: bool,
    /// stderr is a terminal: show a spinner while waiting.
    progress: bool,
}

const WIDTH: usize = 64;

impl Printer {
    fn step(&self, step: &StepReport) {
        if !self.live {
            return;
        }
        let s = self.style;
        let head = format!("[{}/{}] {}", step.index + 1, STEPS.len(), step.title());
        let status = match step.status {
            Status::Pass => s.green("pass"),
            Status::Fail => s.red("FAIL"),
            Status::Skipped => s.dim("skipped"),
        };
        let time = step
            .elapsed
            .filter(|_| step.status != Status::Skipped)
            .map(|d| format!("  {}", s.dim(&fmt_ms(d))))
            .unwrap_or_default();
        let dots = WIDTH.saturating_sub(head.chars().count() + 2);
        let mut out = format!(
            "{} {} {status}{time}\n",
            s.bold(&head),
            s.dim(&".".repeat(dots))
        );
        let width = step
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            .min(22);
        for (label, value) in &step.rows {
            let pad = " ".repeat(width.saturating_sub(label.chars().count()));
            out.push_str(&format!("      {}{pad}  {value}\n", s.dim(label)));
        }
        for w in &step.warnings {
            out.push_str(&format!("      {} {w}\n", s.yellow("warning:")));
        }
        if let Some(e) = &step.error {
            out.push_str(&format!("      {} {}\n", s.red("error:"), e.message()));
            for a in e.attempts() {
                out.push_str(&format!("        - {}\n", a.message()));
            }
            for c in causes(e) {
                out.push_str(&format!("      {} {c}\n", s.dim("cause:")));
            }
            if let Some(help) = e.help() {
                out.push_str(&format!("      {} {help}\n", s.green("fix:")));
            }
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    fn summary(&self, report: &Report) {
        let s = self.style;
        println!();
        match report.failed() {
            None => println!(
                "{} in {}",
                s.green(&format!("All {} steps passed", STEPS.len())),
                fmt_ms(report.elapsed)
            ),
            Some(step) => {
                println!(
                    "{}",
                    s.red(&format!(
                        "Step {} ({}) failed.",
                        step.index + 1,
                        step.title()
                    ))
                );
                if let Some(e) = &step.error {
                    println!("{}", e.message());
                    if let Some(help) = e.help() {
                        println!("{} {help}", s.green("fix:"));
                    }
                }
            }
        }
    }

    /// Awaits `work`, showing `what` and the time waited on stderr after a moment (a spinner
    /// on a terminal; a line every five seconds otherwise).
    async fn waiting<T>(&self, what: &str, work: impl std::future::Future<Output = T>) -> T {
        let terminal = self.progress;
        let what = what.to_string();
        let ticker = async move {
            let started = Instant::now();
            let frames = ['|', '/', '-', '\\'];
            let mut n = 0usize;
            tokio::time::sleep(Duration::from_millis(300)).await;
            loop {
                let waited = started.elapsed().as_secs_f64();
                if terminal {
                    eprint!("\r\x1b[2K  {} {what}... {waited:.0} s", frames[n % 4]);
                    tokio::time::sleep(Duration::from_millis(120)).await;
                } else {
                    if n > 0 {
                        eprintln!("  still waiting: {what} ({waited:.0} s)");
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                n += 1;
            }
        };
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            _ = ticker => unreachable!("the ticker never ends"),
        };
        if terminal {
            eprint!("\r\x1b[2K");
        }
        result
    }
}
