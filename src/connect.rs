//! Opening one connection: host by host, address by address, under one deadline per host,
//! with the TLS policy applied and every failure classified.

use crate::config::{
    ChannelBinding, ConnectionString, Host, LoadBalanceHosts, ServerRole, Target,
    TargetSessionAttrs,
};
use crate::diagnostics::{self, diagnose, Diagnosis, FailedAttempt};
use crate::error::{Error, ErrorKind, Step};
use crate::tls::{MakeTls, Probe, TlsInfo, TlsPolicy, TlsStream};
use rustls::ClientConfig;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Connection, Socket};
use tracing::Instrument;

/// The deadline for one host's whole handshake (TCP, TLS, authentication, startup) when
/// `connect_timeout` is not set: long enough for a Neon compute to wake from scale-to-zero.
/// It is also the budget for retries: see [`DEFAULT_CONNECT_ATTEMPTS`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times opening one connection is tried by default (the first try included).
///
/// Only failures that trying again can fix are retried: connection refused or reset (a server
/// starting or restarting), 57P03 (starting up), 53300 (too many connections), Neon's
/// "Couldn't connect to compute node" and rate-limit answers (see
/// [`Error::is_retryable`](crate::Error::is_retryable)). A wrong password, certificate, host
/// name, connection string or TLS policy fails at once.
///
/// Retries back off exponentially with full jitter (a random wait between zero and
/// 200 ms × 2ⁿ, at most 3 s) and stop when the attempts are used up or the next one could not
/// start within the budget: `connect_timeout` (default [`DEFAULT_CONNECT_TIMEOUT`]) counted
/// from the first attempt. The first attempt gives every host its full `connect_timeout`, as
/// libpq does; later ones only what is left of the budget. Each attempt is logged by `tracing`
/// (target `neon_connect`), and [`ConnectionInfo::attempts`] says how many were used.
pub const DEFAULT_CONNECT_ATTEMPTS: u32 = 10;

/// Idle time before the first TCP keepalive probe, unless `keepalives_idle` says otherwise
/// (libpq leaves the OS default, two hours on Linux).
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(15);
/// Time between keepalive probes, unless `keepalives_interval` says otherwise (OS default: 75 s).
pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the connection is dropped, unless `keepalives_count` says
/// otherwise (OS default: 9).
pub const DEFAULT_KEEPALIVES_COUNT: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is dropped, unless
/// `tcp_user_timeout` says otherwise (OS default: about 15 minutes of retransmissions). With
/// the keepalive defaults, a path that stops forwarding packets fails an in-flight query, and
/// is noticed on an idle connection, in about 30 s instead of minutes or hours; a long-running
/// query on a live path is unaffected (the server's kernel answers the probes).
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The first backoff's upper bound (Neon's proxy uses the same base for its own retries).
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// The largest backoff between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(3);

/// What one connection negotiated.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The host as written in the connection string, with its port: `host:port`.
    pub host: String,
    /// The address connected to (an IP and port, or a Unix socket path).
    pub addr: String,
    /// TLS details; `None` for a Unix socket.
    pub tls: Option<TlsInfo>,
    /// Whether `channel_binding=require` was in force (login then proves the binding was used).
    pub channel_binding_required: bool,
    /// How long the connection took to open, retries included.
    pub elapsed: Duration,
    /// How many attempts opening it took: 1 when the first one succeeded (see
    /// [`DEFAULT_CONNECT_ATTEMPTS`]).
    pub attempts: u32,
    /// The authentication method used, as seen on the wire: `SCRAM-SHA-256-PLUS (with channel
    /// binding)`, `SCRAM-SHA-256 (without channel binding)`, `MD5`, `password (cleartext,
    /// inside TLS)` or `trust (no password asked)`. `None` over a Unix socket.
    pub authentication: Option<&'static str>,
    /// What the server was when the connection opened: a primary, a read-only primary or a
    /// standby. Known when the server reports `in_hot_standby` and
    /// `default_transaction_read_only` (PostgreSQL 14+, Neon), or when `target_session_attrs`
    /// asked for a check; `None` otherwise.
    pub server_role: Option<ServerRole>,
}

/// A connection and what it negotiated.
pub(crate) struct Connected {
    pub(crate) client: Client,
    /// The connection's I/O task: spawn (or poll) it to drive the client.
    pub(crate) connection: Connection<Socket, TlsStream<Socket>>,
    pub(crate) info: ConnectionInfo,
    /// The protocol session seen on the wire (TLS connections only): see `tls::Session`.
    pub(crate) probe: Option<Arc<Probe>>,
    /// The TLS way this connection was made, for its cancel requests (TLS connections only).
    pub(crate) cancel_tls: Option<MakeTls>,
    /// Whether the server still is what `target_session_attrs` asks for: see [`Watched`].
    pub(crate) role: Arc<RoleWatch>,
}

/// One TLS way of reaching a server: the policy and its shared rustls configuration.
struct Route<'a> {
    policy: &'a Arc<TlsPolicy>,
    tls_config: &'a Arc<ClientConfig>,
}

/// One address of one host to try, and the time left for it.
struct Attempt<'a> {
    /// The host name (what TLS checks), or the `hostaddr` when no name was given.
    name: &'a str,
    ip: IpAddr,
    port: u16,
    /// Time left for this address.
    remaining: Duration,
    /// The host's whole deadline, for the message when it runs out.
    deadline: Duration,
    /// When this host's attempt started.
    started: Instant,
    /// What this pass over the hosts asks for (`prefer-standby`'s second pass: `any`).
    want: TargetSessionAttrs,
}

