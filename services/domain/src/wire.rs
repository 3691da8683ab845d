//! The edge between the protobuf contract and the domain. Inbound: a `v1::ReviewRequest` becomes
//! a [`ReviewRequest`] or a [`Rejection`] that names the first problem in words a HIS vendor can
//! act on (and that never quote patient data). Outbound: domain facts become wire messages.

use crate::request::{
    EcgLead, EcgStudy, ImagingStudy, PathologyCase, Patient, ReviewRequest, Sex, Slide, Study,
};
use crate::{HospitalCode, OriginRequestId, Priority, RequestState};
use chrono::{DateTime, Duration, Utc};
use contract::v1;

/// Limits on what the relay accepts. They bound memory per message and catch unit mistakes
/// (an ECG "sampled" at 5 Hz or a 90-minute "resting" ECG is a broken converter, not a study).
pub mod limits {
    pub const MAX_LEADS: usize = 16;
    pub const SAMPLE_RATE_HZ: std::ops::RangeInclusive<u32> = 100..=2000;
    /// Ten minutes of signal: a Holter excerpt, never a whole Holter.
    pub const MAX_ECG_SECONDS: u32 = 600;
    pub const MAX_TEXT: usize = 2000;
    pub const MAX_SHORT_TEXT: usize = 128;
    pub const MAX_SLIDES: usize = 200;
    pub const MAX_AGE_YEARS: u32 = 150;
    /// A request stamped further in the future than this comes from a broken clock.
    pub const MAX_CLOCK_SKEW_MINUTES: i64 = 10;
}

/// Why the relay refused a message. Mirrors `v1::RejectionReason`; vendors switch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionReason {
    Malformed,
    MissingField,
    InvalidField,
    Oversized,
    UnknownOrigin,
    SenderMismatch,
    NoPairing,
    ConflictingDuplicate,
}

impl RejectionReason {
    /// The stable form stored in PostgreSQL and put in dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::Malformed => "malformed",
            RejectionReason::MissingField => "missing_field",
            RejectionReason::InvalidField => "invalid_field",
            RejectionReason::Oversized => "oversized",
            RejectionReason::UnknownOrigin => "unknown_origin",
            RejectionReason::SenderMismatch => "sender_mismatch",
            RejectionReason::NoPairing => "no_pairing",
            RejectionReason::ConflictingDuplicate => "conflicting_duplicate",
        }
    }

    fn to_wire(self) -> v1::RejectionReason {
        match self {
            RejectionReason::Malformed => v1::RejectionReason::Malformed,
            RejectionReason::MissingField => v1::RejectionReason::MissingField,
            RejectionReason::InvalidField => v1::RejectionReason::InvalidField,
            RejectionReason::Oversized => v1::RejectionReason::Oversized,
            RejectionReason::UnknownOrigin => v1::RejectionReason::UnknownOrigin,
            RejectionReason::SenderMismatch => v1::RejectionReason::SenderMismatch,
            RejectionReason::NoPairing => v1::RejectionReason::NoPairing,
            RejectionReason::ConflictingDuplicate => v1::RejectionReason::ConflictingDuplicate,
        }
    }
}

/// A refusal with its reason and a detail free of patient data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    pub reason: RejectionReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectionReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(
            RejectionReason::MissingField,
            format!("{field} is required"),
        )
    }

    fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(RejectionReason::InvalidField, format!("{field}: {why}"))
    }

    /// The notice sent back to the hospital that published the refused message.
    pub fn to_notice(
        &self,
        request_id: &str,
        message_id: &str,
        at: DateTime<Utc>,
    ) -> v1::OriginNotice {
        v1::OriginNotice {
            notice: Some(v1::origin_notice::Notice::Rejected(v1::RequestRejected {
                request_id: request_id.to_owned(),
                message_id: message_id.to_owned(),
                reason: self.reason.to_wire() as i32,
                detail: self.detail.clone(),
                rejected_at: Some(timestamp(at)),
            })),
        }
    }
}

