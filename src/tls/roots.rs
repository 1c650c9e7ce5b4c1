//! The trusted roots: the system store (loaded once per process), a root certificate file,
//! or certificates given in code.

use super::lock;
use crate::error::{Error, ErrorKind, Step};
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};

/// Where the trusted root certificates come from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Roots {
    /// The platform store via rustls-native-certs (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// A PEM file (`sslrootcert`, `PGSSLROOTCERT`, or `~/.postgresql/root.crt`).
    File(PathBuf),
    /// Certificates given in code; the key is a digest of their DER bytes.
    Custom(Arc<Vec<CertificateDer<'static>>>, [u8; 32]),
    /// No roots are used: `require` without a root certificate file verifies nothing.
    Unused,
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
            Roots::Unused => "no root certificates".to_string(),
        }
    }
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A file of libpq's `~/.postgresql` directory (`$HOME/.postgresql/<name>`), whether or not
/// it exists; `None` without a home directory.
pub(super) fn default_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".postgresql").join(name))
}

/// libpq's default root certificate file, when it exists.
pub(super) fn default_root_file() -> Option<PathBuf> {
    default_file("root.crt").filter(|p| p.is_file())
}

/// libpq's default certificate revocation list file, when it exists.
pub(super) fn default_crl_file() -> Option<PathBuf> {
    default_file("root.crl").filter(|p| p.is_file())
}

pub(super) fn digest_certs(certs: &[CertificateDer<'static>]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in certs {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c.as_ref());
    }
    h.finalize().into()
}

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
        Roots::Unused => Ok(Arc::new(RootCertStore::empty())),
    }
}

fn load_root_file(path: &Path) -> Result<RootCertStore, Error> {
    let root_err = |m: String| Error::new(ErrorKind::RootCertificates, m).with_step(Step::Config);
    let data = std::fs::read(path).map_err(|e| {
        let missing = e.kind() == io::ErrorKind::NotFound;
        let message = if missing {
            format!("the root certificate file {} does not exist", path.display())
        } else {
            format!("could not read the root certificate file {}: {e}", path.display())
        };
        root_err(message)
            .with_help(if missing {
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

/// The system root store (or why there is none), loaded once per process.
static SYSTEM: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();

/// Starts loading the system root store on a thread of its own, once per process, so that it
/// overlaps with the first connection's DNS, TCP and TLS request. If the thread cannot be
/// started, the first caller of [`system_roots`] loads the store itself.
pub(super) fn load_system_roots_in_background() {
    static STARTED: Once = Once::new();
    if SYSTEM.get().is_some() {
        return;
    }
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("neon-connect-roots".into())
            .spawn(|| {
                let _ = system_roots();
            });
    });
}

/// [`system_roots`], waited for off the async runtime's worker threads while another thread
/// loads it.
pub(super) async fn system_roots_async() -> Result<Arc<RootCertStore>, Error> {
    if SYSTEM.get().is_some() {
        return system_roots();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(system_roots).await.map_err(|e| {
            Error::new(
                ErrorKind::RootCertificates,
                "loading the system root store failed",
            )
            .with_step(Step::Config)
            .with_source(e)
        })?,
        Err(_) => system_roots(),
    }
}

/// The system root store; waits while another thread loads it.
pub(super) fn system_roots() -> Result<Arc<RootCertStore>, Error> {
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
