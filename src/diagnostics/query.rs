//! Errors of a pooled client: what a statement (or the connection under it) failed with, as
//! one readable line with the server's SQLSTATE and its name, message, detail, hint, the
//! objects it names and the position, classified for callers (retry the transaction, a
//! timeout, a constraint, ...).

use super::{chain, diagnose, sqlstate, Diagnosis};
use crate::error::{Error, Step};
use std::fmt::Write;
use tokio_postgres::error::{DbError, ErrorPosition};

/// Classifies `err`, keeping it as the source (so `as_db_error()` still reaches the server's
/// error).
pub(crate) fn classify(err: tokio_postgres::Error) -> Error {
    let e = match err.as_db_error() {
        Some(db) => classify_db(db),
        None => classify_other(&err),
    };
    e.with_step(Step::Query).with_source(err)
}

fn classify_db(db: &DbError) -> Error {
    let code = db.code().code();
    let text = db.message();
    let d = match code {
        "40001" => Diagnosis::QuerySerializationFailure,
        "40P01" => Diagnosis::QueryDeadlock,
        "57014" if text.contains("query_timeout") => Diagnosis::QueryTimeout,
        "57014" if text.contains("statement timeout") => Diagnosis::QueryStatementTimeout,
        "57014" => Diagnosis::QueryCanceled,
        // An administrator, a restart, a failover or an idle cut-off ended the session.
        "57P01" | "57P02" | "57P03" | "25P03" => Diagnosis::QueryConnectionLost,
        "25006" => Diagnosis::QueryReadOnly,
        "26000" if text.contains("prepared statement") => Diagnosis::QueryPreparedStatementMissing,
        "42501" => Diagnosis::QueryPermissionDenied,
        "42601" => Diagnosis::QuerySyntax,
        "42P01" | "42703" | "42883" | "42704" | "3F000" | "42P02" => {
            Diagnosis::QueryUndefinedObject
        }
        c if c.starts_with("23") => Diagnosis::QueryConstraintViolation,
        c if c.starts_with("22") => Diagnosis::QueryDataError,
        _ => Diagnosis::QueryServerError,
    };
    let e = diagnose(d, describe(db));
    match (d, db.hint()) {
        // The server's own hint is the most precise fix for the generic case.
        (Diagnosis::QueryServerError, Some(hint)) => e.with_help(hint.to_string()),
        _ => e,
    }
}

/// The server's error in one line: message, SQLSTATE and its name, detail, hint, the objects
/// it names, and where in the statement.
pub(crate) fn describe(db: &DbError) -> String {
    let code = db.code().code();
    let mut out = db.message().to_string();
    match sqlstate::name(code) {
        Some(name) => {
            let _ = write!(out, " (SQLSTATE {code} {name})");
        }
        None => {
            let _ = write!(out, " (SQLSTATE {code})");
        }
    }
    if let Some(detail) = db.detail() {
        let _ = write!(out, "; detail: {}", one_line(detail));
    }
    if let Some(hint) = db.hint() {
        let _ = write!(out, "; hint: {}", one_line(hint));
    }
    let mut objects = Vec::new();
    if let Some(c) = db.constraint() {
        objects.push(format!("constraint \"{c}\""));
    }
    match (db.schema(), db.table()) {
        (Some(s), Some(t)) => objects.push(format!("table \"{s}\".\"{t}\"")),
        (None, Some(t)) => objects.push(format!("table \"{t}\"")),
        _ => {}
    }
    if let Some(c) = db.column() {
        objects.push(format!("column \"{c}\""));
    }
    if let Some(t) = db.datatype() {
        objects.push(format!("type \"{t}\""));
    }
    if !objects.is_empty() {
        let _ = write!(out, "; {}", objects.join(", "));
    }
    match db.position() {
        Some(ErrorPosition::Original(p)) => {
            let _ = write!(out, "; at character {p} of the statement");
        }
        Some(ErrorPosition::Internal { position, query }) => {
            let _ = write!(
                out,
                "; at character {position} of an internal query: {}",
                one_line(query)
            );
        }
        None => {}
    }
    out
}

/// Server texts can hold line breaks (a detail listing rows): keep the line one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn classify_other(err: &tokio_postgres::Error) -> Error {
    let links = chain(err);
    let text = links
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    let io = links
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>());
    if err.is_closed() || io.is_some() {
        return diagnose(
            Diagnosis::QueryConnectionLost,
            format!("the connection was lost during the query: {text}"),
        );
    }
    diagnose(
        Diagnosis::QueryClientError,
        format!("the query failed: {text}"),
    )
}