/// Coded reasons a reviewer returns a request. Mirrors `v1::ReturnReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnReason {
    UnreadableSignal,
    MissingSeries,
    UnsuitableSpecimen,
    InsufficientClinicalInfo,
    WrongService,
    Other,
}

impl ReturnReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnReason::UnreadableSignal => "unreadable_signal",
            ReturnReason::MissingSeries => "missing_series",
            ReturnReason::UnsuitableSpecimen => "unsuitable_specimen",
            ReturnReason::InsufficientClinicalInfo => "insufficient_clinical_info",
            ReturnReason::WrongService => "wrong_service",
            ReturnReason::Other => "other",
        }
    }

    pub fn to_wire(self) -> v1::ReturnReason {
        match self {
            ReturnReason::UnreadableSignal => v1::ReturnReason::UnreadableSignal,
            ReturnReason::MissingSeries => v1::ReturnReason::MissingSeries,
            ReturnReason::UnsuitableSpecimen => v1::ReturnReason::UnsuitableSpecimen,
            ReturnReason::InsufficientClinicalInfo => v1::ReturnReason::InsufficientClinicalInfo,
            ReturnReason::WrongService => v1::ReturnReason::WrongService,
            ReturnReason::Other => v1::ReturnReason::Other,
        }
    }
}

/// Decodes and validates a request body. `now` bounds `requested_at` against broken clocks.
pub fn decode_review_request(body: &[u8], now: DateTime<Utc>) -> Result<ReviewRequest, Rejection> {
    let wire = decode_wire_request(body)?;
    review_request_from_wire(wire, now)
}

/// Only the protobuf decoding step, so the dispatcher can read the request id and origin of a
/// request that fails validation and tell its sender.
pub fn decode_wire_request(body: &[u8]) -> Result<v1::ReviewRequest, Rejection> {
    <v1::ReviewRequest as prost::Message>::decode(body).map_err(|error| {
        Rejection::new(
            RejectionReason::Malformed,
            format!("body is not a telerelay.v1.ReviewRequest: {error}"),
        )
    })
}

/// Validates a decoded request field by field; the first problem found is the rejection.
pub fn review_request_from_wire(
    wire: v1::ReviewRequest,
    now: DateTime<Utc>,
) -> Result<ReviewRequest, Rejection> {
    let request_id = required(&wire.request_id, "request_id").and_then(|id| {
        OriginRequestId::parse(id).map_err(|why| Rejection::invalid("request_id", why))
    })?;
    let origin = required(&wire.origin_hospital, "origin_hospital").and_then(|code| {
        HospitalCode::parse(code).map_err(|why| Rejection::invalid("origin_hospital", why))
    })?;
    let department = short_text(&wire.department, "department")?;
    let priority = match v1::Priority::try_from(wire.priority) {
        Ok(v1::Priority::Stat) => Priority::Stat,
        Ok(v1::Priority::Asap) => Priority::Asap,
        Ok(v1::Priority::Urgent) => Priority::Urgent,
        Ok(v1::Priority::Routine) => Priority::Routine,
        Ok(v1::Priority::Unspecified) => return Err(Rejection::missing("priority")),
        Err(_) => {
            return Err(Rejection::invalid(
                "priority",
                format!("unknown value {}", wire.priority),
            ));
        }
    };
    let requested_at = wire
        .requested_at
        .as_ref()
        .ok_or_else(|| Rejection::missing("requested_at"))
        .and_then(|at| from_timestamp(at, "requested_at"))?;
    let latest_acceptable =
        now.checked_add_signed(Duration::minutes(limits::MAX_CLOCK_SKEW_MINUTES));
    if latest_acceptable.is_some_and(|latest| requested_at > latest) {
        return Err(Rejection::invalid(
            "requested_at",
            "lies in the future; check the sender's clock",
        ));
    }
    let patient = patient_from_wire(wire.patient)?;
    let clinical_question = long_text(&wire.clinical_question, "clinical_question")?;
    let study = match wire.study {
        Some(v1::review_request::Study::Ecg(ecg)) => Study::Ecg(ecg_from_wire(ecg)?),
        Some(v1::review_request::Study::Imaging(imaging)) => {
            Study::Imaging(imaging_from_wire(imaging)?)
        }
        Some(v1::review_request::Study::Pathology(case)) => {
            Study::Pathology(pathology_from_wire(case)?)
        }
        None => return Err(Rejection::missing("study (one of ecg, imaging, pathology)")),
    };
    Ok(ReviewRequest {
        request_id,
        origin,
        department,
        subspecialty: optional_short_text(&wire.subspecialty, "subspecialty")?,
        priority,
        requested_at,
        patient,
        clinical_question,
        ordering_clinician: optional_short_text(&wire.ordering_clinician, "ordering_clinician")?,
        resubmission_of: match wire.resubmission_of.as_str() {
            "" => None,
            id => Some(
                OriginRequestId::parse(id)
                    .map_err(|why| Rejection::invalid("resubmission_of", why))?,
            ),
        },
        study,
    })
}

