//! The client a checkout hands out: derefs to the connection, and on drop cancels what its
//! user abandoned.

use super::*;

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
    pub(super) object: managed::Object<Manager>,
    /// Leak detection's timer (`Options::leak_detection`), while it is on.
    pub(super) watch: Option<crate::service::LeakWatch>,
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
pub(super) async fn send_cancel(
    cancel: Option<(tokio_postgres::CancelToken, MakeTls)>,
    host: &str,
) {
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
