//! Other pools on the crate's settings, shared by `examples/bb8.rs` and its test
//! (`tests/bb8.rs`): bb8 with bb8-postgres, and a hand-made pool, both built from
//! `Options::tokio_postgres_config()` (hosts, ports, `hostaddr`, user, password, database,
//! keepalives) and `Options::rustls_connector()` (the same roots and verification).

use bb8_postgres::PostgresConnectionManager;
use neon_connect::tokio_postgres;
use neon_connect::tokio_postgres_rustls::MakeRustlsConnect;
use std::sync::Mutex;

/// A bb8 pool of `size` connections on the crate's settings.
pub async fn bb8_pool(
    options: &neon_connect::Options,
    size: u32,
) -> Result<bb8::Pool<PostgresConnectionManager<MakeRustlsConnect>>, Box<dyn std::error::Error>> {
    let config = options.tokio_postgres_config().await?;
    let tls = options.rustls_connector().await?;
    let manager = PostgresConnectionManager::new(config, tls);
    Ok(bb8::Pool::builder().max_size(size).build(manager).await?)
}

/// The smallest hand-made pool: connections opened on demand, kept in a stack.
pub struct HandMadePool {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    idle: Mutex<Vec<tokio_postgres::Client>>,
}

impl HandMadePool {
    /// A pool on the crate's settings; opens nothing yet.
    pub async fn new(options: &neon_connect::Options) -> Result<HandMadePool, neon_connect::Error> {
        Ok(HandMadePool {
            config: options.tokio_postgres_config().await?,
            tls: options.rustls_connector().await?,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle client, or a new one (its connection task spawned).
    pub async fn get(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        if let Some(client) = self.idle.lock().unwrap().pop() {
            if !client.is_closed() {
                return Ok(client);
            }
        }
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Gives a client back.
    pub fn put(&self, client: tokio_postgres::Client) {
        self.idle.lock().unwrap().push(client);
    }
}
