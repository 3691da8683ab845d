//! Review requests built from the real files in the data directory (see README: PhysioNet and
//! pydicom records), exactly as the simulator's county HIS build them.

use contract::v1;
use simulator::Catalog;
use std::sync::OnceLock;

/// The catalogue of real files, read once per test binary.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let data_dir = formats::default_data_dir();
        Catalog::load(&data_dir).unwrap_or_else(|error| {
            panic!(
                "the real data files are needed (see README, set TELERELAY_DATA_DIR): {}: {error}",
                data_dir.display()
            )
        })
    })
}

/// An ECG from the named WFDB record (e.g. `E07500`, a CinC 2021 12-lead 10 s record).
pub fn ecg_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
    record: &str,
) -> v1::ReviewRequest {
    assert!(
        catalog().ecg_record(record).is_some(),
        "no ECG record {record} in the data directory"
    );
    catalog().ecg_request(origin, request_id, priority, Some(record))
}

/// A CT study announced by its DICOM header (claim check: the pixels stay at the origin).
pub fn imaging_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
) -> v1::ReviewRequest {
    catalog().imaging_request(origin, request_id, priority, Some("ct"))
}

/// A frozen section with the whole-slide image announced by its DICOM header.
pub fn pathology_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
) -> v1::ReviewRequest {
    catalog().pathology_request(origin, request_id, priority, true)
}

/// A poison message for the recorder: a well-formed lifecycle event (routed) from `origin` about
/// a request the relay never saw (`NEVER-SEEN`), so recording it violates the audit trail's
/// foreign key every time and the broker dead-letters it after the delivery limit.
pub fn poison_event(origin: &str) -> v1::LifecycleEvent {
    v1::LifecycleEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        request_id: "NEVER-SEEN".into(),
        origin_hospital: origin.into(),
        state: v1::RequestState::Routed as i32,
        actor: "service:test".into(),
        reason: "poison".into(),
        occurred_at: Some(domain::wire::timestamp(chrono::Utc::now())),
        correlation_id: "poison".into(),
        relay_request_uuid: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    }
}