/// Everything needed to open connections for one connection string; built once, shared.
pub(crate) struct Connector {
    pub(crate) cs: ConnectionString,
    pub(crate) policy: Arc<TlsPolicy>,
    pub(crate) tls_config: Arc<ClientConfig>,
    pub(crate) timeout: Duration,
    /// At most this many attempts per connection (at least 1).
    pub(crate) max_attempts: u32,
    /// With automatic direct TLS (Neon hosts): the TLS-request policy for hosts that turn
    /// out not to speak direct TLS.
    fallback: Option<(Arc<TlsPolicy>, Arc<ClientConfig>)>,
    /// When `sslnegotiation` is not set (other hosts): the direct TLS policy, used for hosts
    /// that reported PostgreSQL 17 or later on an earlier connection (see `direct_tls`).
    learned: Option<(Arc<TlsPolicy>, Arc<ClientConfig>)>,
}

impl Connector {
    /// Resolves the policy and builds (or reuses) its rustls configuration. Reads certificate
    /// files on first use: call it off the async path. The system root store is not waited
    /// for: it starts loading in the background here, and the first handshake waits for it
    /// ([`Connector::roots_ready`]), so loading it overlaps with DNS, TCP and the TLS request.
    pub(crate) fn new(
        cs: ConnectionString,
        custom_roots: Option<&Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
    ) -> Result<Connector, Error> {
        if cs.targets().next().is_none() {
            return Err(Error::config("no host was given").with_help(
                "put the host in the connection string (`postgresql://user:password@host/dbname`) or set PGHOST",
            ));
        }
        let policy = TlsPolicy::resolve(&cs, custom_roots)?;
        policy.start_loading_roots();
        let tls_config = policy.client_config()?;
        let timeout = cs.connect_timeout().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let fallback = if policy.auto_direct {
            let plain = policy.without_direct();
            let config = plain.client_config()?;
            Some((Arc::new(plain), config))
        } else {
            None
        };
        let learned = policy.learnable_direct().map(|direct| {
            // The same configuration (roots, verifier, session cache) with ALPN `postgresql`,
            // which direct TLS requires: no second load of the roots.
            let mut config = (*tls_config).clone();
            config.alpn_protocols = vec![b"postgresql".to_vec()];
            (Arc::new(direct), Arc::new(config))
        });
        Ok(Connector {
            cs,
            policy: Arc::new(policy),
            tls_config,
            timeout,
            max_attempts: DEFAULT_CONNECT_ATTEMPTS,
            fallback,
            learned,
        })
    }

    /// Opens one connection: tries each host in order, and when that fails with an error a
    /// retry can fix, tries again after a jittered backoff within the budget (see
    /// [`DEFAULT_CONNECT_ATTEMPTS`]). The error is the last attempt's; when all hosts failed,
    /// it lists each host's failure.
    pub(crate) async fn connect(&self) -> Result<Connected, Error> {
        self.connect_unless_full(false).await
    }

    /// Waits for the roots that load in the background ([`Connector::new`]); their error if
    /// they could not be loaded. The policies of `fallback` and `learned` use the same roots.
    pub(crate) async fn roots_ready(&self) -> Result<(), Error> {
        self.policy.roots_ready().await
    }

    /// [`Connector::connect`]; with `full_fails_fast`, a server with no connection slot left
    /// is not asked again (a pool that holds connections waits for a returned one instead).
    pub(crate) async fn connect_unless_full(
        &self,
        full_fails_fast: bool,
    ) -> Result<Connected, Error> {
        let connected = self.connect_with_retries(full_fails_fast).await;
        // Roots that could not be loaded are the error, whatever else failed meanwhile: the
        // same error as when they were loaded before connecting.
        self.roots_ready().await?;
        connected
    }

