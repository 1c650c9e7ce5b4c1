//! TLS policy: which sslmode means what, where root certificates come from, and the rustls
//! connector that tokio-postgres uses.
//!
//! Root stores and `ClientConfig`s are built once per process (per distinct policy) and shared
//! by every connection; nothing here reads a file on the connect path.
//!
//! `mod.rs` holds the policy and the rustls configuration it builds; `roots.rs` the trusted
//! roots, `identity.rs` the client certificate and key, `verify.rs` the weaker verifiers and
//! the one that waits for the system roots loaded in the background,
//! `stream.rs` the connector tokio-postgres drives and what it records.

mod crl;
mod identity;
mod roots;
mod session;
mod stream;
mod verify;

pub(crate) use crl::RevocationError;
pub(crate) use roots::{root_store, Roots};
pub(crate) use session::Verdict;
pub(crate) use stream::{
    CertificateNotRequested, ConnectPhaseLimit, MakeTls, MissingAlpn, Probe,
    UnencryptedDataAfterSslResponse,
};
pub use stream::{TlsInfo, TlsStream};

use crate::config::{
    ConnectionString, Host, Password, RootCert, SslCertMode, SslMode, SslNegotiation, TlsVersion,
};
use crate::error::{Error, ErrorKind, Step};
use crl::{load_crls, CrlSources, NamedRevocation};
use identity::load_client_identity;
use roots::{default_crl_file, default_file, default_root_file, digest_certs};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use verify::{ChainOnly, NoVerification, SystemRoots};

/// How the server's certificate is checked.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verification {
    /// Chain and host name (`verify-full`).
    Full,
    /// Chain only (`verify-ca`, or `require` with a root certificate file, as in libpq).
    Chain,
    /// Not checked: encrypted only (`require`, `prefer` or `allow` without a root certificate file).
    Unverified,
}

impl Verification {
    /// The old name of [`Verification::Unverified`].
    #[deprecated(since = "0.2.0", note = "renamed `Verification::Unverified`")]
    #[allow(non_upper_case_globals)]
    pub const None: Verification = Verification::Unverified;
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verification::Full => "chain and host name verified",
            Verification::Chain => "chain verified, host name not checked",
            Verification::Unverified => "not verified",
        })
    }
}

/// The resolved TLS policy for one connection string: what is verified against which roots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsPolicy {
    pub(crate) verification: Verification,
    pub(crate) roots: Roots,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// `sslpassword`, for an encrypted client key.
    pub(crate) key_password: Option<Password>,
    /// `sslcertmode=require`: the server must ask for a client certificate.
    pub(crate) cert_required: bool,
    /// Certificate revocation lists checked against the whole chain (`None`: none; never
    /// with `Verification::Unverified`).
    pub(crate) crls: Option<CrlSources>,
    /// Direct TLS (`sslnegotiation=direct`, or chosen for Neon hosts when it is not set).
    pub(crate) direct: bool,
    /// `direct` was our choice, not the connection string's: a host that turns out not to
    /// speak direct TLS is tried again with the TLS request (see `Connector`).
    pub(crate) auto_direct: bool,
    /// `sslnegotiation` was left out and the mode always uses TLS: a host that reports
    /// PostgreSQL 17 or later may be switched to direct TLS (see `learnable_direct`).
    pub(crate) learnable: bool,
    pub(crate) sni: bool,
    pub(crate) min_version: Option<TlsVersion>,
    pub(crate) max_version: Option<TlsVersion>,
}

fn warn_once(flag: &'static AtomicBool, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!(target: "neon_connect", "{message}");
    }
}

/// The warnings this policy deserves (logged once per process by `resolve`), for
/// `Pool::warnings`.
pub(crate) fn warnings(cs: &ConnectionString, policy: &TlsPolicy) -> Vec<String> {
    let mode = cs.sslmode().unwrap_or(SslMode::VerifyFull);
    let mut out: Vec<String> = weak_mode_warning(mode).into_iter().collect();
    if policy.verification == Verification::Unverified {
        out.push(unverified_warning(cs));
    }
    out
}

fn weak_mode_warning(mode: SslMode) -> Option<String> {
    matches!(mode, SslMode::Allow | SslMode::Prefer).then(|| {
        format!(
            "sslmode={} is treated as `require`: the connection is always encrypted and \
             never falls back to plaintext; use `verify-full` to also check the server's identity",
            mode.as_str()
        )
    })
}

