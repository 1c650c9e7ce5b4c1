//! TLS policy: which sslmode means what, where root certificates come from, and the rustls
//! connector that tokio-postgres uses.
//!
//! Root stores and `ClientConfig`s are built once per process (per distinct policy) and shared
//! by every connection; nothing here reads a file on the connect path.

use crate::config::{ConnectionString, Host, RootCert, SslMode, SslNegotiation, TlsVersion};
use crate::error::{Error, ErrorKind, Step};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How the server's certificate is checked.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verification {
    /// Chain and host name (`verify-full`).
    Full,
    /// Chain only (`verify-ca`, or `require` with a root certificate file, as in libpq).
    Chain,
    /// Not checked: encrypted only (`require`, `prefer` or `allow` without a root certificate file).
    None,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verification::Full => "chain and host name verified",
            Verification::Chain => "chain verified, host name not checked",
            Verification::None => "not verified",
        })
    }
}

/// Where the trusted root certificates come from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Roots {
    /// The platform store via rustls-native-certs (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// A PEM file (`sslrootcert`, `PGSSLROOTCERT`, or `~/.postgresql/root.crt`).
    File(PathBuf),
    /// Certificates given in code; the key is a digest of their DER bytes.
    Custom(Arc<Vec<CertificateDer<'static>>>, [u8; 32]),
    /// No roots: `require` without a root certificate file.
    None,
}

impl Roots {
    /// How to say, in a message, which roots were used.
    pub(crate) fn describe(&self) -> String {
        match self {
            Roots::System => match (
                std::env::var_os("SSL_CERT_FILE"),
                std::env::var_os("SSL_CERT_DIR"),
            ) {
                (Some(file), _) => format!(
                    "the system root store (from SSL_CERT_FILE={})",
                    Path::new(&file).display()
                ),
                (None, Some(dir)) => format!(
                    "the system root store (from SSL_CERT_DIR={})",
                    Path::new(&dir).display()
                ),
                (None, None) => "the system root store".to_string(),
            },
            Roots::File(path) => format!("the root certificate file {}", path.display()),
            Roots::Custom(certs, _) => {
                format!("{} root certificate(s) given in code", certs.len())
            }
            Roots::None => "no root certificates".to_string(),
        }
    }
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The resolved TLS policy for one connection string: what is verified against which roots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsPolicy {
    pub(crate) verification: Verification,
    pub(crate) roots: Roots,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// Direct TLS (`sslnegotiation=direct`, or chosen for Neon hosts when it is not set).
    pub(crate) direct: bool,
    /// `direct` was our choice, not the connection string's: a host that turns out not to
    /// speak direct TLS is tried again with the TLS request (see `Connector`).
    pub(crate) auto_direct: bool,
    pub(crate) sni: bool,
    pub(crate) min_version: Option<TlsVersion>,
    pub(crate) max_version: Option<TlsVersion>,
}

fn warn_once(flag: &'static AtomicBool, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!(target: "neon_connect", "{message}");
    }
}

static WARNED_WEAK: AtomicBool = AtomicBool::new(false);
static WARNED_UNVERIFIED: AtomicBool = AtomicBool::new(false);

