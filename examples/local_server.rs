//! Starts a local TLS-only PostgreSQL (certificates made on the spot), prints its connection
//! string, and serves until Ctrl-C: something to point `neon-doctor` or your own service at.
//!
//! ```text
//! cargo run --example local_server
//! ```

use neon_connect_testing::{PgServer, ServerOptions};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let server = PgServer::start(ServerOptions::default())?;
    println!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(),
        server.ca_file().display()
    );
    eprintln!(
        "serving until Ctrl-C (log: {})",
        server.log_file().display()
    );
    tokio::signal::ctrl_c().await?;
    server.stop()
}
