//! The deadpool manager: how a pooled connection is opened (and its task, which says goodbye
//! when the pool drops it), checked at checkout, and retired.

use super::*;

/// The deadpool manager: opens connections with the crate's policy and drops closed ones.
pub struct Manager {
    pub(super) connector: Arc<Connector>,
    pub(super) health: Health,
    /// When an idle check last failed (ms since `epoch`, 0: never): idle connections unused
    /// since before it are replaced without a check of their own, so a path that went dead
    /// costs one check, not one per idle connection.
    pub(super) suspect_before: AtomicU64,
    pub(super) epoch: Instant,
    /// Connections alive (created and not yet dropped).
    pub(super) live: Arc<AtomicUsize>,
    /// The per-checkout metric handles (feature `metrics`).
    pub(super) meters: crate::service::Meters,
    /// Run on every new connection before it is handed out (`Options::after_connect`).
    pub(super) after_connect: Option<AfterConnect>,
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
pub(super) struct Cold {
    /// How to cancel its running statement (TLS connections).
    pub(super) cancel: Option<(tokio_postgres::CancelToken, MakeTls)>,
    /// Dropped with the connection: tells its task to say goodbye, within [`GOODBYE_TIMEOUT`].
    pub(super) _goodbye: Goodbye,
    pub(super) _live: Live,
}

/// Tells a connection's task, when dropped, to say goodbye within [`GOODBYE_TIMEOUT`]. A flag
/// and the task's waker rather than a channel: the task checks it on every wake-up (every
/// message), and a channel's receiver costs several times more per poll.
pub(super) struct Goodbye(Arc<Farewell>);

#[derive(Default)]
pub(super) struct Farewell {
    pub(super) now: std::sync::atomic::AtomicBool,
    pub(super) waker: futures_util::task::AtomicWaker,
}

impl Drop for Goodbye {
    fn drop(&mut self) {
        self.0.now.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

/// The task's side of [`Goodbye`]: ready once the connection was dropped. Polled only by the
/// connection's own spawned task, whose waker always wakes that task: registered once.
pub(super) struct Closing {
    pub(super) farewell: Arc<Farewell>,
    pub(super) registered: bool,
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
pub(super) struct Live(Arc<AtomicUsize>);

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
    pub(super) client: Box<ClientWrapper>,
    /// What this connection negotiated.
    pub info: Box<ConnectionInfo>,
    /// The protocol session seen on the wire (TLS connections).
    pub(super) probe: Option<Arc<Probe>>,
    /// What cancelling and closing it need.
    pub(super) cold: Box<Cold>,
    /// Whether its server still is what `target_session_attrs` asks for.
    pub(super) role: Arc<RoleWatch>,
    /// When it is retired: opened + `max_lifetime` less up to 10%, so that connections opened
    /// together are not all replaced at once (`None`: a lifetime too long to add).
    pub(super) retire_at: Option<Instant>,
    /// Where its returns are counted (feature `metrics`).
    pub(super) meters: crate::service::Meters,
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