fn patient_from_wire(patient: Option<v1::Patient>) -> Result<Patient, Rejection> {
    let patient = patient.ok_or_else(|| Rejection::missing("patient"))?;
    let pseudonym = short_text(&patient.pseudonym, "patient.pseudonym")?;
    if patient.age_years > limits::MAX_AGE_YEARS {
        return Err(Rejection::invalid(
            "patient.age_years",
            "is not a human age",
        ));
    }
    let sex = match v1::Sex::try_from(patient.sex) {
        Ok(v1::Sex::Female) => Sex::Female,
        Ok(v1::Sex::Male) => Sex::Male,
        Ok(v1::Sex::Other) => Sex::Other,
        Ok(v1::Sex::Unknown) => Sex::Unknown,
        Ok(v1::Sex::Unspecified) => return Err(Rejection::missing("patient.sex")),
        Err(_) => return Err(Rejection::invalid("patient.sex", "unknown value")),
    };
    Ok(Patient {
        pseudonym,
        age_years: patient.age_years,
        sex,
    })
}

fn ecg_from_wire(ecg: v1::EcgStudy) -> Result<EcgStudy, Rejection> {
    if !limits::SAMPLE_RATE_HZ.contains(&ecg.sample_rate_hz) {
        return Err(Rejection::invalid(
            "ecg.sample_rate_hz",
            format!(
                "{} Hz is outside {:?}",
                ecg.sample_rate_hz,
                limits::SAMPLE_RATE_HZ
            ),
        ));
    }
    if ecg.leads.is_empty() {
        return Err(Rejection::missing("ecg.leads"));
    }
    if ecg.leads.len() > limits::MAX_LEADS {
        return Err(Rejection::invalid(
            "ecg.leads",
            format!("more than {} leads", limits::MAX_LEADS),
        ));
    }
    let samples_per_lead = ecg.leads[0].samples.len();
    let max_samples = (ecg.sample_rate_hz * limits::MAX_ECG_SECONDS) as usize;
    if samples_per_lead == 0 || samples_per_lead > max_samples {
        return Err(Rejection::invalid(
            "ecg.leads.samples",
            format!("{samples_per_lead} samples per lead; expected 1 to {max_samples}"),
        ));
    }
    let mut leads = Vec::with_capacity(ecg.leads.len());
    for (index, lead) in ecg.leads.into_iter().enumerate() {
        let name = short_text(&lead.name, &format!("ecg.leads[{index}].name"))?;
        if lead.samples.len() != samples_per_lead {
            return Err(Rejection::invalid(
                &format!("ecg.leads[{index}].samples"),
                format!(
                    "{} samples, but lead 0 has {samples_per_lead}",
                    lead.samples.len()
                ),
            ));
        }
        if !(lead.gain_adc_per_mv.is_finite() && lead.gain_adc_per_mv > 0.0) {
            return Err(Rejection::invalid(
                &format!("ecg.leads[{index}].gain_adc_per_mv"),
                "must be positive",
            ));
        }
        let in_16_bits = |value: &i32| i16::try_from(*value).is_ok();
        if !lead.samples.iter().all(in_16_bits) {
            return Err(Rejection::invalid(
                &format!("ecg.leads[{index}].samples"),
                "values must fit in 16 bits",
            ));
        }
        leads.push(EcgLead {
            name,
            gain_adc_per_mv: lead.gain_adc_per_mv,
            baseline_adc: lead.baseline_adc,
            samples: lead.samples,
        });
    }
    Ok(EcgStudy {
        source_format: short_text(&ecg.source_format, "ecg.source_format")?,
        sample_rate_hz: ecg.sample_rate_hz,
        leads,
        acquired_at: ecg
            .acquired_at
            .as_ref()
            .map(|at| from_timestamp(at, "ecg.acquired_at"))
            .transpose()?,
        device: bounded(&ecg.device, "ecg.device", limits::MAX_SHORT_TEXT)?,
        acquisition: bounded(&ecg.acquisition, "ecg.acquisition", limits::MAX_SHORT_TEXT)?,
    })
}

