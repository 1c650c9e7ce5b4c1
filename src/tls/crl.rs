//! Certificate revocation lists (`sslcrl`, `sslcrldir`, libpq's default `~/.postgresql/root.crl`).
//!
//! libpq (fe-secure-openssl.c) loads them into OpenSSL's store with
//! `X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL`: every certificate of the server's chain
//! must be covered by a list from its issuer (a certificate whose issuer published no list is
//! refused, "unable to get certificate CRL"), and an expired list is refused. We ask rustls for
//! the same: revocation depth `Chain`, unknown status denied, expiration enforced. libpq ignores
//! a file or directory that does not exist ("we do not require CRL"); so do we, with a warning
//! when it was named. Stricter than libpq: a file that exists but is not a valid list is an
//! error (libpq silently checks nothing), and named lists apply with `sslrootcert=system` too.

use crate::diagnostics::fmt_time;
use crate::error::{Error, ErrorKind, Step};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_cert::der::Decode;

/// Where the revocation lists come from (part of the policy's cache key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CrlSources {
    pub(crate) file: Option<PathBuf>,
    pub(crate) dir: Option<PathBuf>,
}

/// One parsed list, with what a message needs.
#[derive(Debug)]
pub(super) struct LoadedCrl {
    pub(super) der: CertificateRevocationListDer<'static>,
    source: PathBuf,
    issuer: x509_cert::name::Name,
    next_update: Option<u64>,
    /// (serial number bytes, revocation date in seconds since 1970).
    revoked: Vec<(Vec<u8>, u64)>,
}

fn crl_err(message: String) -> Error {
    Error::new(ErrorKind::RootCertificates, message).with_step(Step::Config)
}

/// Reads the lists. A file or directory that does not exist gives no lists (as in libpq);
/// one that exists must hold at least one valid list.
pub(super) fn load_crls(sources: &CrlSources) -> Result<Vec<LoadedCrl>, Error> {
    let mut out = Vec::new();
    if let Some(file) = &sources.file {
        if file.exists() {
            let before = out.len();
            load_file(file, &mut out)?;
            if out.len() == before {
                return Err(crl_err(format!(
                    "the certificate revocation list file {} holds no revocation list",
                    file.display()
                ))
                .with_help("give a PEM file with `-----BEGIN X509 CRL-----` blocks (`openssl crl -inform DER -in list.crl -out list.pem` converts a DER list)"));
            }
        } else {
            tracing::warn!(target: "neon_connect",
                "the certificate revocation list file {} does not exist; as in libpq, no revocation list is checked from it",
                file.display());
        }
    }
    if let Some(dir) = &sources.dir {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut paths: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                paths.sort();
                let before = out.len();
                for path in paths {
                    load_file(&path, &mut out)?;
                }
                if out.len() == before {
                    return Err(crl_err(format!(
                        "the certificate revocation list directory {} holds no revocation list",
                        dir.display()
                    ))
                    .with_help("put PEM files with `-----BEGIN X509 CRL-----` blocks in it, or remove `sslcrldir`"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(target: "neon_connect",
                    "the certificate revocation list directory {} does not exist; as in libpq, no revocation list is checked from it",
                    dir.display());
            }
            Err(e) => {
                return Err(crl_err(format!(
                    "could not read the certificate revocation list directory {}",
                    dir.display()
                ))
                .with_help("make the directory readable by this process")
                .with_source(e))
            }
        }
    }
    // A directory prepared with `openssl rehash` links the same list under several names.
    out.dedup_by(|a, b| a.der.as_ref() == b.der.as_ref());
    Ok(out)
}

/// Adds the lists of one PEM file. Other PEM blocks (certificates in a rehashed directory)
/// are skipped.
fn load_file(path: &Path, out: &mut Vec<LoadedCrl>) -> Result<(), Error> {
    let data = std::fs::read(path).map_err(|e| {
        crl_err(format!(
            "could not read the certificate revocation list {}",
            path.display()
        ))
        .with_help("make the file readable by this process")
        .with_source(e)
    })?;
    let invalid = |why: String| {
        crl_err(format!(
            "the certificate revocation list {} is not valid: {why}",
            path.display()
        ))
        .with_help("give PEM certificate revocation lists (`-----BEGIN X509 CRL-----`) as `openssl ca -gencrl` writes them")
    };
    for item in rustls_pemfile::read_all(&mut &data[..]) {
        let item = item.map_err(|e| invalid(format!("bad PEM ({e:?})")))?;
        let rustls_pemfile::Item::Crl(der) = item else {
            continue;
        };
        let list = x509_cert::crl::CertificateList::from_der(der.as_ref())
            .map_err(|e| invalid(e.to_string()))?;
        let tbs = list.tbs_cert_list;
        out.push(LoadedCrl {
            source: path.to_path_buf(),
            issuer: tbs.issuer,
            next_update: tbs.next_update.map(|t| t.to_unix_duration().as_secs()),
            revoked: tbs
                .revoked_certificates
                .unwrap_or_default()
                .into_iter()
                .map(|r| {
                    (
                        r.serial_number.as_bytes().to_vec(),
                        r.revocation_date.to_unix_duration().as_secs(),
                    )
                })
                .collect(),
            der,
        });
    }
    Ok(())
}

/// Why the revocation check refused the server, with the names a person needs; carried in
/// `CertificateError::Other` and read back by the classifier.
#[derive(Debug)]
pub(crate) enum RevocationError {
    /// A certificate of the chain is listed as revoked.
    Revoked {
        subject: String,
        serial: String,
        crl: PathBuf,
        date: u64,
    },
    /// No list from the issuer of a certificate of the chain.
    Unknown {
        subject: String,
        issuer: String,
        lists: Vec<PathBuf>,
    },
    /// The list that would decide has passed its `nextUpdate`.
    Expired { crl: PathBuf, next_update: u64 },
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevocationError::Revoked {
                subject,
                serial,
                crl,
                date,
            } => write!(
                f,
                "the certificate \"{subject}\" (serial {serial}) was revoked on {} according to the certificate revocation list {}",
                fmt_time(*date),
                crl.display()
            ),
            RevocationError::Unknown {
                subject,
                issuer,
                lists,
            } => {
                let lists: Vec<String> = lists.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "the revocation status of the certificate \"{subject}\" is unknown: no certificate revocation list from its issuer \"{issuer}\" was given (lists read: {})",
                    lists.join(", ")
                )
            }
            RevocationError::Expired { crl, next_update } => write!(
                f,
                "the certificate revocation list {} expired at {}",
                crl.display(),
                fmt_time(*next_update)
            ),
        }
    }
}

