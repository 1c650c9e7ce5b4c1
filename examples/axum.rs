//! A small axum service on one neon-connect pool.
//!
//! The pool is built once at startup from `DATABASE_URL` (and the `PG*` variables), shared in
//! the router's state, and closed after a graceful shutdown on Ctrl-C or SIGTERM.
//!
//! ```text
//! DATABASE_URL='postgresql://user:pass@ep-x.aws.neon.tech/neondb' cargo run --example axum
//! curl 'http://127.0.0.1:3000/query?n=41'   # {"n":41,"result":42}
//! curl 'http://127.0.0.1:3000/health'       # {"available":1,"max_size":10,"ok":true,"size":1,"waiting":0}
//! curl 'http://127.0.0.1:3000/metrics'      # neon_connect_connections_opened_total 1 ... (with --features metrics)
//! ```
//!
//! Built with `--features metrics`, the pool records its metrics through the `metrics` facade,
//! and `/metrics` serves them in Prometheus' text format (`metrics-exporter-prometheus`); without
//! the feature the page is empty.
//!
//! `BIND` sets the listen address (default `127.0.0.1:3000`). Without `DATABASE_URL` (and no
//! `PGHOST`) it prints what to set and exits with status 2.

#[path = "axum/app.rs"]
mod app;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("DATABASE_URL").is_none() && std::env::var_os("PGHOST").is_none() {
        eprintln!("set DATABASE_URL, e.g. DATABASE_URL='postgresql://user:pass@ep-x.aws.neon.tech/neondb' (try `cargo run --example quickstart` for a local server)");
        return ExitCode::from(2);
    }
    // The pool's metrics (with the crate's `metrics` feature), served at /metrics. Installed
    // before the pool exists, so its first connections are counted.
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            eprintln!("warning: no /metrics: {e}");
            None
        }
    };
    // Fails here, before the service listens, on a wrong password, certificate or host.
    let pool = match neon_connect::Options::from_env() {
        // Every new connection gets the service's session settings before it is handed out
        // (on a Neon -pooler host, set these on the role instead: see the README).
        Ok(options) => match options
            .after_connect(|client| {
                Box::pin(async move {
                    client
                        .batch_execute("SET statement_timeout = '10s'; SET lock_timeout = '2s'")
                        .await?;
                    Ok(())
                })
            })
            .connect()
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => eprintln!("warning: cannot read the bound address: {e}"),
    }
    let served = axum::serve(listener, app::app(pool.clone(), metrics))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    // In-flight requests have finished: close the connections instead of leaving them to
    // the server's idle timeout.
    pool.close();
    match served {
        Ok(()) => {
            println!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM, as sent by `kill`, systemd, Docker and Kubernetes.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
