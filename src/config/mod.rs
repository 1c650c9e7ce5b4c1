//! Connection strings: libpq URL and `key=value` forms, `PG*` environment variables, validation.
//!
//! Parsing is pure: [`ConnectionString::parse`] reads only its argument, and
//! [`ConnectionString::parse_with_env`] takes the environment as a lookup function, so tests
//! need no process-wide environment changes. The connection string beats the environment,
//! which beats the defaults. Every invalid value is an error that names its key (never a
//! silent default) and never quotes a password.
//!
//! Where things are: `keys.rs` is the table of parameters (how each is read, written back and
//! documented), `values.rs` the typed values, `url.rs` and `keyvalue.rs` the two lexers,
//! `env.rs` the `PG*` variables, `pgpass.rs` the password file, `redact.rs` the printable forms.

mod env;
mod keys;
mod keyvalue;
pub(crate) mod pgpass;
mod redact;
mod url;
mod values;

use keys::{canonical, ignored, unknown_key};
use values::Origin;
pub use values::{
    ChannelBinding, Host, LoadBalanceHosts, Password, RootCert, ServerRole, Source, SslCertMode,
    SslMode, SslNegotiation, TargetSessionAttrs, TlsVersion,
};

use crate::error::Error;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A parsed, validated connection string with the environment applied.
///
/// Fields keep libpq's meaning; `None` means "not given anywhere" and the documented default
/// applies. `Debug` never shows the password.
#[derive(Clone, PartialEq)]
pub struct ConnectionString {
    hosts: Vec<Host>,
    /// `hostaddr`, one per host when given (libpq allows empty entries: `None`).
    hostaddrs: Vec<Option<IpAddr>>,
    /// One port for all hosts, or one per host.
    ports: Vec<u16>,
    user: Option<String>,
    password: Option<Password>,
    dbname: Option<String>,
    options: Option<String>,
    application_name: Option<String>,
    sslmode: Option<SslMode>,
    sslrootcert: Option<RootCert>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    sslpassword: Option<Password>,
    sslcertmode: Option<SslCertMode>,
    sslcrl: Option<PathBuf>,
    sslcrldir: Option<PathBuf>,
    sslnegotiation: Option<SslNegotiation>,
    sslsni: Option<bool>,
    ssl_min_protocol_version: Option<TlsVersion>,
    ssl_max_protocol_version: Option<TlsVersion>,
    channel_binding: Option<ChannelBinding>,
    connect_timeout: Option<Duration>,
    tcp_user_timeout: Option<Duration>,
    keepalives: Option<bool>,
    keepalives_idle: Option<Duration>,
    keepalives_interval: Option<Duration>,
    keepalives_count: Option<u32>,
    target_session_attrs: Option<TargetSessionAttrs>,
    load_balance_hosts: Option<LoadBalanceHosts>,
    /// (canonical key, where its value came from), for every key that has a value.
    sources: Vec<(&'static str, Source)>,
}

impl ConnectionString {
    fn empty() -> ConnectionString {
        ConnectionString {
            hosts: Vec::new(),
            hostaddrs: Vec::new(),
            ports: Vec::new(),
            user: None,
            password: None,
            dbname: None,
            options: None,
            application_name: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            sslpassword: None,
            sslcertmode: None,
            sslcrl: None,
            sslcrldir: None,
            sslnegotiation: None,
            sslsni: None,
            ssl_min_protocol_version: None,
            ssl_max_protocol_version: None,
            channel_binding: None,
            connect_timeout: None,
            tcp_user_timeout: None,
            keepalives: None,
            keepalives_idle: None,
            keepalives_interval: None,
            keepalives_count: None,
            target_session_attrs: None,
            load_balance_hosts: None,
            sources: Vec::new(),
        }
    }

