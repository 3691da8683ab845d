//! Review requests built from the catalogue: the real content of a file, with ids, patient
//! and times that vary per request. Department, clinical question and clinician follow from a
//! stable hash of the request id, so the same inputs build the same request.

use crate::catalog::Catalog;
use crate::clinical;
use crate::ids::{pick, stable_hash};
use chrono::{DateTime, Duration, Utc};
use contract::v1;
use domain::StudyKind;
use domain::wire::timestamp;
use rand::Rng;

impl Catalog {
    /// An ECG review request. `record` names an ECG by label; `None`, or a label the
    /// catalogue does not hold, picks one by a stable hash of the request id.
    pub fn ecg_request(
        &self,
        origin: &str,
        request_id: &str,
        priority: v1::Priority,
        record: Option<&str>,
    ) -> v1::ReviewRequest {
        let record = record
            .and_then(|label| self.ecg_record(label))
            .unwrap_or_else(|| pick(&self.ecgs, request_id, "ecg"));
        let now = Utc::now();
        let mut request = base_request(
            origin,
            request_id,
            priority,
            StudyKind::Ecg,
            is_urgent(priority),
            now,
        );
        request.patient = Some(patient(record.age_years, record.sex));
        let mut study = record.study.clone();
        study.acquired_at = Some(timestamp(now - Duration::minutes(5)));
        request.study = Some(v1::review_request::Study::Ecg(study));
        request
    }

    /// An imaging review request: a claim check on the origin's PACS. `source` names an
    /// imaging file by label (`ct`, `mr`, `mrj2k`, `sr`); `None` or an unknown label picks one
    /// by a stable hash of the request id.
    pub fn imaging_request(
        &self,
        origin: &str,
        request_id: &str,
        priority: v1::Priority,
        source: Option<&str>,
    ) -> v1::ReviewRequest {
        let source = source
            .and_then(|label| self.imaging.iter().find(|source| source.label == label))
            .unwrap_or_else(|| pick(&self.imaging, request_id, "imaging"));
        let header = &source.header;
        let now = Utc::now();
        let mut request = base_request(
            origin,
            request_id,
            priority,
            StudyKind::Imaging,
            is_urgent(priority),
            now,
        );
        request.patient = Some(patient(None, None));
        let body_part = header
            .body_part
            .clone()
            .unwrap_or_else(|| default_body_part(&header.modality).to_owned());
        let study = v1::ImagingStudy {
            study_instance_uid: header.study_instance_uid.clone(),
            accession_number: format!("ACC{:08}", stable_hash(request_id) % 100_000_000),
            modality: header.modality.clone(),
            body_part,
            study_description: header
                .study_description
                .clone()
                .unwrap_or_else(|| format!("{} study", header.modality)),
            // The claim check covers exactly the file whose hash it carries.
            series_count: 1,
            instance_count: 1,
            retrieve_url: format!(
                "{}/studies/{}",
                dicom_web_base(origin),
                header.study_instance_uid
            ),
            sha256: source.sha256.clone(),
            study_started_at: Some(timestamp(now - Duration::minutes(15))),
        };
        request.study = Some(v1::review_request::Study::Imaging(study));
        request
    }

    /// A pathology review request for the catalogue's whole-slide image. A frozen section is
    /// asked while the surgeon waits, so its question is always an urgent one.
    pub fn pathology_request(
        &self,
        origin: &str,
        request_id: &str,
        priority: v1::Priority,
        frozen_section: bool,
    ) -> v1::ReviewRequest {
        let header = &self.slide.header;
        let now = Utc::now();
        let urgent = frozen_section || is_urgent(priority);
        let mut request = base_request(
            origin,
            request_id,
            priority,
            StudyKind::Pathology,
            urgent,
            now,
        );
        request.patient = Some(patient(None, None));
        let specimen = header
            .specimen_id
            .as_deref()
            .unwrap_or(&header.container_id);
        let (specimen_type, procedure, collected) = if frozen_section {
            (
                "biopsy",
                "intra-operative frozen section",
                Duration::minutes(20),
            )
        } else {
            (
                *pick(&["biopsy", "resection"], request_id, "specimen"),
                "paraffin section",
                Duration::days(2),
            )
        };
        let case = v1::PathologyCase {
            specimen_id: format!("{specimen}-{:04x}", stable_hash(request_id) & 0xffff),
            specimen_type: specimen_type.into(),
            anatomic_site: header
                .anatomic_site
                .clone()
                .unwrap_or_else(|| "unspecified".into()),
            procedure: procedure.into(),
            frozen_section,
            slides: vec![v1::Slide {
                slide_id: header.container_id.clone(),
                stain: header
                    .stain
                    .as_deref()
                    .map_or_else(|| "H&E".to_owned(), stain_name),
                wsi_url: format!(
                    "{}/studies/{}",
                    dicom_web_base(origin),
                    header.study_instance_uid
                ),
                sha256: self.slide.sha256.clone(),
                width_px: header.total_width_px,
                height_px: header.total_height_px,
            }],
            collected_at: Some(timestamp(now - collected)),
        };
        request.study = Some(v1::review_request::Study::Pathology(case));
        request
    }
}

/// Everything but the study and the patient, chosen deterministically from the request id.
fn base_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
    kind: StudyKind,
    urgent: bool,
    now: DateTime<Utc>,
) -> v1::ReviewRequest {
    let department = pick(clinical::departments(kind), request_id, "department");
    let questions = if urgent {
        department.urgent_questions
    } else {
        department.routine_questions
    };
    v1::ReviewRequest {
        request_id: request_id.into(),
        origin_hospital: origin.into(),
        department: department.code.into(),
        priority: priority as i32,
        requested_at: Some(timestamp(now)),
        patient: None,
        clinical_question: (*pick(questions, request_id, "question")).into(),
        subspecialty: department.subspecialty.into(),
        ordering_clinician: format!(
            "{}-md{:03}",
            origin.to_ascii_lowercase(),
            stable_hash(request_id) % 40
        ),
        resubmission_of: String::new(),
        study: None,
    }
}

fn is_urgent(priority: v1::Priority) -> bool {
    matches!(priority, v1::Priority::Stat | v1::Priority::Asap)
}

/// The patient: age and sex as the file records them, else plausible random values; always a
/// fresh random pseudonym, never a name.
fn patient(age_years: Option<u32>, sex: Option<v1::Sex>) -> v1::Patient {
    let mut rng = rand::rng();
    let sex = sex.unwrap_or(if rng.random_bool(0.5) {
        v1::Sex::Female
    } else {
        v1::Sex::Male
    });
    v1::Patient {
        pseudonym: format!("P-{:08x}", rng.random::<u32>()),
        age_years: age_years.unwrap_or_else(|| rng.random_range(30..=85)),
        sex: sex as i32,
    }
}

/// A whole-slide stain list in the short form pathologists write (`H&E`).
fn stain_name(substances: &str) -> String {
    let lower = substances.to_ascii_lowercase();
    if lower.contains("hematoxylin") && lower.contains("eosin") {
        "H&E".into()
    } else {
        substances
            .chars()
            .take(domain::wire::limits::MAX_SHORT_TEXT)
            .collect()
    }
}

fn default_body_part(modality: &str) -> &'static str {
    match modality {
        "CT" | "MR" => "HEAD",
        _ => "CHEST",
    }
}

/// The origin PACS's DICOMweb base URL.
fn dicom_web_base(origin: &str) -> String {
    format!(
        "https://pacs.{}.hospital.example/dicom-web",
        origin.to_ascii_lowercase()
    )
}
