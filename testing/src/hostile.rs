//! Scripted hostile peers on 127.0.0.1, for tests of the crate's security promises: a server
//! that refuses TLS, one that injects plaintext after agreeing to TLS, one that answers the
//! TLS request with an error, and a TLS-terminating relay (a man in the middle holding a
//! certificate the client trusts).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a [`HostilePeer`] answers the 8-byte TLS request (SSLRequest).
#[derive(Debug, Clone)]
pub enum Answer {
    /// `N`: "no TLS here" (a downgrade attempt).
    No,
    /// `S`, immediately followed in the same write by plaintext protocol messages
    /// (AuthenticationOk, ReadyForQuery): the CVE-2021-23222 injection.
    YesThenPlaintext,
    /// An `ErrorResponse` with this text instead of `S` or `N` (CVE-2024-10977: a client must
    /// not show it as if the server said it).
    Error(String),
}

/// A peer that answers the TLS request with an [`Answer`] and records every byte the client
/// sends after its TLS request. Stops when dropped.
#[derive(Debug)]
pub struct HostilePeer {
    port: u16,
    after: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HostilePeer {
    /// Starts the peer on a free port. Call from within a tokio runtime.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(answer: Answer) -> io::Result<HostilePeer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let after = Arc::new(Mutex::new(Vec::new()));
        let log = after.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let mut req = [0u8; 8];
                    s.read_exact(&mut req).await.ok()?;
                    let reply = match answer {
                        Answer::No => b"N".to_vec(),
                        Answer::YesThenPlaintext => {
                            let mut r = b"S".to_vec();
                            r.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]); // AuthenticationOk
                            r.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']); // ReadyForQuery
                            r
                        }
                        Answer::Error(text) => super::neon::error_response("08P01", &text),
                    };
                    s.write_all(&reply).await.ok()?;
                    // Record whatever the client sends next, for a bounded time.
                    let mut buf = [0u8; 4096];
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    loop {
                        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => log
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend_from_slice(&buf[..n]),
                            _ => return Some(()),
                        }
                    }
                });
            }
        });
        Ok(HostilePeer { port, after, task })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every byte clients sent after their TLS request.
    pub fn received_after_tls_request(&self) -> Vec<u8> {
        self.after.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS-terminating relay in front of a real server: it presents its own certificate for
/// `localhost` signed by the trusted [`TestCa::shared`](super::TestCa::shared) (so the client's verification passes),
/// opens its own TLS connection to the server, and relays the decrypted traffic, keeping a
/// copy of what the client sent. Channel binding is what exposes it. Stops when dropped.
#[derive(Debug)]
pub struct InterceptingRelay {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl InterceptingRelay {
    /// Starts the relay in front of the server on 127.0.0.1:`upstream`, whose certificate it
    /// verifies against `upstream_ca_pem`.
    ///
    /// # Errors
    /// When the certificate cannot be made or the port cannot be bound.
    pub async fn start(upstream: u16, upstream_ca_pem: &str) -> io::Result<InterceptingRelay> {
        let provider = super::provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut upstream_ca_pem.as_bytes()) {
            roots.add(c?).map_err(io::Error::other)?;
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = super::localhost_tls_acceptor()?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let (acceptor, connector, log) = (acceptor.clone(), connector.clone(), log.clone());
                tokio::spawn(async move {
                    let _: Option<()> = async move {
                    let mut req = [0u8; 8];
                    c.read_exact(&mut req).await.ok()?;
                    c.write_all(b"S").await.ok()?;
                    let mut down = acceptor.accept(c).await.ok()?;
                    let mut s = TcpStream::connect(("127.0.0.1", upstream)).await.ok()?;
                    s.write_all(&req).await.ok()?;
                    let mut yes = [0u8; 1];
                    s.read_exact(&mut yes).await.ok()?;
                    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
                    let mut up = connector.connect(name, s).await.ok()?;
                    let mut a = [0u8; 8192];
                    let mut b = [0u8; 8192];
                    loop {
                        tokio::select! {
                            n = down.read(&mut a) => {
                                let n = n.ok().filter(|n| *n > 0)?;
                                log.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&a[..n]);
                                up.write_all(&a[..n]).await.ok()?;
                            }
                            n = up.read(&mut b) => {
                                let n = n.ok().filter(|n| *n > 0)?;
                                down.write_all(&b[..n]).await.ok()?;
                            }
                        }
                    }
                    }
                    .await;
                });
            }
        });
        Ok(InterceptingRelay { port, seen, task })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything clients sent through it, decrypted.
    pub fn seen_plaintext(&self) -> Vec<u8> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for InterceptingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A peer that accepts TLS at once (direct TLS, no SSLRequest) with a certificate for