    async fn connect_with_retries(&self, full_fails_fast: bool) -> Result<Connected, Error> {
        let started = Instant::now();
        let budget = self.timeout;
        let max_attempts = self.max_attempts.max(1);
        // An attempt needs time to finish (TLS, authentication, a waking compute): none is
        // started with less than this left of the budget.
        let least = (budget / 5).min(Duration::from_secs(2));
        let mut attempt = 1;
        // The last failure that was not a timeout: what the user most needs to see when the
        // last attempt only ran out of budget.
        let mut substantive: Option<Vec<Error>> = None;
        loop {
            let left = budget.saturating_sub(started.elapsed());
            // The first attempt gives each host its full deadline (libpq's meaning of
            // `connect_timeout`); retries get what is left of the budget.
            let deadline = if attempt == 1 { self.timeout } else { left };
            let failures = match self.connect_once(attempt, deadline).await {
                Ok(mut c) => {
                    c.info.attempts = attempt;
                    c.info.elapsed = started.elapsed();
                    return Ok(c);
                }
                Err(failures) => failures,
            };
            let kind = failures.last().map_or(ErrorKind::Network, Error::kind);
            let retry = failures.iter().any(Error::is_retryable)
                && !failures.iter().any(|e| retry_cannot_help(e.kind()))
                && !(full_fails_fast && failures.iter().any(crate::pool::server_full));
            let delay = backoff(attempt);
            let left = budget.saturating_sub(started.elapsed());
            if !retry || attempt >= max_attempts || delay + least >= left {
                let why = if !retry {
                    "not retryable"
                } else if attempt >= max_attempts {
                    "no attempts left"
                } else {
                    "deadline reached"
                };
                if attempt > 1 || retry {
                    tracing::info!(target: "neon_connect", attempt, kind = %kind, elapsed_ms = started.elapsed().as_millis() as u64, "connection attempt {attempt} failed ({kind}); giving up: {why}");
                }
                let timed_out = failures.iter().all(|e| e.kind() == ErrorKind::Timeout);
                let failures = match substantive {
                    Some(earlier) if timed_out => earlier,
                    _ => failures,
                };
                return Err(self.final_error(failures, attempt, started.elapsed()));
            }
            if !failures.iter().all(|e| e.kind() == ErrorKind::Timeout) {
                substantive = Some(failures);
            }
            tracing::info!(target: "neon_connect", attempt, kind = %kind, delay_ms = delay.as_millis() as u64, "connection attempt {attempt} failed ({kind}); retrying in {} ms", delay.as_millis());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt over every host, in order (or shuffled with `load_balance_hosts=random`).
    async fn connect_once(
        &self,
        attempt: u32,
        deadline: Duration,
    ) -> Result<Connected, Vec<Error>> {
        let mut targets: Vec<Target> = self.cs.targets().collect();
        if self.cs.load_balance_hosts() == Some(LoadBalanceHosts::Random) {
            shuffle(&mut targets);
        }
        // libpq's order: the hosts in order (or shuffled once); with `prefer-standby`, a second
        // pass over the same order accepting any server when the first found no standby.
        let want = self
            .cs
            .target_session_attrs()
            .unwrap_or(TargetSessionAttrs::Any);
        let passes: &[TargetSessionAttrs] = if want == TargetSessionAttrs::PreferStandby {
            &[TargetSessionAttrs::PreferStandby, TargetSessionAttrs::Any]
        } else {
            &[want]
        };
        let mut failures = Vec::new();
        for (pass, &want) in passes.iter().enumerate() {
            if pass > 0 {
                tracing::debug!(target: "neon_connect", "no host is a standby: trying the hosts again for any server (target_session_attrs=prefer-standby)");
                failures.clear();
            }
            match self
                .connect_pass(&targets, attempt, deadline, want, &mut failures)
                .await
            {
                Some(c) => return Ok(c),
                None if failures.last().is_some_and(|e| settings_error(e.kind())) => break,
                None => {}
            }
        }
        Err(failures)
    }

    /// One pass over `targets` for a server `want` accepts: the connection, or `None` with
    /// each host's failure added to `failures` (it stops at a settings error, the same for
    /// every host).
    async fn connect_pass(
        &self,
        targets: &[Target],
        attempt: u32,
        deadline: Duration,
        want: TargetSessionAttrs,
        failures: &mut Vec<Error>,
    ) -> Option<Connected> {
        for target in targets {
            // OpenTelemetry's database attribute names; never the password.
            let span = tracing::debug_span!(
                target: "neon_connect",
                "connect",
                "db.system.name" = "postgresql",
                "server.address" = %otel_address(target),
                "server.port" = target.port,
                "db.namespace" = %self.cs.dbname().or(self.cs.user()).unwrap_or(""),
                attempt,
                host = tracing::field::Empty,
                addr = tracing::field::Empty,
                sslmode = self.cs.sslmode().map_or("default (verify-full)", |m| m.as_str()),
                verification = %self.policy.verification,
                negotiation = if self.policy.direct { "direct" } else { "postgres" },
            );
            let began = Instant::now();
            match self
                .connect_host(target, deadline, want)
                .instrument(span.clone())
                .await
            {
                Ok(c) => {
                    tracing::debug!(target: "neon_connect", parent: &span, outcome = "connected", elapsed_ms = began.elapsed().as_millis() as u64, "connected to {}", c.info.host);
                    return Some(c);
                }
                Err(e) => {
                    tracing::debug!(target: "neon_connect", parent: &span, outcome = "failed", kind = %e.kind(), step = e.step().map_or("", Step::as_str), retryable = e.is_retryable(), elapsed_ms = began.elapsed().as_millis() as u64, "connection attempt failed: {}", e.message());
                    let stop = settings_error(e.kind());
                    failures.push(e);
                    // Settings errors are the same for every host: stop at once.
                    if stop {
                        break;
                    }
                }
            }
        }
        None
    }

    /// The error to return after the last attempt: the failure itself (its message says how
    /// many attempts were made when there was more than one), or a summary listing each host's.
    fn final_error(&self, mut failures: Vec<Error>, attempts: u32, elapsed: Duration) -> Error {
        let tried = if attempts > 1 {
            format!(
                " (after {attempts} attempts in {:.1}s)",
                elapsed.as_secs_f64()
            )
        } else {
            String::new()
        };
        if failures.len() == 1 {
            let e = failures.remove(0);
            if attempts == 1 {
                return e;
            }
            let message = format!("{}{tried}", e.message());
            return e.with_message(message);
        }
        let kind = failures.last().map_or(ErrorKind::Network, Error::kind);
        let retryable = failures.iter().any(Error::is_retryable);
        if failures.iter().any(is_unmatched) {
            return self.unmatched_summary(failures, &tried, retryable);
        }
        let summary = Error::new(
            kind,
            format!(
                "could not connect to any of the {} hosts{tried}",
                failures.len()
            ),
        )
        .with_help("each host's failure is listed above; fix the first host you expect to work")
        .retryable(retryable);
        summary.with_attempts(failures)
    }

    /// When some host was not what `target_session_attrs` asks for: "no server matched", with
    /// what each host was (or how it failed).
    fn unmatched_summary(&self, failures: Vec<Error>, tried: &str, retryable: bool) -> Error {
        let want = self
            .cs
            .target_session_attrs()
            .unwrap_or(TargetSessionAttrs::Any);
        let hosts: Vec<String> = failures
            .iter()
            .map(|e| {
                let host = e.host().unwrap_or("?");
                match e.message().split_once("\" is a ") {
                    Some((_, rest)) if is_unmatched(e) => {
                        format!("{host} is a {}", rest.split(',').next().unwrap_or(rest))
                    }
                    _ => format!("{host} failed ({})", e.kind()),
                }
            })
            .collect();
        let mut hosts_text = hosts.join(", ");
        if want == TargetSessionAttrs::PreferStandby {
            hosts_text.push_str(" (in the second pass, for any server)");
        }
        let help = if retryable {
            "no host is the kind of server asked for, and some could not be reached: a failover may be in progress (it was retried within `connect_timeout`); check the host list and `target_session_attrs`"
        } else {
            "every host answered, and none is the kind of server asked for: check the host list and `target_session_attrs` (during a failover, retry once the new primary is promoted)"
        };
        diagnose(
            Diagnosis::TargetSessionAttrsUnmatched,
            format!(
                "no server matched `target_session_attrs={}`{tried}: {hosts_text}",
                want.as_str()
            ),
        )
        .with_step(Step::Startup)
        .with_help(help)
        .retryable(retryable)
        .with_attempts(failures)
    }

    /// One host: resolve its name (unless `hostaddr` pins the address), then try each address.
    async fn connect_host(
        &self,
        target: &Target,
        deadline: Duration,
        want: TargetSessionAttrs,
    ) -> Result<Connected, Error> {
        let started = Instant::now();
        let span = tracing::Span::current();
        if let Some(Host::Unix(dir)) = &target.host {
            span.record("host", target.label());
            return self
                .attempt_unix(dir, target.port, deadline, started, want)
                .await;
        }
        let name = target.name();
        let addrs = addresses(target, deadline).await;
        tracing::trace!(target: "neon_connect", step = "dns", elapsed_ms = started.elapsed().as_millis() as u64, ok = addrs.is_ok(), "resolved {name}");
        let mut last = None;
        for ip in addrs? {
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let attempt = Attempt {
                name: &name,
                ip,
                port: target.port,
                remaining,
                deadline,
                started,
                want,
            };
            match self.attempt_tcp(attempt).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    // An address that refuses is worth skipping; a server that answered is not.
                    let next = matches!(e.kind(), ErrorKind::Network | ErrorKind::Timeout)
                        && e.step() == Some(Step::Tcp);
                    last = Some(e);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(last
            .unwrap_or_else(|| diagnostics::timeout(&target.label(), Some(Step::Tcp), deadline)))
    }

    /// One address. With automatic direct TLS, a server that does not speak it (it hangs up
    /// or garbles the handshake) is tried again at once with the TLS request, and the host is
    /// remembered for the rest of the process. Both ways are TLS with the same verification.
    ///
    /// Without `sslnegotiation` (and not a Neon host), the first connection to a host uses
    /// the TLS request; when the server reports PostgreSQL 17 or later, the next ones use
    /// direct TLS (one round trip less), with the same fallback: a pooler that reports a new
    /// version without speaking direct TLS costs one failed handshake, once per process.
    async fn attempt_tcp(&self, attempt: Attempt<'_>) -> Result<Connected, Error> {
        let preferred = Route {
            policy: &self.policy,
            tls_config: &self.tls_config,
        };
        let key = host_label(attempt.name, attempt.port);
        let (direct, plain) = match (&self.fallback, &self.learned) {
            (Some((plain, plain_config)), _) => (
                preferred,
                Route {
                    policy: plain,
                    tls_config: plain_config,
                },
            ),
            (None, Some((direct, direct_config))) if direct_tls::known_capable(&key) => (
                Route {
                    policy: direct,
                    tls_config: direct_config,
                },
                preferred,
            ),
            (None, Some(_)) => {
                let connected = self.attempt_with(&preferred, &attempt).await?;
                let version = connected.connection.parameter("server_version");
                if version.is_some_and(speaks_direct_tls) && direct_tls::remember_capable(&key) {
                    tracing::debug!(target: "neon_connect", host = %key, server_version = version.unwrap_or_default(), "the server speaks direct TLS: using it for this host from now on");
                }
                return Ok(connected);
            }
            (None, None) => return self.attempt_with(&preferred, &attempt).await,
        };
        if direct_tls::known_unsupported(&key) {
            return self.attempt_with(&plain, &attempt).await;
        }
        match self.attempt_with(&direct, &attempt).await {
            Err(e) if direct_unsupported(&e) => {
                direct_tls::remember_unsupported(&key);
                tracing::info!(target: "neon_connect", host = %key, "direct TLS failed ({}); using the TLS request for this host from now on", e.message());
                let remaining = attempt.deadline.saturating_sub(attempt.started.elapsed());
                self.attempt_with(
                    &plain,
                    &Attempt {
                        remaining,
                        ..attempt
                    },
                )
                .await
            }
            Err(e)
                if self.fallback.is_none()
                    && e.kind() == ErrorKind::Timeout
                    && e.step() == Some(Step::TlsHandshake) =>
            {
                // A learned host that hangs on a direct handshake: something in front of the
                // server (a proxy waiting for the rest of what it reads as a huge startup
                // packet) does not speak it. This attempt's time is spent; the retry and every
                // later connection use the TLS request.
                direct_tls::remember_unsupported(&key);
                tracing::info!(target: "neon_connect", host = %key, "direct TLS timed out in the handshake; using the TLS request for this host from now on");
                Err(e)
            }
            other => other,
        }
    }

    async fn attempt_with(&self, route: &Route<'_>, a: &Attempt<'_>) -> Result<Connected, Error> {
        let span = tracing::Span::current();
        let label = host_label(a.name, a.port);
        let addr = SocketAddr::new(a.ip, a.port);
        span.record("host", &label);
        span.record("addr", addr.to_string());
        let mut config = driver_config(&self.cs);
        // Every `target_session_attrs` is checked here, after connecting (see `check_role`).
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::Any);
        config.host(a.name).hostaddr(a.ip).port(a.port);
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        config.ssl_negotiation(if route.policy.direct {
            tokio_postgres::config::SslNegotiation::Direct
        } else {
            tokio_postgres::config::SslNegotiation::Postgres
        });
        config.connect_timeout(a.remaining);
        let probe = Arc::new(Probe::default());
        probe.set_step(Step::Tcp);
        let make_tls = MakeTls {
            config: route.tls_config.clone(),
            policy: route.policy.clone(),
            probe: probe.clone(),
        };
        let result = tokio::time::timeout(a.remaining, config.connect(make_tls)).await;
        if !matches!(result, Ok(Ok(_))) {
            // Roots that could not be loaded fail every host and attempt alike: no retry.
            route.policy.roots_ready().await?;
        }
        let failed = FailedAttempt {
            host: &label,
            hostname: a.name,
            user: self.cs.user(),
            step: probe.step(),
            policy: Some(route.policy),
            tls: probe.tls_info(),
            options: self.cs.options(),
            deadline: a.remaining,
            unix_socket: false,
        };
        match result {
            Err(_) => Err(diagnostics::timeout(&label, probe.step(), a.deadline)),
            Ok(Err(e)) => Err(diagnostics::classify(e, &failed)),
            Ok(Ok((client, connection))) => {
                let remaining = a.deadline.saturating_sub(a.started.elapsed());
                let (client, connection, server_role, role) = self
                    .checked_role(client, connection, a.want, &label, remaining, &failed)
                    .await?;
                Ok(Connected {
                    client,
                    connection,
                    role,
                    probe: Some(probe.clone()),
                    cancel_tls: Some(MakeTls {
                        config: route.tls_config.clone(),
                        policy: route.policy.clone(),
                        probe: Arc::new(Probe::default()),
                    }),
                    info: ConnectionInfo {
                        host: label,
                        addr: addr.to_string(),
                        tls: probe.tls_info(),
                        channel_binding_required: self.cs.channel_binding()
                            == Some(ChannelBinding::Require),
                        elapsed: a.started.elapsed(),
                        attempts: 1,
                        authentication: probe.authentication(),
                        server_role,
                    },
                })
            }
        }
    }

    async fn attempt_unix(
        &self,
        dir: &std::path::Path,
        port: u16,
        deadline: Duration,
        started: Instant,
        want: TargetSessionAttrs,
    ) -> Result<Connected, Error> {
        let mut config = driver_config(&self.cs);
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::Any);
        config.host_path(dir).port(port);
        // TLS does not apply to Unix sockets, as in libpq.
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let label = format!("{}:{port}", dir.display());
        let probe = Arc::new(Probe::default());
        probe.set_step(Step::Tcp);
        let make_tls = MakeTls {
            config: self.tls_config.clone(),
            policy: self.policy.clone(),
            probe: probe.clone(),
        };
        let result = tokio::time::timeout(deadline, config.connect(make_tls)).await;
        let socket = format!("{}/.s.PGSQL.{port}", dir.display());
        let failed = FailedAttempt {
            host: &label,
            hostname: &socket,
            user: self.cs.user(),
            step: Some(Step::Authentication),
            policy: None,
            tls: None,
            options: self.cs.options(),
            deadline,
            unix_socket: true,
        };
        match result {
            Err(_) => Err(diagnostics::timeout(
                &label,
                Some(Step::Authentication),
                deadline,
            )),
            Ok(Err(e)) => Err(diagnostics::classify(e, &failed)),
            Ok(Ok((client, connection))) => {
                let remaining = deadline.saturating_sub(started.elapsed());
                let (client, connection, server_role, role) = self
                    .checked_role(client, connection, want, &label, remaining, &failed)
                    .await?;
                Ok(Connected {
                    client,
                    connection,
                    role,
                    probe: None,
                    cancel_tls: None,
                    info: ConnectionInfo {
                        addr: format!("{}/.s.PGSQL.{port}", dir.display()),
                        host: label,
                        tls: None,
                        channel_binding_required: false,
                        elapsed: started.elapsed(),
                        attempts: 1,
                        authentication: None,
                        server_role,
                    },
                })
            }
        }
    }

    /// libpq's `target_session_attrs` check on a new connection: what the server is, from the
    /// `in_hot_standby` and `default_transaction_read_only` it reported (PostgreSQL 14+), else
    /// (when a check is needed) from `pg_is_in_recovery()` and `transaction_read_only` asked in
    /// one query. A server `want` does not accept is an error naming what it is; the
    /// connection is then closed politely.
    /// [`Connector::check_role`] on a new connection; one that is not what
    /// `target_session_attrs` asks for (or whose check failed) is closed politely, and the
    /// error classified.
    async fn checked_role(
        &self,
        client: Client,
        mut connection: Connection<Socket, TlsStream<Socket>>,
        want: TargetSessionAttrs,
        label: &str,
        remaining: Duration,
        failed: &FailedAttempt<'_>,
    ) -> Result<
        (
            Client,
            Connection<Socket, TlsStream<Socket>>,
            Option<ServerRole>,
            Arc<RoleWatch>,
        ),
        Error,
    > {
        match self
            .check_role(&client, &mut connection, want, label, remaining)
            .await
        {
            Ok((server_role, role)) => Ok((client, connection, server_role, role)),
            Err(e) => {
                goodbye(client, connection);
                Err(match e {
                    RoleError::Query(e) => diagnostics::classify(e, failed),
                    RoleError::Other(e) => e,
                })
            }
        }
    }

    async fn check_role(
        &self,
        client: &Client,
        connection: &mut Connection<Socket, TlsStream<Socket>>,
        want: TargetSessionAttrs,
        label: &str,
        deadline: Duration,
    ) -> Result<(Option<ServerRole>, Arc<RoleWatch>), RoleError> {
        let wanted = self.cs.target_session_attrs();
        let watch = Arc::new(RoleWatch::new(wanted));
        watch.observe(connection);
        let mut role = watch.reported();
        if role.is_none() && want != TargetSessionAttrs::Any {
            role = Some(query_role(client, connection, label, deadline).await?);
        }
        match role {
            Some(role) if !want.accepts(role) => {
                tracing::debug!(target: "neon_connect", host = %label, role = role.as_str(), "the server is a {role}; target_session_attrs={} asks for {}", want.as_str(), want.wants());
                Err(RoleError::Other(unmatched(label, role, want)))
            }
            _ => Ok((role, watch)),
        }
    }
}

/// Closes a connection that will not be used (its server is not what `target_session_attrs`
/// asks for) the way libpq does, with a Terminate message, in the background.
fn goodbye(client: Client, connection: Connection<Socket, TlsStream<Socket>>) {
    drop(client);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
    });
}