    /// Parses a connection string (URL or `key=value` form) without reading the environment.
    ///
    /// ```
    /// use neon_connect::ConnectionString;
    /// let cs = ConnectionString::parse("postgresql://alex@ep-x.neon.tech/neondb?sslmode=verify-full")?;
    /// assert_eq!(cs.dbname(), Some("neondb"));
    /// # Ok::<(), neon_connect::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::ConnectionString`], naming the key or the part that is wrong (never
    /// quoting the password).
    pub fn parse(s: &str) -> Result<ConnectionString, Error> {
        Self::parse_with_env(s, |_| None)
    }

    /// Parses a connection string, then fills what it leaves out from the `PG*` variables
    /// looked up through `env` (pass `|k| std::env::var(k).ok()` for the process environment).
    ///
    /// As in libpq, a key given in the string wins (even with an empty value), then its
    /// environment variable, then the default. The deprecated `PGREQUIRESSL=1` means
    /// `sslmode=require` when neither `sslmode` nor `PGSSLMODE` is set.
    ///
    /// # Errors
    /// [`crate::ErrorKind::ConnectionString`], naming the key or variable that is wrong.
    pub fn parse_with_env(
        s: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectionString, Error> {
        let mut cs = ConnectionString::empty();
        for (key, value) in lex(s)? {
            let Some(name) = canonical(&key) else {
                match ignored(&key, &value) {
                    Some(result) => {
                        result?;
                        continue;
                    }
                    None => return Err(unknown_key(&key)),
                }
            };
            cs.set(name, &value, Origin::Param(&key), Source::ConnectionString)?;
        }
        env::apply(&mut cs, env)?;
        cs.finish()?;
        Ok(cs)
    }

    /// The one way a parsed value is written: through the key table, recording its source.
    fn set(
        &mut self,
        name: &'static str,
        value: &str,
        origin: Origin<'_>,
        source: Source,
    ) -> Result<(), Error> {
        let info = keys::info(name).expect("a canonical key is in the table");
        (info.set)(self, value, origin)?;
        self.mark(name, source);
        Ok(())
    }

    /// Records where the value of `key` came from (every setter calls it).
    fn mark(&mut self, key: &'static str, source: Source) {
        self.sources.retain(|(k, _)| *k != key);
        self.sources.push((key, source));
    }

    /// libpq's checks across keys, then one port for all hosts when they all share it.
    fn finish(&mut self) -> Result<(), Error> {
        let hosts = self.hosts.len();
        let addrs = self.hostaddrs.len();
        if hosts > 0 && addrs > 0 && hosts != addrs {
            return Err(Error::config(format!(
                "could not match {hosts} host names to {addrs} hostaddr values"
            ))
            .with_help("give one `hostaddr` per `host`, in the same order"));
        }
        let n = hosts.max(addrs);
        if self.ports.len() > 1 && self.ports.len() != n {
            return Err(Error::config(format!(
                "could not match {} port numbers to {n} hosts",
                self.ports.len()
            ))
            .with_help("give one port for all hosts, or one port per host"));
        }
        if let [first, rest @ ..] = self.ports.as_slice() {
            if rest.iter().all(|p| p == first) {
                self.ports.truncate(1);
            }
        }
        if let (Some(min), Some(max)) =
            (self.ssl_min_protocol_version, self.ssl_max_protocol_version)
        {
            if min > max {
                return Err(
                    Error::config("invalid SSL protocol version range").with_help(
                        "`ssl_min_protocol_version` must not be above `ssl_max_protocol_version`",
                    ),
                );
            }
        }
        Ok(())
    }

    /// The hosts, in order (empty: none given).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// `hostaddr` values, one per host when given (`None`: that host is resolved by name).
    pub fn hostaddrs(&self) -> &[Option<IpAddr>] {
        &self.hostaddrs
    }

    /// The ports as given: empty (5432 for every host), one port for all hosts, or one per
    /// host. See [`ConnectionString::port_for`].
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The port for host number `i` (libpq: a single port applies to all hosts).
    pub fn port_for(&self, i: usize) -> u16 {
        match self.ports.as_slice() {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        }
    }

    /// The user name (`None`: not given).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password (its `Debug` and `Display` print `***`).
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }

