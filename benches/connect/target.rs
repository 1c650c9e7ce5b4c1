//! The servers' connection settings and the hand-wired tokio-postgres-rustls and raw
//! deadpool-postgres clients that neon-connect is compared with.

use neon_connect::deadpool_postgres;
use neon_connect::rustls::{self, crypto::CryptoProvider, ClientConfig, RootCertStore};
use neon_connect::tokio_postgres::{self, config::SslMode};
use neon_connect::tokio_postgres_rustls::MakeRustlsConnect;
use neon_connect::Options;
use neon_connect_testing::PgServer;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) ca: PathBuf,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) dbname: String,
}

impl Target {
    pub(crate) fn of(s: &PgServer) -> Target {
        Target {
            url: format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                s.url(),
                s.ca_file().display()
            ),
            port: s.port(),
            ca: s.ca_file().to_path_buf(),
            user: s.user().to_string(),
            password: s.password().to_string(),
            dbname: s.dbname().to_string(),
        }
    }

    /// The same server through a relay on `port`.
    pub(crate) fn via(&self, port: u16) -> Target {
        Target {
            url: self
                .url
                .replace(&format!(":{}/", self.port), &format!(":{port}/")),
            port,
            ca: self.ca.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            dbname: self.dbname.clone(),
        }
    }

    /// The target as command-line arguments for a child process ([`Target::from_args`]).
    pub(crate) fn to_args(&self) -> Vec<String> {
        vec![
            self.url.clone(),
            self.port.to_string(),
            self.ca.display().to_string(),
            self.user.clone(),
            self.password.clone(),
            self.dbname.clone(),
        ]
    }

    pub(crate) fn from_args(args: &[String]) -> Target {
        let [url, port, ca, user, password, dbname] = args else {
            panic!("expected URL PORT CA USER PASSWORD DBNAME")
        };
        Target {
            url: url.clone(),
            port: port.parse().expect("port"),
            ca: PathBuf::from(ca),
            user: user.clone(),
            password: password.clone(),
            dbname: dbname.clone(),
        }
    }

    pub(crate) fn tokio_postgres(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("localhost")
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .ssl_mode(SslMode::Require);
        c
    }

    pub(crate) fn libpq(&self, extra: &str) -> String {
        format!(
            "host=localhost port={} user={} dbname={} sslmode=verify-full sslrootcert={} {extra}",
            self.port,
            self.user,
            self.dbname,
            self.ca.display()
        )
    }
}

pub(crate) async fn finish<S>(
    client: tokio_postgres::Client,
    conn: tokio_postgres::Connection<tokio_postgres::Socket, S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let task = tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.expect("SELECT 1");
    drop(client);
    let _ = task.await;
}

pub(crate) fn default_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        Arc::new(rustls::crypto::ring::default_provider())
    }
}

/// The provider with P-256 first, as neon-connect orders it.
pub(crate) fn neon_connect_provider() -> Arc<CryptoProvider> {
    let mut p = (*default_provider()).clone();
    p.kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
    Arc::new(p)
}

pub(crate) fn client_config(ca: &Path, provider: Arc<CryptoProvider>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A copy of `config` with its own, empty session cache: a clone shares the cache, which
/// remembers each server's key exchange group (and would hide the HelloRetryRequest).
pub(crate) fn fresh(config: &ClientConfig) -> ClientConfig {
    let mut c = config.clone();
    c.resumption = rustls::client::Resumption::default();
    c
}

pub(crate) fn raw_deadpool(t: &Target, size: usize) -> deadpool_postgres::Pool {
    raw_builder(t, size).build().expect("raw pool")
}

/// [`raw_deadpool`] with the deadlines a service sets (neon-connect's defaults: wait 15 s,
/// create 15 s, recycle 2 s), so that a `get` cannot hang.
pub(crate) fn raw_deadpool_with_deadlines(t: &Target, size: usize) -> deadpool_postgres::Pool {
    raw_builder(t, size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(neon_connect::DEFAULT_WAIT_TIMEOUT))
        .create_timeout(Some(neon_connect::DEFAULT_WAIT_TIMEOUT))
        .recycle_timeout(Some(neon_connect::DEFAULT_RECYCLE_TIMEOUT))
        .build()
        .expect("raw pool")
}

/// Raw deadpool-postgres with tokio-postgres-rustls (`RecyclingMethod::Fast`), `size`
/// connections.
fn raw_builder(t: &Target, size: usize) -> deadpool_postgres::PoolBuilder {
    let tls = MakeRustlsConnect::new((*client_config(&t.ca, default_provider())).clone());
    let manager = deadpool_postgres::Manager::from_config(
        t.tokio_postgres(),
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager).max_size(size)
}

/// Opens every connection of both pools before measuring.
pub(crate) async fn warm(pool: &neon_connect::Pool, raw: &deadpool_postgres::Pool) {
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(pool.get().await.expect("warm"));
    }
    drop(held);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(raw.get().await.expect("warm"));
    }
}

pub(crate) async fn server_version(t: &Target) -> String {
    let (client, conn, _) = Options::new(&t.url)
        .expect("options")
        .connect_one()
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let v: String = client
        .query_one("SHOW server_version", &[])
        .await
        .expect("version")
        .get(0);
    drop(client);
    let _ = task.await;
    v
}
