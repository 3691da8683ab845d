//! Review requests built from the real files in the data directory (see README: PhysioNet and
//! pydicom records), the way a county HIS would build them.

use contract::v1;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    formats::default_data_dir()
}

fn now() -> prost_types::Timestamp {
    domain::wire::timestamp(chrono::Utc::now())
}

fn base(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
    department: &str,
    question: &str,
) -> v1::ReviewRequest {
    v1::ReviewRequest {
        request_id: request_id.into(),
        origin_hospital: origin.into(),
        department: department.into(),
        priority: priority as i32,
        requested_at: Some(now()),
        patient: Some(v1::Patient {
            pseudonym: format!("P-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            age_years: 61,
            sex: v1::Sex::Male as i32,
        }),
        clinical_question: question.into(),
        ordering_clinician: "dr-emergency-01".into(),
        ..Default::default()
    }
}

/// A 12-lead resting ECG from a CinC 2021 WFDB record (`record` like `E07500`).
pub fn ecg_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
    record: &str,
) -> v1::ReviewRequest {
    let header = data_dir()
        .join("ecg/cinc2021")
        .join(format!("{record}.hea"));
    let ecg = formats::read_wfdb(&header)
        .unwrap_or_else(|error| panic!("reading {}: {error}", header.display()));
    let leads = ecg
        .leads
        .into_iter()
        .map(|lead| v1::EcgLead {
            name: lead.name,
            gain_adc_per_mv: lead.gain_adc_per_mv,
            baseline_adc: lead.baseline_adc,
            samples: lead.samples,
        })
        .collect();
    v1::ReviewRequest {
        study: Some(v1::review_request::Study::Ecg(v1::EcgStudy {
            source_format: "wfdb".into(),
            sample_rate_hz: ecg.sample_rate_hz,
            leads,
            acquisition: "resting-12-lead".into(),
            ..Default::default()
        })),
        ..base(
            origin,
            request_id,
            priority,
            "emergency",
            "chest pain for 2 hours, rule out STEMI",
        )
    }
}

/// A CT study announced by its DICOM header (claim check: the pixels stay at the origin).
pub fn imaging_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
) -> v1::ReviewRequest {
    let path = data_dir().join("dicom/CT_small.dcm");
    let header = formats::read_imaging_header(&path).expect("CT header");
    v1::ReviewRequest {
        study: Some(v1::review_request::Study::Imaging(v1::ImagingStudy {
            retrieve_url: format!(
                "https://pacs.{}.hospital.example/dicom-web/studies/{}",
                origin.to_lowercase(),
                header.study_instance_uid
            ),
            study_instance_uid: header.study_instance_uid,
            modality: header.modality,
            body_part: header.body_part.unwrap_or_else(|| "HEAD".into()),
            study_description: header.study_description.unwrap_or_default(),
            series_count: 1,
            instance_count: 1,
            sha256: formats::sha256_file(&path).expect("CT sha256"),
            ..Default::default()
        })),
        ..base(
            origin,
            request_id,
            priority,
            "neurology",
            "sudden left-sided weakness, rule out haemorrhage",
        )
    }
}

/// A frozen section with the whole-slide image announced by its DICOM header.
pub fn pathology_request(
    origin: &str,
    request_id: &str,
    priority: v1::Priority,
) -> v1::ReviewRequest {
    let path = data_dir().join("dicom/sm_image.dcm");
    let slide = formats::read_slide_header(&path).expect("slide header");
    v1::ReviewRequest {
        study: Some(v1::review_request::Study::Pathology(v1::PathologyCase {
            specimen_id: slide
                .specimen_id
                .clone()
                .unwrap_or_else(|| slide.container_id.clone()),
            specimen_type: "resection".into(),
            anatomic_site: slide
                .anatomic_site
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            procedure: "intra-operative consultation".into(),
            frozen_section: true,
            slides: vec![v1::Slide {
                slide_id: slide.container_id.clone(),
                stain: slide.stain.clone().unwrap_or_else(|| "H&E".into()),
                wsi_url: format!(
                    "https://wsi.{}.hospital.example/slides/{}",
                    origin.to_lowercase(),
                    slide.container_id
                ),
                sha256: formats::sha256_file(&path).expect("slide sha256"),
                width_px: slide.total_width_px,
                height_px: slide.total_height_px,
            }],
            ..Default::default()
        })),
        ..base(
            origin,
            request_id,
            priority,
            "surgery",
            "frozen section: margin status",
        )
    }
}