    /// The database name (`None`: libpq's default, the user name).
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }

    /// The server `options`, as given (e.g. `-c search_path=app` or `endpoint=<id>`).
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// The application name.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// `sslmode` as given (`None`: the default, `verify-full`).
    pub fn sslmode(&self) -> Option<SslMode> {
        self.sslmode
    }

    /// `sslrootcert` as given (`None`: the default root store).
    pub fn sslrootcert(&self) -> Option<&RootCert> {
        self.sslrootcert.as_ref()
    }

    /// `sslcert` (client certificate file) as given.
    pub fn sslcert(&self) -> Option<&std::path::Path> {
        self.sslcert.as_deref()
    }

    /// `sslkey` (client private key file) as given.
    pub fn sslkey(&self) -> Option<&std::path::Path> {
        self.sslkey.as_deref()
    }

    /// `sslpassword`: the passphrase of an encrypted `sslkey` (its `Debug` and `Display` print
    /// `***`, as does the connection string's).
    pub fn sslpassword(&self) -> Option<&Password> {
        self.sslpassword.as_ref()
    }

    /// Sets `sslpassword`, the passphrase of an encrypted client key.
    pub fn set_sslpassword(&mut self, passphrase: Password) {
        self.sslpassword = Some(passphrase);
        self.mark("sslpassword", Source::Code);
    }

    /// `sslcertmode` as given (`None`: `allow`).
    pub fn sslcertmode(&self) -> Option<SslCertMode> {
        self.sslcertmode
    }

    /// `sslcrl` (a PEM file of certificate revocation lists) as given (`None`: libpq's
    /// default, `~/.postgresql/root.crl` when it exists and the roots come from a file).
    pub fn sslcrl(&self) -> Option<&std::path::Path> {
        self.sslcrl.as_deref()
    }

    /// `sslcrldir` (a directory of PEM certificate revocation lists) as given.
    pub fn sslcrldir(&self) -> Option<&std::path::Path> {
        self.sslcrldir.as_deref()
    }

    /// `sslnegotiation` as given (`None`: `postgres`).
    pub fn sslnegotiation(&self) -> Option<SslNegotiation> {
        self.sslnegotiation
    }

    /// `sslsni` as given (`None`: on).
    pub fn sslsni(&self) -> Option<bool> {
        self.sslsni
    }

    /// `ssl_min_protocol_version` as given (`TLSv1` and `TLSv1.1` read as TLS 1.2).
    pub fn ssl_min_protocol_version(&self) -> Option<TlsVersion> {
        self.ssl_min_protocol_version
    }

    /// `ssl_max_protocol_version` as given.
    pub fn ssl_max_protocol_version(&self) -> Option<TlsVersion> {
        self.ssl_max_protocol_version
    }

    /// `channel_binding` as given (`None`: `prefer`).
    pub fn channel_binding(&self) -> Option<ChannelBinding> {
        self.channel_binding
    }

    /// `connect_timeout` (`None`: not given, or 0 or less, and our default applies; libpq's
    /// minimum of 2 seconds is applied).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// `tcp_user_timeout`, read as milliseconds as libpq does (`None`: the OS default).
    pub fn tcp_user_timeout(&self) -> Option<Duration> {
        self.tcp_user_timeout
    }

    /// `keepalives` (`None`: on).
    pub fn keepalives(&self) -> Option<bool> {
        self.keepalives
    }

    /// `keepalives_idle` (`None`: the OS default).
    pub fn keepalives_idle(&self) -> Option<Duration> {
        self.keepalives_idle
    }

    /// `keepalives_interval` (`None`: the OS default).
    pub fn keepalives_interval(&self) -> Option<Duration> {
        self.keepalives_interval
    }

    /// `keepalives_count` (also accepted as `keepalives_retries`; `None`: the OS default).
    pub fn keepalives_count(&self) -> Option<u32> {
        self.keepalives_count
    }

    /// `target_session_attrs` as given (`None`: `any`).
    pub fn target_session_attrs(&self) -> Option<TargetSessionAttrs> {
        self.target_session_attrs
    }

