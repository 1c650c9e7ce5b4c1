//! The pool: a deadpool pool of tokio-postgres clients with timeouts on by default, a recycle
//! check that drops closed, old and long-idle connections, and [`Options`] for what a URL
//! cannot say.

use crate::config::{ConnectionString, Password};
use crate::connect::{ConnectionInfo, Connector};
use crate::error::{Error, ErrorKind, Step};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult, TimeoutType};
use deadpool_postgres::ClientWrapper;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The default number of connections in a pool (the same as sqlx and node-postgres).
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How long [`Pool::get`] waits for a free connection by default.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the recycle check of an idle connection may take by default.
pub const DEFAULT_RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection older than this is closed instead of handed out (default 30 minutes), so
/// that server-side changes (a new compute, rotated certificates, memory held by a session)
/// reach every connection in bounded time.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// A connection left unused for this long is closed instead of handed out (default 4
/// minutes): below Neon's 5-minute scale-to-zero and common NAT idle timeouts, so the pool does
/// not hand out connections the server or network is about to cut, or already has. "Unused"
/// is counted from the connection's last checkout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60);
/// A connection left unused for this long is checked with an empty query (one round trip)
/// before it is handed out (default 30 s). A connection the server closed is noticed without a
/// query (its socket is closed), so this only catches connections that died silently (a
/// network path that dropped them): a check on every checkout would cost a round trip per
/// request, which busy pools avoid this way. `Duration::ZERO` checks every checkout.
pub const DEFAULT_CHECK_AFTER_IDLE: Duration = Duration::from_secs(30);

/// The `application_name` the server shows (in `pg_stat_activity` and logs) when neither
/// the connection string nor `PGAPPNAME` set one.
pub const DEFAULT_APPLICATION_NAME: &str = "neon-connect";

/// A pooled client: derefs to [`deadpool_postgres::ClientWrapper`] and so to
/// [`tokio_postgres::Client`]; goes back to the pool when dropped.
pub type Client = managed::Object<Manager>;

/// Settings for a pool, starting from a connection string.
///
/// ```no_run
/// # async fn run() -> Result<(), neon_connect::Error> {
/// use std::time::Duration;
/// let pool = neon_connect::Options::new("postgresql://app@db.example.com/app")?
///     .pool_size(20)
///     .wait_timeout(Duration::from_secs(5))
///     .application_name("billing")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Options {
    cs: ConnectionString,
    pool_size: usize,
    wait_timeout: Duration,
    recycle_timeout: Duration,
    roots: Option<Arc<Vec<CertificateDer<'static>>>>,
    health: Health,
    connect_attempts: u32,
    /// The last connector built, reused by `connect_one` while the settings stay the same.
    cached: Arc<std::sync::Mutex<Option<CachedConnector>>>,
}

type CachedConnector = (Option<Arc<Vec<CertificateDer<'static>>>>, Arc<Connector>);

/// When an idle connection is replaced rather than handed out.
#[derive(Debug, Clone, Copy)]
struct Health {
    max_lifetime: Duration,
    idle_timeout: Duration,
    check_after_idle: Duration,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("connection_string", &self.cs)
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("recycle_timeout", &self.recycle_timeout)
            .field("max_lifetime", &self.health.max_lifetime)
            .field("idle_timeout", &self.health.idle_timeout)
            .field("check_after_idle", &self.health.check_after_idle)
            .field("connect_attempts", &self.connect_attempts)
            .field("root_certificates", &self.roots.as_ref().map(|r| r.len()))
            .finish()
    }
}

impl Options {
    /// Parses `url` (URL or `key=value` form) and fills what it leaves out from the `PG*`
    /// environment variables, as libpq does.
    ///
    /// # Errors
    /// [`ErrorKind::ConnectionString`] for a malformed string or environment variable.
    ///
    /// When neither gives a password, the password file is read as libpq reads it
    /// (`PGPASSFILE`, else `~/.pgpass`; ignored with a warning when group or others can read
    /// it), matched on the first host, its port, the database and the user.
    pub fn new(url: &str) -> Result<Options, Error> {
        let env = |k: &str| std::env::var(k).ok();
        let mut cs = ConnectionString::parse_with_env(url, env)?;
        if cs.password.is_none() {
            if let Some(password) = password_from_file(&cs, env) {
                cs.password = Some(Password::new(password));
            }
        }
        Ok(Options::from_connection_string(cs))
    }

