//! A primary and a streaming standby: for testing failover and read replicas.
//!
//! [`ReplicatedPair::start`] starts a TLS-only primary like [`PgServer::start`] does, makes a
//! standby from it with `pg_basebackup -R` over TLS (a `hostssl replication` line in
//! `pg_hba.conf`, a `REPLICATION` role, a physical replication slot, `sslmode=verify-full`
//! against the test CA) and starts it as a hot standby. Both servers have the same user,
//! password, database and CA, so one multi-host connection string reaches both:
//!
//! ```no_run
//! use neon_connect_testing::ReplicatedPair;
//!
//! # fn main() -> std::io::Result<()> {
//! let pair = ReplicatedPair::start()?;
//! // postgresql://neon:...@localhost:PRIMARY,localhost:STANDBY/neondb
//! let url = format!(
//!     "{}?target_session_attrs=read-write&sslrootcert={}",
//!     pair.url(),
//!     pair.primary().ca_file().display()
//! );
//! pair.primary().psql("create table t (x int); insert into t values (1)")?;
//! pair.wait_for_catch_up()?; // the standby has replayed everything the primary wrote
//! assert_eq!(pair.standby().psql("select count(*) from t")?, "1");
//!
//! // Failover: the primary goes away, the standby becomes the new primary.
//! pair.stop_primary()?;
//! pair.promote_standby()?;
//! assert_eq!(pair.standby().psql("select pg_is_in_recovery()")?, "f");
//! # let _ = url;
//! # Ok(())
//! # }
//! ```
//!
//! The old primary is not turned into a standby of the new one (that takes `pg_rewind`); it
//! can be started again with [`PgServer::start_again`], as a second primary.

use crate::{PgServer, ServerOptions};
use std::fmt;
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The role the standby replicates as.
pub const REPLICATION_USER: &str = "replicator";
const REPLICATION_PASSWORD: &str = "npg_ReplicaSecret7";
/// The servers run with root's `HOME` when the tests run as root, where libpq's default client
/// certificate (`~/.postgresql/postgresql.crt`) cannot be read: point it at nothing.
const NO_CLIENT_CERT: &str = "/nonexistent/neon-connect-testing/no-client.crt";
const SLOT: &str = "neon_connect_standby";
/// How long [`ReplicatedPair::wait_for_catch_up`] and [`ReplicatedPair::promote_standby`] wait.
const WAIT: Duration = Duration::from_secs(30);

/// A primary and its streaming hot standby, both TLS-only and stopped on drop. See the module
/// docs.
pub struct ReplicatedPair {
    // The standby is dropped (stopped) first, then the primary.
    standby: PgServer,
    primary: PgServer,
}

impl ReplicatedPair {
    /// Starts a primary and a standby with the default [`ServerOptions`], and waits until the
    /// standby accepts (read-only) connections.
    ///
    /// # Errors
    ///
    /// As for [`PgServer::start`]; also when `pg_basebackup` fails (the message quotes it).
    pub fn start() -> io::Result<ReplicatedPair> {
        ReplicatedPair::start_with(ServerOptions::default())
    }