    /// `load_balance_hosts` as given (`None`: `disable`, hosts are tried in order).
    pub fn load_balance_hosts(&self) -> Option<LoadBalanceHosts> {
        self.load_balance_hosts
    }

    /// `load_balance_hosts`: `Some(true)` for `random`, `Some(false)` for `disable`.
    #[deprecated(since = "0.2.0", note = "use `load_balance_hosts()`")]
    pub fn load_balance_hosts_random(&self) -> Option<bool> {
        self.load_balance_hosts
            .map(|l| l == LoadBalanceHosts::Random)
    }

    /// Every host to try, in the order given: its name or socket directory, its pinned
    /// address (`hostaddr`) and its port. A `hostaddr` without a `host` is a target too.
    pub(crate) fn targets(&self) -> impl Iterator<Item = Target> + '_ {
        let count = self.hosts.len().max(self.hostaddrs.len());
        (0..count).map(move |i| Target {
            host: self.hosts.get(i).cloned(),
            hostaddr: self.hostaddrs.get(i).copied().flatten(),
            port: self.port_for(i),
        })
    }

    /// Where the value of `key` (a libpq key name) came from; [`Source::Default`] when no
    /// value was given anywhere.
    pub fn source(&self, key: &str) -> Source {
        let key = canonical(key).unwrap_or(key);
        self.sources
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Source::Default, |(_, s)| *s)
    }

    /// Sets the user name.
    pub fn set_user(&mut self, user: impl Into<String>) {
        self.user = Some(user.into());
        self.mark("user", Source::Code);
    }

    /// Sets the password.
    pub fn set_password(&mut self, password: Password) {
        self.password = Some(password);
        self.mark("password", Source::Code);
    }

    /// Sets the password read from the password file.
    pub(crate) fn set_password_from_file(&mut self, password: Password) {
        self.password = Some(password);
        self.mark("password", Source::PasswordFile);
    }

    /// Sets the application name the crate uses when none was given (its source stays
    /// [`Source::Default`]).
    pub(crate) fn set_default_application_name(&mut self, name: &str) {
        if self.application_name.is_none() {
            self.application_name = Some(name.to_string());
        }
    }

    /// Sets the database name.
    pub fn set_dbname(&mut self, dbname: impl Into<String>) {
        self.dbname = Some(dbname.into());
        self.mark("dbname", Source::Code);
    }

    /// Sets the server `options` (e.g. `-c search_path=app`).
    pub fn set_options(&mut self, options: impl Into<String>) {
        self.options = Some(options.into());
        self.mark("options", Source::Code);
    }

    /// Sets the application name.
    pub fn set_application_name(&mut self, name: impl Into<String>) {
        self.application_name = Some(name.into());
        self.mark("application_name", Source::Code);
    }

    /// Sets `sslmode`.
    pub fn set_sslmode(&mut self, mode: SslMode) {
        self.sslmode = Some(mode);
        self.mark("sslmode", Source::Code);
    }

    /// Sets `sslrootcert`.
    pub fn set_sslrootcert(&mut self, root: RootCert) {
        self.sslrootcert = Some(root);
        self.mark("sslrootcert", Source::Code);
    }

    /// Sets `sslnegotiation`.
    pub fn set_sslnegotiation(&mut self, negotiation: SslNegotiation) {
        self.sslnegotiation = Some(negotiation);
        self.mark("sslnegotiation", Source::Code);
    }

    /// Sets `channel_binding`.
    pub fn set_channel_binding(&mut self, binding: ChannelBinding) {
        self.channel_binding = Some(binding);
        self.mark("channel_binding", Source::Code);
    }

    /// Sets the per-host connect deadline (used as given: libpq's 2-second minimum applies
    /// only to parsed values).
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = Some(timeout);
        self.mark("connect_timeout", Source::Code);
    }

    /// Sets `target_session_attrs`.
    pub fn set_target_session_attrs(&mut self, attrs: TargetSessionAttrs) {
        self.target_session_attrs = Some(attrs);
        self.mark("target_session_attrs", Source::Code);
    }

    /// A copy with `target_session_attrs` set to `attrs`: a read-write pool and a read pool
    /// from one multi-host string.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), neon_connect::Error> {
    /// use neon_connect::{config::TargetSessionAttrs, Options};
    /// // postgresql://app@db1,db2,db3/app: a primary and its standbys.
    /// let options = Options::from_env()?;
    /// let cs = options.connection_string();
    /// let writes = Options::from_connection_string(
    ///     cs.with_target_session_attrs(TargetSessionAttrs::ReadWrite),
    /// )
    /// .connect()
    /// .await?;
    /// let reads = Options::from_connection_string(
    ///     cs.with_target_session_attrs(TargetSessionAttrs::PreferStandby),
    /// )
    /// .pool_size(20)
    /// .connect()
    /// .await?;
    /// # let _ = (writes, reads);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_target_session_attrs(&self, attrs: TargetSessionAttrs) -> ConnectionString {
        let mut cs = self.clone();
        cs.set_target_session_attrs(attrs);
        cs
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = Error;

    /// The same as [`ConnectionString::parse`].
    fn from_str(s: &str) -> Result<Self, Error> {
        ConnectionString::parse(s)
    }
}

