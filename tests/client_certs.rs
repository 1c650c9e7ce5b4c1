//! Client certificates (`sslcert` / `sslkey`) against a real server whose `pg_hba.conf` says
//! `clientcert=verify-full`. RSA is not covered: rcgen on ring cannot generate RSA keys.

mod support;

use neon_connect::{ConnectionString, Options};
use neon_connect_testing::{KeyAlgorithm, LeafSpec, PgServer, ServerOptions, TestCa};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

fn server() -> &'static PgServer {
    static S: OnceLock<PgServer> = OnceLock::new();
    S.get_or_init(|| PgServer::start(ServerOptions::default().client_cert(true)).unwrap())
}

/// A private directory for this test process, removed at the end of each test that uses it.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("neon-connect-cc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn issue(key: KeyAlgorithm) -> (String, String) {
    let mut spec = LeafSpec::client("neon");
    spec.key = key;
    TestCa::shared().issue(&spec).unwrap()
}

async fn connect(cert: Option<&Path>, key: Option<&Path>) -> Result<i32, neon_connect::Error> {
    let s = server();
    let mut url = format!("{}?sslrootcert={}", s.url(), s.ca_file().display());
    if let (Some(c), Some(k)) = (cert, key) {
        url.push_str(&format!("&sslcert={}&sslkey={}", c.display(), k.display()));
    }
    let pool = Options::from_connection_string(ConnectionString::parse(&url)?)
        .pool_size(1)
        .connect_attempts(1)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let client = pool.get().await?;
    Ok(client.query_one("SELECT 1", &[]).await.unwrap().get(0))
}

#[tokio::test]
async fn ecdsa_and_ed25519_client_certificates_in_pkcs8_and_sec1() {
    let dir = Dir::new("ok");
    for (name, alg) in [
        ("ecdsa", KeyAlgorithm::EcdsaP256),
        ("ed25519", KeyAlgorithm::Ed25519),
    ] {
        let (cert, key) = issue(alg);
        let c = dir.write(&format!("{name}.crt"), &cert, 0o644);
        let k = dir.write(&format!("{name}.key"), &key, 0o600);
        assert_eq!(connect(Some(&c), Some(&k)).await.expect(name), 1, "{name}");
    }
    // The same ECDSA key as SEC1 ("BEGIN EC PRIVATE KEY"), converted with openssl.
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    let c = dir.write("sec1.crt", &cert, 0o644);
    let pkcs8 = dir.write("pkcs8.key", &key, 0o600);
    let sec1 = dir.0.join("sec1.key");
    let out = std::process::Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&pkcs8)
        .arg("-out")
        .arg(&sec1)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(&sec1, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    assert_eq!(connect(Some(&c), Some(&sec1)).await.expect("sec1"), 1);
}

