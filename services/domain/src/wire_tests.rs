#![allow(clippy::unwrap_used)]

use super::*;
use prost::Message;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap()
}

fn valid_ecg_request() -> v1::ReviewRequest {
    let lead = |name: &str| v1::EcgLead {
        name: name.into(),
        gain_adc_per_mv: 1000.0,
        baseline_adc: 0,
        samples: vec![-68, -70, 12, 400, -32768, 32767],
    };
    v1::ReviewRequest {
        request_id: "ECG-2026-0001".into(),
        origin_hospital: "HN-HH-001".into(),
        department: "emergency".into(),
        priority: v1::Priority::Stat as i32,
        requested_at: Some(timestamp(now())),
        patient: Some(v1::Patient {
            pseudonym: "P-7f3a".into(),
            age_years: 61,
            sex: v1::Sex::Male as i32,
        }),
        clinical_question: "chest pain for 2 hours, rule out STEMI".into(),
        study: Some(v1::review_request::Study::Ecg(v1::EcgStudy {
            source_format: "wfdb".into(),
            sample_rate_hz: 500,
            leads: vec![lead("I"), lead("II")],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn rejection_of(request: v1::ReviewRequest) -> Rejection {
    review_request_from_wire(request, now()).unwrap_err()
}

#[test]
fn a_complete_ecg_request_becomes_a_domain_request() {
    let request = decode_review_request(&valid_ecg_request().encode_to_vec(), now()).unwrap();
    assert_eq!(request.priority, Priority::Stat);
    assert_eq!(request.origin.as_str(), "HN-HH-001");
    let Study::Ecg(ecg) = &request.study else {
        panic!("not an ECG")
    };
    assert_eq!(ecg.leads.len(), 2);
    assert_eq!(ecg.samples_per_lead(), 6);
}

#[test]
fn bytes_that_are_not_protobuf_are_malformed() {
    let rejection = decode_review_request(b"\xff\xff\xff\xff not protobuf", now()).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::Malformed);
}

#[test]
fn a_missing_request_id_is_named_in_the_rejection() {
    let rejection = rejection_of(v1::ReviewRequest {
        request_id: String::new(),
        ..valid_ecg_request()
    });
    assert_eq!(rejection.reason, RejectionReason::MissingField);
    assert!(
        rejection.detail.contains("request_id"),
        "{}",
        rejection.detail
    );
}

#[test]
fn leads_of_unequal_length_are_invalid() {
    let mut request = valid_ecg_request();
    if let Some(v1::review_request::Study::Ecg(ecg)) = &mut request.study {
        ecg.leads[1].samples.pop();
    }
    let rejection = rejection_of(request);
    assert_eq!(rejection.reason, RejectionReason::InvalidField);
    assert!(
        rejection.detail.contains("leads[1]"),
        "{}",
        rejection.detail
    );
}

#[test]
fn samples_beyond_16_bits_are_invalid() {
    let mut request = valid_ecg_request();
    if let Some(v1::review_request::Study::Ecg(ecg)) = &mut request.study {
        ecg.leads[0].samples[0] = 40_000;
    }
    assert_eq!(rejection_of(request).reason, RejectionReason::InvalidField);
}

#[test]
fn a_request_stamped_in_the_future_is_refused() {
    let later = now() + Duration::hours(2);
    let rejection = rejection_of(v1::ReviewRequest {
        requested_at: Some(timestamp(later)),
        ..valid_ecg_request()
    });
    assert!(rejection.detail.contains("future"), "{}", rejection.detail);
}

#[test]
fn a_request_without_a_study_is_missing_a_field() {
    let rejection = rejection_of(v1::ReviewRequest {
        study: None,
        ..valid_ecg_request()
    });
    assert_eq!(rejection.reason, RejectionReason::MissingField);
}

#[test]
fn rejection_details_never_quote_the_patient_pseudonym() {
    let mut request = valid_ecg_request();
    request.patient = Some(v1::Patient {
        pseudonym: "P-SECRET".into(),
        age_years: 400,
        sex: 1,
    });
    let rejection = rejection_of(request);
    assert!(!rejection.detail.contains("P-SECRET"));
    assert!(!format!("{rejection:?}").contains("P-SECRET"));
}

#[test]
fn imaging_needs_a_dicom_uid_and_a_lowercase_sha256() {
    let imaging = v1::ImagingStudy {
        study_instance_uid: "1.2.840.113619.2.30.1.1762295590.1623.978668949.886".into(),
        modality: "CT".into(),
        series_count: 1,
        instance_count: 1,
        retrieve_url: "https://pacs.example/dicom-web/studies/1.2".into(),
        sha256: "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6".into(),
        ..Default::default()
    };
    let with = |imaging: v1::ImagingStudy| v1::ReviewRequest {
        study: Some(v1::review_request::Study::Imaging(imaging)),
        ..valid_ecg_request()
    };
    assert!(review_request_from_wire(with(imaging.clone()), now()).is_ok());
    let upper = v1::ImagingStudy {
        sha256: imaging.sha256.to_uppercase(),
        ..imaging.clone()
    };
    assert_eq!(
        rejection_of(with(upper)).reason,
        RejectionReason::InvalidField
    );
    let bad_uid = v1::ImagingStudy {
        study_instance_uid: "1.2.abc".into(),
        ..imaging
    };
    assert_eq!(
        rejection_of(with(bad_uid)).reason,
        RejectionReason::InvalidField
    );
}

#[test]
fn every_state_round_trips_through_the_wire() {
    for state in RequestState::ALL {
        assert_eq!(state_from_wire(state_to_wire(state) as i32), Some(state));
    }
    assert_eq!(state_from_wire(0), None);
}
