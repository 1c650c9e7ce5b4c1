//! The client certificate and key (`sslcert`, `sslkey`), read as libpq reads them.

use crate::error::{Error, ErrorKind, Step};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

pub(super) fn load_client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let id_err = |m: String| Error::new(ErrorKind::ClientCertificate, m).with_step(Step::Config);
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
            ErrorKind::ClientCertificate,
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
