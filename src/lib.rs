//! neon-connect: a verified, TLS-only deadpool pool of tokio-postgres clients from a libpq
//! connection string.

pub mod config;
pub mod error;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::ConnectionString;
pub use error::{Error, ErrorKind, Step};