/// Why [`Connector::check_role`] failed: its query failed (classified like a connection
/// failure), or the server is not what was asked for.
enum RoleError {
    Query(tokio_postgres::Error),
    Other(Error),
}

impl From<Error> for RoleError {
    fn from(e: Error) -> RoleError {
        RoleError::Other(e)
    }
}

/// Asks a server that did not report `in_hot_standby` what it is (libpq asks
/// `SELECT pg_is_in_recovery()` or `SHOW transaction_read_only`, by mode; this asks both at
/// once), driving the connection meanwhile.
async fn query_role(
    client: &Client,
    connection: &mut Connection<Socket, TlsStream<Socket>>,
    label: &str,
    deadline: Duration,
) -> Result<ServerRole, RoleError> {
    let query = client.simple_query(
        "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('transaction_read_only')",
    );
    let mut query = std::pin::pin!(query);
    let driven = std::future::poll_fn(|cx| {
        if let Poll::Ready(ended) = Pin::new(&mut *connection).poll(cx) {
            return Poll::Ready(Err(ended.err()));
        }
        query.as_mut().poll(cx).map(|r| r.map_err(Some))
    });
    let rows = match tokio::time::timeout(deadline, driven).await {
        Err(_) => return Err(diagnostics::timeout(label, Some(Step::Startup), deadline).into()),
        Ok(Err(Some(e))) => return Err(RoleError::Query(e)),
        Ok(Err(None)) => {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("the server \"{label}\" closed the connection while its role was checked (target_session_attrs)"),
            )
            .with_step(Step::Startup)
            .with_host(label)
            .retryable(true)
            .into())
        }
        Ok(Ok(rows)) => rows,
    };
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let (recovery, read_only) = match row {
        Some(row) => (row.get(0), row.get(1)),
        None => (None, None),
    };
    match (recovery, read_only) {
        (Some(recovery), Some(read_only)) => Ok(ServerRole::from_flags(
            recovery == "t",
            read_only == "on",
        )),
        _ => Err(Error::new(
            ErrorKind::Server,
            format!("the server \"{label}\" did not say whether it is a standby (target_session_attrs needs to know)"),
        )
        .with_step(Step::Startup)
        .with_host(label)
        .into()),
    }
}

