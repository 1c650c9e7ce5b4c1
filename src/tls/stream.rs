//! The connector tokio-postgres drives: the TLS request or direct TLS, the rustls handshake,
//! the checks around it (injected plaintext, ALPN), and what it records for errors and
//! `ConnectionInfo` (the step reached, the negotiated parameters, the authentication method).

use super::session::{Framer, Session};
use super::{lock, TlsPolicy, Verification};
use crate::error::Step;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What was negotiated on a TLS connection. Its `Debug` summarises the peer certificates
/// (subject, SHA-256 fingerprint, size) instead of printing their DER.
#[derive(Clone)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub protocol: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The ALPN protocol the server chose, if any.
    pub alpn: Option<String>,
    /// Whether the server name was sent (SNI). Never for IP addresses, or with `sslsni=0`.
    pub sni_sent: bool,
    /// Whether the TLS handshake started directly (`sslnegotiation=direct`).
    pub direct: bool,
    /// What was verified.
    pub verification: Verification,
    /// Which roots the certificate was verified against, in words.
    pub roots: String,
    /// The digest usable for SCRAM channel binding (`tls-server-end-point`), if any.
    pub channel_binding_digest: Option<&'static str>,
    /// The certificate chain the server presented (DER), leaf first.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsInfo")
            .field("protocol", &self.protocol)
            .field("cipher_suite", &self.cipher_suite)
            .field("alpn", &self.alpn)
            .field("sni_sent", &self.sni_sent)
            .field("direct", &self.direct)
            .field("verification", &self.verification)
            .field("roots", &self.roots)
            .field("channel_binding_digest", &self.channel_binding_digest)
            .field(
                "peer_certificates",
                &CertChain(self.peer_certificates.as_slice()),
            )
            .finish()
    }
}

/// A certificate chain in `Debug`: one line per certificate.
struct CertChain<'a>(&'a [CertificateDer<'static>]);

impl fmt::Debug for CertChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| CertLine(c.as_ref())))
            .finish()
    }
}

/// `"CN=localhost (sha256:1a2b3c4d5e6f7a8b, 812 bytes)"`.
struct CertLine<'a>(&'a [u8]);

impl fmt::Debug for CertLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        use x509_cert::der::Decode;
        let subject = x509_cert::Certificate::from_der(self.0)
            .map(|c| c.tbs_certificate.subject.to_string())
            .unwrap_or_else(|_| "(unparsable certificate)".to_string());
        let digest = sha2::Sha256::digest(self.0);
        let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "\"{subject} (sha256:{short}, {} bytes)\"", self.0.len())
    }
}

/// Per-attempt progress, so a timeout or failure can name the step it happened at, and what
/// the attempt negotiated.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    state: Mutex<ProbeState>,
    /// The protocol session, once the connection is up (what the pool checks at checkout).
    pub(crate) session: Session,
}

#[derive(Debug, Default)]
struct ProbeState {
    step: Option<Step>,
    tls: Option<TlsInfo>,
    authentication: Option<&'static str>,
}

impl Probe {
    pub(crate) fn set_step(&self, step: Step) {
        lock(&self.state).step = Some(step);
    }
    pub(crate) fn step(&self) -> Option<Step> {
        lock(&self.state).step
    }
    pub(crate) fn tls_info(&self) -> Option<TlsInfo> {
        lock(&self.state).tls.clone()
    }
    /// The authentication method the server asked for (and, for SASL, the mechanism the
    /// client chose), once authentication has finished.
    pub(crate) fn authentication(&self) -> Option<&'static str> {
        lock(&self.state).authentication
    }
}

/// What the connect phase may read from the server, in all (announced lengths included):
/// legitimate servers send a few kilobytes before ReadyForQuery. Without a limit,
/// tokio-postgres buffers whatever a hostile peer announces (a 100 MB ErrorResponse took the
/// process to 211 MB; a 2 GB announcement to 1.06 GB).
pub(crate) const CONNECT_PHASE_LIMIT: usize = 4 << 20;

/// The error raised when the server sends (or announces) more than [`CONNECT_PHASE_LIMIT`]
/// before the connection is ready.
#[derive(Debug)]
pub(crate) struct ConnectPhaseLimit {
    /// The message type byte (`E` for ErrorResponse, ...).
    pub(crate) message: u8,
    /// The message's size as announced by its header.
    pub(crate) announced: usize,
    /// Authentication (true) or startup after it (false).
    pub(crate) during_authentication: bool,
}