    /// Reads `DATABASE_URL`, then fills what it leaves out from the `PG*` variables; with no
    /// `DATABASE_URL` the `PG*` variables alone (`PGHOST`, `PGUSER`, ...) are used, as libpq
    /// does for an empty connection string.
    ///
    /// # Errors
    /// [`ErrorKind::ConnectionString`] for a malformed `DATABASE_URL` or `PG*` variable.
    pub fn from_env() -> Result<Options, Error> {
        let url = std::env::var("DATABASE_URL").unwrap_or_default();
        Options::new(&url)
    }

    /// Starts from an already parsed connection string (no environment is read). Sets
    /// `application_name` to [`DEFAULT_APPLICATION_NAME`] when the string (or `PGAPPNAME`)
    /// set none.
    pub fn from_connection_string(mut cs: ConnectionString) -> Options {
        if cs.application_name.is_none() {
            cs.application_name = Some(DEFAULT_APPLICATION_NAME.to_string());
        }
        Options {
            cs,
            pool_size: DEFAULT_POOL_SIZE,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            recycle_timeout: DEFAULT_RECYCLE_TIMEOUT,
            roots: None,
            health: Health {
                max_lifetime: DEFAULT_MAX_LIFETIME,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                check_after_idle: DEFAULT_CHECK_AFTER_IDLE,
            },
            connect_attempts: crate::connect::DEFAULT_CONNECT_ATTEMPTS,
            cached: Arc::default(),
        }
    }

    /// The connection string these options start from.
    pub fn connection_string(&self) -> &ConnectionString {
        &self.cs
    }

    /// The maximum number of connections (default [`DEFAULT_POOL_SIZE`]; at least 1).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long [`Pool::get`] waits for a free connection (default [`DEFAULT_WAIT_TIMEOUT`]).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long the check of an idle connection may take before it is replaced
    /// (default [`DEFAULT_RECYCLE_TIMEOUT`]).
    pub fn recycle_timeout(mut self, timeout: Duration) -> Self {
        self.recycle_timeout = timeout;
        self
    }