/// The error for a server `want` does not accept.
fn unmatched(label: &str, role: ServerRole, want: TargetSessionAttrs) -> Error {
    diagnose(
        Diagnosis::TargetSessionAttrsUnmatched,
        format!(
            "the server \"{label}\" is a {role}, and `target_session_attrs={}` asks for {}",
            want.as_str(),
            want.wants()
        ),
    )
    .with_step(Step::Startup)
    .with_host(label)
}

fn is_unmatched(e: &Error) -> bool {
    e.diagnosis() == Some(Diagnosis::TargetSessionAttrsUnmatched)
}

/// Whether one connection's server still is what `target_session_attrs` asks for, from the
/// `in_hot_standby` and `default_transaction_read_only` it reports (PostgreSQL 14+ reports
/// them again whenever they change: on promotion, or when `default_transaction_read_only` is
/// turned on and the configuration reloaded). Updated by [`Watched`] as the connection runs;
/// the pool retires a connection whose server no longer matches.
#[derive(Debug)]
pub(crate) struct RoleWatch {
    wanted: Option<TargetSessionAttrs>,
    /// Bits: `KNOWN_STANDBY`, `STANDBY`, `KNOWN_READ_ONLY`, `READ_ONLY`.
    flags: AtomicU8,
}

const KNOWN_STANDBY: u8 = 1;
const STANDBY: u8 = 2;
const KNOWN_READ_ONLY: u8 = 4;
const READ_ONLY: u8 = 8;