impl fmt::Display for ConnectPhaseLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.message {
            b'E' => "an ErrorResponse".to_string(),
            b'N' => "a NoticeResponse".to_string(),
            b'R' => "an authentication request".to_string(),
            b'S' => "a ParameterStatus".to_string(),
            other if other.is_ascii_graphic() => format!("a message of type '{}'", other as char),
            other => format!("a message of type 0x{other:02x}"),
        };
        write!(
            f,
            "the server sent {what} of {} bytes during {}, past the {} MiB the connect phase may read",
            self.announced,
            if self.during_authentication {
                "authentication"
            } else {
                "startup"
            },
            CONNECT_PHASE_LIMIT >> 20
        )
    }
}
impl std::error::Error for ConnectPhaseLimit {}

/// Watches the protocol messages of a new connection until ReadyForQuery: to learn the
/// authentication method used (the server's `AuthenticationRequest` codes, and for SASL the
/// mechanism name at the start of the client's `SASLInitialResponse`), and to keep what the
/// connect phase reads under [`CONNECT_PHASE_LIMIT`] (message headers are checked before the
/// driver sees them). Nothing else of the traffic is looked at or kept (no password, no
/// SCRAM data).
struct AuthSniffer {
    probe: Arc<Probe>,
    /// The header of the server message being read: type, length and (for `R`) the code.
    header: [u8; 9],
    have: usize,
    /// Body bytes of the current server message still to skip.
    skip: usize,
    /// Bytes of the server messages before the current one.
    consumed: usize,
    /// The method asked for so far.
    method: Option<&'static str>,
    /// The server asked for SASL: the client's next message names the mechanism.
    sasl_pending: bool,
    /// AuthenticationOk was seen.
    authenticated: bool,
}

impl AuthSniffer {
    fn new(probe: Arc<Probe>) -> Box<AuthSniffer> {
        Box::new(AuthSniffer {
            probe,
            header: [0; 9],
            have: 0,
            skip: 0,
            consumed: 0,
            method: None,
            sasl_pending: false,
            authenticated: false,
        })
    }

    /// Feeds bytes read from the server; `Ok(true)` when the connect phase is over
    /// (ReadyForQuery), an error when the server goes past the limit.
    fn read(&mut self, mut data: &[u8]) -> Result<bool, ConnectPhaseLimit> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let need = if self.have >= 5 && self.header[0] == b'R' {
                9
            } else {
                5
            };
            let n = (need - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < need {
                continue;
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if need == 5 {
                // First sight of this header: refuse before the driver reserves room for it.
                if self.consumed.saturating_add(1 + len) > CONNECT_PHASE_LIMIT {
                    return Err(ConnectPhaseLimit {
                        message: self.header[0],
                        announced: 1 + len,
                        during_authentication: !self.authenticated,
                    });
                }
                if self.header[0] == b'R' && len >= 8 {
                    continue; // read the code too
                }
            }
            self.consumed += 1 + len;
            self.have = 0;
            self.skip = len.saturating_sub(need - 1);
            match self.header[0] {
                b'R' if need == 9 => {
                    let code = u32::from_be_bytes([
                        self.header[5],
                        self.header[6],
                        self.header[7],
                        self.header[8],
                    ]);
                    match code {
                        0 => {
                            let method = self.method.unwrap_or("trust (no password asked)");
                            lock(&self.probe.state).authentication = Some(method);
                            self.authenticated = true;
                        }
                        3 => self.method = Some("password (cleartext, inside TLS)"),
                        5 => self.method = Some("MD5"),
                        10 => {
                            self.method = Some("SASL");
                            self.sasl_pending = true;
                        }
                        _ => {}
                    }
                }
                b'Z' => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Looks at bytes the client writes: only the mechanism name of `SASLInitialResponse`.
    fn write(&mut self, data: &[u8]) {
        if !self.sasl_pending || data.first() != Some(&b'p') || data.len() < 5 {
            return;
        }
        self.sasl_pending = false;
        let name = &data[5..];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        self.method = match name {
            b"SCRAM-SHA-256-PLUS" => Some("SCRAM-SHA-256-PLUS (with channel binding)"),
            b"SCRAM-SHA-256" => Some("SCRAM-SHA-256 (without channel binding)"),
            _ => Some("SASL"),
        };
    }
}

/// The error our TLS layer raises when the server sent bytes between its `S` answer and the
/// TLS handshake: they were not encrypted, so they may have been injected (CVE-2021-23222).
#[derive(Debug)]
pub(crate) struct UnencryptedDataAfterSslResponse;

impl fmt::Display for UnencryptedDataAfterSslResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("received unencrypted data after SSL response")
    }
}
impl std::error::Error for UnencryptedDataAfterSslResponse {}

/// The error raised with `sslcertmode=require` when the handshake ended without the server
/// asking for a client certificate (libpq's text).
#[derive(Debug)]
pub(crate) struct CertificateNotRequested;

impl fmt::Display for CertificateNotRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server did not request an SSL certificate")
    }
}
impl std::error::Error for CertificateNotRequested {}

