//! The router of the axum example, shared with its test (`tests/axum.rs`) so that the test
//! serves exactly what the example serves.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use neon_connect::Pool;
use serde::Deserialize;
use serde_json::json;

/// The query string of `GET /query`.
#[derive(Debug, Deserialize)]
pub struct QueryParams {
    /// The number sent to the server as a query parameter.
    pub n: i64,
}

/// `GET /query?n=N` (runs `SELECT $1 + 1` with N as a parameter) and `GET /health` (pool
/// status), on one shared pool.
pub fn app(pool: Pool) -> Router {
    Router::new()
        .route("/query", get(query))
        .route("/health", get(health))
        .with_state(pool)
}

async fn query(State(pool): State<Pool>, Query(params): Query<QueryParams>) -> Response {
    // `get` waits at most the pool's wait timeout; its error says why (pool exhausted,
    // server unreachable, ...) and is safe to show: it never holds the password.
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    match client.query_one("SELECT $1::int8 + 1", &[&params.n]).await {
        Ok(row) => Json(json!({ "n": params.n, "result": row.get::<_, i64>(0) })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn health(State(pool): State<Pool>) -> Json<serde_json::Value> {
    let s = pool.status();
    Json(json!({
        "size": s.size,
        "available": s.available,
        "waiting": s.waiting,
        "max_size": s.max_size,
    }))
}

fn error(status: StatusCode, e: &dyn std::fmt::Display) -> Response {
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}