impl RoleWatch {
    pub(crate) fn new(wanted: Option<TargetSessionAttrs>) -> RoleWatch {
        RoleWatch {
            wanted,
            flags: AtomicU8::new(0),
        }
    }

    /// Reads what the server has reported so far.
    fn observe(&self, connection: &Connection<Socket, TlsStream<Socket>>) {
        let mut flags = 0;
        match connection.parameter("in_hot_standby") {
            Some("on") => flags |= KNOWN_STANDBY | STANDBY,
            Some(_) => flags |= KNOWN_STANDBY,
            None => {}
        }
        match connection.parameter("default_transaction_read_only") {
            Some("on") => flags |= KNOWN_READ_ONLY | READ_ONLY,
            Some(_) => flags |= KNOWN_READ_ONLY,
            None => {}
        }
        self.flags.store(flags, Ordering::Release);
    }

    /// Whether a change of the server's role can matter (`any`, `prefer-standby` and no
    /// `target_session_attrs` accept every server).
    fn watches(&self) -> bool {
        !matches!(
            self.wanted,
            None | Some(TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby)
        )
    }

    /// The server's role as it last reported it, when it reports both settings.
    pub(crate) fn reported(&self) -> Option<ServerRole> {
        let f = self.flags.load(Ordering::Acquire);
        (f & KNOWN_STANDBY != 0 && f & KNOWN_READ_ONLY != 0)
            .then(|| ServerRole::from_flags(f & STANDBY != 0, f & READ_ONLY != 0))
    }

