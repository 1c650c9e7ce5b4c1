//! The client certificate and key (`sslcert`, `sslkey`), read as libpq reads them.

use crate::config::Password;
use crate::error::{Error, ErrorKind, Step};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

pub(super) fn load_client_identity(
    cert: &Path,
    key: &Path,
    passphrase: Option<&Password>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let cert_data = std::fs::read(cert).map_err(|e| {
        id_err(format!(
            "could not read the client certificate {}",
            cert.display()
        ))
        .with_help("check the `sslcert` path")
        .with_source(e)
    })?;
    let chain = if is_pem(&cert_data) {
        rustls_pemfile::certs(&mut &cert_data[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                id_err(format!(
                    "the client certificate {} is not valid PEM",
                    cert.display()
                ))
                .with_source(e)
            })?
    } else {
        // DER, as libpq also reads it: one certificate.
        use x509_cert::der::Decode;
        x509_cert::Certificate::from_der(&cert_data).map_err(|e| {
            id_err(format!(
                "the client certificate {} is neither PEM nor a DER certificate: {e}",
                cert.display()
            ))
            .with_help("give the certificate as PEM (`-----BEGIN CERTIFICATE-----`) or DER")
        })?;
        vec![CertificateDer::from(cert_data.clone())]
    };
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
    let private = parse_key(&key_data, key, passphrase)?;
    Ok((chain, private))
}

fn id_err(m: String) -> Error {
    Error::new(ErrorKind::ClientCertificate, m).with_step(Step::Config)
}

/// The private key of `data` (read from `path`): PEM PKCS#8, PKCS#1 or SEC1, or encrypted
/// PKCS#8 opened with `passphrase` (`sslpassword`). The passphrase is never part of an error.
fn parse_key(
    data: &[u8],
    path: &Path,
    passphrase: Option<&Password>,
) -> Result<PrivateKeyDer<'static>, Error> {
    let text = String::from_utf8_lossy(data);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        // OpenSSL's traditional encryption (MD5-based key derivation): no maintained Rust
        // crate reads it, and converting it is one command.
        return Err(id_err(format!(
            "the client key {} uses OpenSSL's traditional encryption (`Proc-Type: 4,ENCRYPTED`), which is not supported",
            path.display()
        ))
        .with_help(format!(
            "convert it to encrypted PKCS#8 (it asks for the passphrase, then a new one): \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {0} -out {0}.p8 && chmod 600 {0}.p8`, \
             then set `sslkey` to {0}.p8",
            path.display()
        )));
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let (_, doc) = pkcs8::Document::from_pem(text.trim()).map_err(|e| {
            id_err(format!(
                "the encrypted client key {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
        return decrypt_pkcs8(doc.as_bytes(), path, passphrase);
    }
    if !is_pem(data) {
        return parse_der_key(data, path, passphrase);
    }
    let private = rustls_pemfile::private_key(&mut &data[..])
        .map_err(|e| {
            id_err(format!(
                "the client key {} is not valid PEM",
                path.display()
            ))
            .with_source(e)
        })?
        .ok_or_else(|| {
            id_err(format!(
                "the client key {} holds no private key",
                path.display()
            ))
            .with_help("give a PEM private key (PKCS#8, PKCS#1 or SEC1)")
        })?;
    Ok(private)
}

/// Whether a file is PEM (has a `-----BEGIN` line) rather than DER.
fn is_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// A DER key, as libpq reads it when PEM fails: PKCS#8 (plain or encrypted), PKCS#1 or SEC1.
fn parse_der_key(
    data: &[u8],
    path: &Path,
    passphrase: Option<&Password>,
) -> Result<PrivateKeyDer<'static>, Error> {
    use pkcs8::der::Decode;
    if pkcs8::EncryptedPrivateKeyInfo::from_der(data).is_ok() {
        return decrypt_pkcs8(data, path, passphrase);
    }
    PrivateKeyDer::try_from(data)
        .map(|k| k.clone_key())
        .map_err(|why| {
            id_err(format!(
                "the client key {} is neither PEM nor a DER private key ({why})",
                path.display()
            ))
            .with_help("give a PEM or DER private key (PKCS#8, PKCS#1 or SEC1)")
        })
}

/// Decrypts an `EncryptedPrivateKeyInfo` (PBES2, as `openssl pkcs8 -topk8` writes it).
fn decrypt_pkcs8(
    der: &[u8],
    path: &Path,
    passphrase: Option<&Password>,
) -> Result<PrivateKeyDer<'static>, Error> {
    use pkcs8::der::Decode;
    let Some(passphrase) = passphrase else {
        return Err(id_err(format!(
            "the client key {} is encrypted, and no passphrase was given",
            path.display()
        ))
        .with_help("give the key's passphrase in `sslpassword` (it has no environment variable, as in libpq)"));
    };
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(der).map_err(|e| {
        id_err(format!(
            "the encrypted client key {} is not valid: {e}",
            path.display()
        ))
    })?;
    let wrong = || {
        id_err(format!(
            "the passphrase (`sslpassword`) does not decrypt the client key {}",
            path.display()
        ))
        .with_help("check `sslpassword`: it must be the passphrase the key was encrypted with")
    };
    let plain = match info.decrypt(passphrase.expose()) {
        Ok(plain) => plain,
        // A wrong passphrase fails the padding check or gives bytes that are not a key;
        // an unsupported scheme is said as such.
        Err(pkcs8::Error::EncryptedPrivateKey(
            e @ (pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. }
            | pkcs8::pkcs5::Error::NoPbes1CryptSupport),
        )) => {
            return Err(id_err(format!(
                "the client key {} is encrypted with an unsupported scheme ({e})",
                path.display()
            ))
            .with_help(format!(
                "re-encrypt it with PBES2 and AES: `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {0} -out {0}.p8`",
                path.display()
            )))
        }
        Err(_) => return Err(wrong()),
    };
    // The plaintext must be a PrivateKeyInfo; anything else means the passphrase was wrong.
    if pkcs8::PrivateKeyInfo::from_der(plain.as_bytes()).is_err() {
        return Err(wrong());
    }
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        plain.as_bytes().to_vec(),
    )))
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
