//! A scripted stand-in for Neon's proxy, for tests of what a client does when Neon answers
//! with one of its own errors (all sent with SQLSTATE `XX000`).
//!
//! It answers the TLS request with `S`, completes a real TLS handshake with a certificate for
//! `localhost` and `127.0.0.1` from [`TestCa::shared`](super::TestCa::shared), records the
//! server name (SNI) the client sent, reads the startup message and then follows its
//! [`Script`]. Like Neon, a client that sent no SNI (an IP address host) is first asked for a
//! cleartext password and then told that the endpoint ID is not specified.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Neon's exact text when it cannot tell the endpoint (no SNI, no `options=endpoint=`).
pub const ENDPOINT_NOT_SPECIFIED: &str = "Endpoint ID is not specified. Either please upgrade the postgres client library (libpq) for SNI support or pass the endpoint ID (first part of the domain name) as a parameter: '?options=endpoint%3D<endpoint-id>'. See more at https://neon.tech/sni";

/// What the fake proxy does after the startup message.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answer every connection with an `ErrorResponse` (`ERROR`, `XX000`, this text), as
    /// Neon's proxy does for its own errors.
    Error(String),
    /// Answer the first `n` connections with an error (`code`, `message`), then pass the
    /// following ones, untouched and still encrypted end to end, to `upstream` on 127.0.0.1.
    FailThenRelay {
        /// How many connections fail.
        n: usize,
        /// The SQLSTATE.
        code: String,
        /// The message.
        message: String,
        /// The real server's port.
        upstream: u16,
    },
    /// Like Neon without SNI: ask for a cleartext password, read it, then answer
    /// [`ENDPOINT_NOT_SPECIFIED`]. With SNI, answer `Error(other)`.
    RequireSni {
        /// The error for clients that did send SNI.
        other: String,
    },
    /// Offer SCRAM-SHA-256 without the channel-binding variant (SCRAM-SHA-256-PLUS), as a
    /// pooler that terminates TLS does, and hang up if the client goes on.
    ScramWithoutPlus,
    /// Answer the startup message with a message whose length field is invalid (2: less than
    /// the 4 bytes of the length itself), as a broken proxy or a non-PostgreSQL server might.
    InvalidLength,
}

/// A running fake proxy on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct FakeNeonProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    server_names: Arc<Mutex<Vec<Option<String>>>>,
    passwords_seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNeonProxy {
    /// Starts the proxy on a free port. Call from within a tokio runtime.
    ///
    /// # Errors
    /// When the certificate cannot be made or the port cannot be bound.
    pub async fn start(script: Script) -> io::Result<FakeNeonProxy> {
        let acceptor = super::localhost_tls_acceptor()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let server_names = Arc::new(Mutex::new(Vec::new()));
        let passwords_seen = Arc::new(AtomicUsize::new(0));
        let (count, names, passwords) = (
            connections.clone(),
            server_names.clone(),
            passwords_seen.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, script, names, passwords) = (
                    acceptor.clone(),
                    script.clone(),
                    names.clone(),
                    passwords.clone(),
                );
                tokio::spawn(async move {
                    if let Script::FailThenRelay {
                        n: fails, upstream, ..
                    } = &script
                    {
                        if n >= *fails {
                            if let Ok(mut s) =
                                tokio::net::TcpStream::connect(("127.0.0.1", *upstream)).await
                            {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut s).await;
                            }
                            return None;
                        }
                    }
                    let mut ssl_request = [0u8; 8];
                    client.read_exact(&mut ssl_request).await.ok()?;
                    client.write_all(b"S").await.ok()?;
                    let mut tls = acceptor.accept(client).await.ok()?;
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    names
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(sni.clone());
                    read_message(&mut tls, false).await?;
                    let (code, message) = match script {
                        Script::Error(m) => ("XX000".to_string(), m),
                        Script::FailThenRelay { code, message, .. } => (code, message),
                        Script::RequireSni { other } if sni.is_some() => {
                            ("XX000".to_string(), other)
                        }
                        Script::InvalidLength => {
                            tls.write_all(&[b'R', 0, 0, 0, 2]).await.ok()?;
                            tls.flush().await.ok()?;
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            return tls.shutdown().await.ok();
                        }
                        Script::ScramWithoutPlus => {
                            let mut sasl = vec![b'R', 0, 0, 0, 0, 0, 0, 0, 10];
                            sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
                            let len = (sasl.len() as i32 - 1).to_be_bytes();
                            sasl[1..5].copy_from_slice(&len);
                            tls.write_all(&sasl).await.ok()?;
                            let _ = read_message(&mut tls, true).await;
                            return tls.shutdown().await.ok();
                        }
                        Script::RequireSni { .. } => {
                            // AuthenticationCleartextPassword, then the client's PasswordMessage.
                            tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await.ok()?;
                            if read_message(&mut tls, true).await.is_some() {
                                passwords.fetch_add(1, Ordering::SeqCst);
                            }
                            ("XX000".to_string(), ENDPOINT_NOT_SPECIFIED.to_string())
                        }
                    };
                    tls.write_all(&error_response(&code, &message)).await.ok()?;
                    tls.shutdown().await.ok()
                });
            }
        });
        Ok(FakeNeonProxy {
            port,
            connections,
            server_names,
            passwords_seen,
            task,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many TCP connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The SNI each TLS connection carried (`None`: no SNI), in order.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many clients sent a password after a cleartext request.
    pub fn cleartext_passwords(&self) -> usize {
        self.passwords_seen.load(Ordering::SeqCst)
    }
}

impl Drop for FakeNeonProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one message: the startup message (no type byte) or a typed message.
async fn read_message<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    typed: bool,
) -> Option<Vec<u8>> {
    if typed {
        s.read_u8().await.ok()?;
    }
    let len = usize::try_from(s.read_i32().await.ok()?).ok()?;
    let mut body = vec![0u8; len.checked_sub(4)?.min(1 << 20)];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// An `ErrorResponse` with severity `ERROR`.
pub fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut reply = vec![b'E'];
    reply.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    reply.extend_from_slice(&fields);
    reply
}
