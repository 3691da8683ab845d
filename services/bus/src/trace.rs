//! W3C trace context: the `traceparent` header that follows a request through every service.
//!
//! `traceparent` is `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. The trace id is the
//! request's for its whole life (the county's own when it sent a valid one, else one the
//! dispatcher made); each hop the relay publishes gets a new parent (span) id. A malformed value
//! is never a reason to refuse a message: it is treated as absent and replaced.
//!
//! The trace being worked on is the *current trace*: [`within`] runs a future with it set (a
//! tokio task-local, so concurrent handlers on one task each see their own) and inside a
//! `tracing` span carrying `trace_id`, so every log line the future writes has the field.
//! `store::outbox::enqueue` stamps what it queues with the current trace, so a handler's
//! messages carry its trace without every builder being told.

use crate::OutgoingMessage;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use std::fmt;
use std::future::Future;
use tokio::task::futures::TaskLocalFuture;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

/// The AMQP header and HTTP header name (W3C Trace Context, level 1).
pub const TRACEPARENT: &str = "traceparent";

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 16] = rand::random();
            if bytes != [0; 16] {
                return Self(bytes);
            }
        }
    }

    /// 32 lower-case hex digits, not all zero (the form stored with a request).
    pub fn parse(hex: &str) -> Option<Self> {
        let bytes: [u8; 16] = lower_hex(hex)?;
        (bytes != [0; 16]).then_some(Self(bytes))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// One hop of a trace: the trace id, this hop's span id and the flags (bit 0: sampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// Why a `traceparent` value was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("not version-trace id-parent id-flags in lower-case hex")]
    Shape,
    #[error("version ff is forbidden")]
    ForbiddenVersion,
    #[error("the trace id is all zero")]
    ZeroTraceId,
    #[error("the parent id is all zero")]
    ZeroParentId,
}

impl TraceContext {
    /// A new trace (for a request that arrived without one), sampled.
    pub fn new_root() -> Self {
        Self::in_trace(TraceId::random())
    }

    /// A new hop in the trace `trace_id` (e.g. the one stored with a request).
    pub fn in_trace(trace_id: TraceId) -> Self {
        Self {
            trace_id,
            span_id: random_span_id(),
            flags: 0x01,
        }
    }

    /// The next hop: same trace and flags, a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// Parses a `traceparent` value. Version 00 must be exactly 55 characters; a later version
    /// may append `-`-separated fields, which are ignored (the specification's forward rule).
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let value = value.trim();
        let version: [u8; 1] = value
            .get(0..2)
            .and_then(lower_hex)
            .ok_or(TraceParentError::Shape)?;
        match version[0] {
            0xff => return Err(TraceParentError::ForbiddenVersion),
            0x00 if value.len() != 55 => return Err(TraceParentError::Shape),
            _ if value.len() < 55 || (value.len() > 55 && value.as_bytes()[55] != b'-') => {
                return Err(TraceParentError::Shape);
            }
            _ => {}
        }
        let bytes = value.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(TraceParentError::Shape);
        }
        let trace_id: [u8; 16] = lower_hex(&value[3..35]).ok_or(TraceParentError::Shape)?;
        let span_id: [u8; 8] = lower_hex(&value[36..52]).ok_or(TraceParentError::Shape)?;
        let flags: [u8; 1] = lower_hex(&value[53..55]).ok_or(TraceParentError::Shape)?;
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if span_id == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(Self {
            trace_id: TraceId(trace_id),
            span_id,
            flags: flags[0],
        })
    }
}

/// The header value, always version 00.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            hex::encode(self.span_id),
            self.flags
        )
    }
}

/// What a message's `traceparent` header held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    Valid(TraceContext),
    Missing,
    Malformed(TraceParentError),
}

impl Incoming {
    pub fn of_headers(headers: Option<&FieldTable>) -> Self {
        Self::of_value(crate::header_str(headers, TRACEPARENT))
    }

    pub fn of_delivery(delivery: &Delivery) -> Self {
        Self::of_headers(delivery.properties.headers().as_ref())
    }

    /// For an HTTP header or any other text source.
    pub fn of_value(value: Option<&str>) -> Self {
        match value {
            None => Incoming::Missing,
            Some(value) => match TraceContext::parse(value) {
                Ok(context) => Incoming::Valid(context),
                Err(error) => Incoming::Malformed(error),
            },
        }
    }

    pub fn valid(self) -> Option<TraceContext> {
        match self {
            Incoming::Valid(context) => Some(context),
            Incoming::Missing | Incoming::Malformed(_) => None,
        }
    }
}

tokio::task_local! {
    static CURRENT: Option<TraceContext>;
}

/// The trace the running handler works on, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|current| *current).ok().flatten()
}

/// The span every log line about a request is written in. It is an error-level span so that
/// it is enabled whatever the log level: a warning must carry `trace_id` even when info is off.
pub fn span(trace: &TraceContext) -> tracing::Span {
    tracing::error_span!("request", trace_id = %trace.trace_id)
}

