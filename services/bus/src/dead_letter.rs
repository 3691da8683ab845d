//! Reading a message in the dead-letter queue: why it died, where, and who first sent it.
//!
//! Two kinds of message arrive there. Copies a telerelay service dead-lettered itself carry the
//! `x-telerelay-*` headers ([`DEAD_LETTER_HEADERS`]). Messages the broker dead-lettered (delivery
//! limit reached, rejected without requeue) carry the broker's `x-first-death-*` headers and an
//! `x-death` list instead, and keep their original properties, `user_id` included.

use crate::headers::{DEAD_LETTER_HEADERS, header_str};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Header on a replayed message naming the stored dead letter it replays. The dispatcher honours
/// it only when an operator's replay of that dead letter, with this very body, is on record.
pub const REPLAY_OF_HEADER: &str = "x-telerelay-replay-of";

/// Headers that say why and where a message died, or how often the broker delivered it. A replay
/// leaves them out: the replayed message starts a fresh life.
const DEATH_HEADERS: [&str; 9] = [
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
    REPLAY_OF_HEADER,
];

/// What the dead-letter queue tells about one message.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterFacts {
    /// SHA-256 identifying this dead letter across redeliveries (see [`DeadLetterFacts::of`]).
    pub fingerprint: [u8; 32],
    pub source_queue: String,
    pub reason: String,
    pub detail: String,
    pub original_exchange: Option<String>,
    pub original_routing_key: Option<String>,
    pub original_user_id: Option<String>,
    pub message_type: String,
    pub message_id: String,
    pub correlation_id: String,
    pub replay_of: Option<i64>,
    /// Every header, as JSON.
    pub headers: Value,
    /// Headers worth carrying into a replay: all but telerelay's and the broker's death records,
    /// as strings (the outbox carries string headers).
    pub replayable_headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl DeadLetterFacts {
    pub fn of(delivery: &Delivery) -> Self {
        let properties = &delivery.properties;
        let table = properties.headers().as_ref();
        let header = |name: &str| header_str(table, name).map(storable);
        let text = |value: Option<&lapin::types::ShortString>| {
            value.map(|v| storable(v.as_str())).unwrap_or_default()
        };
        let first_death = first_death(table);
        let telerelay = &DEAD_LETTER_HEADERS;

        let source_queue = header(telerelay.source_queue)
            .or_else(|| header("x-first-death-queue"))
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let (reason, detail) = match header(telerelay.reason) {
            Some(reason) => (reason, header(telerelay.detail).unwrap_or_default()),
            None => {
                let reason = header("x-first-death-reason").unwrap_or_else(|| "unknown".into());
                let detail = match reason.as_str() {
                    "delivery_limit" => format!(
                        "delivered {} times from {source_queue} without being processed",
                        first_death.count.unwrap_or_default()
                    ),
                    "rejected" => format!("rejected by the consumer of {source_queue}"),
                    other => format!("dead-lettered by the broker from {source_queue} ({other})"),
                };
                (reason, detail)
            }
        };
        let headers = table.map(table_json).unwrap_or(Value::Object(Map::new()));
        Self {
            fingerprint: fingerprint(delivery, &headers),
            original_exchange: header(telerelay.original_exchange)
                .or_else(|| header("x-first-death-exchange")),
            original_routing_key: header(telerelay.original_routing_key)
                .or(first_death.routing_key),
            original_user_id: header(telerelay.original_user_id)
                .or_else(|| properties.user_id().as_ref().map(|u| storable(u.as_str()))),
            message_type: text(properties.kind().as_ref()),
            message_id: text(properties.message_id().as_ref()),
            correlation_id: text(properties.correlation_id().as_ref()),
            replay_of: header(REPLAY_OF_HEADER).and_then(|id| id.parse().ok()),
            replayable_headers: replayable_headers(table),
            source_queue,
            reason,
            detail,
            headers,
            body: delivery.data.clone(),
        }
    }
}

/// The routing key and count of the broker's first `x-death` entry, when there is one.
struct FirstDeath {
    routing_key: Option<String>,
    count: Option<i64>,
}