/// One host to try: what [`ConnectionString::targets`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host as given (`None`: only a `hostaddr`).
    pub(crate) host: Option<Host>,
    /// The pinned address (`hostaddr`), when given: no DNS lookup.
    pub(crate) hostaddr: Option<IpAddr>,
    pub(crate) port: u16,
}

impl Target {
    /// The name to resolve and to check the certificate against: the host name, or the
    /// `hostaddr` when no host was given. Empty for a Unix socket.
    pub(crate) fn name(&self) -> String {
        match (&self.host, self.hostaddr) {
            (Some(Host::Tcp(name)), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            _ => String::new(),
        }
    }

    /// `host:port` as people write it (`[::1]:5432` for IPv6, `/dir:5432` for a socket).
    pub(crate) fn label(&self) -> String {
        match &self.host {
            Some(Host::Unix(dir)) => format!("{}:{}", dir.display(), self.port),
            _ => crate::connect::host_label(&self.name(), self.port),
        }
    }
}

/// Splits either form into decoded (key, value) pairs, in order; later pairs override earlier
/// ones, as in libpq.
fn lex(s: &str) -> Result<Vec<(String, String)>, Error> {
    let trimmed = s.trim();
    if let Some(pos) = trimmed.find("://") {
        let scheme = &trimmed[..pos];
        // In the key=value form a `://` can only appear after a `=`.
        if !scheme.contains(|c: char| c.is_whitespace() || c == '=') {
            if scheme.eq_ignore_ascii_case("postgresql") || scheme.eq_ignore_ascii_case("postgres")
            {
                return url::split_url(&trimmed[pos + 3..]);
            }
            if scheme.to_ascii_lowercase().starts_with("jdbc:") {
                return Err(
                    Error::config(format!("invalid connection string scheme `{scheme}`"))
                        .with_help(
                            "drop the `jdbc:` prefix: use `postgresql://user:password@host/dbname`",
                        ),
                );
            }
            // A scheme with `@` is a mangled URL that may hold credentials: don't echo it.
            let message = if scheme.contains('@') {
                "invalid connection string scheme".to_string()
            } else {
                format!("invalid connection string scheme `{scheme}`")
            };
            return Err(Error::config(message)
                .with_help("use `postgresql://user:password@host/dbname` (or `postgres://`)"));
        }
    }
    let lower = trimmed.get(..11).unwrap_or(trimmed).to_ascii_lowercase();
    if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
        return Err(Error::config(
            "invalid connection string: the URL must start with `postgresql://`",
        )
        .with_help("use `postgresql://user:password@host/dbname`"));
    }
    keyvalue::split_kv(trimmed)
}

#[cfg(test)]
mod tests;