/// Without verification, what is exposed depends on channel binding: with
/// `channel_binding=require`, SCRAM-SHA-256-PLUS binds the login to this TLS connection's
/// certificate, so a man in the middle (whose certificate differs from the server's) cannot
/// complete the login, and a fake server cannot either (it must prove it holds the role's SCRAM
/// secret): the session's queries never reach anyone else. What still reaches an impersonator is
/// what is sent before that proof: the startup packet, and the client's SCRAM proof, which lets
/// it guess the password offline.
fn unverified_warning(cs: &ConnectionString) -> String {
    if cs.channel_binding() == Some(crate::config::ChannelBinding::Require) {
        "sslmode=require without a root certificate: the server's certificate is not verified. \
         channel_binding=require still protects the session: a man in the middle cannot complete \
         the SCRAM login, so queries and data only ever reach a server that holds this role's \
         password secret. What stays open: an impersonating server receives the user name, \
         database and startup parameters, and the client's SCRAM proof, with which it can try to \
         guess the password offline (a weak password can be found); use `sslmode=verify-full` to \
         refuse it before anything is sent"
            .to_string()
    } else {
        "sslmode=require without a root certificate: the connection is encrypted but the \
         server's certificate is not verified, so an attacker on the network path could \
         impersonate the server; use `sslmode=verify-full` to verify it"
            .to_string()
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
            // Name where it came from: a PGSSLMODE left in a shell is not in the string.
            let (what, remove) = match cs.source("sslmode") {
                crate::config::Source::Environment => (
                    "`PGSSLMODE=disable` (from the environment)",
                    "unset PGSSLMODE (or set it to `verify-full`)",
                ),
                crate::config::Source::Code => (
                    "`sslmode=disable` (set in code)",
                    "do not set `SslMode::Disable`",
                ),
                _ => (
                    "`sslmode=disable`",
                    "remove `sslmode=disable` from the connection string",
                ),
            };
            return Err(policy_err(format!(
                "{what} is refused: neon-connect never connects without TLS over TCP"
            ))
            .with_help(format!(
                "{remove} (the default, `verify-full`, encrypts and checks the server's \
                 identity); Neon and other TLS-only servers refuse unencrypted connections anyway"
            )));
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
        if let Some(warning) = weak_mode_warning(mode) {
            warn_once(&WARNED_WEAK, &warning);
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
                    warn_once(&WARNED_UNVERIFIED, &unverified_warning(cs));
                    (Verification::Unverified, Roots::Unused)
                }
            },
        };

        // libpq reads `~/.postgresql/root.crl` only when neither list is named and the roots
        // come from a file; named lists apply with any verifying roots (stricter than libpq,
        // which ignores them with `sslrootcert=system`).
        let crls = match (cs.sslcrl(), cs.sslcrldir()) {
            _ if verification == Verification::Unverified => None,
            (None, None) => match roots {
                Roots::File(_) => default_crl_file().map(|file| CrlSources {
                    file: Some(file),
                    dir: None,
                }),
                _ => None,
            },
            (file, dir) => Some(CrlSources {
                file: file.map(PathBuf::from),
                dir: dir.map(PathBuf::from),
            }),
        };

        let certmode = cs.sslcertmode().unwrap_or(SslCertMode::Allow);
        // libpq: `sslcert` defaults to `~/.postgresql/postgresql.crt` when that file exists,
        // and the key of a certificate to `~/.postgresql/postgresql.key`.
        let cert = match cs.sslcert() {
            Some(cert) => Some(cert.to_path_buf()),
            None => default_file("postgresql.crt").filter(|p| p.is_file()),
        };
        let client_cert = match (cert, cs.sslkey()) {
            // libpq: `disable` never sends a certificate, even one that is configured.
            _ if certmode == SslCertMode::Disable => None,
            (Some(cert), Some(key)) => Some((cert, key.to_path_buf())),
            (Some(cert), None) => match default_file("postgresql.key").filter(|p| p.exists()) {
                Some(key) => Some((cert, key)),
                None => {
                    let key = default_file("postgresql.key")
                        .map(|p| format!(" \"{}\"", p.display()))
                        .unwrap_or_default();
                    return Err(Error::new(
                        ErrorKind::ClientCertificate,
                        format!("certificate present, but not private key file{key}"),
                    )
                    .with_step(Step::Config)
                    .with_help(format!(
                        "set `sslkey` to the private key of the client certificate {}",
                        cert.display()
                    )));
                }
            },
            (None, Some(_)) => {
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
            key_password: cs.sslpassword().cloned(),
            cert_required: certmode == SslCertMode::Require,
            crls,
            direct,
            auto_direct: direct && cs.sslnegotiation().is_none(),
            learnable: cs.sslnegotiation().is_none()
                && !matches!(mode, SslMode::Allow | SslMode::Prefer | SslMode::Disable),
            sni: cs.sslsni().unwrap_or(true),
            min_version: cs.ssl_min_protocol_version(),
            max_version: cs.ssl_max_protocol_version(),
        })
    }

    /// The direct TLS policy a host may be switched to once it reported PostgreSQL 17 or later
    /// (`Connector`): only when the connection string leaves `sslnegotiation` out and the mode
    /// always uses TLS (direct TLS cannot fall back to plaintext).
    pub(crate) fn learnable_direct(&self) -> Option<TlsPolicy> {
        (!self.direct && self.learnable).then(|| TlsPolicy {
            direct: true,
            auto_direct: true,
            ..self.clone()
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

    /// The shared rustls configuration for this policy, built on first use. It does not wait
    /// for the system root store, which [`TlsPolicy::start_loading_roots`] loads on a thread
    /// of its own meanwhile: its verifier builds itself at the first certificate check. The
    /// connect path waits for the store ([`TlsPolicy::roots_ready`]) before its first
    /// handshake, so that check never blocks a runtime thread; other users call
    /// [`TlsPolicy::load_roots`] or [`TlsPolicy::roots_ready`] first, for the roots' error.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        static CONFIGS: OnceLock<Mutex<HashMap<TlsPolicy, Arc<ClientConfig>>>> = OnceLock::new();
        let configs = CONFIGS.get_or_init(Default::default);
        if let Some(config) = lock(configs).get(self) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.build_client_config()?);
        Ok(lock(configs).entry(self.clone()).or_insert(config).clone())
    }

    /// The certificate check uses the system root store (and no revocation lists, which are
    /// files read up front): loading it (~150 roots, several milliseconds) can overlap with
    /// DNS, TCP and the TLS request.
    pub(crate) fn defers_roots(&self) -> bool {
        self.roots == Roots::System
            && self.verification != Verification::Unverified
            && self.crls.is_none()
    }

    /// Starts loading the system root store in the background when this policy needs it
    /// (once per process).
    pub(crate) fn start_loading_roots(&self) {
        if self.defers_roots() {
            roots::load_system_roots_in_background();
        }
    }

    /// Loads (or waits for) the roots this policy loads in the background; their error if
    /// they could not be loaded.
    pub(crate) fn load_roots(&self) -> Result<(), Error> {
        if self.defers_roots() {
            roots::system_roots()?;
        }
        Ok(())
    }

    /// [`TlsPolicy::load_roots`], waited for off the runtime's worker threads.
    pub(crate) async fn roots_ready(&self) -> Result<(), Error> {
        if self.defers_roots() {
            roots::system_roots_async().await?;
        }
        Ok(())
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
            Verification::Unverified => Arc::new(NoVerification(provider.clone())),
            Verification::Full | Verification::Chain if self.defers_roots() => {
                Arc::new(SystemRoots::new(provider.clone(), self.verification))
            }
            Verification::Full | Verification::Chain => {
                let store = root_store(&self.roots)?;
                let crls = match &self.crls {
                    Some(sources) => load_crls(sources)?,
                    None => Vec::new(),
                };
                chain_verifier(store, &provider, crls, self.verification)?
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some((cert, key)) => {
                let (chain, key) = load_client_identity(cert, key, self.key_password.as_ref())?;
                let v1 = chain.first().is_some_and(|c| is_x509_v1(c));
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    if v1 {
                        // rustls refuses v1 certificates outright; saying "does not match"
                        // would send the user after the wrong file.
                        return Error::new(
                            ErrorKind::ClientCertificate,
                            format!(
                                "the client certificate {} is an X.509 v1 certificate, which is not supported",
                                cert.display()
                            ),
                        )
                        .with_step(Step::Config)
                        .with_help("reissue it as an X.509 v3 certificate (with OpenSSL: `openssl x509 -req ... -extfile <(printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=clientAuth')`)")
                        .with_source(e);
                    }
                    Error::new(
                        ErrorKind::ClientCertificate,
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

/// The verifier of `verify-full` (or `verify-ca`: `Verification::Chain`) against `store`,
/// checking `crls` over the whole chain.
fn chain_verifier(
    store: Arc<rustls::RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<crl::LoadedCrl>,
    verification: Verification,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    // As libpq's X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL: the whole chain (rustls'
    // default depth), unknown status refused (its default), and an expired list refused as
    // OpenSSL refuses it.
    let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
        .with_crls(crls.iter().map(|c| c.der.clone()))
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::RootCertificates,
                "could not build the certificate verifier",
            )
            .with_step(Step::Config)
            .with_source(e)
        })?;
    let verifier: Arc<dyn ServerCertVerifier> = if verification == Verification::Full {
        webpki
    } else {
        Arc::new(ChainOnly(webpki))
    };
    Ok(if crls.is_empty() {
        verifier
    } else {
        Arc::new(NamedRevocation {
            inner: verifier,
            crls: Arc::new(crls),
        })
    })
}

fn key_path_display(pair: &Option<(PathBuf, PathBuf)>) -> String {
    pair.as_ref()
        .map(|(_, k)| k.display().to_string())
        .unwrap_or_default()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// Whether `der` is an X.509 version 1 certificate (no extensions; rustls refuses it).
fn is_x509_v1(der: &CertificateDer<'_>) -> bool {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(der)
        .is_ok_and(|c| c.tbs_certificate.version == x509_cert::certificate::Version::V1)
}