    /// Connections older than this are replaced when next checked out (default
    /// [`DEFAULT_MAX_LIFETIME`]).
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.health.max_lifetime = lifetime;
        self
    }

    /// Connections unused for this long are replaced when next checked out (default
    /// [`DEFAULT_IDLE_TIMEOUT`]; keep it below the server's idle cut-off, five minutes on Neon).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.health.idle_timeout = timeout;
        self
    }

    /// Connections unused for this long are checked with an empty query before they are
    /// handed out (default [`DEFAULT_CHECK_AFTER_IDLE`]; `Duration::ZERO`: on every checkout).
    pub fn check_after_idle(mut self, idle: Duration) -> Self {
        self.health.check_after_idle = idle;
        self
    }

    /// How many times opening a connection is tried, the first try included (default
    /// [`crate::DEFAULT_CONNECT_ATTEMPTS`]; 1 turns retries off). Only failures a retry can fix
    /// are retried, with jittered backoff, within `connect_timeout`.
    pub fn connect_attempts(mut self, attempts: u32) -> Self {
        self.connect_attempts = attempts.max(1);
        self
    }

    /// The deadline for each host's whole handshake (TCP, TLS, authentication, startup), and
    /// the budget for retries; overrides `connect_timeout` (default
    /// [`crate::DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cs.connect_timeout = Some(timeout);
        self
    }

    /// The `application_name` the server shows for these connections.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.cs.application_name = Some(name.into());
        self
    }

    /// The password, when it does not come from the connection string or `PGPASSWORD`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.cs.password = Some(Password::new(password));
        self
    }

    /// Trust these root certificates (DER) instead of `sslrootcert` or the system store.
    pub fn root_certificates(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.roots = Some(Arc::new(roots));
        self
    }

    /// Trust the root certificates in this PEM text instead of `sslrootcert` or the system store.
    ///
    /// # Errors
    /// [`ErrorKind::RootCertificates`] when the text holds no valid PEM certificate.
    pub fn root_certificates_pem(self, pem: &[u8]) -> Result<Self, Error> {
        let certs = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::new(
                    ErrorKind::RootCertificates,
                    "the root certificates given in code are not valid PEM",
                )
                .with_step(Step::Config)
                .with_source(e)
            })?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::RootCertificates,
                "the root certificates given in code hold no `-----BEGIN CERTIFICATE-----` block",
            )
            .with_step(Step::Config)
            .with_help("pass the PEM text of your CA certificate"));
        }
        Ok(self.root_certificates(certs))
    }

    fn validate(&self) -> Result<(), Error> {
        if self.pool_size == 0 {
            return Err(Error::config("the pool size must be at least 1")
                .with_help("call `pool_size(n)` with n >= 1"));
        }
        Ok(())
    }

    /// Builds the connector (policy, root store, rustls configuration) off the async runtime's
    /// worker threads: it may read certificate files the first time. Reused while these
    /// options are unchanged, so repeated `connect_one` calls do no per-connection setup.
    pub(crate) async fn connector(&self) -> Result<Arc<Connector>, Error> {
        self.validate()?;
        let same_roots = |r: &Option<Arc<Vec<CertificateDer<'static>>>>| match (r, &self.roots) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if let Some((roots, c)) = &*self.cached.lock().unwrap_or_else(|e| e.into_inner()) {
            if same_roots(roots) && c.cs == self.cs && c.max_attempts == self.connect_attempts {
                return Ok(c.clone());
            }
        }
        let connector = self.build_connector().await?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((self.roots.clone(), connector.clone()));
        Ok(connector)
    }

    async fn build_connector(&self) -> Result<Arc<Connector>, Error> {
        let cs = self.cs.clone();
        let roots = self.roots.clone();
        let attempts = self.connect_attempts;
        let build = move || {
            Connector::new(cs, roots.as_ref()).map(|mut c| {
                c.max_attempts = attempts;
                Arc::new(c)
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn_blocking(build).await.map_err(|e| {
                Error::new(
                    ErrorKind::RootCertificates,
                    "loading the TLS settings failed",
                )
                .with_source(e)
            })?,
            Err(_) => build(),
        }
    }

    /// Opens and checks the first connection, then returns the pool holding it: a wrong
    /// password, certificate or host fails here, not at the first request.
    ///
    /// # Errors
    /// Any [`ErrorKind`]: the error says which step failed and what to change.
    pub async fn connect(self) -> Result<Pool, Error> {
        warn_if_pooled(&self.cs);
        let connector = self.connector().await?;
        let manager = Manager {
            connector: connector.clone(),
            health: self.health,
        };
        let inner = managed::Pool::builder(manager)
            .max_size(self.pool_size)
            .wait_timeout(Some(self.wait_timeout))
            // Creation is bounded by the connector's own per-host deadline.
            .create_timeout(None)
            .recycle_timeout(Some(self.recycle_timeout))
            // Most recently used first: a light load keeps reusing the same warm connections
            // (no idle check, see `check_after_idle`), and the others age out by `idle_timeout`.
            .queue_mode(managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::new(ErrorKind::Pool, "could not build the pool").with_source(e))?;
        let pool = Pool {
            inner,
            first: Arc::new(std::sync::OnceLock::new()),
        };
        let client = pool.get().await?;
        client.simple_query("").await.map_err(|e| {
            Error::new(
                ErrorKind::Server,
                "the first connection failed its check query",
            )
            .with_step(Step::Startup)
            .with_source(e)
        })?;
        let info = client.info.clone();
        let _ = pool.first.set(info);
        drop(client);
        Ok(pool)
    }

    /// The rustls connector for other tokio-postgres based stacks (bb8-postgres,
    /// diesel-async, a hand-made pool, `tokio_postgres::Config::connect`), built from the same
    /// rustls configuration as the pool: the same roots, verification, client certificate and
    /// TLS versions. Use it with [`Options::tokio_postgres_config`].
    ///
    /// Connections made this way skip what only this crate's own connect path does: the check
    /// for plaintext injected before the TLS handshake, direct TLS (`sslnegotiation=direct`),
    /// per-host deadlines and retries, and the readable errors.
    ///
    /// # Errors
    /// [`ErrorKind::RootCertificates`] when the roots or client certificate cannot be loaded.
    pub async fn rustls_connector(
        &self,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Error> {
        let connector = self.connector().await?;
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            (*connector.tls_config).clone(),
        ))
    }

    /// The connection settings as a [`tokio_postgres::Config`]: every host and port, user,
    /// password, database, `application_name`, `options`, channel binding, keepalives and the
    /// connect timeout, with `sslmode=require` (TLS always; certificate verification comes
    /// from the connector of [`Options::rustls_connector`], not from this mode).
    ///
    /// # Errors
    /// [`ErrorKind::RootCertificates`] as for [`Options::rustls_connector`].
    pub async fn tokio_postgres_config(&self) -> Result<tokio_postgres::Config, Error> {
        let connector = self.connector().await?;
        let mut config = connector.base_config();
        for (i, host) in self.cs.hosts().iter().enumerate() {
            match host {
                crate::config::Host::Tcp(name) => config.host(name),
                crate::config::Host::Unix(dir) => config.host_path(dir),
            };
            config.port(self.cs.port_for(i));
        }
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        config.connect_timeout(connector.timeout);
        Ok(config)
    }

    /// Opens one connection without a pool (for tools and migrations). Spawn the returned
    /// connection future (or poll it) to drive the client.
    ///
    /// # Errors
    /// Any [`ErrorKind`]: the error says which step failed and what to change.
    pub async fn connect_one(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                crate::tls::TlsStream<tokio_postgres::Socket>,
            >,
            ConnectionInfo,
        ),
        Error,
    > {
        let connector = self.connector().await?;
        connector.connect().await
    }
}