    /// `Some(role)` when the server reported a change that `target_session_attrs` does not
    /// accept (`prefer-standby` and `any` accept every server).
    pub(crate) fn mismatch(&self) -> Option<ServerRole> {
        let wanted = self.wanted?;
        if matches!(
            wanted,
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby
        ) {
            return None;
        }
        self.reported().filter(|role| !wanted.accepts(*role))
    }
}

/// A connection's I/O future that keeps its [`RoleWatch`] up to date: spawn it instead of the
/// bare connection.
pub(crate) struct Watched {
    connection: Connection<Socket, TlsStream<Socket>>,
    role: Arc<RoleWatch>,
}

impl Watched {
    pub(crate) fn new(
        connection: Connection<Socket, TlsStream<Socket>>,
        role: Arc<RoleWatch>,
    ) -> Watched {
        Watched { connection, role }
    }
}

impl Future for Watched {
    type Output = Result<(), tokio_postgres::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.connection).poll(cx);
        // Only a pool that can be let down by a role change pays for watching it.
        if this.role.watches() {
            this.role.observe(&this.connection);
        }
        result
    }
}

/// The settings of `cs` as a [`tokio_postgres::Config`], without hosts, TLS mode or timeout:
/// the one mapping from our connection string to the driver's, used by every connection the
/// crate opens and by [`driver_config_with_hosts`].
pub(crate) fn driver_config(cs: &ConnectionString) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    if let Some(u) = cs.user() {
        c.user(u);
    }
    if let Some(p) = cs.password() {
        c.password(p.expose());
    }
    if let Some(d) = cs.dbname() {
        c.dbname(d);
    }
    if let Some(o) = cs.options() {
        c.options(o);
    }
    if let Some(a) = cs.application_name() {
        c.application_name(a);
    }
    c.channel_binding(match cs.channel_binding() {
        Some(ChannelBinding::Require) => tokio_postgres::config::ChannelBinding::Require,
        Some(ChannelBinding::Disable) => tokio_postgres::config::ChannelBinding::Disable,
        _ => tokio_postgres::config::ChannelBinding::Prefer,
    });
    // Dead paths are detected by default (see DEFAULT_TCP_USER_TIMEOUT); the connection
    // string's values win.
    c.tcp_user_timeout(cs.tcp_user_timeout().unwrap_or(DEFAULT_TCP_USER_TIMEOUT));
    c.keepalives(cs.keepalives().unwrap_or(true));
    c.keepalives_idle(cs.keepalives_idle().unwrap_or(DEFAULT_KEEPALIVES_IDLE));
    c.keepalives_interval(
        cs.keepalives_interval()
            .unwrap_or(DEFAULT_KEEPALIVES_INTERVAL),
    );
    c.keepalives_retries(cs.keepalives_count().unwrap_or(DEFAULT_KEEPALIVES_COUNT));
    // For other drivers (`Options::tokio_postgres_config`): the nearest of tokio-postgres's
    // three values. The crate's own connections use `Any` and check every value themselves.
    c.target_session_attrs(match cs.target_session_attrs() {
        Some(TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary) => {
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        }
        Some(TargetSessionAttrs::ReadOnly | TargetSessionAttrs::Standby) => {
            tokio_postgres::config::TargetSessionAttrs::ReadOnly
        }
        _ => tokio_postgres::config::TargetSessionAttrs::Any,
    });
    c
}

/// [`driver_config`] with every host, port and `hostaddr`, `load_balance_hosts`,
/// `sslmode=require` and the connect timeout: for drivers and pools other than ours.
pub(crate) fn driver_config_with_hosts(
    cs: &ConnectionString,
    timeout: Duration,
) -> tokio_postgres::Config {
    let mut config = driver_config(cs);
    let targets: Vec<Target> = cs.targets().collect();
    // tokio-postgres takes hosts and hostaddrs as two lists of equal length (or no hostaddrs).
    let all_pinned = targets.iter().all(|t| t.hostaddr.is_some());
    for t in &targets {
        match &t.host {
            Some(Host::Tcp(name)) => {
                config.host(name);
            }
            Some(Host::Unix(dir)) => {
                config.host_path(dir);
            }
            None => {}
        }
        if let (true, Some(ip)) = (all_pinned, t.hostaddr) {
            config.hostaddr(ip);
        }
        config.port(t.port);
    }
    if cs.load_balance_hosts() == Some(LoadBalanceHosts::Random) {
        config.load_balance_hosts(tokio_postgres::config::LoadBalanceHosts::Random);
    }
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    config.connect_timeout(timeout);
    config
}

/// The addresses to try for a TCP target: its `hostaddr`, or its name resolved.
pub(crate) async fn addresses(target: &Target, deadline: Duration) -> Result<Vec<IpAddr>, Error> {
    match target.hostaddr {
        Some(ip) => Ok(vec![ip]),
        None => resolve(&target.name(), target.port, deadline).await,
    }
}

/// Resolves `name` within `deadline`: its addresses in the resolver's order, without
/// duplicates, or a [`Step::Dns`] error that says what to check.
pub(crate) async fn resolve(
    name: &str,
    port: u16,
    deadline: Duration,
) -> Result<Vec<IpAddr>, Error> {
    let label = host_label(name, port);
    match tokio::time::timeout(deadline, tokio::net::lookup_host((name, port))).await {
        Err(_) => Err(diagnostics::timeout(&label, Some(Step::Dns), deadline)),
        Ok(Err(e)) => {
            // "Temporary failure in name resolution" (EAI_AGAIN) can pass; an unknown name
            // (a typo) cannot.
            let temporary = e.to_string().contains("Temporary failure");
            Err(diagnose(
                Diagnosis::Dns,
                format!("could not resolve the host name \"{name}\""),
            )
            .with_step(Step::Dns)
            .with_host(label)
            .retryable(temporary)
            .with_source(e))
        }
        Ok(Ok(addrs)) => {
            let addrs = dedup(addrs.map(|a: SocketAddr| a.ip()));
            if addrs.is_empty() {
                return Err(diagnose(
                    Diagnosis::Dns,
                    format!("the host name \"{name}\" has no addresses"),
                )
                .with_step(Step::Dns)
                .with_host(label));
            }
            Ok(addrs)
        }
    }
}

