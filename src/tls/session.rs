//! What a connection is doing, as seen on the wire: how many requests still await their
//! `ReadyForQuery`, and the transaction status the last one reported. The pool reads it to
//! tell a connection its last user abandoned mid-request (a timeout, a cancelled task) or left
//! inside a transaction from one that is ready for the next user.
//!
//! Only message boundaries and types are read (and the one status byte of `ReadyForQuery`):
//! never a message's contents.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Milliseconds since the first call in this process (never 0).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The shared state of one connection's protocol session.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// `ReadyForQuery` messages still due: one per startup, simple `Query`, `Sync` and
    /// `FunctionCall` sent, minus those received.
    pending: AtomicI64,
    /// The transaction status of the last `ReadyForQuery`: `I` idle, `T` in a transaction,
    /// `E` in a failed transaction (0 before the first).
    transaction: AtomicU8,
    /// Who holds the connection: see the `HELD`, `ABANDONED` and `POISONED` states.
    state: AtomicU8,
    /// The client-side query deadline (`Options::query_timeout`), in ms; 0: none.
    query_timeout_ms: AtomicU64,
    /// When the oldest request still due was sent, or the last answer arrived (`now_ms`); 0
    /// when nothing is due. Kept only with a query deadline.
    busy_since: AtomicU64,
    /// The query deadline passed: the stream answers what is due itself and takes no more.
    expired: AtomicBool,
    /// The connection task's read waker, kept while a query deadline is set.
    waker: Mutex<Option<Waker>>,
    /// Wakes the watchdog when a request is sent on an idle connection.
    became_busy: tokio::sync::Notify,
}

/// In use, or idle in the pool after a clean return.
const HELD: u8 = 0;
/// Returned with a request still due: it may still finish by itself.
const ABANDONED: u8 = 1;
/// A cancel request was (or is being) sent for it: it must never be handed out again, or a
/// late cancel could stop the next user's statement.
const POISONED: u8 = 2;

/// What the pool should do with an idle connection before handing it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing due, no transaction open: hand it out.
    Ready,
    /// Nothing due, but its last user left a transaction open: roll it back first.
    InTransaction,
    /// Its last user abandoned a request that is still running: cancel it and replace the
    /// connection (this call made the decision, so it sends the cancel).
    CancelAndReplace,
    /// Already cancelled by someone else: replace it.
    Replace,
}

impl Session {
    /// Sets the client-side query deadline (before the connection is handed out).
    pub(crate) fn set_query_timeout(&self, timeout: Duration) {
        self.query_timeout_ms
            .store(timeout.as_millis().max(1) as u64, Ordering::Release);
    }