/// Whether `host` is a Neon pooled endpoint (PgBouncer in transaction mode): its first DNS
/// label ends with `-pooler`, as in `ep-x-pooler.us-east-2.aws.neon.tech`.
pub(crate) fn is_neon_pooler(host: &str) -> bool {
    host.split('.')
        .next()
        .is_some_and(|label| label.ends_with("-pooler"))
}

/// Warns (once per process) about session features that break behind a transaction-mode
/// pooler. The pool itself needs nothing session-level: its recycle check is the socket state
/// and an empty query, which PgBouncer runs in any mode.
fn warn_if_pooled(cs: &ConnectionString) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let pooled = cs
        .hosts()
        .iter()
        .any(|h| matches!(h, crate::config::Host::Tcp(name) if is_neon_pooler(name)));
    if pooled {
        WARNED.call_once(|| {
            let options = if cs.options().is_some() {
                "the startup `options` of this connection string are refused or ignored there; "
            } else {
                ""
            };
            tracing::warn!(target: "neon_connect", "connecting to a pooled (-pooler) endpoint: PgBouncer in transaction mode; {options}session state (SET, LISTEN, SQL PREPARE, advisory locks, temporary tables) does not survive the transaction: use SET LOCAL, or the direct endpoint for sessions and migrations");
        });
    }
}