/// `localhost` from [`TestCa::shared`](super::TestCa::shared) but negotiates no ALPN protocol, which a
/// `sslnegotiation=direct` client must refuse. Stops when dropped.
#[derive(Debug)]
pub struct DirectTlsWithoutAlpn {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl DirectTlsWithoutAlpn {
    /// Starts the peer on a free port. Call from within a tokio runtime.
    ///
    /// # Errors
    /// When the certificate cannot be made or the port cannot be bound.
    pub async fn start() -> io::Result<DirectTlsWithoutAlpn> {
        // No `alpn_protocols`: rustls then ignores the client's ALPN offer.
        let acceptor = super::localhost_tls_acceptor()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(tokio::time::timeout(Duration::from_secs(5), async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        let mut buf = [0u8; 1024];
                        let _ = tls.read(&mut buf).await;
                    }
                }));
            }
        });
        Ok(DirectTlsWithoutAlpn { port, task })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DirectTlsWithoutAlpn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an [`OversizedLogin`] peer sends once the client's startup message arrived.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// An ErrorResponse whose message field is this many bytes, streamed in 64 KiB writes.
    Error(usize),
    /// An ErrorResponse header announcing this length, then 1 MiB of its body, then silence.
    Announce(u32),
    /// AuthenticationOk, then ParameterStatus messages of 64 KiB each, this many of them.
    Parameters(usize),
}

/// A peer that agrees to TLS (with a certificate for `localhost` from
/// [`TestCa::shared`](super::TestCa::shared), so verification passes) and then, instead of
/// authenticating, sends a [`Flood`]: what a client must not buffer without bound. Records how
/// many bytes it got out. Stops when dropped.
#[derive(Debug)]
pub struct OversizedLogin {
    port: u16,
    sent: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl OversizedLogin {
    /// Starts the peer on a free port. Call from within a tokio runtime.
    ///
    /// # Errors
    /// When the certificate cannot be made or the port cannot be bound.
    pub async fn start(flood: Flood) -> io::Result<OversizedLogin> {
        let acceptor = super::localhost_tls_acceptor()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let sent = Arc::new(Mutex::new(0usize));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(tokio::time::timeout(Duration::from_secs(30), async move {
                    let mut request = [0u8; 8];
                    if s.read_exact(&mut request).await.is_err() || s.write_all(b"S").await.is_err()
                    {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    // The startup message: its length, then the rest.
                    let mut len = [0u8; 4];
                    if tls.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                    if tls.read_exact(&mut rest).await.is_err() {
                        return;
                    }
                    let _ = flood_out(&mut tls, flood, &counter).await;
                    // Keep the connection open a little: the client must stop by itself.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }));
            }
        });
        Ok(OversizedLogin { port, sent, task })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many bytes of the flood the client accepted (written into the TLS stream).
    pub fn bytes_sent(&self) -> usize {
        *self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn flood_out<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    flood: Flood,
    counter: &Mutex<usize>,
) -> io::Result<()> {
    const CHUNK: usize = 64 << 10;
    let filler = vec![b'x'; CHUNK];
    let send = |n: usize| {
        *counter.lock().unwrap_or_else(|e| e.into_inner()) += n;
    };
    match flood {
        Flood::Error(size) => {
            // 'E', length, 'S' "ERROR\0", 'M' <size bytes> '\0', '\0'
            let len = 4 + 1 + 6 + 1 + size + 1 + 1;
            let mut head = vec![b'E'];
            head.extend_from_slice(&(len as u32).to_be_bytes());
            head.extend_from_slice(b"SERROR\0M");
            w.write_all(&head).await?;
            send(head.len());
            let mut left = size;
            while left > 0 {
                let n = left.min(CHUNK);
                w.write_all(&filler[..n]).await?;
                send(n);
                left -= n;
            }
            w.write_all(b"\0\0").await?;
            send(2);
        }
        Flood::Announce(len) => {
            let mut head = vec![b'E'];
            head.extend_from_slice(&len.to_be_bytes());
            w.write_all(&head).await?;
            send(head.len());
            for _ in 0..16 {
                w.write_all(&filler).await?;
                send(CHUNK);
            }
        }
        Flood::Parameters(count) => {
            w.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await?;
            send(9);
            for i in 0..count {
                let name = format!("p{i}\0");
                let value_len = CHUNK - name.len() - 1;
                let len = 4 + name.len() + value_len + 1;
                let mut msg = vec![b'S'];
                msg.extend_from_slice(&(len as u32).to_be_bytes());
                msg.extend_from_slice(name.as_bytes());
                msg.extend_from_slice(&filler[..value_len]);
                msg.push(0);
                w.write_all(&msg).await?;
                send(msg.len());
            }
        }
    }
    w.flush().await
}

impl Drop for OversizedLogin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
