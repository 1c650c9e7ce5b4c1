//! The pool: a deadpool pool of tokio-postgres clients with timeouts on by default, and a
//! recycle check that drops closed, old and long-idle connections. Built by
//! [`Options::connect`](crate::Options::connect).

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

/// A pooled client: derefs to [`deadpool::managed::Object`], so to [`PooledConnection`],
/// [`deadpool_postgres::ClientWrapper`] and [`tokio_postgres::Client`]; goes back to the pool
/// when dropped.
///
/// What a caller may rely on when it drops a client (or its task is cancelled, or a
/// `tokio::time::timeout` around a query fires): a statement still running is cancelled on the
/// server (a CancelRequest over TLS with the connection's own policy, [`ABANDON_GRACE`] after the
/// return unless it finished by then) and the connection is never handed out again; a
/// transaction left open (a raw `BEGIN` without `COMMIT`) is rolled back before the next user
/// gets the connection. The next [`Pool::get`] never waits behind an abandoned statement.
pub struct Client {
    object: managed::Object<Manager>,
    /// Leak detection's timer (`Options::leak_detection`), while it is on.
    watch: Option<crate::service::LeakWatch>,
}

impl std::ops::Deref for Client {
    type Target = managed::Object<Manager>;
    fn deref(&self) -> &managed::Object<Manager> {
        &self.object
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut managed::Object<Manager> {
        &mut self.object
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.object, f)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let conn: &PooledConnection = &self.object;
        conn.meters.returned();
        let Some(probe) = &conn.probe else { return };
        if !probe.session.returned() {
            return;
        }
        // Abandoned mid-request: give it a moment to finish by itself, then cancel it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the next checkout cancels it
        };
        let probe = probe.clone();
        let cancel = conn.cold.cancel.clone();
        let host = conn.info.host.clone();
        runtime.spawn(async move {
            tokio::time::sleep(ABANDON_GRACE).await;
            if probe.session.cancel_if_still_running() {
                send_cancel(cancel, &host).await;
            }
        });
    }
}

/// Sends a cancel request for the statement running on a connection, over TLS with the
/// connection's own policy; failures are only logged (the connection is replaced anyway).
async fn send_cancel(cancel: Option<(tokio_postgres::CancelToken, MakeTls)>, host: &str) {
    let Some((token, tls)) = cancel else { return };
    tracing::debug!(target: "neon_connect", host = %host, "cancelling the statement an abandoned pooled connection was running");
    match tokio::time::timeout(GOODBYE_TIMEOUT, token.cancel_query(tls)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(target: "neon_connect", host = %host, "the cancel request failed: {e}")
        }
        Err(_) => {
            tracing::debug!(target: "neon_connect", host = %host, "the cancel request timed out")
        }
    }
}

/// The deadpool manager: opens connections with the crate's policy and drops closed ones.
pub struct Manager {
    connector: Arc<Connector>,
    health: Health,
    /// When an idle check last failed (ms since `epoch`, 0: never): idle connections unused
    /// since before it are replaced without a check of their own, so a path that went dead
    /// costs one check, not one per idle connection.
    suspect_before: AtomicU64,
    epoch: Instant,
    /// Connections alive (created and not yet dropped).
    live: Arc<AtomicUsize>,
    /// The per-checkout metric handles (feature `metrics`).
    meters: crate::service::Meters,
    /// Run on every new connection before it is handed out (`Options::after_connect`).
    after_connect: Option<AfterConnect>,
}

impl Manager {
    pub(crate) fn new(connector: Arc<Connector>, health: Health) -> Manager {
        let live = Arc::default();
        Manager {
            meters: crate::service::Meters::register(&live),
            connector,
            health,
            suspect_before: AtomicU64::new(0),
            epoch: Instant::now(),
            live,
            after_connect: None,
        }
    }

    /// Sets the hook run on every new connection (`Options::after_connect`).
    pub(crate) fn with_after_connect(mut self, hook: Option<AfterConnect>) -> Manager {
        self.after_connect = hook;
        self
    }
}

