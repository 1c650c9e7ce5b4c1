//! The printable forms of a connection string, driven by the key table: the redacted URL
//! (`Display`) and `Debug`. Neither ever shows the password.

use super::keys::KEYS;
use super::values::Host;
use super::ConnectionString;
use std::fmt;

/// Keys that live in the URL's authority and path rather than in its query.
const IN_URL: [&str; 5] = ["host", "port", "user", "password", "dbname"];

impl ConnectionString {
    /// The settings as a `postgresql://` URL with the password shown as `***`: every host
    /// with its port, and the other settings as query parameters. Parsing it back gives the
    /// same settings (the password aside).
    pub fn redacted(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // Everything but RFC 3986's unreserved characters.
        const PART: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        const IPV6: &AsciiSet = &PART.remove(b':');
        const VALUE: &AsciiSet = &PART.remove(b'/').remove(b':').remove(b',').remove(b'*');
        let enc = |s: &str, set: &'static AsciiSet| utf8_percent_encode(s, set).to_string();

        let mut out = String::from("postgresql://");
        if let Some(u) = &self.user {
            out.push_str(&enc(u, PART));
        }
        if self.password.is_some() {
            out.push_str(":***");
        }
        if self.user.is_some() || self.password.is_some() {
            out.push('@');
        }
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = match h {
                    Host::Tcp(n) if n.contains(':') => format!("[{}]", enc(n, IPV6)),
                    Host::Tcp(n) => enc(n, PART),
                    Host::Unix(p) => enc(&p.to_string_lossy(), PART),
                };
                match self.ports.is_empty() {
                    true => name,
                    false => format!("{name}:{}", self.port_for(i)),
                }
            })
            .collect();
        out.push_str(&hosts.join(","));
        out.push('/');
        if let Some(d) = &self.dbname {
            out.push_str(&enc(d, PART));
        }

        let mut query: Vec<String> = Vec::new();
        for key in KEYS {
            // Ports go with their hosts; without hosts, they are a parameter.
            let in_url =
                IN_URL.contains(&key.name) && !(key.name == "port" && self.hosts.is_empty());
            if in_url {
                continue;
            }
            if let Some(value) = (key.show)(self) {
                query.push(format!("{}={}", key.name, enc(&value, VALUE)));
            }
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }
}

/// Prints [`ConnectionString::redacted`]: a `postgresql://` URL with the password as `***`.
impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Every key of the table with its value in libpq's spelling (`None`: not set), the password
/// as `Some(***)`. Where each value came from is left out: see [`ConnectionString::source`].
impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// An optional value printed without quotes: `Some(verify-full)`, `None`.
        struct Shown(Option<String>);
        impl fmt::Debug for Shown {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match &self.0 {
                    Some(v) => write!(f, "Some({v})"),
                    None => f.write_str("None"),
                }
            }
        }
        let mut d = f.debug_struct("ConnectionString");
        for key in KEYS {
            d.field(key.name, &Shown((key.show)(self)));
        }
        d.finish()
    }
}