impl TlsPolicy {
    /// Applies our policy to the parsed settings. `custom_roots` are roots given in code.
    /// Checks for `~/.postgresql/root.crt` (libpq's default root file), so call it off the
    /// async path or once per pool.
    pub(crate) fn resolve(
        cs: &ConnectionString,
        custom_roots: Option<&Arc<Vec<CertificateDer<'static>>>>,
    ) -> Result<TlsPolicy, Error> {
        let given = cs.sslmode();
        let mode = given.unwrap_or(SslMode::VerifyFull);
        let any_tcp = cs.targets().any(|t| !matches!(t.host, Some(Host::Unix(_))));
        let policy_err = |m: String| Error::new(ErrorKind::TlsPolicy, m).with_step(Step::Config);

        if mode == SslMode::Disable && any_tcp {
            return Err(policy_err(
                "`sslmode=disable` is refused: neon-connect never connects without TLS over TCP"
                    .into(),
            )
            .with_help(
                "remove `sslmode=disable` from the connection string (the default, `verify-full`, \
                 encrypts and checks the server's identity); Neon and other TLS-only servers \
                 refuse unencrypted connections anyway",
            ));
        }
        if cs.sslrootcert() == Some(&RootCert::System)
            && given.is_some()
            && mode != SslMode::VerifyFull
        {
            return Err(policy_err(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                mode.as_str()
            ))
            .with_help(
                "write `sslmode=verify-full`, or leave sslmode out: with `sslrootcert=system` \
                 the server's host name must be checked, as in libpq",
            ));
        }
        let direct = cs.sslnegotiation() == Some(SslNegotiation::Direct)
            || (cs.sslnegotiation().is_none()
                && !matches!(mode, SslMode::Allow | SslMode::Prefer | SslMode::Disable)
                && crate::neon::direct_tls_by_default(cs));
        if direct && matches!(mode, SslMode::Allow | SslMode::Prefer | SslMode::Disable) {
            return Err(policy_err(format!(
                "weak sslmode \"{}\" may not be used with sslnegotiation=direct (use \"require\", \"verify-ca\", or \"verify-full\")",
                mode.as_str()
            ))
            .with_help("write `sslmode=verify-full` (or `require`) next to `sslnegotiation=direct`"));
        }
        if matches!(mode, SslMode::Allow | SslMode::Prefer) {
            warn_once(
                &WARNED_WEAK,
                &format!(
                    "sslmode={} is treated as `require`: the connection is always encrypted and \
                     never falls back to plaintext; use `verify-full` to also check the server's identity",
                    mode.as_str()
                ),
            );
        }

        // Which roots: given in code, then sslrootcert, then libpq's default file, then the system store.
        let explicit_roots = match (custom_roots, cs.sslrootcert()) {
            (Some(certs), _) => Some(Roots::Custom(certs.clone(), digest_certs(certs))),
            (None, Some(RootCert::File(path))) => Some(Roots::File(path.clone())),
            (None, Some(RootCert::System)) => Some(Roots::System),
            (None, None) => default_root_file().map(Roots::File),
        };

        let (verification, roots) = match mode {
            SslMode::VerifyFull => (Verification::Full, explicit_roots.unwrap_or(Roots::System)),
            SslMode::VerifyCa => match explicit_roots {
                Some(roots) => (Verification::Chain, roots),
                None => {
                    return Err(policy_err(
                        "`sslmode=verify-ca` needs a root certificate file, and none was given".into(),
                    )
                    .with_help(
                        "set `sslrootcert=/path/to/ca.pem` (or PGSSLROOTCERT) to your server's CA, \
                         or use `sslmode=verify-full` to check the server against the system root store",
                    ))
                }
            },
            // libpq: `require` verifies like verify-ca when a root file is present.
            _ => match explicit_roots {
                Some(roots) => (Verification::Chain, roots),
                None => {
                    warn_once(
                        &WARNED_UNVERIFIED,
                        "sslmode=require without a root certificate: the connection is encrypted but the \
                         server's certificate is not verified, so an attacker on the network path could \
                         impersonate the server; use `sslmode=verify-full` to verify it",
                    );
                    (Verification::None, Roots::None)
                }
            },
        };

