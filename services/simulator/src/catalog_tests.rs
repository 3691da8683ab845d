#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use chrono::Utc;
use domain::wire::review_request_from_wire;
use std::sync::OnceLock;

/// The catalogue, loaded once for all tests from the shared data (a missing data set fails the
/// tests rather than skipping them).
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let dir = formats::default_data_dir();
        Catalog::load(&dir).unwrap_or_else(|error| panic!("loading {}: {error}", dir.display()))
    })
}

fn valid(request: v1::ReviewRequest) -> domain::ReviewRequest {
    let id = request.request_id.clone();
    review_request_from_wire(request, Utc::now())
        .unwrap_or_else(|rejection| panic!("{id}: {rejection}"))
}

#[test]
fn every_catalogued_ecg_becomes_a_valid_request() {
    let catalog = catalog();
    // 35 WFDB records, the DICOM waveform and the HL7 aECG; none is expected to be left out.
    assert_eq!(catalog.ecg_records().len(), 37);
    for record in catalog.ecg_records() {
        let id = format!("HN-HH-001-ecg-{}-test-1", record.label);
        let request =
            catalog.ecg_request("HN-HH-001", &id, v1::Priority::Stat, Some(&record.label));
        let domain::Study::Ecg(ecg) = valid(request).study else {
            panic!("{id}: not an ECG")
        };
        assert_eq!(ecg.source_format, record.study.source_format);
        let seconds = ecg.leads[0].samples.len() as f64 / f64::from(ecg.sample_rate_hz);
        assert!((seconds - 10.0).abs() < 0.01, "{id}: {seconds} s");
    }
}

#[test]
fn ecgs_come_from_all_three_formats() {
    let formats: std::collections::BTreeSet<_> = catalog()
        .ecg_records()
        .iter()
        .map(|record| record.study.source_format.as_str())
        .collect();
    assert_eq!(
        formats.into_iter().collect::<Vec<_>>(),
        ["dicom-waveform", "hl7-aecg", "wfdb"]
    );
}

#[test]
fn ptb_leads_get_standard_names() {
    let record = catalog().ecg_record("s0010_re").unwrap();
    let names: Vec<_> = record
        .study
        .leads
        .iter()
        .map(|lead| lead.name.as_str())
        .collect();
    assert_eq!(&names[..6], ["I", "II", "III", "aVR", "aVL", "aVF"]);
    assert_eq!(&names[12..], ["vx", "vy", "vz"]);
}

#[test]
fn the_records_a_reviewer_must_act_on_are_recognised() {
    let catalog = catalog();
    assert_eq!(
        catalog.ecg_record("s0010_re").unwrap().critical_finding,
        Some("acute inferolateral STEMI")
    );
    assert!(
        catalog
            .ecg_record("106")
            .unwrap()
            .critical_finding
            .is_some()
    );
    assert!(
        catalog
            .ecg_record("208")
            .unwrap()
            .critical_finding
            .is_some()
    );
    assert!(catalog.ecg_record("105").unwrap().unreadable);
    let flagged: Vec<_> = catalog
        .ecg_records()
        .iter()
        .filter(|record| record.unreadable || record.critical_finding.is_some())
        .map(|record| record.label.as_str())
        .collect();
    assert_eq!(flagged.len(), 4, "{flagged:?}");
}

#[test]
fn header_demographics_travel_and_unknown_ones_are_filled_in() {
    let catalog = catalog();
    let request = catalog.ecg_request(
        "HN-HH-001",
        "HN-HH-001-ecg-s0010_re-test-1",
        v1::Priority::Stat,
        Some("s0010_re"),
    );
    let patient = request.patient.unwrap();
    assert_eq!(
        (patient.age_years, patient.sex),
        (81, v1::Sex::Female as i32)
    );
    assert!(
        patient.pseudonym.starts_with("P-") && patient.pseudonym.len() == 10,
        "{}",
        patient.pseudonym
    );
    // MIT-BIH 103 records its age as -1 (unknown).
    let request = catalog.ecg_request(
        "HN-HH-001",
        "HN-HH-001-ecg-103-test-1",
        v1::Priority::Routine,
        Some("103"),
    );
    assert!((30..=85).contains(&request.patient.unwrap().age_years));
}