/// Records whether the server asked for a client certificate: rustls consults the resolver
/// only when a CertificateRequest arrives (libpq does the same with OpenSSL's cert callback).
#[derive(Debug)]
struct RecordsRequest {
    inner: Arc<dyn rustls::client::ResolvesClientCert>,
    asked: Arc<AtomicBool>,
}

impl rustls::client::ResolvesClientCert for RecordsRequest {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.inner.resolve(root_hint_subjects, sigschemes)
    }
    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
    // True even without a certificate, so that rustls keeps what a request needs.
    fn has_certs(&self) -> bool {
        true
    }
}

/// The error raised when direct TLS ends without ALPN `postgresql`.
#[derive(Debug)]
pub(crate) struct MissingAlpn(pub(crate) Option<Vec<u8>>);

impl fmt::Display for MissingAlpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str(
                "direct SSL connection was established without ALPN protocol negotiation extension",
            ),
            Some(p) => write!(
                f,
                "SSL connection was established with unexpected ALPN protocol \"{}\"",
                String::from_utf8_lossy(p)
            ),
        }
    }
}
impl std::error::Error for MissingAlpn {}

/// tokio-postgres's `MakeTlsConnect` for one connection attempt.
#[derive(Clone)]
pub(crate) struct MakeTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) policy: Arc<TlsPolicy>,
    pub(crate) probe: Arc<Probe>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = TlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> io::Result<TlsConnector> {
        // tokio-postgres calls this right after the TCP connect, before the SSLRequest.
        self.probe.set_step(Step::TlsRequest);
        // The name is checked in `connect`: for a Unix socket it is empty and never used.
        Ok(TlsConnector {
            config: self.config.clone(),
            policy: self.policy.clone(),
            probe: self.probe.clone(),
            hostname: hostname.to_string(),
        })
    }
}

/// tokio-postgres's `TlsConnect`: checks for injected plaintext, runs the rustls handshake,
/// checks ALPN for direct TLS and records what was negotiated.
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
    policy: Arc<TlsPolicy>,
    probe: Arc<Probe>,
    hostname: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tokio_postgres::tls::TlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<TlsStream<S>>>;

    fn connect(self, mut stream: S) -> Self::Future {
        Box::pin(async move {
            self.probe.set_step(Step::TlsHandshake);
            // The system roots, loading in the background since the connector was built, are
            // needed from here on (the certificate check); the connect path reports their error.
            self.policy.roots_ready().await.map_err(io::Error::other)?;
            let server_name = ServerName::try_from(self.hostname)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            if !self.policy.direct && has_pending_bytes(&mut stream) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    UnencryptedDataAfterSslResponse,
                ));
            }
            let sni_sent = self.config.enable_sni && matches!(server_name, ServerName::DnsName(_));
            // `sslcertmode=require`: a copy of the shared configuration whose certificate
            // resolver records, for this connection only, whether the server asked.
            let asked = Arc::new(AtomicBool::new(false));
            let config = if self.policy.cert_required {
                let mut config = (*self.config).clone();
                config.client_auth_cert_resolver = Arc::new(RecordsRequest {
                    inner: config.client_auth_cert_resolver.clone(),
                    asked: asked.clone(),
                });
                Arc::new(config)
            } else {
                self.config.clone()
            };
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, stream)
                .await?;
            if self.policy.cert_required && !asked.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    CertificateNotRequested,
                ));
            }
            let (_, session) = tls.get_ref();
            if self.policy.direct {
                match session.alpn_protocol() {
                    Some(b"postgresql") => {}
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            MissingAlpn(other.map(<[u8]>::to_vec)),
                        ))
                    }
                }
            }
            let peer: Vec<CertificateDer<'static>> = session
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let binding = peer.first().and_then(|leaf| binding_digest(leaf));
            let info = TlsInfo {
                protocol: session
                    .protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown")
                    .replace("TLSv1_", "TLSv1."),
                cipher_suite: session
                    .negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str())
                    .unwrap_or("unknown")
                    .to_string(),
                alpn: session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                sni_sent,
                direct: self.policy.direct,
                verification: self.policy.verification,
                roots: self.policy.roots.describe(),
                channel_binding_digest: binding.map(|(name, _)| name),
                peer_certificates: peer,
            };
            {
                let mut state = lock(&self.probe.state);
                state.step = Some(Step::Authentication);
                state.tls = Some(info);
            }
            Ok(TlsStream {
                inner: tls,
                binding: binding.map(|(_, d)| d),
                sniff: Some(AuthSniffer::new(self.probe.clone())),
                probe: self.probe.clone(),
                wrote: Framer::default(),
                read: Framer::default(),
                answers: None,
            })
        })
    }
}

/// Whether bytes are already waiting on `stream` (polled once, without blocking).
fn has_pending_bytes<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(stream).poll_read(&mut cx, &mut buf) {
        Poll::Ready(Ok(())) => !buf.filled().is_empty(),
        // An error or EOF: the handshake that follows reports it.
        Poll::Ready(Err(_)) | Poll::Pending => false,
    }
}