    /// [`ReplicatedPair::start`] with `opts` for both servers (the standby gets its own port,
    /// certificate and directory; `extra_conf` lines apply to both).
    ///
    /// # Errors
    ///
    /// As for [`ReplicatedPair::start`].
    pub fn start_with(opts: ServerOptions) -> io::Result<ReplicatedPair> {
        if !opts.tls {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ReplicatedPair: replication runs over TLS, so the servers need tls",
            ));
        }
        let replication = "hostssl replication all 127.0.0.1/32 scram-sha-256";
        let primary = PgServer::start_with(opts.clone(), &[replication], None)?;
        primary.psql(&format!(
            "CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '{REPLICATION_PASSWORD}'"
        ))?;
        let conninfo = format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={REPLICATION_USER} \
             password={REPLICATION_PASSWORD} sslmode=verify-full sslrootcert='{}' \
             application_name=standby sslcert={NO_CLIENT_CERT}",
            primary.port(),
            primary.ca_file().display().to_string().replace('\'', "\\'"),
        );
        let basebackup = move |bin_dir: &Path, data_dir: &Path| -> io::Result<()> {
            let mut cmd = crate::server_command(bin_dir, "pg_basebackup")?;
            cmd.arg("-d")
                .arg(&conninfo)
                .arg("-D")
                .arg(data_dir)
                .args([
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                    "-C",
                    "-S",
                    SLOT,
                ])
                .current_dir(data_dir.parent().unwrap_or(Path::new("/")));
            crate::run(&mut cmd).map(drop)
        };
        // A hot standby accepts connections once it has replayed a snapshot of the primary's
        // running transactions, which PostgreSQL 15 logs every 15 s and at each checkpoint:
        // checkpoint until the standby is up rather than wait for the next one.
        let starting = std::sync::atomic::AtomicBool::new(true);
        let standby = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                while starting.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = primary.psql("checkpoint");
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let standby = PgServer::start_with(opts, &[replication], Some(&basebackup));
            starting.store(false, std::sync::atomic::Ordering::Release);
            standby
        })?;
        let pair = ReplicatedPair { standby, primary };
        pair.wait_for_catch_up()?;
        Ok(pair)
    }

    /// The primary (until [`ReplicatedPair::promote_standby`], the only writable server).
    pub fn primary(&self) -> &PgServer {
        &self.primary
    }

    /// The standby (read-only until promoted).
    pub fn standby(&self) -> &PgServer {
        &self.standby
    }

    /// `postgresql://USER:PASSWORD@localhost:PRIMARY_PORT,localhost:STANDBY_PORT/DBNAME`: both
    /// servers, primary first. Add `?target_session_attrs=...&sslrootcert=...` as needed.
    pub fn url(&self) -> String {
        self.url_in_order(&[&self.primary, &self.standby])
    }

    /// Like [`ReplicatedPair::url`] with the standby first.
    pub fn url_standby_first(&self) -> String {
        self.url_in_order(&[&self.standby, &self.primary])
    }

    fn url_in_order(&self, servers: &[&PgServer]) -> String {
        let one = self.primary.url();
        // postgresql://user:password@localhost:PORT/db: swap the host list in.
        let (head, rest) = one.split_once('@').expect("a URL with user info");
        let (_, path) = rest.split_once('/').expect("a URL with a path");
        let hosts: Vec<String> = servers
            .iter()
            .map(|s| format!("{}:{}", s.host(), s.port()))
            .collect();
        format!("{head}@{}/{path}", hosts.join(","))
    }

    /// Waits until the standby has replayed all the WAL the primary has written so far (a
    /// write committed on the primary before this call is visible on the standby after it).
    ///
    /// # Errors
    ///
    /// When either server cannot be queried, or the standby lags for more than 30 seconds.
    pub fn wait_for_catch_up(&self) -> io::Result<()> {
        let lsn = self.primary.psql("select pg_current_wal_insert_lsn()")?;
        let deadline = Instant::now() + WAIT;
        loop {
            let caught_up = self.standby.psql(&format!(
                "select coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false)"
            ))?;
            if caught_up == "t" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the standby did not replay up to {lsn} within {WAIT:?}; its log: {}",
                        self.standby.log_file().display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the primary (fast shutdown: its sessions are terminated, and it sends the standby
    /// everything it wrote before exiting). Connections to its port are refused afterwards.
    ///
    /// # Errors
    ///
    /// As for [`PgServer::stop`].
    pub fn stop_primary(&self) -> io::Result<()> {
        self.primary.stop()
    }

    /// Promotes the standby (`SELECT pg_promote()`) and returns once it accepts writes.
    ///
    /// # Errors
    ///
    /// When the standby cannot be reached or is not promoted within 30 seconds.
    pub fn promote_standby(&self) -> io::Result<()> {
        let promoted = self
            .standby
            .psql(&format!("select pg_promote(true, {})", WAIT.as_secs()))?;
        if promoted != "t" {
            return Err(io::Error::other(format!(
                "pg_promote() returned {promoted:?}; the standby's log: {}",
                self.standby.log_file().display()
            )));
        }
        Ok(())
    }

    /// Whether `server` (the primary or the standby) is in recovery, as `pg_is_in_recovery()`
    /// says over its Unix socket.
    ///
    /// # Errors
    ///
    /// When it cannot be queried.
    pub fn in_recovery(server: &PgServer) -> io::Result<bool> {
        Ok(server.psql("select pg_is_in_recovery()")? == "t")
    }

    /// `psql` over TCP with a libpq connection string (keywords or URL), from the same
    /// binaries as the servers: to compare a client with libpq on this pair. Returns psql's
    /// output (`-Atq`), or its stderr as the error.
    ///
    /// # Errors
    ///
    /// When psql fails; the message is its stderr.
    pub fn libpq_psql(&self, conninfo: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.primary.bin_dir.join("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo)
            .arg("-c")
            .arg(sql);
        crate::clear_pg_env(&mut cmd);
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl fmt::Debug for ReplicatedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedPair")
            .field("primary", &self.primary)
            .field("standby", &self.standby)
            .finish()
    }
}