fn first_death(table: Option<&FieldTable>) -> FirstDeath {
    let entry = table
        .and_then(|t| t.inner().get("x-death"))
        .and_then(|deaths| match deaths {
            AMQPValue::FieldArray(deaths) => deaths.as_slice().first(),
            _ => None,
        })
        .and_then(|entry| match entry {
            AMQPValue::FieldTable(entry) => Some(entry),
            _ => None,
        });
    let routing_key =
        entry
            .and_then(|e| e.inner().get("routing-keys"))
            .and_then(|keys| match keys {
                AMQPValue::FieldArray(keys) => keys.as_slice().first().and_then(value_str),
                _ => None,
            });
    let count = entry.and_then(|e| match e.inner().get("count")? {
        AMQPValue::LongLongInt(count) => Some(*count),
        AMQPValue::LongInt(count) => Some(i64::from(*count)),
        _ => None,
    });
    FirstDeath { routing_key, count }
}

fn value_str(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(storable(&String::from_utf8_lossy(s.as_bytes()))),
        AMQPValue::ShortString(s) => Some(storable(s.as_str())),
        _ => None,
    }
}

/// PostgreSQL text and jsonb refuse NUL characters; a dead letter must be storable whatever its
/// publisher put in its headers, so NUL becomes U+FFFD.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The same dead letter delivered twice hashes the same: the broker's redelivery counter is left
/// out; everything else that could tell two deaths apart (x-death times and counts, the replay
/// header) is in.
fn fingerprint(delivery: &Delivery, headers: &Value) -> [u8; 32] {
    let mut stable = headers.clone();
    if let Value::Object(map) = &mut stable {
        map.remove("x-delivery-count");
    }
    let mut hash = Sha256::new();
    for part in [
        delivery.routing_key.as_str().as_bytes(),
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().as_bytes())
            .unwrap_or_default(),
        stable.to_string().as_bytes(),
        &delivery.data,
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

fn replayable_headers(table: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(table) = table else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !name.starts_with("x-telerelay-") && !DEATH_HEADERS.contains(&name)
        })
        .filter_map(|(name, value)| Some((storable(name.as_str()), value_str(value)?)))
        .collect()
}

/// A header table as JSON, in the table's (sorted) key order.
fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(name, value)| (storable(name.as_str()), value_json(value)))
            .collect(),
    )
}

fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => Value::String(format!("{}e-{}", d.value, d.scale)),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => {
            Value::String(value_str(value).unwrap_or_default())
        }
        AMQPValue::ByteArray(bytes) => Value::String(hex_string(bytes.as_slice())),
        AMQPValue::FieldArray(values) => {
            Value::Array(values.as_slice().iter().map(value_json).collect())
        }
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::Void => Value::Null,
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn death_entry() -> AMQPValue {
        let mut entry = FieldTable::default();
        entry.insert("count".into(), AMQPValue::LongLongInt(10));
        entry.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        entry.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from("HN-HH-001.routed"),
            )])),
        );
        AMQPValue::FieldTable(entry)
    }

    #[test]
    fn the_first_death_gives_the_original_routing_key_and_count() {
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![death_entry()])),
        );
        let first = first_death(Some(&table));
        assert_eq!(first.routing_key.as_deref(), Some("HN-HH-001.routed"));
        assert_eq!(first.count, Some(10));
        assert_eq!(table_json(&table)["x-death"][0]["count"], 10);
    }

    #[test]
    fn nul_characters_a_publisher_put_in_headers_are_made_storable() {
        let mut table = FieldTable::default();
        table.insert("note".into(), AMQPValue::LongString("a\0b".into()));
        assert_eq!(table_json(&table)["note"], "a\u{FFFD}b");
    }

    #[test]
    fn a_replay_carries_only_the_publishers_own_headers() {
        let mut table = FieldTable::default();
        table.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-ab-cd-01".into()),
        );
        table.insert("x-delivery-count".into(), AMQPValue::LongInt(3));
        table.insert(
            DEAD_LETTER_HEADERS.reason.into(),
            AMQPValue::LongString("no_pairing".into()),
        );
        table.insert(REPLAY_OF_HEADER.into(), AMQPValue::LongString("7".into()));
        table.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("q".into()),
        );
        assert_eq!(
            replayable_headers(Some(&table)),
            vec![("traceparent".to_owned(), "00-ab-cd-01".to_owned())]
        );
    }
}
