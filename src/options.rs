//! [`Options`]: what a pool is built from. A connection string plus what a URL cannot say
//! (pool size, timeouts, roots given in code), and the ways to connect: a pool, one
//! connection, or the pieces (a `tokio_postgres::Config` and a rustls connector) for other
//! drivers.

use crate::config::{ConnectionString, Password};
use crate::connect::{ConnectionInfo, Connector};
use crate::error::{Error, ErrorKind, Step};
use crate::pool::{
    AfterConnect, Health, HookFuture, Manager, Pool, Service, DEFAULT_APPLICATION_NAME,
    DEFAULT_CHECK_AFTER_IDLE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_LIFETIME, DEFAULT_POOL_SIZE,
    DEFAULT_RECYCLE_TIMEOUT, DEFAULT_WAIT_TIMEOUT,
};
use deadpool::managed;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// Set by [`Options::statement_timeout`] (already in the connection string's `options`).
    statement_timeout: Option<Duration>,
    connect_attempts: u32,
    /// Run on every new connection before it is handed out.
    after_connect: Option<AfterConnect>,
    /// Idle connections kept open in the background.
    min_idle: usize,
    /// Log checkouts held longer than this.
    leak_detection: Option<Duration>,
    /// The last connector built, reused by `connect_one` while the settings stay the same.
    cached: Arc<std::sync::Mutex<Option<CachedConnector>>>,
}