/// The password of the password file for the first host of `cs`, if any.
fn password_from_file(
    cs: &ConnectionString,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let path = crate::pgpass::default_path(&env)?;
    let host = match cs.hosts().first() {
        Some(crate::config::Host::Tcp(name)) => name.as_str(),
        // libpq matches a Unix socket (and no host at all) as `localhost`.
        _ => "localhost",
    };
    let os_user = env("USER");
    let user = cs.user().or(os_user.as_deref())?;
    let dbname = cs.dbname().unwrap_or(user);
    crate::pgpass::lookup_file(
        &path,
        &crate::pgpass::Lookup {
            host,
            port: cs.port_for(0),
            dbname,
            user,
        },
    )
}

/// The deadpool manager: opens connections with the crate's policy and drops closed ones.
pub struct Manager {
    connector: Arc<Connector>,
    health: Health,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("connection_string", &self.connector.cs)
            .field("health", &self.health)
            .finish()
    }
}

/// A pooled connection: the deadpool-postgres client wrapper plus what it negotiated.
pub struct PooledConnection {
    client: ClientWrapper,
    /// What this connection negotiated.
    pub info: ConnectionInfo,
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("info", &self.info)
            .finish()
    }
}

impl std::ops::Deref for PooledConnection {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        &mut self.client
    }
}

impl managed::Manager for Manager {
    type Type = PooledConnection;
    type Error = Error;

    async fn create(&self) -> Result<PooledConnection, Error> {
        let (client, connection, info) = self.connector.connect().await?;
        let host = info.host.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target: "neon_connect", host = %host, "connection ended: {e}");
            }
        });
        Ok(PooledConnection {
            client: ClientWrapper::new(client, task),
            info,
        })
    }

    /// Runs on every checkout of an idle connection; an error makes deadpool drop the
    /// connection and take (or open) another, so the caller never sees it.
    async fn recycle(
        &self,
        conn: &mut PooledConnection,
        metrics: &Metrics,
    ) -> RecycleResult<Error> {
        let health = &self.health;
        let unused = metrics.last_used();
        let reason = if conn.is_closed() {
            // The server ended it (57P01 on restart or scale-to-zero, a crash) or the socket broke.
            "the connection was closed"
        } else if metrics.age() >= health.max_lifetime {
            "the connection reached its maximum lifetime"
        } else if unused >= health.idle_timeout {
            "the connection was idle too long"
        } else if unused >= health.check_after_idle && conn.simple_query("").await.is_err() {
            "the connection failed its idle check"
        } else {
            return Ok(());
        };
        tracing::debug!(target: "neon_connect", host = %conn.info.host, age_ms = metrics.age().as_millis() as u64, unused_ms = unused.as_millis() as u64, "replacing a pooled connection: {reason}");
        Err(RecycleError::message(reason))
    }
}

/// A pool of verified connections. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<Manager>,
    first: Arc<std::sync::OnceLock<ConnectionInfo>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("manager", self.inner.manager())
            .field("status", &self.inner.status())
            .finish()
    }
}

impl Pool {
    /// A connection from the pool, opening one if none is idle and the pool is not full.
    /// Idle connections that are closed, past [`Options::max_lifetime`] or
    /// [`Options::idle_timeout`], or fail the check of [`Options::check_after_idle`], are
    /// replaced first, without an error; opening one retries what a retry can fix within
    /// `connect_timeout` (see [`crate::DEFAULT_CONNECT_ATTEMPTS`]).
    ///
    /// # Errors
    /// [`ErrorKind::Pool`] when none frees up within the wait timeout (the message says how
    /// many are in use), or the connection error when a new one cannot be opened.
    pub async fn get(&self) -> Result<Client, Error> {
        self.inner.get().await.map_err(|e| self.pool_error(e))
    }