        let client_cert = match (cs.sslcert(), cs.sslkey()) {
            (Some(cert), Some(key)) => Some((cert.to_path_buf(), key.to_path_buf())),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::config(
                    "`sslcert` and `sslkey` must be given together".to_string(),
                )
                .with_help("set both `sslcert=/path/client.crt` and `sslkey=/path/client.key`"))
            }
            (None, None) => None,
        };

        Ok(TlsPolicy {
            verification,
            roots,
            client_cert,
            direct,
            auto_direct: direct && cs.sslnegotiation().is_none(),
            sni: cs.sslsni().unwrap_or(true),
            min_version: cs.ssl_min_protocol_version(),
            max_version: cs.ssl_max_protocol_version(),
        })
    }

    /// The same policy with the TLS request instead of direct TLS.
    pub(crate) fn without_direct(&self) -> TlsPolicy {
        TlsPolicy {
            direct: false,
            auto_direct: false,
            ..self.clone()
        }
    }

    /// The shared rustls configuration for this policy, built on first use.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        static CONFIGS: OnceLock<Mutex<HashMap<TlsPolicy, Arc<ClientConfig>>>> = OnceLock::new();
        let configs = CONFIGS.get_or_init(Default::default);
        if let Some(config) = lock(configs).get(self) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.build_client_config()?);
        Ok(lock(configs).entry(self.clone()).or_insert(config).clone())
    }

    fn build_client_config(&self) -> Result<ClientConfig, Error> {
        let provider = provider();
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| {
            self.min_version.is_none_or(|min| *v >= min)
                && self.max_version.is_none_or(|max| *v <= max)
        })
        .map(|(_, v)| v)
        .collect();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| {
                Error::config("no TLS protocol version is left between the minimum and maximum")
                    .with_source(e)
            })?;

        let verifier: Arc<dyn ServerCertVerifier> = match self.verification {
            Verification::None => Arc::new(NoVerification(provider.clone())),
            Verification::Full | Verification::Chain => {
                let store = root_store(&self.roots)?;
                let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::RootCertificates,
                            "could not build the certificate verifier",
                        )
                        .with_step(Step::Config)
                        .with_source(e)
                    })?;
                if self.verification == Verification::Full {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some((cert, key)) => {
                let (chain, key) = load_client_identity(cert, key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::new(
                        ErrorKind::RootCertificates,
                        format!(
                            "the client certificate {} does not match the key {}",
                            cert.display(),
                            key_path_display(&self.client_cert)
                        ),
                    )
                    .with_step(Step::Config)
                    .with_help("point `sslkey` at the private key that belongs to `sslcert`")
                    .with_source(e)
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        if self.direct {
            config.alpn_protocols = vec![b"postgresql".to_vec()];
        }
        Ok(config)
    }
}

fn key_path_display(pair: &Option<(PathBuf, PathBuf)>) -> String {
    pair.as_ref()
        .map(|(_, k)| k.display().to_string())
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// libpq's default root certificate file, when it exists.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    path.is_file().then_some(path)
}

fn digest_certs(certs: &[CertificateDer<'static>]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in certs {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c.as_ref());
    }
    h.finalize().into()
}

/// The crypto provider: the application's process default when it installed one, otherwise
/// the one our features select (aws-lc-rs over ring when both are on; never a panic).
/// P-256 is moved to the front of the key exchange groups: PostgreSQL up to 17 accepts only
/// P-256 by default, and a first key share it accepts saves a HelloRetryRequest round trip.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = match CryptoProvider::get_default() {
                Some(p) => (**p).clone(),
                None => feature_provider(),
            };
            provider
                .kx_groups
                .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
            Arc::new(provider)
        })
        .clone()
}

#[cfg(feature = "aws-lc-rs")]
fn feature_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
fn feature_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!(
    "neon-connect needs a crypto provider: enable the `ring` (default) or `aws-lc-rs` feature"
);

/// The root store for `roots`, loaded once per process (per file / per set of certificates).
pub(crate) fn root_store(roots: &Roots) -> Result<Arc<RootCertStore>, Error> {
    match roots {
        Roots::System => system_roots(),
        Roots::File(path) => {
            static FILES: OnceLock<Mutex<HashMap<PathBuf, Arc<RootCertStore>>>> = OnceLock::new();
            let files = FILES.get_or_init(Default::default);
            if let Some(store) = lock(files).get(path) {
                return Ok(store.clone());
            }
            let store = Arc::new(load_root_file(path)?);
            lock(files).insert(path.clone(), store.clone());
            Ok(store)
        }
        Roots::Custom(certs, _) => {
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(Error::new(
                    ErrorKind::RootCertificates,
                    "none of the root certificates given in code could be parsed",
                )
                .with_step(Step::Config)
                .with_help("pass DER-encoded X.509 CA certificates (or PEM through `root_certificates_pem`)"));
            }
            Ok(Arc::new(store))
        }
        Roots::None => Ok(Arc::new(RootCertStore::empty())),
    }
}