type CachedConnector = (Option<Arc<Vec<CertificateDer<'static>>>>, Arc<Connector>);

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
            .field("after_connect", &self.after_connect.is_some())
            .field("min_idle", &self.min_idle)
            .field("leak_detection", &self.leak_detection)
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
        crate::config::pgpass::fill_password(&mut cs, env);
        Ok(Options::from_connection_string(cs))
    }

    /// Reads `DATABASE_URL`, then fills what it leaves out from the `PG*` variables; with no
    /// `DATABASE_URL` the `PG*` variables alone (`PGHOST`, `PGUSER`, ...) are used, as libpq
    /// does for an empty connection string.
    ///
    /// # Errors
    /// [`ErrorKind::ConnectionString`] for a malformed `DATABASE_URL` or `PG*` variable.
    pub fn from_env() -> Result<Options, Error> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let url = var("DATABASE_URL");
        if url.is_none() && var("PGHOST").is_none() && var("PGHOSTADDR").is_none() {
            return Err(Error::config(
                "DATABASE_URL is not set (nor PGHOST): there is no database to connect to",
            )
            .with_help("set DATABASE_URL to your connection string (`postgresql://user:password@host/dbname`), or the PG* variables"));
        }
        Options::new(&url.unwrap_or_default())
    }

    /// Starts from an already parsed connection string (no environment is read). Sets
    /// `application_name` to [`DEFAULT_APPLICATION_NAME`] when the string (or `PGAPPNAME`)
    /// set none.
    pub fn from_connection_string(mut cs: ConnectionString) -> Options {
        cs.set_default_application_name(DEFAULT_APPLICATION_NAME);
        Options {
            cs,
            pool_size: DEFAULT_POOL_SIZE,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            recycle_timeout: DEFAULT_RECYCLE_TIMEOUT,
            roots: None,
            statement_timeout: None,
            health: Health {
                max_lifetime: DEFAULT_MAX_LIFETIME,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                check_after_idle: DEFAULT_CHECK_AFTER_IDLE,
                check_timeout: DEFAULT_RECYCLE_TIMEOUT,
                query_timeout: None,
            },
            connect_attempts: crate::connect::DEFAULT_CONNECT_ATTEMPTS,
            after_connect: None,
            min_idle: 0,
            leak_detection: None,
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

    /// The deadline of a whole [`Pool::get`]: waiting for a free connection, checking idle
    /// ones and opening a new one (default [`DEFAULT_WAIT_TIMEOUT`]). While a `get` waits, the
    /// deadline is kept by one ticking task per pool, so its error may come up to one tick
    /// late: `wait_timeout`/16, between 1 and 100 ms.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long one network check at checkout may take before the connection is replaced:
    /// the empty query of [`Options::check_after_idle`], or the `ROLLBACK` of a transaction its
    /// last user left open (default [`DEFAULT_RECYCLE_TIMEOUT`]).
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
        self.cs.set_connect_timeout(timeout);
        self
    }

    /// The server-side `statement_timeout` of every connection: a statement running longer is
    /// cancelled by the server, and the caller gets
    /// [`Diagnosis::QueryStatementTimeout`](crate::Diagnosis::QueryStatementTimeout). It is sent in the startup packet (`-c statement_timeout=<ms>` in
    /// `options`, as libpq would send it), so it costs no round trip.
    ///
    /// Neon's `-pooler` endpoints (PgBouncer in transaction mode) refuse startup options: there,
    /// [`Options::connect`] fails with a help line that says to set it on the role instead
    /// (`ALTER ROLE app SET statement_timeout = '5s'`) or per transaction (`SET LOCAL`).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        let ms = timeout.as_millis().max(1);
        let setting = format!("-c statement_timeout={ms}");
        let options = match self.cs.options() {
            Some(existing) => format!("{existing} {setting}"),
            None => setting,
        };
        self.cs.set_options(options);
        self.statement_timeout = Some(timeout);
        self
    }

    /// A client-side deadline for every request on a pooled connection (node-postgres calls it
    /// `query_timeout`; none by default). It fires even when the path to the server is stuck
    /// and the server's own `statement_timeout` cannot answer: the caller waiting gets
    /// [`Diagnosis::QueryTimeout`](crate::Diagnosis::QueryTimeout) at once (SQLSTATE 57014, with
    /// a message naming the deadline), the statement is cancelled on the server, and the
    /// connection is retired. The deadline counts from the request being sent, and starts
    /// again whenever an answer arrives. Costs nothing per query when not set; when set, one
    /// timer per busy connection.
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.health.query_timeout = Some(timeout);
        self
    }

    /// Runs `hook` on every new connection before it is handed out (by [`Options::connect`]
    /// and [`Pool::get`]): session settings such as `SET search_path` or `SET ROLE`. A hook
    /// that fails fails that `connect`/`get` with the hook's error, classified like a connect
    /// error (a server error keeps its SQLSTATE diagnosis and help), and the connection is
    /// closed. It runs inside `get`'s deadline (`wait_timeout`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), neon_connect::Error> {
    /// let pool = neon_connect::Options::new("postgresql://app@db.example.com/app")?
    ///     .after_connect(|client| {
    ///         Box::pin(async move {
    ///             client.batch_execute("SET search_path TO billing, public").await?;
    ///             Ok(())
    ///         })
    ///     })
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// On a Neon `-pooler` endpoint (PgBouncer in transaction mode) a session `SET` lands on
    /// whichever server connection ran it and is lost for the next transaction: set such
    /// settings on the role instead (`ALTER ROLE app SET search_path = billing, public`), or
    /// with `SET LOCAL` inside each transaction.
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'a> Fn(&'a tokio_postgres::Client) -> HookFuture<'a> + Send + Sync + 'static,
    {
        self.after_connect = Some(Arc::new(hook));
        self
    }

    /// Keeps at least `n` idle connections open (at most the pool size), refilled by a
    /// background task started with the pool (default 0: connections are opened on demand).
    /// It checks the pool every [`MIN_IDLE_INTERVAL`](crate::MIN_IDLE_INTERVAL), closes idle
    /// connections past [`Options::idle_timeout`] or [`Options::max_lifetime`] and opens new
    /// ones, so the first requests after a quiet period do not pay for a handshake.
    ///
    /// Open connections keep a Neon compute awake: with `min_idle` above 0, the pool holds
    /// connections around the clock and reopens them every `idle_timeout`, so the compute
    /// never scales to zero (and is billed while it runs). Leave it at 0 where scale-to-zero
    /// matters more than the first request's latency.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.min_idle = n;
        self
    }

    /// Logs (a `tracing` warning, once per checkout) a connection checked out for longer than
    /// `threshold`, with the file and line of the [`Pool::get`] that took it: connections held
    /// across slow work, or kept in a struct by mistake, starve the pool. Off by default; when
    /// on, each checkout starts one timer, stopped when the connection is returned.
    pub fn leak_detection(mut self, threshold: Duration) -> Self {
        self.leak_detection = Some(threshold);
        self
    }

    /// The `application_name` the server shows for these connections.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.cs.set_application_name(name);
        self
    }

    /// The password, when it does not come from the connection string or `PGPASSWORD`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.cs.set_password(Password::new(password));
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
        if let (Some(t), true) = (self.statement_timeout, crate::neon::any_pooler(&self.cs)) {
            return Err(Error::config(format!(
                "`statement_timeout` ({} ms) cannot be sent to a pooled (-pooler) endpoint: PgBouncer in transaction mode refuses startup options",
                t.as_millis()
            ))
            .with_help("set it on the role (`ALTER ROLE <user> SET statement_timeout = '5s'`, run once on the direct endpoint), or per transaction with `SET LOCAL statement_timeout`"));
        }
        Ok(())
    }

    /// Builds the connector (policy, root store, rustls configuration) off the async runtime's
    /// worker threads: it may read certificate files the first time (the system root store
    /// loads in the background: see `Connector::new`). Reused while these options are
    /// unchanged, so repeated `connect_one` calls do no per-connection setup.
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

    /// Builds the pool around `connector` without opening a connection.
    fn build_pool(&self, connector: Arc<Connector>) -> Result<Pool, Error> {
        crate::neon::warn_if_pooled(&self.cs);
        let health = Health {
            check_timeout: self.recycle_timeout,
            ..self.health
        };
        crate::service::describe();
        let first = self.cs.targets().next();
        let mut warnings = crate::tls::warnings(&self.cs, &connector.policy);
        warnings.extend(crate::neon::pooled_warning(&self.cs));
        let manager =
            Manager::new(connector, health).with_after_connect(self.after_connect.clone());
        // `Pool::get` puts one deadline (`wait_timeout`) over waiting, checking and opening;
        // each network check at checkout has its own (`recycle_timeout`), inside the manager.
        let inner = managed::Pool::builder(manager)
            .max_size(self.pool_size)
            .wait_timeout(None)
            .create_timeout(None)
            .recycle_timeout(None)
            // Most recently used first: a light load keeps reusing the same warm connections
            // (no idle check, see `check_after_idle`), and the others age out by `idle_timeout`.
            .queue_mode(managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::new(ErrorKind::Pool, "could not build the pool").with_source(e))?;
        Ok(Pool::new(inner, self.wait_timeout).with_service(Service {
            min_idle: self.min_idle.min(self.pool_size),
            leak_detection: self.leak_detection,
            server_address: first
                .as_ref()
                .map(crate::connect::otel_address)
                .unwrap_or_default(),
            server_port: first.as_ref().map_or(5432, |t| t.port),
            db_namespace: self
                .cs
                .dbname()
                .or(self.cs.user())
                .unwrap_or_default()
                .to_string(),
            warnings,
        }))
    }

    /// Opens and checks the first connection, then returns the pool holding it: a wrong
    /// password, certificate or host fails here, not at the first request.
    ///
    /// # Errors
    /// Any [`ErrorKind`]: the error says which step failed and what to change.
    pub async fn connect(self) -> Result<Pool, Error> {
        let connector = self.connector().await?;
        let pool = self.build_pool(connector)?;
        let client = pool.get().await?;
        client.simple_query("").await.map_err(|e| {
            Error::new(
                ErrorKind::Server,
                "the first connection failed its check query",
            )
            .with_step(Step::Startup)
            .with_source(e)
        })?;
        pool.remember_first((*client.info).clone());
        drop(client);
        pool.keep_warm();
        Ok(pool)
    }

    /// Builds the pool without opening a connection: the first [`Pool::get`] (or
    /// [`Pool::ping`], or the background task of [`Options::min_idle`]) opens one. For services
    /// that must start while the database is unreachable, or that should not wake a Neon
    /// compute at startup.
    ///
    /// What can be checked without the network is checked here: the connection string, the
    /// TLS policy, the root certificates and the client certificate. A wrong password, host
    /// or server certificate fails at the first `get` instead. Call it inside a Tokio
    /// runtime when `min_idle` is set (its background task is spawned here). It reads
    /// certificate files, as `connect` does.
    ///
    /// # Errors
    /// [`ErrorKind::ConnectionString`], [`ErrorKind::TlsPolicy`],
    /// [`ErrorKind::RootCertificates`] or [`ErrorKind::ClientCertificate`].
    pub fn connect_lazy(self) -> Result<Pool, Error> {
        self.validate()?;
        let mut connector = Connector::new(self.cs.clone(), self.roots.as_ref())?;
        connector.policy.load_roots()?;
        connector.max_attempts = self.connect_attempts;
        let pool = self.build_pool(Arc::new(connector))?;
        pool.keep_warm();
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
    /// [`ErrorKind::RootCertificates`] or [`ErrorKind::ClientCertificate`] when the roots or
    /// the client certificate cannot be loaded.
    pub async fn rustls_connector(
        &self,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Error> {
        let connector = self.connector().await?;
        // Other stacks do not wait for roots loading in the background: they are loaded now.
        connector.roots_ready().await?;
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            (*connector.tls_config).clone(),
        ))
    }

    /// The connection settings as a [`tokio_postgres::Config`]: every host with its port and
    /// `hostaddr`, `load_balance_hosts`, user, password, database, `application_name`,
    /// `options`, channel binding, keepalives, `target_session_attrs` and the connect timeout,
    /// with `sslmode=require` (TLS always; certificate verification comes from the connector
    /// of [`Options::rustls_connector`], not from this mode). It is the same mapping the
    /// crate's own connections use, so bb8 or a hand-made pool reach the same servers.
    /// (`hostaddr` is passed on only when every host has one: tokio-postgres cannot leave
    /// some hosts unpinned.)
    ///
    /// # Errors
    /// [`ErrorKind::RootCertificates`] as for [`Options::rustls_connector`].
    pub async fn tokio_postgres_config(&self) -> Result<tokio_postgres::Config, Error> {
        let connector = self.connector().await?;
        connector.roots_ready().await?;
        Ok(crate::connect::driver_config_with_hosts(
            &self.cs,
            connector.timeout,
        ))
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
        let c = connector.connect().await?;
        Ok((c.client, c.connection, c.info))
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