#[test]
fn every_imaging_source_becomes_a_valid_claim_check() {
    let catalog = catalog();
    assert_eq!(catalog.imaging_sources().len(), 4);
    for source in catalog.imaging_sources() {
        let id = format!("HN-SY-001-imaging-{}-test-1", source.label);
        let request =
            catalog.imaging_request("HN-SY-001", &id, v1::Priority::Urgent, Some(source.label));
        let domain::Study::Imaging(study) = valid(request).study else {
            panic!("{id}: not imaging")
        };
        assert_eq!(study.sha256.len(), 64);
        assert!(
            study
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{}",
            study.sha256
        );
        assert_eq!(study.modality, source.header.modality);
        assert!(study.series_count >= 1 && study.instance_count >= 1);
        assert!(!study.body_part.is_empty());
        assert_eq!(
            study.retrieve_url,
            format!(
                "https://pacs.hn-sy-001.hospital.example/dicom-web/studies/{}",
                study.study_instance_uid
            )
        );
    }
}

#[test]
fn the_ct_claim_check_carries_the_files_published_hash() {
    let request = catalog().imaging_request(
        "HN-HH-001",
        "HN-HH-001-imaging-ct-test-1",
        v1::Priority::Stat,
        Some("ct"),
    );
    let Some(v1::review_request::Study::Imaging(study)) = request.study else {
        panic!("not imaging")
    };
    // dicom/PROVENANCE.md
    assert_eq!(
        study.sha256,
        "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6"
    );
}

#[test]
fn pathology_cases_are_valid_and_have_a_slide() {
    let catalog = catalog();
    for frozen in [true, false] {
        let id = format!("HN-SY-001-pathology-x-test-{frozen}");
        let priority = if frozen {
            v1::Priority::Stat
        } else {
            v1::Priority::Routine
        };
        let request = catalog.pathology_request("HN-SY-001", &id, priority, frozen);
        let question = request.clinical_question.clone();
        let domain::Study::Pathology(case) = valid(request).study else {
            panic!("{id}: not pathology")
        };
        assert!(!case.slides.is_empty());
        assert_eq!(case.frozen_section, frozen);
        assert_eq!(question.starts_with("frozen section"), frozen, "{question}");
        let slide = &case.slides[0];
        assert_eq!(slide.stain, "H&E");
        assert_eq!((slide.width_px, slide.height_px), (50, 50));
        assert_eq!(
            slide.sha256,
            "a2d672f55c00ff24f9c836b3b01f9d2d3b254731b800ef9a9ea33f373d315af5"
        );
    }
}

#[test]
fn requests_are_deterministic_apart_from_patient_and_times() {
    let catalog = catalog();
    let strip = |mut request: v1::ReviewRequest| {
        request.patient = None;
        request.requested_at = None;
        match request.study.as_mut() {
            Some(v1::review_request::Study::Ecg(ecg)) => ecg.acquired_at = None,
            Some(v1::review_request::Study::Imaging(imaging)) => imaging.study_started_at = None,
            Some(v1::review_request::Study::Pathology(case)) => case.collected_at = None,
            None => {}
        }
        request
    };
    let id = "HN-YZ-001-ecg-x-test-7";
    assert_eq!(
        strip(catalog.ecg_request("HN-YZ-001", id, v1::Priority::Asap, None)),
        strip(catalog.ecg_request("HN-YZ-001", id, v1::Priority::Asap, None))
    );
    let id = "HN-YZ-001-imaging-x-test-7";
    assert_eq!(
        strip(catalog.imaging_request("HN-YZ-001", id, v1::Priority::Routine, None)),
        strip(catalog.imaging_request("HN-YZ-001", id, v1::Priority::Routine, None))
    );
    let id = "HN-YZ-001-pathology-x-test-7";
    assert_eq!(
        strip(catalog.pathology_request("HN-YZ-001", id, v1::Priority::Stat, true)),
        strip(catalog.pathology_request("HN-YZ-001", id, v1::Priority::Stat, true))
    );
}

#[test]
fn an_ecg_request_fits_the_dispatchers_default_body_limit() {
    use prost::Message;
    for record in catalog().ecg_records() {
        let request = catalog().ecg_request(
            "HN-HH-001",
            "HN-HH-001-ecg-x-test-1",
            v1::Priority::Routine,
            Some(&record.label),
        );
        assert!(
            request.encoded_len() < 2 * 1024 * 1024,
            "{}: {} bytes",
            record.label,
            request.encoded_len()
        );
    }
}

#[test]
fn a_missing_data_directory_is_an_error() {
    let error = Catalog::load(Path::new("/nonexistent/telerelay-data")).unwrap_err();
    assert!(matches!(error, CatalogError::NoEcgRecords(_)), "{error}");
}
