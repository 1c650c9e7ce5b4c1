//! The pool: a deadpool pool of tokio-postgres clients with timeouts on by default, and a
//! recycle check that drops closed, old and long-idle connections. Built by
//! [`Options::connect`](crate::Options::connect).

use crate::connect::{Connected, ConnectionInfo, Connector};
use crate::diagnostics::{diagnose, Diagnosis};
use crate::error::{Error, ErrorKind, Step};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult, TimeoutType};
use deadpool_postgres::ClientWrapper;
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

/// When an idle connection is replaced rather than handed out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Health {
    pub(crate) max_lifetime: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) check_after_idle: Duration,
}

/// A pooled client: derefs to [`deadpool_postgres::ClientWrapper`] and so to
/// [`tokio_postgres::Client`]; goes back to the pool when dropped.
pub type Client = managed::Object<Manager>;

/// The deadpool manager: opens connections with the crate's policy and drops closed ones.
pub struct Manager {
    connector: Arc<Connector>,
    health: Health,
}

impl Manager {
    pub(crate) fn new(connector: Arc<Connector>, health: Health) -> Manager {
        Manager { connector, health }
    }
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
        let Connected {
            client,
            connection,
            info,
        } = self.connector.connect().await?;
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
    pub(crate) fn new(inner: managed::Pool<Manager>) -> Pool {
        Pool {
            inner,
            first: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Keeps what the first connection negotiated, for [`Pool::info`].
    pub(crate) fn remember_first(&self, info: ConnectionInfo) {
        // Set once, by `Options::connect`; a second call changes nothing.
        let _ = self.first.set(info);
    }

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
                diagnose(
                    Diagnosis::PoolTimeout,
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