#[derive(Clone, Copy)]
enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

/// The `tls-server-end-point` digest for the leaf certificate (RFC 5929 §4.1): the hash of
/// its signature algorithm, SHA-1 upgraded to SHA-256; none for Ed25519 and the like.
fn binding_digest(leaf: &CertificateDer<'_>) -> Option<(&'static str, Digest)> {
    use x509_cert::der::oid::db::rfc5912::*;
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).ok()?;
    let oid = cert.signature_algorithm.oid;
    if [
        ID_SHA_1,
        ID_SHA_256,
        SHA_1_WITH_RSA_ENCRYPTION,
        SHA_256_WITH_RSA_ENCRYPTION,
        ECDSA_WITH_SHA_256,
    ]
    .contains(&oid)
    {
        Some(("SHA-256", Digest::Sha256))
    } else if [ID_SHA_384, SHA_384_WITH_RSA_ENCRYPTION, ECDSA_WITH_SHA_384].contains(&oid) {
        Some(("SHA-384", Digest::Sha384))
    } else if [ID_SHA_512, SHA_512_WITH_RSA_ENCRYPTION, ECDSA_WITH_SHA_512].contains(&oid) {
        Some(("SHA-512", Digest::Sha512))
    } else {
        None
    }
}

/// The TLS stream under a connection opened by this crate (rustls), with channel binding data.
pub struct TlsStream<S> {
    inner: tokio_rustls::client::TlsStream<S>,
    binding: Option<Digest>,
    /// Until ReadyForQuery: learns the authentication method and bounds what the connect
    /// phase reads (see [`AuthSniffer`]).
    sniff: Option<Box<AuthSniffer>>,
    /// Where the session state goes (see [`Session`]).
    probe: Arc<Probe>,
    wrote: Framer,
    read: Framer,
    /// Once the query deadline passed: what is left to hand to the driver in the server's place.
    answers: Option<Vec<u8>>,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        use sha2::Digest as _;
        let (_, session) = self.inner.get_ref();
        let leaf = session.peer_certificates().and_then(|c| c.first());
        match (leaf, self.binding) {
            (Some(leaf), Some(d)) => {
                tokio_postgres::tls::ChannelBinding::tls_server_end_point(match d {
                    Digest::Sha256 => sha2::Sha256::digest(leaf).to_vec(),
                    Digest::Sha384 => sha2::Sha384::digest(leaf).to_vec(),
                    Digest::Sha512 => sha2::Sha512::digest(leaf).to_vec(),
                })
            }
            _ => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

impl<S> TlsStream<S> {
    /// After the query deadline passed: the answers the server did not give (see
    /// `session::deadline_answers`), then nothing more; the real socket is not read again.
    fn answer_for_the_server(&mut self, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let session = &self.probe.session;
        let answers = match &mut self.answers {
            Some(a) => a,
            None if !self.read.at_boundary() => {
                // Half a server message was already passed on: no clean answer is possible.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client-side query_timeout passed in the middle of a server message",
                )));
            }
            None => {
                let timeout = session.query_timeout().unwrap_or_default();
                self.answers
                    .insert(super::session::deadline_answers(session.pending(), timeout))
            }
        };
        if answers.is_empty() {
            // Retired: the pool replaces it, and dropping it ends this task.
            return Poll::Pending;
        }
        let n = answers.len().min(buf.remaining());
        buf.put_slice(&answers[..n]);
        answers.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.probe.session.expired() {
            return this.answer_for_the_server(buf);
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if poll.is_pending() && this.probe.session.query_timeout().is_some() {
            this.probe.session.keep_waker(cx.waker());
        }
        if let (Poll::Ready(Ok(())), Some(sniff)) = (&poll, &mut this.sniff) {
            match sniff.read(&buf.filled()[before..]) {
                Ok(false) => {}
                Ok(true) => this.sniff = None,
                Err(limit) => {
                    // The driver never sees these bytes (nor the header that would make it
                    // reserve room for the message).
                    buf.set_filled(before);
                    this.sniff = None;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, limit)));
                }
            }
        }
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.read.read(&this.probe.session, new);
        }
        poll
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.probe.session.expired() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was retired: its client-side query_timeout passed",
            )));
        }
        if let Some(sniff) = &mut self.sniff {
            sniff.write(buf);
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            let this = &mut *self;
            this.wrote.wrote(&this.probe.session, &buf[..n]);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.probe.session.expired() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was retired: its client-side query_timeout passed",
            )));
        }
        if let Some(sniff) = &mut self.sniff {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                sniff.write(first);
            }
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = poll {
            let this = &mut *self;
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                this.wrote.wrote(&this.probe.session, &b[..take]);
                n -= take;
            }
        }
        poll
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
