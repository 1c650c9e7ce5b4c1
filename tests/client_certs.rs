//! Client certificates (`sslcert` / `sslkey`) against a real server whose `pg_hba.conf` says
//! `clientcert=verify-full`. RSA is not covered: rcgen on ring cannot generate RSA keys.

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
