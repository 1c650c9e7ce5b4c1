//! An empty system root store is an error that says what was tried and how to fix it, never a
//! connection that silently trusts nothing or everything. Its own test binary (own process),
//! because the system store is loaded once per process.

use neon_connect::ErrorKind;
use neon_connect_testing::PgServer;

#[tokio::test]
async fn empty_system_store_is_an_error_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    // Before any connection in this process: the store is loaded once.
    std::env::set_var("SSL_CERT_FILE", &empty);
    std::env::set_var("SSL_CERT_DIR", dir.path().join("no-such-dir"));

    // The system store loads in the background while the first connection is opened; when
    // it cannot be loaded, that is the error even if the host refuses the connection.
    let refused = "postgresql://app@127.0.0.1:1/app?sslmode=verify-full&sslrootcert=system";
    let err = neon_connect::neon_connect(refused).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RootCertificates, "{err:#}");

    let server = PgServer::shared();
    let err = neon_connect::neon_connect(&server.url()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RootCertificates, "{err:#}");
    let text = err.to_string();
    assert!(
        text.contains("no root certificates were found in the system store"),
        "{text}"
    );
    assert!(
        text.contains(&format!("SSL_CERT_FILE={}", empty.display())),
        "{text}"
    );
    assert!(text.contains("help: install the CA bundle"), "{text}");
    assert!(text.contains("sslrootcert="), "{text}");

    // A root file given explicitly still works without the system store.
    let url = format!(
        "{}?sslrootcert={}",
        server.url(),
        server.ca_file().display()
    );
    let pool = neon_connect::neon_connect(&url)
        .await
        .expect("explicit roots");
    assert!(pool.get().await.is_ok());
}
