//! The pool: a deadpool pool of tokio-postgres clients with timeouts on by default, and a
//! recycle check that drops closed, old and long-idle connections. Built by
//! [`Options::connect`](crate::Options::connect).
//!
//! `mod.rs` holds the pool and its `get` (one deadline, the server-full wait); `client.rs` the
//! client a checkout hands out (and the cancel of what its user abandoned); `manager.rs` how a
//! connection is opened, checked and retired, and its task's goodbye; `deadline.rs` the
//! deadline of a waiting `get` and the trace its error reports; `full.rs` the effective size
//! while the server refuses connections; `warm.rs` `min_idle`.

mod client;
mod deadline;
mod full;
mod manager;
mod warm;

use client::send_cancel;
pub use client::Client;
use deadline::{trace, traced_poll, GetTrace, Ticker};
pub(crate) use full::server_full;
use full::ServerFull;
pub use manager::{Manager, PooledConnection};
use warm::fill;
pub use warm::MIN_IDLE_INTERVAL;

use crate::connect::{Connected, ConnectionInfo, Connector, RoleWatch, Watched};
use crate::diagnostics::{diagnose, Diagnosis};
use crate::error::{Error, ErrorKind, Step};
use crate::tls::{MakeTls, Probe, Verdict};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult, TimeoutType, Timeouts};
use deadpool_postgres::ClientWrapper;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The default number of connections in a pool (the same as sqlx and node-postgres).
pub const DEFAULT_POOL_SIZE: usize = 10;
/// The deadline of a whole [`Pool::get`] by default: waiting for a free connection, checking
/// idle ones and opening a new one (with its retries) all fit in it. The same as the default
/// `connect_timeout`, so that a connection that may take that long to open (a Neon compute
/// waking up) can be opened inside one `get`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one network check of an idle connection may take by default (the empty query of
/// [`DEFAULT_CHECK_AFTER_IDLE`], or the `ROLLBACK` of a transaction its last user left open).
pub const DEFAULT_RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a returned connection whose request was still running (its caller's timeout
/// fired, or its task was cancelled) may take to finish by itself before a cancel request is
/// sent for it.
pub const ABANDON_GRACE: Duration = Duration::from_millis(50);
/// How long closing a connection may take to say goodbye (Terminate and TLS `close_notify`)
/// before its task is stopped.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
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

/// The error an [`Options::after_connect`](crate::Options::after_connect) hook returns: any
/// error, so `?` works on `tokio_postgres::Error`, this crate's [`Error`] and others.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// The future an [`Options::after_connect`](crate::Options::after_connect) hook returns
/// (`Box::pin(async move { ... })`).
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send + 'a>>;

/// A hook run on every new connection before it is handed out.
pub(crate) type AfterConnect =
    Arc<dyn for<'a> Fn(&'a tokio_postgres::Client) -> HookFuture<'a> + Send + Sync>;

/// The error of a failed `after_connect` hook, classified like a connect error: a server
/// error keeps its SQLSTATE diagnosis and help, and the message says the hook failed.
fn hook_error(e: HookError, host: &str) -> Error {
    let e = match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(e) => match e.downcast::<tokio_postgres::Error>() {
            Ok(pg) => Error::from(*pg),
            Err(other) => Error::new(ErrorKind::Server, "it returned an error")
                .with_help("the cause is your hook's error")
                .with_source(other),
        },
    };
    let message = format!(
        "the `after_connect` hook failed on a new connection: {}",
        e.message()
    );
    e.with_message(message)
        .with_step(Step::Startup)
        .with_host(host)
}

/// When an idle connection is replaced rather than handed out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Health {
    pub(crate) max_lifetime: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) check_after_idle: Duration,
    /// The deadline of one network check at checkout (`Options::recycle_timeout`).
    pub(crate) check_timeout: Duration,
    /// The client-side deadline of every request (`Options::query_timeout`).
    pub(crate) query_timeout: Option<Duration>,
}

/// deadpool's non-blocking get: fails at once with `Timeout(Wait)` when no connection is free.
const NO_WAIT: Timeouts = Timeouts {
    wait: Some(Duration::ZERO),
    create: None,
    recycle: None,
};

/// A pool of verified connections. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<Manager>,
    first: Arc<std::sync::OnceLock<ConnectionInfo>>,
    /// The effective size while the server refuses more connections.
    full: Arc<ServerFull>,
    /// What `Options` asked for around the pool (warm connections, leak detection, ...).
    service: Arc<Service>,
    /// The deadline of a whole `get` (`Options::wait_timeout`), kept while the `get` waits.
    ticker: Arc<Ticker>,
}

