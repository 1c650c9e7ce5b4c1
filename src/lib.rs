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
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod config;
mod connect;
mod diagnostics;
pub mod error;
mod pgpass;
mod pool;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use config::ConnectionString;
pub use connect::{ConnectionInfo, DEFAULT_CONNECT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT};
pub use diagnostics::troubleshooting_table;
pub use error::{Error, ErrorKind, Step};
pub use pool::{
    Client, Manager, Options, Pool, PooledConnection, DEFAULT_APPLICATION_NAME,
    DEFAULT_CHECK_AFTER_IDLE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_LIFETIME, DEFAULT_POOL_SIZE,
    DEFAULT_RECYCLE_TIMEOUT, DEFAULT_WAIT_TIMEOUT,
};
pub use tls::{TlsInfo, TlsStream, Verification};
#[cfg(feature = "serde")]
pub use pool::PoolSettings;

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