/// Whether a failure of automatic direct TLS says the server does not speak it: it hung up,
/// reset or garbled the TLS handshake, or answered without ALPN `postgresql`. Certificate
/// failures and timeouts are not retried this way (the TLS request would meet the same).
fn direct_unsupported(e: &Error) -> bool {
    e.step() == Some(Step::TlsHandshake)
        && matches!(
            e.diagnosis(),
            Some(Diagnosis::TlsDirectUnsupported | Diagnosis::TlsAlpn | Diagnosis::TlsHandshake)
        )
}

/// Whether a `server_version` parameter says the server speaks direct TLS (PostgreSQL 17 and
/// later): `"17.2"`, `"18.1 (Debian 18.1-1)"`, `"18beta1"`.
fn speaks_direct_tls(version: &str) -> bool {
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|m| m >= 17)
}

/// What this process learned about each host (`host:port`): it speaks direct TLS (it
/// reported PostgreSQL 17 or later), or it does not (a direct handshake failed). A failure
/// wins for good: such a host is never tried with direct TLS again.
mod direct_tls {
    use std::collections::HashMap;
    use std::sync::{Mutex, MutexGuard, OnceLock};

    fn hosts() -> MutexGuard<'static, HashMap<String, bool>> {
        static HOSTS: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
        HOSTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `host` was found not to speak direct TLS.
    pub(super) fn known_unsupported(host: &str) -> bool {
        hosts().get(host) == Some(&false)
    }

    /// Whether `host` reported a version that speaks direct TLS, and never failed it.
    pub(super) fn known_capable(host: &str) -> bool {
        hosts().get(host) == Some(&true)
    }

    /// Records that `host` does not speak direct TLS.
    pub(super) fn remember_unsupported(host: &str) {
        hosts().insert(host.to_string(), false);
    }

    /// Records that `host` speaks direct TLS, unless it was found not to; true when this
    /// call learned it.
    pub(super) fn remember_capable(host: &str) -> bool {
        let mut hosts = hosts();
        if hosts.contains_key(host) {
            return false;
        }
        hosts.insert(host.to_string(), true);
        true
    }
}

/// Settings errors: the same for every host, so a pass over the hosts stops at the first.
fn settings_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionString
            | ErrorKind::TlsPolicy
            | ErrorKind::RootCertificates
            | ErrorKind::ClientCertificate
    )
}

/// Failures that mean the settings are wrong: the same for every host and every attempt, so
/// trying again cannot help.
fn retry_cannot_help(kind: ErrorKind) -> bool {
    settings_error(kind)
        || matches!(
            kind,
            ErrorKind::Certificate | ErrorKind::TlsRefused | ErrorKind::Authentication
        )
}

/// The wait before attempt `attempt + 1`: full jitter, uniform in
/// `[0, min(BACKOFF_CAP, BACKOFF_BASE * 2^(attempt - 1))]`.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
        .min(BACKOFF_CAP);
    let nanos = ceiling.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % (nanos + 1))
}

pub(crate) fn random_u64() -> u64 {
    // Jitter only needs to differ between processes and calls, not to be secret.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A target's address as OpenTelemetry's `server.address`: the host name (or `hostaddr`), or
/// a Unix socket's directory.
pub(crate) fn otel_address(target: &Target) -> String {
    match &target.host {
        Some(Host::Unix(dir)) => dir.display().to_string(),
        _ => target.name(),
    }
}

pub(crate) fn host_label(name: &str, port: u16) -> String {
    if name.contains(':') {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    }
}

fn dedup(addrs: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn shuffle<T>(v: &mut [T]) {
    // Good enough for spreading load across hosts; not for anything secret.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(1)
        | 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_tls_is_learned_from_postgresql_17_on() {
        for (v, yes) in [
            ("17.2", true),
            ("18.1 (Debian 18.1-1.pgdg120+1)", true),
            ("18beta1", true),
            ("100.0", true),
            ("16.4", false),
            ("9.6.24", false),
            ("", false),
            ("x", false),
        ] {
            assert_eq!(speaks_direct_tls(v), yes, "{v}");
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_cap() {
        for attempt in 1..40 {
            let ceiling = (BACKOFF_BASE * 2u32.pow((attempt - 1).min(10))).min(BACKOFF_CAP);
            let waits: Vec<Duration> = (0..50).map(|_| backoff(attempt)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "{attempt}: {waits:?}");
            // Jittered: not all the same, and not pinned to the ceiling.
            assert!(waits.iter().any(|w| *w != waits[0]), "{attempt}: {waits:?}");
            assert!(
                waits.iter().any(|w| *w < ceiling / 2),
                "{attempt}: {waits:?}"
            );
        }
    }

    #[test]
    fn settings_errors_are_never_retried() {
        for kind in [
            ErrorKind::Authentication,
            ErrorKind::Certificate,
            ErrorKind::ConnectionString,
            ErrorKind::TlsPolicy,
            ErrorKind::RootCertificates,
            ErrorKind::ClientCertificate,
            ErrorKind::TlsRefused,
        ] {
            assert!(retry_cannot_help(kind), "{kind}");
        }
        for kind in [ErrorKind::Network, ErrorKind::Closed, ErrorKind::Server] {
            assert!(!retry_cannot_help(kind), "{kind}");
        }
    }
}
