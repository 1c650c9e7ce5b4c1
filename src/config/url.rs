//! The URL form: `postgresql://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`,
//! split into decoded (key, value) pairs in small steps, as libpq reads it.

use super::values::parse_port;
use crate::error::Error;

/// Decoded (key, value) pairs, in order.
type Pairs = Vec<(String, String)>;

/// Percent-decodes one part of a URL; errors name the part, never its text.
pub(super) fn decode(part: &str, what: &str) -> Result<String, Error> {
    let b = part.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(Error::config(format!("invalid percent-encoding in the {what}"))
                    .with_help("write `%` as `%25`, and other special characters as `%XX` (e.g. `@` as `%40`)"));
            }
            // libpq: "forbidden value %00 in percent-encoded value"; a NUL would also cut
            // the value short in any C library the string is passed on to.
            if &b[i + 1..i + 3] == b"00" {
                return Err(
                    Error::config(format!("forbidden value %00 in the {what}")).with_help(
                        "remove the `%00`: a NUL character is not allowed in any part of a connection string (libpq refuses it too)",
                    ),
                );
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // libpq keeps `+` as it is (it is not a space).
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(part).collect();
    String::from_utf8(bytes).map_err(|_| {
        Error::config(format!(
            "invalid percent-encoding in the {what}: it does not decode to UTF-8"
        ))
        .with_help("percent-encode the UTF-8 bytes of each special character")
    })
}

/// Checks a port written after a URL host; `quote` says whether the text may be shown (it
/// may be a password when the user info is missing).
fn url_port(p: &str, host: &str, quote: bool) -> Result<(), Error> {
    // libpq: `host:` with nothing after the colon is the default port.
    if p.is_empty() || parse_port(p).is_some() {
        return Ok(());
    }
    if quote {
        return Err(
            Error::config(format!("invalid port \"{p}\" for host \"{host}\""))
                .with_help("the port must be a number from 1 to 65535, as in `host:5432`"),
        );
    }
    Err(Error::config(format!("invalid port after host \"{host}\"")).with_help(
        "the port must be a number from 1 to 65535; if this is `user:password`, the password holds a character that must be percent-encoded (`?` as `%3F`, `/` as `%2F`, `@` as `%40`, `#` as `%23`), as in `postgresql://user:password@host/dbname`",
    ))
}

/// Everything after `postgresql://`, as decoded pairs: the user info, the hosts and ports, the
/// database, then the query parameters.
pub(super) fn split_url(rest: &str) -> Result<Pairs, Error> {
    let mut pairs = Vec::new();
    let (userinfo, after_user) = split_userinfo(rest)?;
    let (before_query, query) = match after_user.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (after_user, None),
    };
    let (hostlist, path) = match before_query.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (before_query, None),
    };
    if let Some(ui) = userinfo {
        user_and_password(ui, &mut pairs)?;
    }
    if !hostlist.is_empty() {
        // Without user info, `host:port` may be `user:password` whose `@` came later (after an
        // unencoded `/` or `?`): then the "port" is never quoted.
        let quotable = userinfo.is_some() || !rest.contains('@');
        hosts_and_ports(hostlist, quotable, &mut pairs)?;
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        if path.contains('@') {
            // An unencoded `/` in the password put the rest of it, its `@` and the host here.
            return Err(Error::config(
                "the URL's database name contains an unencoded `@` (not shown: it looks like part of a password)",
            )
            .with_help("percent-encode special characters in the password (`/` as `%2F`, `@` as `%40`); a database name with `@` is written `%40`"));
        }
        pairs.push(("dbname".into(), decode(path, "database name")?));
    }
    query_parameters(query.unwrap_or(""), &mut pairs)?;
    Ok(pairs)
}