    /// The client-side query deadline, if one is set.
    pub(crate) fn query_timeout(&self) -> Option<Duration> {
        match self.query_timeout_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether the query deadline passed (the connection is retired).
    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Keeps the read waker, so that an expired deadline can wake the connection's task.
    pub(crate) fn keep_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Waits until the oldest request due has had no answer for the query deadline, then
    /// marks the session expired (and poisoned: never handed out again) and wakes the
    /// connection's task. Runs in the connection's task while a deadline is set.
    pub(crate) async fn watch(&self) {
        let Some(timeout) = self.query_timeout() else {
            return std::future::pending().await;
        };
        let limit = timeout.as_millis() as u64;
        loop {
            let since = self.busy_since.load(Ordering::Acquire);
            if since == 0 {
                self.became_busy.notified().await;
                continue;
            }
            let now = now_ms();
            if now < since + limit {
                tokio::time::sleep(Duration::from_millis(since + limit - now)).await;
                continue;
            }
            self.state.store(POISONED, Ordering::Release);
            self.expired.store(true, Ordering::Release);
            if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
            return;
        }
    }

    fn sent_request(&self) {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before <= 0 && self.query_timeout_ms.load(Ordering::Relaxed) != 0 {
            self.busy_since.store(now_ms(), Ordering::Release);
            self.became_busy.notify_one();
        }
    }

    fn got_ready(&self, status: u8) {
        self.transaction.store(status, Ordering::Release);
        let before = self.pending.fetch_sub(1, Ordering::AcqRel);
        if self.query_timeout_ms.load(Ordering::Relaxed) != 0 {
            // Progress: the next request due gets a full deadline of its own.
            let since = if before > 1 { now_ms() } else { 0 };
            self.busy_since.store(since, Ordering::Release);
        }
    }

    /// Requests still awaiting their `ReadyForQuery`.
    pub(crate) fn pending(&self) -> i64 {
        self.pending.load(Ordering::Acquire)
    }

    /// Called when the user gives the connection back: true when it was abandoned with a
    /// request in flight (the caller then arranges for a cancel after a grace period).
    pub(crate) fn returned(&self) -> bool {
        // A poisoned connection (already cancelled, or past its query deadline) stays so.
        self.pending() > 0
            && self
                .state
                .compare_exchange(HELD, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// After the grace period: true when the request is still running and this call is the
    /// one that must cancel it (the connection is poisoned from now on).
    pub(crate) fn cancel_if_still_running(&self) -> bool {
        self.pending() > 0
            && self
                .state
                .compare_exchange(ABANDONED, POISONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// At checkout: whether the connection can be handed out, and what to do first.
    pub(crate) fn verdict(&self) -> Verdict {
        match self.state.load(Ordering::Acquire) {
            HELD => {}
            POISONED => return Verdict::Replace,
            _ => {
                if self.pending() > 0 {
                    return if self
                        .state
                        .compare_exchange(ABANDONED, POISONED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        Verdict::CancelAndReplace
                    } else {
                        Verdict::Replace
                    };
                }
                // It finished by itself: take it back unless a cancel was sent meanwhile.
                if self
                    .state
                    .compare_exchange(ABANDONED, HELD, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return Verdict::Replace;
                }
            }
        }
        match self.transaction.load(Ordering::Acquire) {
            b'T' | b'E' => Verdict::InTransaction,
            _ => Verdict::Ready,
        }
    }
}

/// Finds message boundaries in one direction of the protocol and reports each message's type
/// (and, for `ReadyForQuery`, its status byte) to the session. Owned by the stream.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    /// The header being read: type, 4-byte length, and one body byte for `Z`.
    header: [u8; 6],
    have: usize,
    /// Body bytes of the current message still to skip.
    skip: usize,
    /// The client's first message (the startup message) has no type byte.
    started: bool,
}

impl Framer {
    /// Bytes the client wrote (after TLS): counts the requests that await a `ReadyForQuery`.
    pub(crate) fn wrote(&mut self, session: &Session, data: &[u8]) {
        self.feed(data, !self.started, |ty, _| {
            if matches!(ty, b'Q' | b'S' | b'F' | 0) {
                session.sent_request();
            }
        });
    }

    /// Bytes read from the server: each `ReadyForQuery` ends a request.
    pub(crate) fn read(&mut self, session: &Session, data: &[u8]) {
        self.feed(data, false, |ty, status| {
            if ty == b'Z' {
                session.got_ready(status);
            }
        });
    }

    /// Whether the stream is between two messages (nothing half read).
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }

    /// Walks `data`; `untyped` when the next message is the startup message (reported as
    /// type 0).
    fn feed(&mut self, mut data: &[u8], mut untyped: bool, mut on: impl FnMut(u8, u8)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            // The common case: a whole header (and `Z`'s status byte) in `data`, read in place.
            if self.have == 0 && !untyped && data.len() >= 6 {
                let ty = data[0];
                let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                on(ty, data[5]);
                // As below: the header (with `Z`'s status byte), then the rest of the length.
                let total = len.saturating_add(1).max(if ty == b'Z' { 6 } else { 5 });
                let n = total.min(data.len());
                self.skip = total - n;
                data = &data[n..];
                continue;
            }
            // The startup message: a 4-byte length, no type.
            let (offset, need) = if untyped {
                (1, 5)
            } else if self.have >= 1 && self.header[0] == b'Z' {
                (0, 6)
            } else {
                (0, 5)
            };
            let at = self.have + offset;
            let n = (need - at).min(data.len());
            self.header[at..at + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have + offset < need {
                continue;
            }
            if need == 5 && !untyped && self.header[0] == b'Z' {
                continue; // read the status byte too
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            let ty = if untyped { 0 } else { self.header[0] };
            // The length counts itself (4 bytes) and, for `Z`, the status byte read here.
            self.skip = len.saturating_sub(need - 1);
            self.have = 0;
            on(ty, self.header[5]);
            if untyped {
                untyped = false;
                self.started = true;
            }
        }
    }
}

/// What the stream answers for each request still due when the query deadline passed: an
/// `ErrorResponse` (SQLSTATE 57014 query_canceled, with a message naming the deadline) and a
/// `ReadyForQuery`, so that every caller waiting gets a readable error at once. The server never
/// sent these: the connection is retired, and its statement cancelled, right after.
pub(crate) fn deadline_answers(pending: i64, timeout: Duration) -> Vec<u8> {
    let message = format!(
        "canceling statement due to the client-side query_timeout of {:.1}s: no answer came in time (neon-connect cancelled it and retired the connection)",
        timeout.as_secs_f64()
    );
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "57014"),
        (b'M', &message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::new();
    for _ in 0..pending.max(1) {
        out.push(b'E');
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\x00alex\x00\x00";
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn requests_and_ready_for_query_balance_even_split_into_single_bytes() {
        let s = Session::default();
        let (mut w, mut r) = (Framer::default(), Framer::default());
        let mut client = startup();
        client.extend(msg(b'p', b"secret\x00"));
        for b in &client {
            w.wrote(&s, std::slice::from_ref(b));
        }
        assert_eq!(s.pending(), 1, "the startup awaits its ReadyForQuery");
        let mut server = msg(b'R', &0u32.to_be_bytes());
        server.extend(msg(b'S', b"TimeZone\x00UTC\x00"));
        server.extend(msg(b'Z', b"I"));
        for b in &server {
            r.read(&s, std::slice::from_ref(b));
        }
        assert_eq!(s.pending(), 0);
        assert_eq!(s.verdict(), Verdict::Ready);

        // Extended protocol: Parse, Bind, Execute, Sync; and a simple BEGIN.
        let mut req = msg(b'P', b"\x00SELECT 1\x00\x00\x00");
        req.extend(msg(b'B', b"\x00\x00\x00\x00\x00\x00\x00"));
        req.extend(msg(b'E', b"\x00\x00\x00\x00\x00"));
        req.extend(msg(b'S', b""));
        req.extend(msg(b'Q', b"BEGIN\x00"));
        w.wrote(&s, &req);
        assert_eq!(s.pending(), 2);
        r.read(&s, &msg(b'Z', b"I"));
        assert_eq!(s.pending(), 1);
        assert!(s.returned(), "returned with BEGIN still due: abandoned");
        r.read(&s, &msg(b'Z', b"T"));
        assert_eq!(
            s.verdict(),
            Verdict::InTransaction,
            "finished by itself, in a transaction"
        );
    }

    #[test]
    fn whole_buffers_and_single_bytes_count_the_same() {
        let mut server = msg(b'R', &0u32.to_be_bytes());
        server.extend(msg(b'2', b""));
        server.extend(msg(b'D', b"\x00\x01\x00\x00\x00\x011"));
        server.extend(msg(b'C', b"SELECT 1\x00"));
        server.extend(msg(b'Z', b"T"));
        server.extend(msg(b'Z', b"I"));
        // A malformed length (under 4) is skipped like the byte-by-byte path does.
        server.extend([b'X', 0, 0, 0, 1]);
        server.extend(msg(b'Z', b"E"));
        for chunk in [1, 2, 5, 6, 7, 64, server.len()] {
            let (s, mut r) = (Session::default(), Framer::default());
            for part in server.chunks(chunk) {
                r.read(&s, part);
            }
            assert_eq!(s.pending(), -3, "chunks of {chunk}");
            assert_eq!(
                s.transaction.load(Ordering::Acquire),
                b'E',
                "chunks of {chunk}"
            );
            assert!(r.at_boundary(), "chunks of {chunk}");
        }
    }

    #[test]
    fn an_abandoned_request_is_cancelled_once_and_never_handed_out_again() {
        let s = Session::default();
        let mut w = Framer::default();
        w.wrote(&s, &startup());
        assert!(s.returned());
        assert!(s.cancel_if_still_running(), "the janitor cancels");
        assert!(!s.cancel_if_still_running(), "only once");
        assert_eq!(s.verdict(), Verdict::Replace);

        let s = Session::default();
        let mut w = Framer::default();
        w.wrote(&s, &startup());
        assert!(s.returned());
        assert_eq!(
            s.verdict(),
            Verdict::CancelAndReplace,
            "checkout cancels first"
        );
        assert!(
            !s.cancel_if_still_running(),
            "and the janitor does not again"
        );
    }
}
