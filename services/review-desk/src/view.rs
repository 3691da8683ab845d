//! What a reviewer receives for a claimed request: the study in full (the ECG samples included)
//! and the clinical context, as JSON.

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use domain::{Sex, Study};
use serde::Serialize;
use store::review::ClaimedRequest;
use store::sla::ClaimContext;

#[derive(Serialize)]
pub(crate) struct ClaimedView {
    request_uuid: uuid::Uuid,
    request_id: String,
    origin: String,
    kind: String,
    priority: String,
    correlation_id: String,
    claim_expires_at: DateTime<Utc>,
    requested_at: DateTime<Utc>,
    department: String,
    subspecialty: Option<String>,
    clinical_question: String,
    ordering_clinician: Option<String>,
    resubmission_of: Option<String>,
    patient: PatientView,
    study: StudyView,
    /// When the report is due (the SLA clock started at the county's publish); `null` when no
    /// SLA policy applies.
    due_at: Option<DateTime<Utc>>,
    /// Already overdue and escalated.
    flagged: bool,
    /// The draft an earlier holder saved (their lease expired or was broken), to continue from.
    draft: Option<DraftView>,
}

#[derive(Serialize)]
struct DraftView {
    findings: String,
    conclusion: String,
    saved_by: Option<String>,
    saved_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct PatientView {
    pseudonym: String,
    age_years: u32,
    sex: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum StudyView {
    Ecg {
        source_format: String,
        sample_rate_hz: u32,
        duration_seconds: f64,
        acquisition: String,
        device: String,
        leads: Vec<LeadView>,
    },
    Imaging {
        study_instance_uid: String,
        accession_number: String,
        modality: String,
        body_part: String,
        study_description: String,
        series_count: u32,
        instance_count: u32,
        retrieve_url: String,
        sha256: String,
    },
    Pathology {
        specimen_id: String,
        specimen_type: String,
        anatomic_site: String,
        procedure: String,
        frozen_section: bool,
        slides: Vec<SlideView>,
    },
}

#[derive(Serialize)]
struct LeadView {
    name: String,
    gain_adc_per_mv: f64,
    baseline_adc: i32,
    samples: Vec<i32>,
}

#[derive(Serialize)]
struct SlideView {
    slide_id: String,
    stain: String,
    wsi_url: String,
    sha256: String,
    width_px: u32,
    height_px: u32,
}

pub(crate) fn claimed_request(
    claimed: &ClaimedRequest,
    sla: ClaimContext,
) -> Result<ClaimedView, ApiError> {
    // The body passed validation when it was routed; it is read again as it was stored.
    let wire = domain::wire::decode_wire_request(&claimed.body).map_err(|rejection| {
        ApiError::Internal(anyhow::anyhow!("stored request unreadable: {rejection}"))
    })?;
    let request = domain::wire::review_request_from_wire(wire, DateTime::<Utc>::MAX_UTC).map_err(
        |rejection| ApiError::Internal(anyhow::anyhow!("stored request invalid: {rejection}")),
    )?;
    let study = match request.study {
        Study::Ecg(ecg) => StudyView::Ecg {
            duration_seconds: ecg.duration_seconds(),
            source_format: ecg.source_format,
            sample_rate_hz: ecg.sample_rate_hz,
            acquisition: ecg.acquisition,
            device: ecg.device,
            leads: ecg
                .leads
                .into_iter()
                .map(|lead| LeadView {
                    name: lead.name,
                    gain_adc_per_mv: lead.gain_adc_per_mv,
                    baseline_adc: lead.baseline_adc,
                    samples: lead.samples,
                })
                .collect(),
        },
        Study::Imaging(imaging) => StudyView::Imaging {
            study_instance_uid: imaging.study_instance_uid,
            accession_number: imaging.accession_number,
            modality: imaging.modality,
            body_part: imaging.body_part,
            study_description: imaging.study_description,
            series_count: imaging.series_count,
            instance_count: imaging.instance_count,
            retrieve_url: imaging.retrieve_url,
            sha256: imaging.sha256,
        },
        Study::Pathology(case) => StudyView::Pathology {
            specimen_id: case.specimen_id,
            specimen_type: case.specimen_type,
            anatomic_site: case.anatomic_site,
            procedure: case.procedure,
            frozen_section: case.frozen_section,
            slides: case
                .slides
                .into_iter()
                .map(|slide| SlideView {
                    slide_id: slide.slide_id,
                    stain: slide.stain,
                    wsi_url: slide.wsi_url,
                    sha256: slide.sha256,
                    width_px: slide.width_px,
                    height_px: slide.height_px,
                })
                .collect(),
        },
    };
    Ok(ClaimedView {
        request_uuid: claimed.id,
        request_id: claimed.request_id.clone(),
        origin: claimed.origin.clone(),
        kind: claimed.kind.clone(),
        priority: claimed.priority.clone(),
        correlation_id: claimed.correlation_id.clone(),
        claim_expires_at: claimed.claim_expires_at,
        requested_at: request.requested_at,
        department: request.department,
        subspecialty: request.subspecialty,
        clinical_question: request.clinical_question,
        ordering_clinician: request.ordering_clinician,
        resubmission_of: request.resubmission_of.map(|id| id.to_string()),
        patient: PatientView {
            pseudonym: request.patient.pseudonym,
            age_years: request.patient.age_years,
            sex: match request.patient.sex {
                Sex::Female => "female",
                Sex::Male => "male",
                Sex::Other => "other",
                Sex::Unknown => "unknown",
            },
        },
        study,
        due_at: sla.due_at,
        flagged: sla.flagged,
        draft: sla.draft.map(|draft| {
            let text = |field: &str| draft.content[field].as_str().unwrap_or_default().to_owned();
            DraftView {
                findings: text("findings"),
                conclusion: text("conclusion"),
                saved_by: draft.saved_by,
                saved_at: draft.saved_at,
            }
        }),
    })
}
