//! Opening one connection: host by host, address by address, under one deadline per host,
//! with the TLS policy applied and every failure classified.

use crate::config::{ChannelBinding, ConnectionString, Host, TargetSessionAttrs};
use crate::diagnostics::{self, Context};
use crate::error::{Error, ErrorKind, Step};
use crate::tls::{MakeTls, Probe, TlsInfo, TlsPolicy, TlsStream};
use rustls::ClientConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Connection, Socket};

/// The deadline for one host's whole handshake (TCP, TLS, authentication, startup) when
/// `connect_timeout` is not set: long enough for a Neon compute to wake from scale-to-zero.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// How long the connection took to open.
    pub elapsed: Duration,
}

/// A connection and what it negotiated.
pub(crate) type Connected = (
    Client,
    Connection<Socket, TlsStream<Socket>>,
    ConnectionInfo,
);

/// Everything needed to open connections for one connection string; built once, shared.
pub(crate) struct Connector {
    pub(crate) cs: ConnectionString,
    pub(crate) policy: Arc<TlsPolicy>,
    pub(crate) tls_config: Arc<ClientConfig>,
    pub(crate) timeout: Duration,
}

impl Connector {
    /// Resolves the policy and builds (or reuses) its rustls configuration. Reads certificate
    /// files on first use: call it off the async path.
    pub(crate) fn new(
        cs: ConnectionString,
        custom_roots: Option<&Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
    ) -> Result<Connector, Error> {
        if cs.hosts.is_empty() && cs.hostaddrs.iter().all(Option::is_none) {
            return Err(Error::config("no host was given").with_help(
                "put the host in the connection string (`postgresql://user:password@host/dbname`) or set PGHOST",
            ));
        }
        let policy = TlsPolicy::resolve(&cs, custom_roots)?;
        let tls_config = policy.client_config()?;
        let timeout = cs.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        Ok(Connector {
            cs,
            policy: Arc::new(policy),
            tls_config,
            timeout,
        })
    }