/// Runs `future` as work on `trace` (or on no trace): [`current`] returns it inside, and every
/// log line has its `trace_id`.
pub fn within<F: Future>(
    trace: Option<TraceContext>,
    future: F,
) -> TaskLocalFuture<Option<TraceContext>, Instrumented<F>> {
    CURRENT.scope(trace, future.instrument(span_of(trace)))
}

/// [`span`] of the trace, or no span: for a few synchronous lines (`span_of(t).in_scope(…)`).
pub fn span_of(trace: Option<TraceContext>) -> tracing::Span {
    trace.as_ref().map_or_else(tracing::Span::none, span)
}

/// Wraps a delivery handler so each delivery is handled within the trace its `traceparent`
/// header names (a missing or malformed header: no trace).
pub fn follow<F, Fut>(
    handler: F,
) -> impl Fn(Delivery) -> TaskLocalFuture<Option<TraceContext>, Instrumented<Fut>>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future,
{
    move |delivery| {
        let trace = Incoming::of_delivery(&delivery).valid();
        within(trace, handler(delivery))
    }
}

/// `headers` with `traceparent` set to a new hop of `trace` (any earlier value replaced).
pub fn stamped_headers(
    headers: &[(String, String)],
    trace: &TraceContext,
) -> Vec<(String, String)> {
    let mut stamped: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name != TRACEPARENT)
        .cloned()
        .collect();
    stamped.push((TRACEPARENT.into(), trace.child().to_string()));
    stamped
}

impl OutgoingMessage {
    /// This message as a new hop of `trace`.
    pub fn stamp(&mut self, trace: &TraceContext) {
        self.headers = stamped_headers(&self.headers, trace);
    }

    /// The trace id this message carries, if its `traceparent` header is valid.
    pub fn trace_id(&self) -> Option<TraceId> {
        let value = self
            .headers
            .iter()
            .find(|(name, _)| name == TRACEPARENT)
            .map(|(_, value)| value.as_str());
        Incoming::of_value(value)
            .valid()
            .map(|trace| trace.trace_id)
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let bytes: [u8; 8] = rand::random();
        if bytes != [0; 8] {
            return bytes;
        }
    }
}

/// Exactly `N` bytes from `2 * N` lower-case hex digits (the specification forbids upper case).
fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut bytes = [0; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_specification_example() {
        let context = TraceContext::parse(SAMPLE).unwrap();
        assert_eq!(
            context.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(context.span_id), "00f067aa0ba902b7");
        assert_eq!(context.flags, 1);
        assert_eq!(context.to_string(), SAMPLE);
    }

    #[test]
    fn rejects_malformed_values() {
        let cases = [
            ("", TraceParentError::Shape),
            ("00", TraceParentError::Shape),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceParentError::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                TraceParentError::Shape,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                TraceParentError::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                TraceParentError::Shape,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::ForbiddenVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::ZeroParentId,
            ),
            ("00-Zé-patient-name", TraceParentError::Shape),
        ];
        for (value, expected) in cases {
            assert_eq!(TraceContext::parse(value), Err(expected), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_keeps_its_known_fields_and_ignores_the_rest() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let context = TraceContext::parse(later).unwrap();
        assert_eq!(
            context.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // The relay writes only the version it knows.
        assert_eq!(context.to_string(), SAMPLE);
    }

    #[test]
    fn a_new_hop_keeps_the_trace_and_changes_the_span() {
        let context = TraceContext::parse(SAMPLE).unwrap();
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.span_id, context.span_id);
        assert_eq!(TraceContext::parse(&child.to_string()), Ok(child));
        let root = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&root.to_string()), Ok(root));
    }

    #[test]
    fn stamping_replaces_an_earlier_traceparent() {
        let context = TraceContext::parse(SAMPLE).unwrap();
        let headers = vec![
            ("x-telerelay-request-uuid".to_owned(), "r".to_owned()),
            (TRACEPARENT.to_owned(), "garbage".to_owned()),
        ];
        let stamped = stamped_headers(&headers, &context);
        assert_eq!(stamped.len(), 2);
        assert_eq!(stamped[0].0, "x-telerelay-request-uuid");
        let value = &stamped[1].1;
        assert_eq!(
            TraceContext::parse(value).unwrap().trace_id,
            context.trace_id
        );
    }

    #[test]
    fn trace_ids_parse_only_in_their_stored_form() {
        assert!(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").is_some());
        assert!(TraceId::parse("00000000000000000000000000000000").is_none());
        assert!(TraceId::parse("4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
        assert!(TraceId::parse("4bf9").is_none());
    }

    #[tokio::test]
    async fn the_current_trace_is_seen_only_within() {
        let context = TraceContext::new_root();
        assert_eq!(current(), None);
        let seen = within(Some(context), async { current() }).await;
        assert_eq!(seen, Some(context));
        assert_eq!(within(None, async { current() }).await, None);
    }
}
