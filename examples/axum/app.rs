//! The router of the axum example, shared with its test (`tests/axum.rs`) so that the test
//! serves exactly what the example serves.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use neon_connect::Pool;
use serde::Deserialize;
use serde_json::json;

/// The query string of `GET /query`.
#[derive(Debug, Deserialize)]
pub struct QueryParams {
    /// The number sent to the server as a query parameter.
    pub n: i64,
}

/// `GET /query?n=N` (runs `SELECT $1 + 1` with N as a parameter), `GET /health`
/// (readiness: `pool.ping()`, and the pool's status) and, given a Prometheus recorder's
/// handle, `GET /metrics` (the pool's metrics in Prometheus' text format: checkout wait,
/// connections opened, failed by diagnosis, retired by reason, in use, idle, waiting; the crate
/// records them with its `metrics` feature).
pub fn app(pool: Pool, metrics: Option<PrometheusHandle>) -> Router {
    let router = Router::new()
        .route("/query", get(query))
        .route("/health", get(health));
    let router = match metrics {
        Some(handle) => router.route("/metrics", get(move || std::future::ready(handle.render()))),
        None => router,
    };
    router.with_state(pool)
}

async fn query(
    State(pool): State<Pool>,
    Query(params): Query<QueryParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // `get` waits at most the pool's wait timeout; `?` turns its error and the query's into
    // the crate's readable `Error` (the statement's SQLSTATE, message and fix in one line).
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT $1::int8 + 1", &[&params.n])
        .await?;
    Ok(Json(
        json!({ "n": params.n, "result": row.get::<_, i64>(0) }),
    ))
}

/// Readiness: 200 when a connection can be checked out and answers an empty query within the
/// pool's deadlines, else 503 with the error's one line (what failed and the fix; never the
/// password).
async fn health(State(pool): State<Pool>) -> Response {
    let ping = pool.ping().await;
    let s = pool.status();
    let mut body = json!({
        "ok": ping.is_ok(),
        "size": s.size,
        "available": s.available,
        "waiting": s.waiting,
        "max_size": s.max_size,
    });
    match ping {
        Ok(()) => Json(body).into_response(),
        Err(e) => {
            body["error"] = json!(e.to_string());
            body["diagnosis"] = json!(e.diagnosis().map(|d| d.id()));
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// A handler's error: the crate's `Error`, answered as JSON with a status that fits its
/// class. The text is safe to show: it never holds the password.
pub struct ApiError(neon_connect::Error);

impl From<neon_connect::Error> for ApiError {
    fn from(e: neon_connect::Error) -> Self {
        ApiError(e)
    }
}

impl From<neon_connect::tokio_postgres::Error> for ApiError {
    fn from(e: neon_connect::tokio_postgres::Error) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use neon_connect::ErrorKind;
        let e = self.0;
        let status = match e.kind() {
            // The request's own statement or data was at fault.
            ErrorKind::Query => StatusCode::UNPROCESSABLE_ENTITY,
            // Busy, starting, unreachable, timed out: try again later.
            _ if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({
            "error": e.to_string(),
            "diagnosis": e.diagnosis().map(|d| d.id()),
            "sqlstate": e.as_db_error().map(|db| db.code().code().to_string()),
            "retryable": e.is_retryable(),
        });
        (status, Json(body)).into_response()
    }
}