    /// Opens one connection, trying each host in order; when all fail, the error lists each
    /// host's failure.
    pub(crate) async fn connect(&self) -> Result<Connected, Error> {
        let count = self.cs.hosts.len().max(self.cs.hostaddrs.len());
        let mut order: Vec<usize> = (0..count).collect();
        if self.cs.load_balance_hosts_random == Some(true) {
            shuffle(&mut order);
        }
        let mut failures = Vec::new();
        for i in order {
            match self.connect_host(i).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::debug!(target: "neon_connect", host = e.host().unwrap_or(""), kind = %e.kind(), "connection attempt failed: {}", e.message());
                    // Settings errors are the same for every host: stop at once.
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionString
                            | ErrorKind::TlsPolicy
                            | ErrorKind::RootCertificates
                    ) {
                        return Err(e);
                    }
                    failures.push(e);
                }
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0));
        }
        let kind = failures.last().map_or(ErrorKind::Network, Error::kind);
        let retryable = failures.iter().any(Error::is_retryable);
        let summary = Error::new(
            kind,
            format!("could not connect to any of the {} hosts", failures.len()),
        )
        .with_help("each host's failure is listed above; fix the first host you expect to work")
        .retryable(retryable);
        Err(summary.with_attempts(failures))
    }

    /// One host: resolve its name (unless `hostaddr` pins the address), then try each address.
    async fn connect_host(&self, i: usize) -> Result<Connected, Error> {
        let started = Instant::now();
        let port = self.port_for(i);
        let hostaddr = self.cs.hostaddrs.get(i).copied().flatten();
        let host = self.cs.hosts.get(i).cloned();
        let deadline = self.timeout;

        let (name, addrs): (String, Vec<IpAddr>) = match (&host, hostaddr) {
            (Some(Host::Unix(path)), _) => {
                return self.attempt_unix(path, port, started).await;
            }
            (Some(Host::Tcp(name)), Some(ip)) => (name.clone(), vec![ip]),
            (None, Some(ip)) => (ip.to_string(), vec![ip]),
            (Some(Host::Tcp(name)), None) => {
                let label = host_label(name, port);
                let lookup =
                    tokio::time::timeout(deadline, tokio::net::lookup_host((name.as_str(), port)));
                match lookup.await {
                    Err(_) => return Err(diagnostics::timeout(&label, Some(Step::Dns), deadline)),
                    Ok(Err(e)) => {
                        return Err(Error::new(
                            ErrorKind::Dns,
                            format!("could not resolve the host name \"{name}\""),
                        )
                        .with_step(Step::Dns)
                        .with_host(label)
                        .with_help("check the host name for typos (copy it again from your provider's console) and this machine's DNS")
                        .retryable(true)
                        .with_source(e))
                    }
                    Ok(Ok(addrs)) => (name.clone(), dedup(addrs.map(|a: SocketAddr| a.ip()))),
                }
            }
            (None, None) => unreachable!("count covers hosts and hostaddrs"),
        };
        if addrs.is_empty() {
            return Err(Error::new(
                ErrorKind::Dns,
                format!("the host name \"{name}\" has no addresses"),
            )
            .with_step(Step::Dns)
            .with_host(host_label(&name, port))
            .with_help("check the host name and this machine's DNS"));
        }
        let mut last = None;
        for ip in addrs {
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            match self.attempt_tcp(&name, ip, port, remaining, started).await {
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
        Err(last.unwrap_or_else(|| {
            diagnostics::timeout(&host_label(&name, port), Some(Step::Tcp), deadline)
        }))
    }

    fn port_for(&self, i: usize) -> u16 {
        match self.cs.ports.as_slice() {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        }
    }

    fn base_config(&self) -> tokio_postgres::Config {
        let cs = &self.cs;
        let mut c = tokio_postgres::Config::new();
        if let Some(u) = &cs.user {
            c.user(u);
        }
        if let Some(p) = &cs.password {
            c.password(p.expose());
        }
        if let Some(d) = &cs.dbname {
            c.dbname(d);
        }
        if let Some(o) = &cs.options {
            c.options(o);
        }
        if let Some(a) = &cs.application_name {
            c.application_name(a);
        }
        c.channel_binding(match cs.channel_binding {
            Some(ChannelBinding::Require) => tokio_postgres::config::ChannelBinding::Require,
            Some(ChannelBinding::Disable) => tokio_postgres::config::ChannelBinding::Disable,
            _ => tokio_postgres::config::ChannelBinding::Prefer,
        });
        if let Some(t) = cs.tcp_user_timeout {
            c.tcp_user_timeout(t);
        }
        if let Some(k) = cs.keepalives {
            c.keepalives(k);
        }
        if let Some(t) = cs.keepalives_idle {
            c.keepalives_idle(t);
        }
        if let Some(t) = cs.keepalives_interval {
            c.keepalives_interval(t);
        }
        if let Some(n) = cs.keepalives_count {
            c.keepalives_retries(n);
        }
        c.target_session_attrs(match cs.target_session_attrs {
            Some(TargetSessionAttrs::ReadWrite) => {
                tokio_postgres::config::TargetSessionAttrs::ReadWrite
            }
            Some(TargetSessionAttrs::ReadOnly) => {
                tokio_postgres::config::TargetSessionAttrs::ReadOnly
            }
            _ => tokio_postgres::config::TargetSessionAttrs::Any,
        });
        c
    }

    fn make_tls(&self, probe: &Arc<Probe>) -> MakeTls {
        MakeTls {
            config: self.tls_config.clone(),
            policy: self.policy.clone(),
            probe: probe.clone(),
        }
    }

    async fn attempt_tcp(
        &self,
        name: &str,
        ip: IpAddr,
        port: u16,
        remaining: Duration,
        started: Instant,
    ) -> Result<Connected, Error> {
        let mut config = self.base_config();
        config.host(name).hostaddr(ip).port(port);
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        config.ssl_negotiation(if self.policy.direct {
            tokio_postgres::config::SslNegotiation::Direct
        } else {
            tokio_postgres::config::SslNegotiation::Postgres
        });
        config.connect_timeout(remaining);
        let label = host_label(name, port);
        let probe = Arc::new(Probe::default());
        probe.set_step(Step::Tcp);
        let result = tokio::time::timeout(remaining, config.connect(self.make_tls(&probe))).await;
        let cx = Context {
            host: &label,
            hostname: name,
            user: self.cs.user.as_deref(),
            step: probe.step(),
            policy: Some(&self.policy),
        };
        match result {
            Err(_) => Err(diagnostics::timeout(&label, probe.step(), self.timeout)),
            Ok(Err(e)) => Err(diagnostics::classify(e, &cx)),
            Ok(Ok((client, connection))) => Ok((
                client,
                connection,
                ConnectionInfo {
                    host: label,
                    addr: SocketAddr::new(ip, port).to_string(),
                    tls: probe.tls_info(),
                    channel_binding_required: self.cs.channel_binding
                        == Some(ChannelBinding::Require),
                    elapsed: started.elapsed(),
                },
            )),
        }
    }

    async fn attempt_unix(
        &self,
        dir: &std::path::Path,
        port: u16,
        started: Instant,
    ) -> Result<Connected, Error> {
        let mut config = self.base_config();
        config.host_path(dir).port(port);
        // TLS does not apply to Unix sockets, as in libpq.
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let label = format!("{}:{port}", dir.display());
        let probe = Arc::new(Probe::default());
        probe.set_step(Step::Tcp);
        let result =
            tokio::time::timeout(self.timeout, config.connect(self.make_tls(&probe))).await;
        let cx = Context {
            host: &label,
            hostname: "",
            user: self.cs.user.as_deref(),
            step: Some(Step::Authentication),
            policy: None,
        };
        match result {
            Err(_) => Err(diagnostics::timeout(
                &label,
                Some(Step::Authentication),
                self.timeout,
            )),
            Ok(Err(e)) => Err(diagnostics::classify(e, &cx)),
            Ok(Ok((client, connection))) => Ok((
                client,
                connection,
                ConnectionInfo {
                    addr: format!("{}/.s.PGSQL.{port}", dir.display()),
                    host: label,
                    tls: None,
                    channel_binding_required: false,
                    elapsed: started.elapsed(),
                },
            )),
        }
    }
}

fn host_label(name: &str, port: u16) -> String {
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

fn shuffle(v: &mut [usize]) {
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