#[tokio::test]
async fn no_certificate_when_the_server_wants_one_is_a_clear_error() {
    let err = connect(None, None)
        .await
        .expect_err("the server requires a certificate");
    let text = format!("{err:#}");
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn a_client_certificate_the_server_rejects_points_at_the_client_certificate() {
    let dir = Dir::new("untrusted");
    // Issued by a CA the server does not trust.
    let other = TestCa::new("not the server's CA").unwrap();
    let (cert, key) = other.issue(&LeafSpec::client("neon")).unwrap();
    let c = dir.write("c.crt", &cert, 0o644);
    let k = dir.write("c.key", &key, 0o600);
    let err = connect(Some(&c), Some(&k)).await.expect_err("rejected");
    support::assert_diagnosis(&err, neon_connect::Diagnosis::TlsClientCertificateRejected);
    assert!(!err.is_retryable());
    let line = err.to_string();
    assert!(line.contains("rejected the client certificate"), "{line}");
    assert!(err
        .help()
        .unwrap()
        .starts_with("check the client certificate (`sslcert`)"));
}

#[tokio::test]
async fn an_x509_v1_client_certificate_is_named_as_such_not_as_a_key_mismatch() {
    let dir = Dir::new("v1");
    let d = |f: &str| dir.0.join(f).display().to_string();
    // OpenSSL's `x509 -req` without extensions writes a version 1 certificate.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
        "-subj",
        "/CN=v1 test CA",
        "-days",
        "2",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &d("c.key"),
        "-out",
        &d("c.csr"),
        "-subj",
        "/CN=neon",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &d("c.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &d("c.pem"),
    ]);
    std::fs::set_permissions(dir.0.join("c.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = connect(Some(&dir.0.join("c.pem")), Some(&dir.0.join("c.key")))
        .await
        .expect_err("v1 is refused");
    let line = err.to_string();
    assert_eq!(
        err.kind(),
        neon_connect::ErrorKind::ClientCertificate,
        "{line}"
    );
    assert!(
        line.contains("is an X.509 v1 certificate, which is not supported"),
        "{line}"
    );
    assert!(!line.contains("does not match"), "{line}");
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = Dir::new("mismatch");
    let (cert, _) = issue(KeyAlgorithm::EcdsaP256);
    let (_, other_key) = issue(KeyAlgorithm::EcdsaP256);
    let c = dir.write("c.crt", &cert, 0o644);
    let k = dir.write("c.key", &other_key, 0o600);
    let err = connect(Some(&c), Some(&k)).await.expect_err("mismatch");
    let text = format!("{err:#}");
    assert!(text.contains("does not match"), "{text}");
}

#[tokio::test]
async fn a_key_readable_by_group_or_others_is_refused() {
    let dir = Dir::new("perm");
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    let c = dir.write("c.crt", &cert, 0o644);
    // (0640 is allowed when root owns the key, as in libpq; these tests may run as root.)
    for mode in [0o644, 0o604, 0o660] {
        let k = dir.write(&format!("c{mode:o}.key"), &key, mode);
        let err = connect(Some(&c), Some(&k)).await.expect_err("open key");
        let text = format!("{err:#}");
        assert!(text.contains("group or world access"), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Encrypted client keys (`sslpassword`)
// ---------------------------------------------------------------------------------------------

const PASSPHRASE: &str = "pp_Wr0ngH0rseStaple";

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A client certificate with its key as encrypted PKCS#8 (`openssl pkcs8 -topk8`).
fn encrypted_identity(dir: &Dir, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    let c = dir.write(&format!("{name}.crt"), &cert, 0o644);
    let plain = dir.write(&format!("{name}.plain.key"), &key, 0o600);
    let enc = dir.0.join(format!("{name}.key"));
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        plain.to_str().unwrap(),
        "-out",
        enc.to_str().unwrap(),
        "-passout",
        &format!("pass:{PASSPHRASE}"),
    ]);
    std::fs::set_permissions(&enc, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(std::fs::read_to_string(&enc)
        .unwrap()
        .contains("BEGIN ENCRYPTED PRIVATE KEY"));
    (c, enc)
}

async fn connect_with(query: &str) -> Result<i32, neon_connect::Error> {
    let s = server();
    let url = format!("{}?sslrootcert={}&{query}", s.url(), s.ca_file().display());
    let pool = Options::from_connection_string(ConnectionString::parse(&url)?)
        .pool_size(1)
        .connect_attempts(1)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let client = pool.get().await?;
    Ok(client.query_one("SELECT 1", &[]).await.unwrap().get(0))
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(PASSPHRASE), "the passphrase leaked: {text}");
    assert!(
        !text.contains("Wr0ngH0rse"),
        "the passphrase leaked: {text}"
    );
}

#[tokio::test]
async fn an_encrypted_pkcs8_key_opens_with_sslpassword() {
    let dir = Dir::new("enc-ok");
    let (c, k) = encrypted_identity(&dir, "enc");
    let q = format!(
        "sslcert={}&sslkey={}&sslpassword={PASSPHRASE}",
        c.display(),
        k.display()
    );
    assert_eq!(connect_with(&q).await.expect("right passphrase"), 1);
}

#[tokio::test]
async fn a_wrong_or_missing_passphrase_says_so_and_never_shows_it() {
    let dir = Dir::new("enc-wrong");
    let (c, k) = encrypted_identity(&dir, "enc");
    let wrong = "pp_Wr0ngH0rseStapleX";
    let q = format!(
        "sslcert={}&sslkey={}&sslpassword={wrong}",
        c.display(),
        k.display()
    );
    let err = connect_with(&q).await.expect_err("wrong passphrase");
    for text in [format!("{err}"), format!("{err:#}"), format!("{err:?}")] {
        assert!(text.contains("does not decrypt the client key"), "{text}");
        assert!(!text.contains(wrong), "{text}");
        assert_no_secret(&text);
    }
    assert_eq!(err.kind(), neon_connect::ErrorKind::ClientCertificate);

    let q = format!("sslcert={}&sslkey={}", c.display(), k.display());
    let err = connect_with(&q).await.expect_err("no passphrase");
    assert!(
        err.to_string()
            .contains("is encrypted, and no passphrase was given"),
        "{err}"
    );
    assert!(format!("{err:#}").contains("sslpassword"), "{err:#}");
}

#[tokio::test]
async fn the_passphrase_is_redacted_in_debug_and_display() {
    for input in [
        format!("postgresql://u@h/db?sslkey=/k&sslcert=/c&sslpassword={PASSPHRASE}"),
        format!("host=h sslkey=/k sslcert=/c sslpassword='{PASSPHRASE}'"),
    ] {
        let cs = ConnectionString::parse(&input).unwrap();
        assert_eq!(cs.sslpassword().unwrap().expose(), PASSPHRASE);
        assert_no_secret(&format!("{cs:?}"));
        assert_no_secret(&cs.to_string());
        assert!(cs.to_string().contains("sslpassword=***"), "{cs}");
        assert!(
            format!("{cs:?}").contains("sslpassword: Some(***)"),
            "{cs:?}"
        );
        let opts = Options::from_connection_string(cs);
        assert_no_secret(&format!("{opts:?}"));
    }
}

#[tokio::test]
async fn a_traditionally_encrypted_key_names_the_conversion_command() {
    let dir = Dir::new("enc-trad");
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    let c = dir.write("t.crt", &cert, 0o644);
    let plain = dir.write("t.plain.key", &key, 0o600);
    let trad = dir.0.join("t.key");
    openssl(&[
        "ec",
        "-in",
        plain.to_str().unwrap(),
        "-aes128",
        "-out",
        trad.to_str().unwrap(),
        "-passout",
        &format!("pass:{PASSPHRASE}"),
    ]);
    std::fs::set_permissions(&trad, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(std::fs::read_to_string(&trad)
        .unwrap()
        .contains("Proc-Type: 4,ENCRYPTED"));
    let q = format!(
        "sslcert={}&sslkey={}&sslpassword={PASSPHRASE}",
        c.display(),
        trad.display()
    );
    let err = connect_with(&q).await.expect_err("traditional encryption");
    let text = format!("{err:#}");
    assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{text}");
    assert!(text.contains("openssl pkcs8 -topk8"), "{text}");
    assert_no_secret(&text);
}

#[tokio::test]
async fn der_certificates_and_keys_are_read_as_libpq_reads_them() {
    let dir = Dir::new("der");
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    let pem_crt = dir.write("c.crt", &cert, 0o644);
    let pem_key = dir.write("c.key", &key, 0o600);
    let path = |n: &str| dir.0.join(n);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (crt_der, pkcs8_der, sec1_der, enc_der) = (
        path("c.crt.der"),
        path("pkcs8.der"),
        path("sec1.der"),
        path("enc.der"),
    );
    openssl(&[
        "x509",
        "-in",
        &s(&pem_crt),
        "-outform",
        "DER",
        "-out",
        &s(&crt_der),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &s(&pem_key),
        "-outform",
        "DER",
        "-out",
        &s(&pkcs8_der),
    ]);
    openssl(&[
        "ec",
        "-in",
        &s(&pem_key),
        "-outform",
        "DER",
        "-out",
        &s(&sec1_der),
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        &s(&pem_key),
        "-outform",
        "DER",
        "-out",
        &s(&enc_der),
        "-passout",
        &format!("pass:{PASSPHRASE}"),
    ]);
    for k in [&pkcs8_der, &sec1_der, &enc_der] {
        std::fs::set_permissions(k, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for (c, k) in [
        (&crt_der, &pkcs8_der),
        (&crt_der, &sec1_der),
        (&pem_crt, &pkcs8_der),
        (&crt_der, &pem_key),
    ] {
        let q = format!("sslcert={}&sslkey={}", c.display(), k.display());
        assert_eq!(connect_with(&q).await.expect(&q), 1, "{q}");
    }
    let q = format!(
        "sslcert={}&sslkey={}&sslpassword={PASSPHRASE}",
        crt_der.display(),
        enc_der.display()
    );
    assert_eq!(connect_with(&q).await.expect("encrypted DER"), 1);
    // Neither PEM nor DER.
    let junk = dir.write("junk.key", "not a key", 0o600);
    let q = format!("sslcert={}&sslkey={}", crt_der.display(), junk.display());
    let err = connect_with(&q).await.expect_err("junk key");
    assert!(
        err.to_string()
            .contains("neither PEM nor a DER private key"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// `sslcertmode` (libpq 16)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sslcertmode_disable_never_sends_the_configured_certificate() {
    let dir = Dir::new("certmode-disable");
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    let c = dir.write("c.crt", &cert, 0o644);
    let k = dir.write("c.key", &key, 0o600);
    let base = format!("sslcert={}&sslkey={}", c.display(), k.display());
    for mode in ["allow", "require"] {
        let q = format!("{base}&sslcertmode={mode}");
        assert_eq!(connect_with(&q).await.expect(mode), 1, "{mode}");
    }
    // The server requires a certificate, so not sending it fails the connection.
    let err = connect_with(&format!("{base}&sslcertmode=disable"))
        .await
        .expect_err("no certificate sent");
    assert!(
        err.to_string()
            .contains("connection requires a valid client certificate"),
        "{err:#}"
    );
}

#[tokio::test]
async fn sslcertmode_require_fails_when_the_server_does_not_ask() {
    // A server without `ssl_ca_file` never sends a CertificateRequest.
    let plain = PgServer::shared();
    let url = format!(
        "{}?sslrootcert={}&sslcertmode=require",
        plain.url(),
        plain.ca_file().display()
    );
    let err = Options::from_connection_string(ConnectionString::parse(&url).unwrap())
        .pool_size(1)
        .connect_attempts(1)
        .connect()
        .await
        .expect_err("not asked");
    assert!(
        err.to_string()
            .contains("server did not request an SSL certificate"),
        "{err:#}"
    );
    support::assert_diagnosis(
        &err,
        neon_connect::Diagnosis::TlsClientCertificateNotRequested,
    );
    // `allow` (the default) connects to it, with or without a certificate configured.
    let url = format!("{}?sslrootcert={}", plain.url(), plain.ca_file().display());
    let pool = Options::from_connection_string(ConnectionString::parse(&url).unwrap())
        .pool_size(1)
        .connect()
        .await
        .expect("allow");
    drop(pool);
    // `require` without a certificate of our own, against the server that asks: the server
    // asked, so the mode is satisfied, and the server refuses us for lack of one (libpq alike).
    let err = connect_with("sslcertmode=require")
        .await
        .expect_err("asked, none sent");
    assert!(
        err.to_string()
            .contains("connection requires a valid client certificate"),
        "{err:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// libpq's default files: ~/.postgresql/{postgresql.crt, postgresql.key, root.crt, root.crl}
// ---------------------------------------------------------------------------------------------

/// Set in the child process that runs `default_files_child` under a temporary HOME (the
/// process environment is never changed in a running test process).
const CHILD_MODE: &str = "NEON_CONNECT_TEST_DEFAULT_FILES";

/// Runs `default_files_child` in a new process of this test binary with `HOME=home`.
fn run_child(home: &Path, mode: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "default_files_child", "--nocapture"])
        .env("HOME", home)
        .env(CHILD_MODE, mode)
        .output()
        .expect("run the test binary again")
}

#[tokio::test]
async fn default_files_child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return; // only meaningful in the child process
    };
    // The fixture's CA is made per process, so the files are written here, in the child.
    let home = std::env::var("HOME").unwrap();
    let dir = Path::new(&home).join(".postgresql");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let ca = neon_connect_testing::TestCa::shared();
    let (cert, key) = issue(KeyAlgorithm::EcdsaP256);
    write("postgresql.crt", &cert, 0o644);
    if mode != "nokey" {
        write("postgresql.key", &key, 0o600);
    }
    write("root.crt", &ca.cert_pem(), 0o644);
    if mode == "crl" {
        let week = std::time::SystemTime::now() + Duration::from_secs(7 * 24 * 3600);
        let crl = ca.revocation_list(&[&server().cert_pem()], week).unwrap();
        write("root.crl", &crl, 0o644);
    }

    let url = server().url(); // no sslrootcert, sslcert, sslkey or sslcrl: the defaults apply
    let result = async {
        let pool = Options::from_connection_string(ConnectionString::parse(&url)?)
            .pool_size(1)
            .connect_attempts(1)
            .connect()
            .await?;
        let tls = pool.info().unwrap().tls.clone().unwrap();
        let client = pool.get().await?;
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        Ok::<_, neon_connect::Error>((one, tls.roots))
    }
    .await;
    match mode.as_str() {
        "certs" => {
            let (one, roots) = result.expect("default client certificate and root file");
            assert_eq!(one, 1);
            assert!(
                roots.contains(&format!("{home}/.postgresql/root.crt")),
                "{roots}"
            );
        }
        "crl" => {
            let err = result.expect_err("revoked by ~/.postgresql/root.crl");
            support::assert_diagnosis(&err, neon_connect::Diagnosis::CertificateRevoked);
            assert!(err.to_string().contains("root.crl"), "{err}");
        }
        "nokey" => {
            let err = result.expect_err("certificate without key");
            assert!(
                err.to_string()
                    .contains("certificate present, but not private key file"),
                "{err:#}"
            );
        }
        other => panic!("unknown mode {other}"),
    }
}

#[tokio::test]
async fn default_client_files_root_file_and_revocation_list_are_used_as_in_libpq() {
    for mode in ["certs", "crl", "nokey"] {
        let home = Dir::new(&format!("home-{mode}"));
        let out = run_child(&home.0, mode);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("1 passed"),
            "{mode}: the child did not run: {text}"
        );
    }
}