fn imaging_from_wire(imaging: v1::ImagingStudy) -> Result<ImagingStudy, Rejection> {
    let uid = required(&imaging.study_instance_uid, "imaging.study_instance_uid")?;
    if uid.len() > 64 || !uid.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(Rejection::invalid(
            "imaging.study_instance_uid",
            "is not a DICOM UID",
        ));
    }
    let modality = required(&imaging.modality, "imaging.modality")?;
    if modality.len() > 16
        || !modality
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(Rejection::invalid(
            "imaging.modality",
            "is not a DICOM modality code",
        ));
    }
    if imaging.series_count == 0 || imaging.instance_count < imaging.series_count {
        return Err(Rejection::invalid(
            "imaging.instance_count",
            "a study has at least one instance per series",
        ));
    }
    Ok(ImagingStudy {
        study_instance_uid: uid.to_owned(),
        accession_number: bounded(&imaging.accession_number, "imaging.accession_number", 64)?,
        modality: modality.to_owned(),
        body_part: bounded(
            &imaging.body_part,
            "imaging.body_part",
            limits::MAX_SHORT_TEXT,
        )?,
        study_description: bounded(
            &imaging.study_description,
            "imaging.study_description",
            limits::MAX_TEXT,
        )?,
        series_count: imaging.series_count,
        instance_count: imaging.instance_count,
        retrieve_url: url(&imaging.retrieve_url, "imaging.retrieve_url")?,
        sha256: sha256_hex(&imaging.sha256, "imaging.sha256")?,
        study_started_at: imaging
            .study_started_at
            .as_ref()
            .map(|at| from_timestamp(at, "imaging.study_started_at"))
            .transpose()?,
    })
}

