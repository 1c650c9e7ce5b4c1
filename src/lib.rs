//! neon-connect: a verified, TLS-only deadpool pool of tokio-postgres clients from a libpq
//! connection string.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = neon_connect::neon_connect(&std::env::var("DATABASE_URL")?).await?;
//! let client = pool.get().await?;
//! let row = client.query_one("SELECT 1 + 1", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 2);
//! # Ok(()) }
//! ```
//!
//! The first connection is opened and checked before the pool is returned, so a wrong
//! password, certificate or host fails at startup. Errors ([`Error`]) say what failed, at
//! which [`Step`], and what to change.
//!
//! # Configuration
//!
//! [`Options`] starts from a connection string ([`Options::new`]) or from the environment
//! ([`Options::from_env`]: `DATABASE_URL`, then `PG*`), reads the password file
//! (`PGPASSFILE` or `~/.pgpass`) when no password is given, and sets what a URL cannot say:
//!
//! ```no_run
//! # async fn run() -> Result<(), neon_connect::Error> {
//! use std::time::Duration;
//! let pool = neon_connect::Options::from_env()?
//!     .pool_size(20)
//!     .wait_timeout(Duration::from_secs(5))
//!     .connect()
//!     .await?;
//! let status = pool.status(); // size, available, waiting, max_size: for health endpoints
//! # Ok(()) }
//! ```
//!
//! # Pooled endpoints
//!
//! Neon `-pooler` hosts are PgBouncer in transaction mode: the pool works there, but session
//! state (`SET`, `LISTEN`, SQL `PREPARE`, startup `options`) does not survive a transaction;
//! use `query_typed` or transactions for parameterised queries. A warning is logged once.
//!
//! # Other drivers
//!
//! [`Options::tokio_postgres_config`] and [`Options::rustls_connector`] give other
//! tokio-postgres based stacks (bb8, diesel-async, a hand-made pool) the same TLS policy;
//! [`Options::connect_one`] opens one connection without a pool.
//!
//! # Features
//!
//! (The same table is the README's "Feature flags"; a test keeps the two equal.)
//!
#![doc = include_str!("../docs/features.md")]
//!
//! The minimum supported Rust version is 1.85.
//!
//! # Where things live
//!
//! | concept | owner |
//! |---|---|
//! | a connection parameter (parsing, `PG*` variable, default, redacted form, docs) | one row of the key table in `config/keys.rs`, its field and getter in `config/mod.rs`, and the code that uses it |
//! | connection string lexers, the password file | `config/url.rs`, `config/keyvalue.rs`, `config/env.rs`, `config/pgpass.rs` |
//! | what a pool is built from ([`Options`]) | `options.rs` |
//! | opening one connection: hosts × addresses, deadlines, retries, the driver's `Config`; which server it lands on (`target_session_attrs`, the role watch the pool reads) | `connect.rs` |
//! | the TLS policy (`sslmode` table, roots, client certificates, verifiers, the stream) | `tls/` |
//! | Neon: its hosts, endpoint IDs, `-pooler`, direct TLS by default, its proxy's texts | `neon.rs` |
//! | a diagnosis (id, kind, retried, help) and the classifier | `diagnostics/catalogue.rs`, `diagnostics/mod.rs` |
//! | the error type | `error.rs` |
//! | the pool: `get` with one deadline and `ping` (`mod.rs`), the client it hands out and its cancel of abandoned work (`client.rs`), opening, checking and retiring connections (`manager.rs`), waiting `get`s' deadline and trace (`deadline.rs`), the server-full size (`full.rs`), `min_idle` (`warm.rs`) | `pool/` |
//! | metrics (feature `metrics`), leak detection, lifetime jitter | `service.rs` |
//! | the doctor's steps (feature `cli`); the program | `doctor/`; `src/bin/neon-doctor/` |
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod config;
mod connect;
mod diagnostics;
#[cfg(feature = "cli")]
pub mod doctor;
pub mod error;
mod neon;
mod options;
mod pool;
mod service;
mod tls;

pub use config::ConnectionString;
pub use connect::{
    ConnectionInfo, DEFAULT_CONNECT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVES_COUNT,
    DEFAULT_KEEPALIVES_IDLE, DEFAULT_KEEPALIVES_INTERVAL, DEFAULT_TCP_USER_TIMEOUT,
};
pub use diagnostics::Diagnosis;
pub use error::{Error, ErrorKind, Step};
pub use options::Options;
#[cfg(feature = "serde")]
pub use options::PoolSettings;
pub use pool::{
    Client, HookError, HookFuture, Manager, Pool, PooledConnection, ABANDON_GRACE,
    DEFAULT_APPLICATION_NAME, DEFAULT_CHECK_AFTER_IDLE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_LIFETIME,
    DEFAULT_POOL_SIZE, DEFAULT_RECYCLE_TIMEOUT, DEFAULT_WAIT_TIMEOUT, GOODBYE_TIMEOUT,
    MIN_IDLE_INTERVAL,
};
pub use service::names as metric_names;
pub use tls::{TlsInfo, TlsStream, Verification};

/// The README's code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use deadpool;
pub use deadpool_postgres;
pub use rustls;
pub use tokio_postgres;
pub use tokio_postgres_rustls;

/// Opens a verified pool from a connection string (URL or `key=value`), with the `PG*`
/// environment filling what the string leaves out.
///
/// The first connection is opened and checked before this returns, so a wrong password,
/// certificate or host fails here.
///
/// # Errors
/// Any [`ErrorKind`]; the error's `Display` says what failed, at which step, and the fix.
pub async fn neon_connect(url: &str) -> Result<Pool, Error> {
    Options::new(url)?.connect().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_shows_the_crate_docs_feature_table() {
        let readme = include_str!("../README.md");
        let table = include_str!("../docs/features.md");
        assert!(
            readme.contains(table),
            "README's Feature flags differ from docs/features.md"
        );
    }
}
