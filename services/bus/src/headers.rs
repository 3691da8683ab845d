//! Header names and readers. A dead-lettered message carries why it died in these headers, so the
//! dead-letter queue answers "what happened" without a log search.

use lapin::types::{AMQPValue, FieldTable};

/// Header names telerelay sets on a message it dead-letters itself.
pub struct DeadLetterHeaders {
    pub reason: &'static str,
    pub detail: &'static str,
    pub source_queue: &'static str,
    pub original_exchange: &'static str,
    pub original_routing_key: &'static str,
    /// The broker-verified sender; kept as a header because a republished message may not carry
    /// another user's `user_id`.
    pub original_user_id: &'static str,
}

pub const DEAD_LETTER_HEADERS: DeadLetterHeaders = DeadLetterHeaders {
    reason: "x-telerelay-reason",
    detail: "x-telerelay-detail",
    source_queue: "x-telerelay-source-queue",
    original_exchange: "x-telerelay-original-exchange",
    original_routing_key: "x-telerelay-original-routing-key",
    original_user_id: "x-telerelay-original-user-id",
};

/// Why a message went to the dead letters, as written into its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterReason {
    /// Stable machine-readable reason (e.g. `sender_mismatch`).
    pub reason: String,
    /// Human-readable detail, free of patient data.
    pub detail: String,
}

/// Reads a string-valued header.
pub fn header_str<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a str> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}