/// What a pooled connection needs only to be cancelled or closed (boxed: see
/// [`PooledConnection`]).
struct Cold {
    /// How to cancel its running statement (TLS connections).
    cancel: Option<(tokio_postgres::CancelToken, MakeTls)>,
    /// Dropped with the connection: tells its task to say goodbye, within [`GOODBYE_TIMEOUT`].
    _goodbye: Goodbye,
    _live: Live,
}

/// Tells a connection's task, when dropped, to say goodbye within [`GOODBYE_TIMEOUT`]. A flag
/// and the task's waker rather than a channel: the task checks it on every wake-up (every
/// message), and a channel's receiver costs several times more per poll.
struct Goodbye(Arc<Farewell>);

#[derive(Default)]
struct Farewell {
    now: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Drop for Goodbye {
    fn drop(&mut self) {
        self.0.now.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

/// The task's side of [`Goodbye`]: ready once the connection was dropped. Polled only by the
/// connection's own spawned task, whose waker always wakes that task: registered once.
struct Closing {
    farewell: Arc<Farewell>,
    registered: bool,
}

impl Future for Closing {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.farewell.now.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !self.registered {
            self.farewell.waker.register(cx.waker());
            self.registered = true;
        }
        // Checked again: a goodbye between the first check and the registration woke nobody.
        if self.farewell.now.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Counts a connection as alive until dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
///
/// deadpool moves each connection by value several times on every checkout and return, so it
/// is a few pointers: the client wrapper (a few hundred bytes), `info`, and what cancelling
/// and closing need are boxed.
pub struct PooledConnection {
    client: Box<ClientWrapper>,
    /// What this connection negotiated.
    pub info: Box<ConnectionInfo>,
    /// The protocol session seen on the wire (TLS connections).
    probe: Option<Arc<Probe>>,
    /// What cancelling and closing it need.
    cold: Box<Cold>,
    /// Whether its server still is what `target_session_attrs` asks for.
    role: Arc<RoleWatch>,
    /// When it is retired: opened + `max_lifetime` less up to 10%, so that connections opened
    /// together are not all replaced at once (`None`: a lifetime too long to add).
    retire_at: Option<Instant>,
    /// Where its returns are counted (feature `metrics`).
    meters: crate::service::Meters,
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

impl Manager {
    /// Opens a connection for the pool (`Manager::create`).
    async fn open(&self) -> Result<PooledConnection, Error> {
        trace(|t| t.opening = Some(Instant::now()));
        let Connected {
            client,
            connection,
            info,
            probe,
            cancel_tls,
            role,
        } = self
            .connector
            // With live connections, a full server is not asked again: `Pool::get` waits for a
            // returned connection instead.
            .connect_unless_full(self.live.load(Ordering::Acquire) > 0)
            .await
            .inspect_err(crate::service::failed)?;
        trace(|t| t.opening = None);
        self.live.fetch_add(1, Ordering::AcqRel);
        let live = Live(self.live.clone());
        let host = info.host.clone();
        let farewell = Arc::new(Farewell::default());
        let goodbye = Goodbye(farewell.clone());
        let closing = Closing {
            farewell,
            registered: false,
        };
        let cancel = cancel_tls.map(|tls| (client.cancel_token(), tls));
        if let (Some(t), Some(p)) = (self.health.query_timeout, &probe) {
            p.session.set_query_timeout(t);
        }
        // Watched only with a query deadline.
        let watched = probe
            .clone()
            .filter(|p| p.session.query_timeout().is_some());
        let cancel_on_expiry = cancel.clone();
        // The task owns the connection. When the pool drops the client (retired, closed),
        // tokio-postgres sends Terminate and closes TLS with close_notify; the task waits for
        // that at most GOODBYE_TIMEOUT (a dead path cannot take a goodbye). With a query
        // deadline it also watches the requests, and cancels the statement when one expires.
        let connection = Watched::new(connection, role.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::pin!(closing);
            let watch = async {
                match &watched {
                    Some(p) => p.session.watch().await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(watch);
            let mut expired = watched.is_none();
            // The connection first (it is what usually woke the task), then the goodbye, then
            // the query deadline: a hand-written select, polled on every message.
            let ended = std::future::poll_fn(|cx| loop {
                if let Poll::Ready(r) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if closing.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if !expired && watch.as_mut().poll(cx).is_ready() {
                    expired = true;
                    tracing::debug!(target: "neon_connect", host = %host, "a request passed its query_timeout: cancelling it and retiring the connection");
                    let (cancel, host) = (cancel_on_expiry.clone(), host.clone());
                    tokio::spawn(async move { send_cancel(cancel, &host).await });
                    continue; // the stream now answers what is due itself
                }
                return Poll::Pending;
            })
            .await;
            let result = match ended {
                Some(r) => r,
                None => tokio::time::timeout(GOODBYE_TIMEOUT, &mut connection)
                    .await
                    .unwrap_or(Ok(())),
            };
            if let Err(e) = result {
                tracing::debug!(target: "neon_connect", host = %host, "connection ended: {e}");
            }
        });
        if let Some(hook) = &self.after_connect {
            // On failure the client is dropped here: the task says goodbye and ends.
            hook(&client)
                .await
                .map_err(|e| hook_error(e, &info.host))
                .inspect_err(crate::service::failed)?;
        }
        crate::service::opened();
        // deadpool-postgres's wrapper aborts the task it is given when dropped, which would cut
        // the goodbye short: it gets a finished placeholder, and the real task ends by itself.
        let placeholder = tokio::spawn(async {});
        Ok(PooledConnection {
            client: Box::new(ClientWrapper::new(client, placeholder)),
            info: Box::new(info),
            probe,
            cold: Box::new(Cold {
                cancel,
                _goodbye: goodbye,
                _live: live,
            }),
            role,
            meters: self.meters.clone(),
            retire_at: Instant::now().checked_add(crate::service::jittered_lifetime(
                self.health.max_lifetime,
                crate::connect::random_u64(),
            )),
        })
    }
}

impl managed::Manager for Manager {
    type Type = PooledConnection;
    type Error = Error;

    async fn create(&self) -> Result<PooledConnection, Error> {
        // Boxed: opening a connection is a large future (DNS, TLS, authentication, the role
        // check), and deadpool holds it inline in every checkout's future, which is moved
        // (copied) on each `get` even when an idle connection is handed out.
        // (A `let`: a temporary would live to the end of the statement, so across the await,
        // and be part of the future after all.)
        let open = Box::pin(self.open());
        open.await
    }

    /// Runs on every checkout of an idle connection; an error makes deadpool drop the
    /// connection and take (or open) another, so the caller never sees it.
    async fn recycle(
        &self,
        conn: &mut PooledConnection,
        metrics: &Metrics,
    ) -> RecycleResult<Error> {
        let health = &self.health;
        let now = Instant::now();
        let unused = now.saturating_duration_since(metrics.recycled.unwrap_or(metrics.created));
        let verdict = conn.probe.as_ref().map(|p| p.session.verdict());
        // (the metrics label, the log's reason)
        let (label, reason) = if conn.is_closed() {
            // The server ended it (57P01 on restart or scale-to-zero, a crash) or the socket broke.
            ("closed", "the connection was closed")
        } else if verdict == Some(Verdict::CancelAndReplace) {
            // In the background: the caller gets another connection without waiting for it.
            let (cancel, host) = (conn.cold.cancel.clone(), conn.info.host.clone());
            tokio::spawn(async move { send_cancel(cancel, &host).await });
            (
                "abandoned",
                "its last user abandoned a statement that was still running (cancelled)",
            )
        } else if verdict == Some(Verdict::Replace) {
            (
                "abandoned",
                "its last user abandoned a statement that was still running",
            )
        } else if let Some(role) = conn.role.mismatch() {
            // It turned read-only (or was promoted) under us: a write on it failed with 25006.
            tracing::info!(target: "neon_connect", host = %conn.info.host, role = role.as_str(), "retiring a pooled connection: its server is now a {role}, which target_session_attrs does not accept");
            (
                "server_role",
                "its server is no longer what target_session_attrs asks for",
            )
        } else if conn.retire_at.is_some_and(|at| now >= at) {
            (
                "max_lifetime",
                "the connection reached its maximum lifetime",
            )
        } else if unused >= health.idle_timeout {
            ("idle_timeout", "the connection was idle too long")
        } else if unused >= health.check_after_idle && self.suspect(metrics) {
            (
                "suspect",
                "an idle check of another connection failed after this one was last used",
            )
        } else if unused >= health.check_after_idle && !self.check_boxed(conn, "").await {
            ("idle_check_failed", "the connection failed its idle check")
        } else if verdict == Some(Verdict::InTransaction)
            && !self.check_boxed(conn, "ROLLBACK").await
        {
            (
                "rollback_failed",
                "its last user left a transaction open, and rolling it back failed",
            )
        } else {
            return Ok(());
        };
        crate::service::retired(label);
        tracing::debug!(target: "neon_connect", host = %conn.info.host, age_ms = now.saturating_duration_since(metrics.created).as_millis() as u64, unused_ms = unused.as_millis() as u64, "replacing a pooled connection: {reason}");
        trace(|t| t.replaced += 1);
        Err(RecycleError::message(reason))
    }
}

impl Manager {
    /// [`Manager::check`], boxed like `open`: rare, and inline it would make every checkout's
    /// future larger (a timer and a query).
    async fn check_boxed(&self, conn: &PooledConnection, sql: &str) -> bool {
        let check = Box::pin(self.check(conn, sql));
        check.await
    }

    /// Runs `sql` (an empty query, or `ROLLBACK`) under the check deadline; false when it
    /// failed or timed out (an idle check that fails marks the idle connections unused since
    /// before now as suspect).
    async fn check(&self, conn: &PooledConnection, sql: &str) -> bool {
        let began = Instant::now();
        let ok = matches!(
            tokio::time::timeout(self.health.check_timeout, conn.simple_query(sql)).await,
            Ok(Ok(_))
        );
        trace(|t| {
            t.checks += 1;
            t.checking += began.elapsed();
        });
        if !ok && sql.is_empty() {
            let now = self.epoch.elapsed().as_millis() as u64;
            self.suspect_before.fetch_max(now, Ordering::AcqRel);
        }
        ok
    }

    /// Whether the connection was last used before an idle check of another one failed.
    fn suspect(&self, metrics: &Metrics) -> bool {
        let mark = self.suspect_before.load(Ordering::Acquire);
        if mark == 0 {
            return false;
        }
        let last_used = metrics.recycled.unwrap_or(metrics.created);
        let last_used_ms = last_used.saturating_duration_since(self.epoch).as_millis() as u64;
        last_used_ms < mark
    }
}

/// One round of `Options::min_idle`: retires idle connections that their next checkout would
/// replace anyway (past `idle_timeout` or their lifetime), then, unless the server is full,
/// opens connections until `min` are idle (or the pool is at its size). False when opening
/// one failed.
async fn fill(inner: &managed::Pool<Manager>, min: usize, full: &ServerFull) -> bool {
    let health = inner.manager().health;
    let retired = inner.retain(|conn, m| {
        if conn.retire_at.is_some_and(|at| Instant::now() >= at) {
            crate::service::retired("max_lifetime");
        } else if m.last_used() >= health.idle_timeout {
            crate::service::retired("idle_timeout");
        } else {
            return true;
        }
        false
    });
    if !retired.removed.is_empty() {
        tracing::debug!(target: "neon_connect", retired = retired.removed.len(), "min_idle: closing idle connections past idle_timeout or max_lifetime");
    }
    drop(retired);
    if full.limit().is_some() {
        return true;
    }
    let s = inner.status();
    let in_use = s.size - s.available;
    let want = min.min(s.max_size.saturating_sub(in_use));
    if s.available >= want {
        return true;
    }
    // deadpool opens a connection only when none is idle: hold the idle ones while opening
    // the missing ones, then return them all. Never wait: a caller that needs a slot has it.
    let no_wait = Timeouts {
        wait: Some(Duration::ZERO),
        create: None,
        recycle: None,
    };
    let mut held = Vec::with_capacity(want);
    let filled = loop {
        if held.len() >= want {
            break true;
        }
        match inner.timeout_get(&no_wait).await {
            Ok(object) => held.push(object),
            Err(managed::PoolError::Timeout(_) | managed::PoolError::Closed) => break true,
            Err(e) => {
                tracing::debug!(target: "neon_connect", "min_idle: could not open a connection: {e}");
                break false;
            }
        }
    };
    drop(held);
    inner.manager().meters.resample();
    filled
}

/// deadpool's non-blocking get: fails at once with `Timeout(Wait)` when no connection is free.
const NO_WAIT: Timeouts = Timeouts {
    wait: Some(Duration::ZERO),
    create: None,
    recycle: None,
};

/// What one `Pool::get` spent its time on, for the message when its deadline runs out.
#[derive(Debug, Default, Clone, Copy)]
struct GetTrace {
    checks: u32,
    checking: Duration,
    replaced: u32,
    opening: Option<Instant>,
}

std::thread_local! {
    /// The trace of the `Pool::get` being polled on this thread (see [`traced_poll`]).
    static TRACE: Cell<Option<GetTrace>> = const { Cell::new(None) };
}

/// Records into the current `Pool::get`'s trace, if there is one.
fn trace(f: impl FnOnce(&mut GetTrace)) {
    TRACE.with(|t| {
        if let Some(mut trace) = t.get() {
            f(&mut trace);
            t.set(Some(trace));
        }
    });
}

/// Polls one step of a `Pool::get` with its trace as this thread's [`TRACE`]: deadpool calls
/// the manager's `recycle` and `create` without a context, and they record where the time goes
/// through it. A thread-local set around each poll costs less than a task-local scope (the
/// checkout's fast path pays it too).
fn traced_poll<F: Future>(
    trace: &mut GetTrace,
    fut: Pin<&mut F>,
    cx: &mut std::task::Context<'_>,
) -> Poll<F::Output> {
    /// Puts the trace back, and the outer one (a `get` inside an `after_connect` hook), even
    /// when the poll panics.
    struct Restore<'a> {
        trace: &'a mut GetTrace,
        outer: Option<GetTrace>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if let Some(t) = TRACE.replace(self.outer) {
                *self.trace = t;
            }
        }
    }
    let outer = TRACE.replace(Some(*trace));
    let _restore = Restore { trace, outer };
    fut.poll(cx)
}

/// A pool of verified connections. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<Manager>,
    first: Arc<std::sync::OnceLock<ConnectionInfo>>,
    /// The deadline of a whole `get` (`Options::wait_timeout`).
    wait_timeout: Duration,
    /// The effective size while the server refuses more connections.
    full: Arc<ServerFull>,
    /// What `Options` asked for around the pool (warm connections, leak detection, ...).
    service: Arc<Service>,
    /// Keeps the deadlines of the `get`s that wait for a connection.
    ticker: Arc<Ticker>,
}

/// The deadlines of the `Pool::get`s waiting for a connection, kept by one ticking task per
/// pool instead of a timer per call (registering a timer cost more than the rest of a waiting
/// checkout): while anyone waits, the task wakes the waiters every tick, and each checks its
/// own deadline. A deadline is kept to within one tick: 1/16 of `wait_timeout`, between 1 and
/// 100 ms. The task runs only while some `get` waits.
struct Ticker {
    tick: Duration,
    /// `get`s waiting now.
    waiters: AtomicUsize,
    /// Whether the ticking task runs.
    running: std::sync::atomic::AtomicBool,
    /// Notified at every tick.
    ticks: tokio::sync::Notify,
}

impl Ticker {
    fn new(wait_timeout: Duration) -> Ticker {
        Ticker {
            tick: (wait_timeout / 16).clamp(Duration::from_millis(1), Duration::from_millis(100)),
            waiters: AtomicUsize::new(0),
            running: std::sync::atomic::AtomicBool::new(false),
            ticks: tokio::sync::Notify::new(),
        }
    }

    /// Counts a waiting `get` until the guard is dropped, and makes sure the task ticks.
    fn wait(self: &Arc<Ticker>) -> Waiting<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        if !self.running.swap(true, Ordering::AcqRel) {
            let ticker = self.clone();
            tokio::spawn(async move { ticker.run().await });
        }
        Waiting(self)
    }

    /// Ticks while anyone waits, then ends (a later waiter starts it again).
    async fn run(&self) {
        loop {
            tokio::time::sleep(self.tick).await;
            self.ticks.notify_waiters();
            if self.waiters.load(Ordering::Acquire) == 0 {
                self.running.store(false, Ordering::Release);
                // A waiter that came meanwhile saw `running` still set and started nothing.
                if self.waiters.load(Ordering::Acquire) == 0
                    || self.running.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        }
    }
}

/// A waiting `get`, counted by its [`Ticker`].
struct Waiting<'a>(&'a Ticker);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
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

/// How often the background task of [`Options::min_idle`](crate::Options::min_idle) looks at
/// the pool (it opens connections only when fewer than `min_idle` are idle).
pub const MIN_IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// How long after the server last refused a connection for lack of slots the pool keeps its
/// reduced size before it tries to grow again.
pub const SERVER_FULL_BACKOFF: Duration = Duration::from_secs(30);

/// Whether `e` says the server has no connection slot left (not a fault of this client).
pub(crate) fn server_full(e: &Error) -> bool {
    matches!(
        e.diagnosis(),
        Some(Diagnosis::TooManyConnections | Diagnosis::RoleConnectionLimit)
    )
}

/// The pool's effective size while the server is full: 0 means no limit.
#[derive(Debug, Default)]
struct ServerFull {
    limit: AtomicUsize,
    /// When the server last refused (ms since `epoch`).
    last: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl ServerFull {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// The effective size, or `None` when the pool may grow to its configured size.
    fn limit(&self) -> Option<usize> {
        let limit = self.limit.load(Ordering::Acquire);
        if limit == 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last.load(Ordering::Acquire));
        if since >= SERVER_FULL_BACKOFF.as_millis() as u64 {
            self.limit.store(0, Ordering::Release);
            tracing::info!(target: "neon_connect", "the pool may grow again: no connection was refused for lack of slots in {} s", SERVER_FULL_BACKOFF.as_secs());
            return None;
        }
        Some(limit)
    }

    /// The server refused a connection while the pool held `held`: stop growing past it.
    fn shrink(&self, held: usize, e: &Error) {
        self.last.store(self.now_ms(), Ordering::Release);
        let before = self.limit.swap(held, Ordering::AcqRel);
        if before == 0 {
            tracing::warn!(target: "neon_connect", held, "the server has no connection slot left ({}): the pool stays at {held} connections and callers wait for a returned one; it tries to grow again {} s after the last refusal", e.message(), SERVER_FULL_BACKOFF.as_secs());
        }
    }
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
            wait_timeout,
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
        let deadline = self.wait_timeout;
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
                        let left = deadline.saturating_sub(began.elapsed());
                        // Boxed, as the waiting path below.
                        let rest = Box::pin(async {
                            let traced = std::future::poll_fn(|cx| {
                                traced_poll(&mut spent, fast.as_mut(), cx)
                            });
                            tokio::time::timeout(left, traced).await
                        });
                        rest.await.map_err(|_| began)
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
        // `None`: a deadline too far to compute, never reached.
        let deadline = started.checked_add(self.wait_timeout);
        let passed = || deadline.is_some_and(|d| Instant::now() >= d);
        // In a block: the checkout is dropped (no longer counted as waiting) before a deadline
        // error reads the pool's status.
        let result = {
            let _waiting = self.ticker.wait();
            let mut checkout = std::pin::pin!(self.checkout(&none));
            let mut tick = std::pin::pin!(self.ticker.ticks.notified());
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = traced_poll(&mut spent, checkout.as_mut(), cx) {
                    return Poll::Ready(Some(r));
                }
                // Woken by a tick: the deadline, then wait for the next tick.
                while tick.as_mut().poll(cx).is_ready() {
                    tick.set(self.ticker.ticks.notified());
                    if passed() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
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
    /// connection instead of failing. The limit is lifted [`SERVER_FULL_BACKOFF`] after the last
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
        let (d, what) = if spent.opening.is_some() || spent.checks > 0 {
            (Diagnosis::PoolTimeout, "in `pool.get()`")
        } else {
            (Diagnosis::PoolTimeout, "waiting for a free connection")
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
        diagnose(d, message).with_step(Step::Pool)
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
