//! The password file (`~/.pgpass` or `PGPASSFILE`), read as libpq reads it: lines of
//! `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escapes,
//! the first matching line wins, and a file readable by group or others is ignored with a
//! warning.

use super::{ConnectionString, Host, Password};
use std::path::{Path, PathBuf};

/// When `cs` has no password, the password of the password file's first line that matches
/// its first host, port, database and user (libpq matches a Unix socket, and no host at all,
/// as `localhost`), recorded as coming from [`super::Source::PasswordFile`].
pub(crate) fn fill_password(cs: &mut ConnectionString, env: impl Fn(&str) -> Option<String>) {
    if cs.password().is_some() {
        return;
    }
    let Some(path) = default_path(&env) else {
        return;
    };
    let host = match cs.hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        _ => "localhost".to_string(),
    };
    let os_user = env("USER");
    let Some(user) = cs.user().or(os_user.as_deref()).map(str::to_string) else {
        return;
    };
    let dbname = cs.dbname().unwrap_or(&user).to_string();
    let found = lookup_file(
        &path,
        &Lookup {
            host: &host,
            port: cs.port_for(0),
            dbname: &dbname,
            user: &user,
        },
    );
    if let Some(password) = found {
        cs.set_password_from_file(Password::new(password));
    }
}

/// What one connection is matched on.
pub(crate) struct Lookup<'a> {
    /// The host name, or `localhost` for a Unix socket (as libpq matches it).
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) dbname: &'a str,
    pub(crate) user: &'a str,
}

/// `PGPASSFILE`, else `~/.pgpass`; `None` without a home directory.
pub(crate) fn default_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env("PGPASSFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".pgpass"))
}

/// The password of the first line of the file at `path` that matches, or `None` when the file
/// is missing, not a regular file, too widely readable (with a warning), or has no match.
pub(crate) fn lookup_file(path: &Path, what: &Lookup<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                target: "neon_connect",
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less: ignored",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    lookup(&text, what)
}

/// The password of the first line of `text` that matches `what`.
pub(crate) fn lookup(text: &str, what: &Lookup<'_>) -> Option<String> {
    let port = what.port.to_string();
    let wanted = [what.host, port.as_str(), what.dbname, what.user];
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = wanted
            .iter()
            .zip(&fields)
            .all(|(want, field)| field == "*" || field == want);
        if matches {
            // libpq takes the rest of the line (unescaped) as the password.
            return Some(fields[4..].join(":"));
        }
    }
    None
}

/// Splits on unescaped `:` and removes the `\` of `\:` and `\\`.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l<'a>(host: &'a str, port: u16, dbname: &'a str, user: &'a str) -> Lookup<'a> {
        Lookup {
            host,
            port,
            dbname,
            user,
        }
    }

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db.example.com:5432:app:alice:first\n\
                    *:5432:*:alice:second\n\
                    *:*:*:*:fallback\n\
                    h\\:x:5432:d:u:pa\\:ss\\\\word\n";
        assert_eq!(
            lookup(text, &l("db.example.com", 5432, "app", "alice")).as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, &l("other", 5432, "x", "alice")).as_deref(),
            Some("second")
        );
        assert_eq!(
            lookup(text, &l("other", 6543, "x", "alice")).as_deref(),
            Some("fallback")
        );
        // `h\:x` is the host `h:x`; the password's escapes are removed.
        assert_eq!(
            lookup("h\\:x:5432:d:u:pa\\:ss\\\\word", &l("h:x", 5432, "d", "u")).as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(lookup("a:5432:d:u:p", &l("b", 5432, "d", "u")), None);
        assert_eq!(
            lookup("a:5432:d:u", &l("a", 5432, "d", "u")),
            None,
            "too few fields"
        );
    }

    #[cfg(unix)]
    #[test]
    fn widely_readable_files_are_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("neon-connect-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        let what = l("h", 5432, "d", "u");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup_file(&file, &what).as_deref(), Some("secret"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup_file(&file, &what), None);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            default_path(|k| (k == "PGPASSFILE").then(|| "/x/pw".to_string())),
            Some(PathBuf::from("/x/pw"))
        );
        assert_eq!(
            default_path(|k| (k == "HOME").then(|| "/home/a".to_string())),
            Some(PathBuf::from("/home/a/.pgpass"))
        );
    }
}