fn load_root_file(path: &Path) -> Result<RootCertStore, Error> {
    let root_err = |m: String| Error::new(ErrorKind::RootCertificates, m).with_step(Step::Config);
    let data = std::fs::read(path).map_err(|e| {
        root_err(format!("could not read the root certificate file {}", path.display()))
            .with_help(if e.kind() == io::ErrorKind::NotFound {
                "check the `sslrootcert` path (or PGSSLROOTCERT); use `sslrootcert=system` for the system's roots"
            } else {
                "make the file readable by this process"
            })
            .with_source(e)
    })?;
    let certs = rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            root_err(format!(
                "the root certificate file {} is not valid PEM",
                path.display()
            ))
            .with_help("give a PEM file with one or more `-----BEGIN CERTIFICATE-----` blocks")
            .with_source(e)
        })?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(root_err(format!(
            "the root certificate file {} holds no usable certificate",
            path.display()
        ))
        .with_help("give a PEM file with one or more `-----BEGIN CERTIFICATE-----` blocks"));
    }
    Ok(store)
}

fn system_roots() -> Result<Arc<RootCertStore>, Error> {
    static SYSTEM: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    let loaded = SYSTEM.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(result.certs);
        if added > 0 {
            for e in &result.errors {
                tracing::warn!(target: "neon_connect", "while loading the system root store: {e}");
            }
            return Ok(Arc::new(store));
        }
        #[cfg(feature = "webpki-roots")]
        {
            tracing::warn!(
                target: "neon_connect",
                "the system root store is empty; using the Mozilla roots built in by the `webpki-roots` feature"
            );
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "webpki-roots"))]
        {
            let mut tried = Vec::new();
            match std::env::var_os("SSL_CERT_FILE") {
                Some(f) => tried.push(format!("SSL_CERT_FILE={}", Path::new(&f).display())),
                None => tried.push("SSL_CERT_FILE (not set)".into()),
            }
            match std::env::var_os("SSL_CERT_DIR") {
                Some(d) => tried.push(format!("SSL_CERT_DIR={}", Path::new(&d).display())),
                None => tried.push("SSL_CERT_DIR (not set)".into()),
            }
            tried.push("the platform's certificate locations".into());
            let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
            let mut msg = format!(
                "no root certificates were found in the system store (tried {})",
                tried.join(", ")
            );
            if !errors.is_empty() {
                msg.push_str(&format!("; errors: {}", errors.join("; ")));
            }
            Err(msg)
        }
    });
    loaded.clone().map_err(|msg| {
        Error::new(ErrorKind::RootCertificates, msg)
            .with_step(Step::Config)
            .with_help(
                "install the CA bundle (`apt-get install ca-certificates`), set SSL_CERT_FILE to a PEM \
                 bundle, pass `sslrootcert=/path/to/ca.pem`, or enable the `webpki-roots` feature",
            )
    })
}

fn load_client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let id_err = |m: String| Error::new(ErrorKind::RootCertificates, m).with_step(Step::Config);
    let cert_data = std::fs::read(cert).map_err(|e| {
        id_err(format!(
            "could not read the client certificate {}",
            cert.display()
        ))
        .with_help("check the `sslcert` path")
        .with_source(e)
    })?;
    let chain = rustls_pemfile::certs(&mut &cert_data[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            id_err(format!(
                "the client certificate {} is not valid PEM",
                cert.display()
            ))
            .with_source(e)
        })?;
    if chain.is_empty() {
        return Err(id_err(format!(
            "the client certificate {} holds no certificate",
            cert.display()
        ))
        .with_help("give a PEM file with a `-----BEGIN CERTIFICATE-----` block"));
    }
    check_key_permissions(key)?;
    let key_data = std::fs::read(key).map_err(|e| {
        id_err(format!("could not read the client key {}", key.display()))
            .with_help("check the `sslkey` path")
            .with_source(e)
    })?;
    let private = rustls_pemfile::private_key(&mut &key_data[..])
        .map_err(|e| {
            id_err(format!("the client key {} is not valid PEM", key.display())).with_source(e)
        })?
        .ok_or_else(|| {
            id_err(format!(
                "the client key {} holds no private key",
                key.display()
            ))
            .with_help("give a PEM private key (PKCS#8, PKCS#1 or SEC1)")
        })?;
    Ok((chain, private))
}