/// The pool's settings beyond deadpool's, set by `Options`.
#[derive(Debug, Default)]
pub(crate) struct Service {
    /// Idle connections kept open in the background (`Options::min_idle`).
    pub(crate) min_idle: usize,
    /// Log checkouts held longer than this (`Options::leak_detection`).
    pub(crate) leak_detection: Option<Duration>,
    /// The first host's address and port and the database, for the checkout span's
    /// OpenTelemetry attributes.
    pub(crate) server_address: String,
    pub(crate) server_port: u16,
    pub(crate) db_namespace: String,
    /// The warnings about these settings (`Pool::warnings`).
    pub(crate) warnings: Vec<String>,
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
    pub(crate) fn new(inner: managed::Pool<Manager>, wait_timeout: Duration) -> Pool {
        Pool {
            inner,
            first: Arc::new(std::sync::OnceLock::new()),
            full: Arc::default(),
            service: Arc::default(),
            ticker: Arc::new(Ticker::new(wait_timeout)),
        }
    }

    /// Sets what `Options` asked for around the pool.
    pub(crate) fn with_service(mut self, service: Service) -> Pool {
        self.service = Arc::new(service);
        self
    }

    /// Starts the background task that keeps `min_idle` connections open, if asked for. It
    /// ends when the pool is closed or dropped.
    pub(crate) fn keep_warm(&self) {
        let min = self.service.min_idle;
        if min == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(target: "neon_connect", "min_idle({min}) is ignored: the pool was built outside a Tokio runtime, so no background task can keep connections open");
            return;
        };
        let weak = self.inner.weak();
        let full = self.full.clone();
        runtime.spawn(async move {
            let mut pause = MIN_IDLE_INTERVAL;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if inner.is_closed() {
                    return;
                }
                let filled = fill(&inner, min, &full).await;
                drop(inner);
                // Back off while connections cannot be opened (the error was logged).
                pause = if filled {
                    MIN_IDLE_INTERVAL
                } else {
                    (pause * 2).min(Duration::from_secs(30))
                };
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Keeps what the first connection negotiated, for [`Pool::info`].
    pub(crate) fn remember_first(&self, info: ConnectionInfo) {
        // Set once, by `Options::connect`; a second call changes nothing.
        let _ = self.first.set(info);
    }

    /// A connection from the pool, opening one if none is idle and the pool is not full.
    /// Idle connections that are closed, past [`Options::max_lifetime`](crate::Options::max_lifetime) or
    /// [`Options::idle_timeout`](crate::Options::idle_timeout), or fail the check of [`Options::check_after_idle`](crate::Options::check_after_idle), are
    /// replaced first, without an error; opening one retries what a retry can fix within
    /// `connect_timeout` (see [`crate::DEFAULT_CONNECT_ATTEMPTS`]).
    ///
    /// # Errors
    /// [`ErrorKind::Pool`] when none frees up within the wait timeout (the message says how
    /// many are in use), or the connection error when a new one cannot be opened.
    #[track_caller]
    pub fn get(&self) -> impl std::future::Future<Output = Result<Client, Error>> + Send + '_ {
        // Where the caller took it, for leak detection: a `&'static` the compiler passes in.
        let caller = std::panic::Location::caller();
        // OpenTelemetry's database attribute names; a disabled span costs a flag check.
        let span = tracing::debug_span!(
            target: "neon_connect",
            "checkout",
            "db.system.name" = "postgresql",
            "server.address" = %self.service.server_address,
            "server.port" = self.service.server_port,
            "db.namespace" = %self.service.db_namespace,
        );
        tracing::Instrument::instrument(
            async move {
                let meters = &self.inner.manager().meters;
                let checkout = meters.checkout();
                let mut result = self.get_untracked().await;
                checkout.end(meters, result.is_ok());
                if let (Ok(client), Some(after)) = (&mut result, self.service.leak_detection) {
                    client.watch =
                        crate::service::LeakWatch::start(after, caller, &client.info.host);
                }
                result
            },
            span,
        )
    }

    /// [`Pool::get`] without the caller's location.
    async fn get_untracked(&self) -> Result<Client, Error> {
        // When the deadline started: read from the clock only when the fast path must wait.
        let mut started = None;
        // The fast path: an idle connection is there and the server is not full. deadpool's
        // non-blocking get, polled once, usually hands it out at once (the recycle checks are
        // atomics): no deadline timer, no task-local scope. When it has to wait for the network
        // (an idle check, a new connection), it goes on under the deadline, with what its
        // first poll recorded; when no connection is free after all, the deadline path below
        // waits for one.
        if self.full.limit().is_none() && self.inner.status().available > 0 {
            let mut spent = GetTrace::default();
            // In a block: deadpool's future is dropped (no longer counted as waiting) before a
            // deadline error reads the pool's status.
            let outcome = {
                let mut fast = std::pin::pin!(self.inner.timeout_get(&NO_WAIT));
                let first = std::future::poll_fn(|cx| {
                    Poll::Ready(traced_poll(&mut spent, fast.as_mut(), cx))
                })
                .await;
                match first {
                    Poll::Ready(result) => Ok(result),
                    Poll::Pending => {
                        let began = *started.insert(Instant::now());
                        // Boxed, as the checkout of the waiting path below.
                        Box::pin(self.ticker.until_deadline(fast.as_mut(), began, &mut spent))
                            .await
                            .ok_or(began)
                    }
                }
            };
            let result = match outcome {
                Ok(result) => result,
                Err(began) => return Err(self.deadline_error(began.elapsed(), &spent)),
            };
            match result {
                Ok(object) => {
                    return Ok(Client {
                        object,
                        watch: None,
                    })
                }
                // Taken by another task meanwhile: wait below, within the deadline.
                Err(managed::PoolError::Timeout(TimeoutType::Wait)) => {}
                Err(managed::PoolError::Backend(e)) if server_full(&e) => {
                    // As `checkout` does: with live connections, wait below for a returned one.
                    let held = self.inner.status().size;
                    if held == 0 {
                        return Err(e);
                    }
                    self.full.shrink(held, &e);
                }
                Err(e) => return Err(self.pool_error(e)),
            }
        }
        self.get_waiting(started.unwrap_or_else(Instant::now)).await
    }

    /// [`Pool::get`] when no connection was free at once: within the deadline, with a trace of
    /// where the time went for its error.
    async fn get_waiting(&self, started: Instant) -> Result<Client, Error> {
        let none = Timeouts {
            wait: None,
            create: None,
            recycle: None,
        };
        let mut spent = GetTrace::default();
        // In a block: the checkout is dropped (no longer counted as waiting) before a deadline
        // error reads the pool's status.
        let result = {
            let mut checkout = std::pin::pin!(self.checkout(&none));
            self.ticker
                .until_deadline(checkout.as_mut(), started, &mut spent)
                .await
        };
        match result {
            Some(Ok(object)) => Ok(Client {
                object,
                watch: None,
            }),
            Some(Err(e)) => Err(self.pool_error(e)),
            None => Err(self.deadline_error(started.elapsed(), &spent)),
        }
    }

    /// A connection, opening one only while the server has room: when the server refuses a
    /// new connection for lack of slots (53300, "too many clients", a role's or database's
    /// limit, also as Neon's proxy forwards them) while this pool holds live connections, the
    /// pool's effective size becomes what it holds, and the caller waits for a returned
    /// connection instead of failing. The limit is lifted [`SERVER_FULL_BACKOFF`](full::SERVER_FULL_BACKOFF) after the last
    /// refusal, so the pool grows again when the server has room.
    async fn checkout(
        &self,
        timeouts: &Timeouts,
    ) -> Result<managed::Object<Manager>, managed::PoolError<Error>> {
        loop {
            if let Some(limit) = self.full.limit() {
                // Wait for a returned connection rather than ask the full server for another
                // (boxed: rare, and its timer would make this future larger).
                Box::pin(async {
                    while {
                        let s = self.inner.status();
                        s.available == 0 && s.size >= limit && self.full.limit().is_some()
                    } {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
                .await;
            }
            // Boxed: deadpool's future is about 1 KiB; inline, every `get` future (moved on
            // each call) would carry it twice. Kept under 1 KiB, the allocator serves it from
            // its per-thread cache.
            let get = Box::pin(self.inner.timeout_get(timeouts));
            match get.await {
                Err(managed::PoolError::Backend(e)) if server_full(&e) => {
                    let held = self.inner.status().size;
                    if held == 0 {
                        return Err(managed::PoolError::Backend(e));
                    }
                    self.full.shrink(held, &e);
                }
                other => return other,
            }
        }
    }

    /// The error when `get`'s deadline ran out: where the time went.
    fn deadline_error(&self, took: Duration, spent: &GetTrace) -> Error {
        let status = self.inner.status();
        let mut parts = Vec::new();
        if spent.checks > 0 {
            parts.push(format!(
                "{:.1}s checking {} idle connection(s)",
                spent.checking.as_secs_f64(),
                spent.checks
            ));
        }
        if spent.replaced > 0 {
            parts.push(format!("{} replaced", spent.replaced));
        }
        if let Some(since) = spent.opening {
            parts.push(format!(
                "{:.1}s opening a new connection, not finished",
                since.elapsed().as_secs_f64()
            ));
        }
        let waited = took
            .saturating_sub(spent.checking)
            .saturating_sub(spent.opening.map_or(Duration::ZERO, |s| s.elapsed()));
        let what = if spent.opening.is_some() || spent.checks > 0 {
            "in `pool.get()`"
        } else {
            "waiting for a free connection"
        };
        let mut message = format!("timed out after {:.1}s {what}", took.as_secs_f64());
        if parts.is_empty() {
            message.push_str(&format!(
                ": all {} connections of the pool are in use ({} waiting)",
                status.size, status.waiting
            ));
        } else {
            message.push_str(&format!(
                ": {:.1}s waiting for a free connection, {}",
                waited.as_secs_f64(),
                parts.join(", ")
            ));
        }
        diagnose(Diagnosis::PoolTimeout, message).with_step(Step::Pool)
    }

    fn pool_error(&self, e: managed::PoolError<Error>) -> Error {
        match e {
            managed::PoolError::Backend(e) => e,
            managed::PoolError::Timeout(kind) => {
                let what = match kind {
                    TimeoutType::Wait => "waiting for a free connection",
                    TimeoutType::Create => "opening a new connection",
                    TimeoutType::Recycle => "checking an idle connection",
                };
                diagnose(Diagnosis::PoolTimeout, format!("timed out {what}")).with_step(Step::Pool)
            }
            managed::PoolError::Closed => Error::new(ErrorKind::Pool, "the pool is closed")
                .with_step(Step::Pool)
                .with_help("create a new pool; `close()` was called on this one"),
            other => Error::new(ErrorKind::Pool, format!("the pool failed: {other}"))
                .with_step(Step::Pool),
        }
    }

    /// Readiness: checks out a connection (within the pool's `wait_timeout`, opening one if
    /// needed) and runs an empty query on it within `recycle_timeout`. The error is the
    /// crate's readable one (what failed, at which step, the fix): a service's readiness
    /// endpoint can answer 503 with its first line.
    ///
    /// # Errors
    /// Any [`ErrorKind`] a [`Pool::get`] can return, [`Diagnosis::PingTimeout`], or the
    /// query's error.
    pub async fn ping(&self) -> Result<(), Error> {
        let client = self.get().await?;
        let deadline = self.inner.manager().health.check_timeout;
        match tokio::time::timeout(deadline, client.simple_query("")).await {
            Ok(Ok(_)) => {
                if self.first.get().is_none() {
                    // A lazy pool's first connection.
                    self.remember_first((*client.info).clone());
                }
                Ok(())
            }
            Ok(Err(e)) => Err(Error::from(e).with_host(client.info.host.clone())),
            Err(_) => Err(diagnose(
                Diagnosis::PingTimeout,
                format!(
                    "`pool.ping()` timed out after {:.1}s: the server did not answer an empty query on \"{}\"",
                    deadline.as_secs_f64(),
                    client.info.host
                ),
            )
            .with_step(Step::Query)
            .with_host(client.info.host.clone())),
        }
    }

    /// What the first connection negotiated (host, TLS version, cipher, verification):
    /// `None` for a pool of [`Options::connect_lazy`](crate::Options::connect_lazy) until a
    /// [`Pool::ping`] succeeds.
    pub fn info(&self) -> Option<&ConnectionInfo> {
        self.first.get()
    }

    /// The warnings about this pool's settings (a TLS mode that does not check the server, a
    /// pooled endpoint), also logged once per process with `tracing`: a service can log or
    /// expose them where people look (a startup report, an admin page). Empty for
    /// `verify-full` on a direct endpoint.
    pub fn warnings(&self) -> &[String] {
        &self.service.warnings
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