    fn pool_error(&self, e: managed::PoolError<Error>) -> Error {
        let status = self.inner.status();
        match e {
            managed::PoolError::Backend(e) => e,
            managed::PoolError::Timeout(kind) => {
                let what = match kind {
                    TimeoutType::Wait => "waiting for a free connection",
                    TimeoutType::Create => "opening a new connection",
                    TimeoutType::Recycle => "checking an idle connection",
                };
                let waited = self.inner.timeouts().wait.unwrap_or_default();
                crate::diagnostics::diagnose(
                    "pool-timeout",
                    format!(
                        "timed out after {:.1}s {what}: all {} connections of the pool are in use ({} waiting)",
                        waited.as_secs_f64(),
                        status.size,
                        status.waiting
                    ),
                )
                .with_step(Step::Pool)
            }
            managed::PoolError::Closed => Error::new(ErrorKind::Pool, "the pool is closed")
                .with_step(Step::Pool)
                .with_help("create a new pool; `close()` was called on this one"),
            other => Error::new(ErrorKind::Pool, format!("the pool failed: {other}"))
                .with_step(Step::Pool),
        }
    }

    /// What the first connection negotiated (host, TLS version, cipher, verification).
    pub fn info(&self) -> Option<&ConnectionInfo> {
        self.first.get()
    }

    /// Size, idle and waiting counts, for health endpoints.
    pub fn status(&self) -> deadpool::Status {
        self.inner.status()
    }

    /// Closes the pool: idle connections are dropped and `get` fails from now on.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The underlying deadpool pool.
    pub fn deadpool(&self) -> &managed::Pool<Manager> {
        &self.inner
    }
}

#[cfg(test)]
mod pooler_tests {
    #[test]
    fn neon_pooler_hosts_are_told_by_their_first_label() {
        assert!(super::is_neon_pooler(
            "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
        ));
        assert!(!super::is_neon_pooler(
            "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
        ));
        assert!(!super::is_neon_pooler("ep-x.pooler.example.com"));
        assert!(!super::is_neon_pooler(
            "ep-x.us-east-2-pooler.aws.neon.tech"
        ));
    }
}

/// Pool settings read from configuration (TOML, environment, JSON) with `serde` (feature
/// `serde`); every field is optional and [`PoolSettings::apply`] changes only those set.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// let settings = neon_connect::PoolSettings {
///     pool_size: Some(20),
///     application_name: Some("billing".into()),
///     ..Default::default()
/// };
/// let options = settings.apply(neon_connect::Options::from_connection_string(
///     neon_connect::ConnectionString::parse("postgresql://app@db.example.com/app").unwrap(),
/// ));
/// assert_eq!(options.connection_string().application_name(), Some("billing"));
/// # }
/// ```
#[cfg(feature = "serde")]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// [`Options::pool_size`].
    pub pool_size: Option<usize>,
    /// [`Options::wait_timeout`], in seconds.
    pub wait_timeout_secs: Option<u64>,
    /// [`Options::connect_timeout`], in seconds.
    pub connect_timeout_secs: Option<u64>,
    /// [`Options::recycle_timeout`], in seconds.
    pub recycle_timeout_secs: Option<u64>,
    /// [`Options::max_lifetime`], in seconds.
    pub max_lifetime_secs: Option<u64>,
    /// [`Options::idle_timeout`], in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// [`Options::connect_attempts`].
    pub connect_attempts: Option<u32>,
    /// [`Options::application_name`].
    pub application_name: Option<String>,
}

#[cfg(feature = "serde")]
impl PoolSettings {
    /// `options` with the settings that are set.
    pub fn apply(&self, mut options: Options) -> Options {
        let secs = Duration::from_secs;
        if let Some(n) = self.pool_size {
            options = options.pool_size(n);
        }
        if let Some(s) = self.wait_timeout_secs {
            options = options.wait_timeout(secs(s));
        }
        if let Some(s) = self.connect_timeout_secs {
            options = options.connect_timeout(secs(s));
        }
        if let Some(s) = self.recycle_timeout_secs {
            options = options.recycle_timeout(secs(s));
        }
        if let Some(s) = self.max_lifetime_secs {
            options = options.max_lifetime(secs(s));
        }
        if let Some(s) = self.idle_timeout_secs {
            options = options.idle_timeout(secs(s));
        }
        if let Some(n) = self.connect_attempts {
            options = options.connect_attempts(n);
        }
        if let Some(name) = &self.application_name {
            options = options.application_name(name.clone());
        }
        options
    }
}