/// Splits off the user info. As in libpq, the authority ends at the first `/`. The user info
/// ends at an `@`: the last one before the first `?` (so an unencoded `@` in the password
/// works), or else the first one (so an unencoded `?` in the password works) unless what
/// follows the `?` looks like query parameters (an unencoded `@` in a parameter value).
fn split_userinfo(rest: &str) -> Result<(Option<&str>, &str), Error> {
    let slash = rest.find('/').unwrap_or(rest.len());
    let region = &rest[..slash];
    let first_q = region.find('?').unwrap_or(region.len());
    let at = region[..first_q].rfind('@').or_else(|| {
        region
            .find('@')
            .filter(|&at| !region[first_q..at].contains(['=', '&']))
    });
    if let Some(at) = at {
        return Ok((Some(&rest[..at]), &rest[at + 1..]));
    }
    // An `@` after a `/` means a `/` inside the password: never quote it as a host.
    let query = rest.find('?').unwrap_or(rest.len());
    if slash < query && rest[slash..query].contains('@') {
        return Err(Error::config(
            "could not tell the user name and password from the host: the URL has a `/` before its `@`",
        )
        .with_help("percent-encode `/` in the user name or password as `%2F` (and `@` as `%40`, `?` as `%3F`)"));
    }
    Ok((None, rest))
}

/// `user[:password]`.
fn user_and_password(ui: &str, pairs: &mut Pairs) -> Result<(), Error> {
    let (user, password) = match ui.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (ui, None),
    };
    if !user.is_empty() {
        pairs.push(("user".into(), decode(user, "user name")?));
    }
    if let Some(p) = password {
        pairs.push(("password".into(), decode(p, "password")?));
    }
    Ok(())
}

/// `host[:port][,host[:port]...]`, with IPv6 hosts in brackets. `quotable` says whether a bad
/// port may be quoted (it may be a password).
fn hosts_and_ports(hostlist: &str, quotable: bool, pairs: &mut Pairs) -> Result<(), Error> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for spec in hostlist.split(',') {
        let (host, port) = host_and_port(spec)?;
        url_port(port, &host, quotable && port.len() <= 5)?;
        hosts.push(host);
        ports.push(port);
    }
    pairs.push(("host".into(), hosts.join(",")));
    if ports.iter().any(|p| !p.is_empty()) {
        pairs.push(("port".into(), ports.join(",")));
    }
    Ok(())
}

/// One `host[:port]` (decoded host, raw port text).
fn host_and_port(spec: &str) -> Result<(String, &str), Error> {
    if let Some(bracketed) = spec.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']').ok_or_else(|| {
            Error::config("invalid IPv6 host: missing `]`")
                .with_help("write IPv6 hosts as `[::1]:5432`")
        })?;
        if inner.is_empty() {
            // libpq: "IPv6 host address may not be empty in URI".
            return Err(
                Error::config("IPv6 host address may not be empty in the URL `[]`")
                    .with_help("write an IPv6 address in the brackets, as in `[::1]:5432`, or leave the host out"),
            );
        }
        let host = decode(inner, "host")?;
        let port = match after {
            "" => "",
            _ => after.strip_prefix(':').ok_or_else(|| {
                Error::config(format!("invalid text after the IPv6 host `[{host}]`"))
                    .with_help("write IPv6 hosts as `[::1]:5432`")
            })?,
        };
        return Ok((host, port));
    }
    let (host, port) = spec.rsplit_once(':').unwrap_or((spec, ""));
    if host.contains(':') {
        return Err(
            Error::config("invalid host: an IPv6 address must be in brackets")
                .with_help("write IPv6 hosts as `[::1]:5432`"),
        );
    }
    Ok((decode(host, "host")?, port))
}

/// `key=value&key2=value2`; a password value is never quoted in an error.
fn query_parameters(query: &str, pairs: &mut Pairs) -> Result<(), Error> {
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Error::config(format!(
                "missing `=` after `{}` in the URL's parameters",
                decode(kv, "parameter name")?
            ))
            .with_help("write parameters as `?key=value&key2=value2`"));
        };
        let key = decode(k, "parameter name")?;
        let what = if key == "password" {
            "password".to_string()
        } else {
            format!("value of `{key}`")
        };
        let value = decode(v, &what)?;
        pairs.push((key, value));
    }
    Ok(())
}
