//! Another driver on the crate's TLS policy: plain `tokio_postgres::Config::connect` with the
//! connector and settings from [`neon_connect::Options`], as a migration tool, bb8-postgres or
//! diesel-async would use them. No pool.
//!
//! ```text
//! DATABASE_URL='postgresql://user:pass@ep-x.aws.neon.tech/neondb' cargo run --example single_connection
//! ```
//!
//! Without `DATABASE_URL` (and no `PGHOST`) it starts a local TLS-only PostgreSQL and connects
//! to that.

use neon_connect_testing::{PgServer, ServerOptions};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut _local = None;
    let options =
        if std::env::var_os("DATABASE_URL").is_some() || std::env::var_os("PGHOST").is_some() {
            neon_connect::Options::from_env()
        } else {
            println!("DATABASE_URL is not set: starting a local TLS-only PostgreSQL...");
            let server = match PgServer::start(ServerOptions::default()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: could not start the local server: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let url = format!(
                "{}?sslrootcert={}",
                server.url(),
                server.ca_file().display()
            );
            _local = Some(server);
            neon_connect::Options::new(&url)
        };
    match options {
        Ok(options) => match run(&options).await {
            Ok(answer) => {
                println!("SELECT $1 + 1 with $1 = 41 returned {answer}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects with tokio-postgres itself, using the crate's verified rustls connector.
async fn run(options: &neon_connect::Options) -> Result<i64, Box<dyn std::error::Error>> {
    let config = options.tokio_postgres_config().await?;
    let tls = options.rustls_connector().await?;
    let (client, connection) = config.connect(tls).await?;
    let driver = tokio::spawn(connection);
    let answer: i64 = client
        .query_one("SELECT $1::int8 + 1", &[&41i64])
        .await?
        .get(0);
    drop(client);
    driver.await??;
    Ok(answer)
}