/// libpq refuses a private key file that group or others can read (0600, or 0640 when owned by root).
#[cfg(unix)]
fn check_key_permissions(key: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(key) else {
        return Ok(()); // the read below reports the real problem
    };
    let mode = meta.mode() & 0o777;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if mode & !allowed != 0 {
        return Err(Error::new(
            ErrorKind::RootCertificates,
            format!(
                "private key file {} has group or world access (mode {:o})",
                key.display(),
                mode
            ),
        )
        .with_step(Step::Config)
        .with_help(format!(
            "run `chmod 600 {}`: like libpq, neon-connect refuses a key others can read",
            key.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_key: &Path) -> Result<(), Error> {
    Ok(())
}

/// `verify-ca`: the chain must verify; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last, so a name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without roots: encrypted, the certificate is not checked. The handshake
/// signatures still are, so the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What was negotiated on a TLS connection.
#[derive(Debug, Clone)]
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

/// Per-attempt progress, so a timeout or failure can name the step it happened at, and what
/// the attempt negotiated.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    state: Mutex<ProbeState>,
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

/// Watches the first protocol messages on a new connection, only until authentication ends,
/// to learn the method used: the server's `AuthenticationRequest` codes, and for SASL the
/// mechanism name at the start of the client's `SASLInitialResponse`. Nothing else of the
/// traffic is looked at or kept (no password, no SCRAM data).
struct AuthSniffer {
    probe: Arc<Probe>,
    /// The header of the server message being read: type, length and (for `R`) the code.
    header: [u8; 9],
    have: usize,
    /// Body bytes of the current server message still to skip.
    skip: usize,
    /// The method asked for so far.
    method: Option<&'static str>,
    /// The server asked for SASL: the client's next message names the mechanism.
    sasl_pending: bool,
}

impl AuthSniffer {
    fn new(probe: Arc<Probe>) -> Box<AuthSniffer> {
        Box::new(AuthSniffer {
            probe,
            header: [0; 9],
            have: 0,
            skip: 0,
            method: None,
            sasl_pending: false,
        })
    }

    /// Feeds bytes read from the server; returns true when authentication is over.
    fn read(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let need = if self.have > 0 && self.header[0] == b'R' {
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
            if need == 5 && self.header[0] == b'R' {
                continue; // read the code too
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            self.have = 0;
            self.skip = len.saturating_sub(need - 1);
            match self.header[0] {
                b'R' => {
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
                            return true;
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
                // An error ends authentication; the error itself is reported elsewhere.
                b'E' => return true,
                _ => {}
            }
        }
        false
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
            let server_name = ServerName::try_from(self.hostname)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            if !self.policy.direct && has_pending_bytes(&mut stream) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    UnencryptedDataAfterSslResponse,
                ));
            }
            let sni_sent = self.config.enable_sni && matches!(server_name, ServerName::DnsName(_));
            let tls = tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(server_name, stream)
                .await?;
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
    use x509_cert::der::oid::db::{rfc5912::*, rfc8410::*};
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).ok()?;
    let oid = cert.signature_algorithm.oid;
    let _ = ID_ED_25519;
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
    /// Until authentication ends: learns the method used (see [`AuthSniffer`]).
    sniff: Option<Box<AuthSniffer>>,
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(sniff) = &mut self.sniff {
            if sniff.read(&buf.filled()[before..]) {
                self.sniff = None;
            }
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
        if let Some(sniff) = &mut self.sniff {
            sniff.write(buf);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        if let Some(sniff) = &mut self.sniff {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                sniff.write(first);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
