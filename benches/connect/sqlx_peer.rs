//! sqlx 0.8 as a peer (what most users would pick instead): its own connection options,
//! `verify-full` against the same CA, ring through its `tls-rustls` feature.

use crate::target::Target;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use sqlx::Connection;

pub(crate) fn options(t: &Target) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("localhost")
        .port(t.port)
        .username(&t.user)
        .password(&t.password)
        .database(&t.dbname)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(&t.ca)
}

/// Connect, a prepared `SELECT 1` (as tokio-postgres's `query_one`), close.
pub(crate) async fn connect_query_close(opts: &PgConnectOptions) {
    let mut c = PgConnection::connect_with(opts)
        .await
        .expect("sqlx connect");
    sqlx::query("SELECT 1")
        .fetch_one(&mut c)
        .await
        .expect("sqlx SELECT 1");
    c.close().await.expect("sqlx close");
}

/// Connect only; then a simple-protocol `SELECT 1` and close, outside the returned time.
pub(crate) async fn timed_connect(opts: &PgConnectOptions) -> std::time::Duration {
    let started = std::time::Instant::now();
    let mut c = PgConnection::connect_with(opts)
        .await
        .expect("sqlx connect");
    let took = started.elapsed();
    sqlx::raw_sql("SELECT 1")
        .execute(&mut c)
        .await
        .expect("sqlx SELECT 1");
    c.close().await.expect("sqlx close");
    took
}

/// A pool of `size` connections with sqlx's defaults (among them `test_before_acquire`: a
/// ping per checkout).
pub(crate) async fn pool(opts: &PgConnectOptions, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .connect_with(opts.clone())
        .await
        .expect("sqlx pool")
}

/// Opens every connection of the pool (all checked out at once), each runs `SELECT 1`, then
/// all go back idle.
pub(crate) async fn warm(pool: &PgPool, size: usize) {
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.acquire().await.expect("sqlx acquire"));
    }
    for c in &mut held {
        sqlx::query("SELECT 1")
            .fetch_one(&mut **c)
            .await
            .expect("sqlx SELECT 1");
    }
}

/// One pooled checkout + prepared `SELECT 1`.
pub(crate) async fn pooled_select1(pool: &PgPool) {
    sqlx::query("SELECT 1")
        .fetch_one(pool)
        .await
        .expect("sqlx pooled SELECT 1");
}
