//! The `PG*` environment variables: each fills its key when the connection string did not
//! give it, as in libpq.

use super::keys::KEYS;
use super::values::{Origin, Source, SslMode};
use super::ConnectionString;
use crate::error::Error;

/// Fills what `cs` leaves out from the variables looked up through `env`. The deprecated
/// `PGREQUIRESSL=1` means `sslmode=require` when neither `sslmode` nor `PGSSLMODE` is set.
pub(super) fn apply(
    cs: &mut ConnectionString,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    for info in KEYS {
        let Some(var) = info.env else { continue };
        if cs.sources.iter().any(|(k, _)| *k == info.name) {
            continue;
        }
        if let Some(value) = env(var) {
            cs.set(info.name, &value, Origin::Env(var), Source::Environment)?;
        }
    }
    match env("PGREQUIRESSL").as_deref() {
        None | Some("0") => {}
        Some("1") => {
            if cs.sslmode.is_none() {
                cs.sslmode = Some(SslMode::Require);
                cs.mark("sslmode", Source::Environment);
            }
        }
        Some(v) => return Err(Origin::Env("PGREQUIRESSL").invalid(v, "`0`, `1`")),
    }
    Ok(())
}
