//! bb8 and a hand-made pool built from `Options::tokio_postgres_config()` and
//! `Options::rustls_connector()` reach the server wherever the crate's own pool does:
//! a verified host name with `hostaddr` pinning the address (`examples/bb8.rs`).

#[path = "../examples/bb8/pools.rs"]
mod pools;
mod support;

use neon_connect::{ConnectionString, Options};
use support::shared_server;

#[tokio::test]
async fn bb8_and_a_hand_made_pool_connect_where_the_crates_pool_does() {
    let server = shared_server();
    // The name is what the certificate is checked against; `hostaddr` pins the address (no
    // DNS). The environment is not read: other binaries' tests change it.
    let url = format!(
        "postgresql://{}:{}@{}:{}/{}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        server.user(),
        server.password(),
        server.host(),
        server.port(),
        server.dbname(),
        server.ca_file().display()
    );
    let options = || Options::from_connection_string(ConnectionString::parse(&url).unwrap());

    let own = options().connect().await.expect("the crate's own pool");
    let n: i32 = own
        .get()
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    let config = options().tokio_postgres_config().await.unwrap();
    assert_eq!(
        config.get_hostaddrs(),
        [std::net::IpAddr::from([127, 0, 0, 1])]
    );

    let bb8 = pools::bb8_pool(&options(), 2).await.expect("bb8 pool");
    let client = bb8.get().await.expect("bb8 connection");
    let n: i32 = client.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    drop(client);

    let hand_made = pools::HandMadePool::new(&options()).await.unwrap();
    let client = hand_made.get().await.expect("hand-made pool connection");
    let n: i32 = client.query_one("SELECT 3", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
    hand_made.put(client);
    let again = hand_made.get().await.unwrap();
    assert!(!again.is_closed());

    // The connector still verifies: a wrong CA is refused by bb8 too.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let other = neon_connect_testing::TestCa::new("some other CA").unwrap();
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let bad_url = url.replace(
        &server.ca_file().display().to_string(),
        &other_ca.display().to_string(),
    );
    let bad = Options::from_connection_string(ConnectionString::parse(&bad_url).unwrap());
    let manager = bb8_postgres::PostgresConnectionManager::new(
        bad.tokio_postgres_config().await.unwrap(),
        bad.rustls_connector().await.unwrap(),
    );
    // What bb8 calls to open a connection (its pool only logs the error and times out).
    let err = bb8::ManageConnection::connect(&manager)
        .await
        .map(|_| ())
        .expect_err("an unknown CA must be refused");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
}
