//! Connects and shows what was negotiated.
//!
//! With `DATABASE_URL` set, connects there. Without it, starts a local TLS-only PostgreSQL
//! (certificates made on the spot) and connects to that:
//!
//! ```text
//! cargo run --example quickstart
//! DATABASE_URL='postgresql://user:pass@ep-x.aws.neon.tech/neondb' cargo run --example quickstart
//! ```

use neon_connect_testing::{PgServer, ServerOptions};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut _local = None;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            println!("DATABASE_URL is not set: starting a local TLS-only PostgreSQL...");
            let server = match PgServer::start(ServerOptions::default()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: could not start the local server: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let url = format!(
                "{}?sslmode=verify-full&sslrootcert={}&channel_binding=require",
                server.url(),
                server.ca_file().display()
            );
            _local = Some(server);
            url
        }
    };

    match run(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str) -> Result<(), neon_connect::Error> {
    let options = neon_connect::Options::new(url)?;
    println!("connection string: {}", options.connection_string());
    let pool = options.connect().await?;
    let client = pool.get().await?;
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|e| format!("(could not read: {e})"));
    let server_ssl = client
        .query_opt(
            "SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)));

    let info = pool.info().expect("the first connection was checked");
    println!(
        "connected to:      {} ({}) in {:.0} ms",
        info.host,
        info.addr,
        info.elapsed.as_secs_f64() * 1000.0
    );
    println!("server:            {version}");
    match &info.tls {
        Some(tls) => {
            println!("TLS:               {} {}", tls.protocol, tls.cipher_suite);
            println!(
                "certificate:       {} against {}",
                tls.verification, tls.roots
            );
            println!(
                "SNI:               {}",
                if tls.sni_sent { "sent" } else { "not sent" }
            );
            println!(
                "negotiation:       {}",
                if tls.direct {
                    "direct TLS (ALPN postgresql)"
                } else {
                    "TLS request (SSLRequest), then TLS"
                }
            );
            let binding = match (info.channel_binding_required, tls.channel_binding_digest) {
                (true, Some(d)) => format!("used (required; tls-server-end-point, {d})"),
                (false, Some(d)) => {
                    format!("available (tls-server-end-point, {d}); used if the server offers SCRAM-SHA-256-PLUS")
                }
                (_, None) => "not possible with this certificate's signature algorithm".to_string(),
            };
            println!("channel binding:   {binding}");
            if let Some(method) = info.authentication {
                println!("authentication:    {method}");
            }
        }
        None => println!("TLS:               not used (Unix socket)"),
    }
    if let Some(s) = server_ssl {
        println!("server sees:       encrypted session ({s})");
    }
    let status = pool.status();
    println!(
        "pool:              {} open, {} idle, max {}",
        status.size, status.available, status.max_size
    );
    Ok(())
}