impl std::error::Error for RevocationError {}

/// Wraps the verifier that checks revocation, to name the certificate, the list and the date
/// when it refuses (rustls says only `Revoked`).
#[derive(Debug)]
pub(super) struct NamedRevocation {
    pub(super) inner: Arc<dyn ServerCertVerifier>,
    pub(super) crls: Arc<Vec<LoadedCrl>>,
}

struct Parsed {
    subject: String,
    issuer: x509_cert::name::Name,
    serial: Vec<u8>,
}

fn parse(cert: &CertificateDer<'_>) -> Option<Parsed> {
    let c = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let tbs = c.tbs_certificate;
    Some(Parsed {
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer,
        serial: tbs.serial_number.as_bytes().to_vec(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl NamedRevocation {
    fn explain(
        &self,
        error: &CertificateError,
        chain: &[&CertificateDer<'_>],
    ) -> Option<RevocationError> {
        let parsed: Vec<Parsed> = chain.iter().filter_map(|c| parse(c)).collect();
        match error {
            CertificateError::Revoked => parsed.iter().find_map(|p| {
                self.crls
                    .iter()
                    .filter(|l| l.issuer == p.issuer)
                    .find_map(|l| {
                        l.revoked
                            .iter()
                            .find(|(s, _)| *s == p.serial)
                            .map(|(_, date)| RevocationError::Revoked {
                                subject: p.subject.clone(),
                                serial: hex(&p.serial),
                                crl: l.source.clone(),
                                date: *date,
                            })
                    })
            }),
            CertificateError::UnknownRevocationStatus => parsed
                .iter()
                .find(|p| !self.crls.iter().any(|l| l.issuer == p.issuer))
                .map(|p| RevocationError::Unknown {
                    subject: p.subject.clone(),
                    issuer: p.issuer.to_string(),
                    lists: self.crls.iter().map(|l| l.source.clone()).collect(),
                }),
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => {
                let now = UnixTime::now().as_secs();
                self.crls
                    .iter()
                    .filter(|l| parsed.iter().any(|p| p.issuer == l.issuer))
                    .find_map(|l| match l.next_update {
                        Some(next) if next < now => Some(RevocationError::Expired {
                            crl: l.source.clone(),
                            next_update: next,
                        }),
                        _ => None,
                    })
            }
            _ => None,
        }
    }
}

impl ServerCertVerifier for NamedRevocation {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| match &e {
                rustls::Error::InvalidCertificate(c) => {
                    let chain: Vec<&CertificateDer<'_>> =
                        std::iter::once(end_entity).chain(intermediates).collect();
                    match self.explain(c, &chain) {
                        Some(why) => rustls::Error::InvalidCertificate(CertificateError::Other(
                            OtherError(Arc::new(why)),
                        )),
                        None => e,
                    }
                }
                _ => e,
            })
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