fn pathology_from_wire(case: v1::PathologyCase) -> Result<PathologyCase, Rejection> {
    if case.slides.is_empty() {
        return Err(Rejection::missing("pathology.slides"));
    }
    if case.slides.len() > limits::MAX_SLIDES {
        return Err(Rejection::invalid(
            "pathology.slides",
            format!("more than {}", limits::MAX_SLIDES),
        ));
    }
    let slides = case
        .slides
        .into_iter()
        .enumerate()
        .map(|(index, slide)| {
            Ok(Slide {
                slide_id: short_text(
                    &slide.slide_id,
                    &format!("pathology.slides[{index}].slide_id"),
                )?,
                stain: short_text(&slide.stain, &format!("pathology.slides[{index}].stain"))?,
                wsi_url: url(
                    &slide.wsi_url,
                    &format!("pathology.slides[{index}].wsi_url"),
                )?,
                sha256: sha256_hex(&slide.sha256, &format!("pathology.slides[{index}].sha256"))?,
                width_px: slide.width_px,
                height_px: slide.height_px,
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(PathologyCase {
        specimen_id: short_text(&case.specimen_id, "pathology.specimen_id")?,
        specimen_type: short_text(&case.specimen_type, "pathology.specimen_type")?,
        anatomic_site: short_text(&case.anatomic_site, "pathology.anatomic_site")?,
        procedure: bounded(
            &case.procedure,
            "pathology.procedure",
            limits::MAX_SHORT_TEXT,
        )?,
        frozen_section: case.frozen_section,
        slides,
        collected_at: case
            .collected_at
            .as_ref()
            .map(|at| from_timestamp(at, "pathology.collected_at"))
            .transpose()?,
    })
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Rejection> {
    if value.trim().is_empty() {
        Err(Rejection::missing(field))
    } else {
        Ok(value)
    }
}

fn bounded(value: &str, field: &str, max: usize) -> Result<String, Rejection> {
    if value.chars().count() > max {
        return Err(Rejection::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn short_text(value: &str, field: &str) -> Result<String, Rejection> {
    required(value, field).and_then(|value| bounded(value, field, limits::MAX_SHORT_TEXT))
}

fn optional_short_text(value: &str, field: &str) -> Result<Option<String>, Rejection> {
    if value.is_empty() {
        Ok(None)
    } else {
        short_text(value, field).map(Some)
    }
}

fn long_text(value: &str, field: &str) -> Result<String, Rejection> {
    required(value, field).and_then(|value| bounded(value, field, limits::MAX_TEXT))
}

fn url(value: &str, field: &str) -> Result<String, Rejection> {
    let value = required(value, field)?;
    if !(value.starts_with("https://") || value.starts_with("http://")) || value.len() > 2048 {
        return Err(Rejection::invalid(
            field,
            "must be an http(s) URL of at most 2048 characters",
        ));
    }
    Ok(value.to_owned())
}

fn sha256_hex(value: &str, field: &str) -> Result<String, Rejection> {
    if value.len() != 64
        || !value
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(Rejection::invalid(
            field,
            "must be 64 lower-case hex digits",
        ));
    }
    Ok(value.to_owned())
}

fn from_timestamp(at: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>, Rejection> {
    let nanos = u32::try_from(at.nanos).map_err(|_| Rejection::invalid(field, "negative nanos"))?;
    DateTime::from_timestamp(at.seconds, nanos)
        .ok_or_else(|| Rejection::invalid(field, "out of range"))
}

/// A chrono time as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// The wire form of a lifecycle state.
pub fn state_to_wire(state: RequestState) -> v1::RequestState {
    match state {
        RequestState::Received => v1::RequestState::Received,
        RequestState::Routed => v1::RequestState::Routed,
        RequestState::Claimed => v1::RequestState::Claimed,
        RequestState::Released => v1::RequestState::Released,
        RequestState::Reported => v1::RequestState::Reported,
        RequestState::Delivered => v1::RequestState::Delivered,
        RequestState::Acknowledged => v1::RequestState::Acknowledged,
        RequestState::Rejected => v1::RequestState::Rejected,
        RequestState::Returned => v1::RequestState::Returned,
        RequestState::Escalated => v1::RequestState::Escalated,
        RequestState::Cancelled => v1::RequestState::Cancelled,
        RequestState::Expired => v1::RequestState::Expired,
        RequestState::AtRisk => v1::RequestState::AtRisk,
        RequestState::Amended => v1::RequestState::Amended,
        RequestState::CriticalNotified => v1::RequestState::CriticalNotified,
        RequestState::SecondReadRequested => v1::RequestState::SecondReadRequested,
        RequestState::SecondReadRecorded => v1::RequestState::SecondReadRecorded,
        RequestState::Resubmitted => v1::RequestState::Resubmitted,
    }
}

/// The domain form of a wire lifecycle state; `None` for unspecified or unknown values.
pub fn state_from_wire(value: i32) -> Option<RequestState> {
    let state = v1::RequestState::try_from(value).ok()?;
    RequestState::ALL
        .into_iter()
        .find(|candidate| state_to_wire(*candidate) == state)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
