//! The simulator's request ids, `<ORIGIN>-<kind>-<label>-<run>-<seq>`.
//!
//! The label names the source the request was built from (an ECG record such as `105` or
//! `s0010_re`, an imaging file such as `ct`, `frozen` for a frozen section). The review desk
//! shows reviewers the request id, so the reviewer bots read the label back from it to act like
//! a doctor who has seen the study: return the noisy MIT-BIH 105, call the PTB infarct critical.
//! The run id keeps ids unique across runs against the same database.

use domain::StudyKind;

/// The longest origin code whose request ids stay within the relay's 64 characters (with a
/// 16-character label and up to ten billion requests per run).
pub const MAX_ORIGIN_CODE_LEN: usize = 19;

/// A request id for `origin`, unique within the run for a unique `seq`.
pub fn request_id(origin: &str, kind: StudyKind, label: &str, run: &str, seq: u64) -> String {
    format!("{origin}-{}-{label}-{run}-{seq}", kind.as_str())
}

/// The label inside a request id built by [`request_id`], or `None` for an id of another shape.
pub fn label_of<'a>(request_id: &'a str, origin: &str, kind: StudyKind) -> Option<&'a str> {
    let rest = request_id.strip_prefix(origin)?.strip_prefix('-')?;
    let rest = rest.strip_prefix(kind.as_str())?.strip_prefix('-')?;
    let label = rest.split('-').next()?;
    (!label.is_empty()).then_some(label)
}

/// A label made safe for a request id: letters, digits and `_` only (the `-` separates the
/// parts), at most 16 characters.
pub fn sanitize_label(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(16)
        .collect()
}

/// A short random run id (six hex digits).
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

/// FNV-1a over a string: a stable, dependency-free way to pick "at random" but reproducibly
/// from a request id.
pub(crate) fn stable_hash(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Picks an element of `items` by the stable hash of `key` and a salt, so that different
/// choices made for one request are independent of each other.
pub(crate) fn pick<'a, T>(items: &'a [T], key: &str, salt: &str) -> &'a T {
    let index = stable_hash(&format!("{salt}:{key}")) % items.len().max(1) as u64;
    &items[index as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_read_back_from_a_request_id() {
        let id = request_id("HN-HH-001", StudyKind::Ecg, "s0010_re", "a1b2c3", 42);
        assert_eq!(id, "HN-HH-001-ecg-s0010_re-a1b2c3-42");
        assert_eq!(label_of(&id, "HN-HH-001", StudyKind::Ecg), Some("s0010_re"));
        assert_eq!(label_of(&id, "HN-HH-002", StudyKind::Ecg), None);
        assert_eq!(label_of(&id, "HN-HH-001", StudyKind::Imaging), None);
        assert_eq!(
            label_of("ECG-2026-000123", "HN-HH-001", StudyKind::Ecg),
            None
        );
    }

    #[test]
    fn the_longest_request_id_is_a_valid_origin_request_id() {
        let origin = "X".repeat(MAX_ORIGIN_CODE_LEN);
        let id = request_id(
            &origin,
            StudyKind::Pathology,
            &"x".repeat(16),
            "a1b2c3",
            9_999_999_999,
        );
        assert!(
            domain::OriginRequestId::parse(&id).is_ok(),
            "{id} ({} chars)",
            id.len()
        );
    }

    #[test]
    fn labels_keep_only_id_safe_characters() {
        assert_eq!(sanitize_label("data_101-6.x"), "data_101_6_x");
        assert_eq!(sanitize_label(&"a".repeat(40)).len(), 16);
    }
}
