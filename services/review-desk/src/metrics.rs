//! The review desk's metric families (`docs/metrics.md`, "Review desk"), and the middleware that
//! counts every HTTP call by its matched route and status.

use crate::Desk;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use telemetry::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    /// The matched path template (`/v1/requests/{id}/report`), never the path itself: a request
    /// id in a label would make one series per request.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolPriority {
    pub pool: String,
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReportLabels {
    pub kind: String,
    pub critical: bool,
    /// `first` (the final report), `amended` or `addendum`.
    pub version: &'static str,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DeskMetrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub claims: Family<PoolPriority, Counter>,
    pub reports: Family<ReportLabels, Counter>,
}

impl DeskMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        // Counters are exposed with `_total` appended.
        registry.register(
            "telerelay_http_requests",
            "HTTP calls answered, by matched route and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "telerelay_claims",
            "Requests claimed by a reviewer, by pool and priority",
            metrics.claims.clone(),
        );
        registry.register(
            "telerelay_reports",
            "Report versions signed, by kind, critical, and version (first, amended, addendum)",
            metrics.reports.clone(),
        );
        metrics
    }

    /// A report version was committed.
    pub fn report_signed(&self, kind: &str, critical: bool, version: &'static str) {
        self.reports
            .get_or_create(&ReportLabels {
                kind: kind.to_owned(),
                critical,
                version,
            })
            .inc();
    }
}

/// Counts the call once it is answered. A path no route matches is counted as `unmatched`.
pub(crate) async fn count_http_requests(
    State(desk): State<Arc<Desk>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    desk.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
