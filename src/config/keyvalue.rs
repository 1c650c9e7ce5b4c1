//! libpq's `key = value` form.

use crate::error::Error;

/// libpq's `key = value` form: whitespace-separated pairs; values may be single-quoted, and
/// `\` escapes the next character.
pub(super) fn split_kv(s: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            if pairs.last().is_some_and(|(k, _)| k == "password") {
                // Most likely the rest of a password with a space: don't show it.
                return Err(Error::config(
                    "missing `=` in the connection string after the value of `password`",
                )
                .with_help(
                    "quote a value that contains spaces: password='...' (write `'` inside it as `\\'`)",
                ));
            }
            if pairs.is_empty() && !s.contains('=') {
                return Err(Error::config("invalid connection string: it is neither a `postgresql://` URL nor `key=value` pairs")
                    .with_help("use `postgresql://user:password@host/dbname` or `host=... user=... dbname=...`"));
            }
            return Err(Error::config(format!("missing `=` after `{key}` in the connection string"))
                .with_help("write settings as `key=value`, separated by spaces; quote values with spaces: key='a b'"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    '\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(
                    Error::config(format!("unterminated quoted value for `{key}`"))
                        .with_help("close the value with `'`; write a quote inside it as `\\'`"),
                );
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    value.push(chars[i + 1]);
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        if key.is_empty() {
            return Err(Error::config(
                "a setting without a key (`=value`) in the connection string",
            )
            .with_help("write settings as `key=value`"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}
