//! Every way a call can fail, each mapped to exactly one HTTP status with a JSON body
//! `{"error": "<code>", "detail": "<words>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("no such request")]
    NotFound,
    /// The request is not in a state that allows the call (not yours, already reported, ...).
    #[error("{0}")]
    Conflict(String),
    /// The call's body is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// PostgreSQL or the broker is unreachable; the reviewer may retry.
    #[error("the relay is temporarily unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if store::is_transient(&error) {
            ApiError::Unavailable(error.into())
        } else {
            ApiError::Internal(error.into())
        }
    }
}

impl From<bus::lapin::Error> for ApiError {
    fn from(error: bus::lapin::Error) -> Self {
        ApiError::Unavailable(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        if let ApiError::Unavailable(cause) | ApiError::Internal(cause) = &self {
            tracing::error!(
                error = format!("{cause:#}"),
                code,
                "review desk call failed"
            );
        }
        (
            status,
            Json(serde_json::json!({ "error": code, "detail": self.to_string() })),
        )
            .into_response()
    }
}
