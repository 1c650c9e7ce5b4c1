//! bb8 (with bb8-postgres) and a hand-made pool on neon-connect's settings: the connection
//! string, `PG*` variables, password file and TLS policy are read once by `Options`, and
//! `tokio_postgres_config()` + `rustls_connector()` give any tokio-postgres pool the same
//! servers (`hostaddr` included) and the same certificate verification.
//!
//! ```text
//! DATABASE_URL='postgresql://user:pass@ep-x.aws.neon.tech/neondb' cargo run --example bb8
//! ```

#[path = "bb8/pools.rs"]
mod pools;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = neon_connect::Options::from_env()?;

    let pool = pools::bb8_pool(&options, 4).await?;
    let client = pool.get().await?;
    let n: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    println!("bb8: SELECT 1 = {n}");
    drop(client);

    let hand_made = pools::HandMadePool::new(&options).await?;
    let client = hand_made.get().await?;
    let n: i32 = client.query_one("SELECT 2", &[]).await?.get(0);
    println!("hand-made pool: SELECT 2 = {n}");
    hand_made.put(client);
    Ok(())
}
