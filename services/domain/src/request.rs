//! A review request after validation: every field present, in range, and typed.

use crate::{HospitalCode, OriginRequestId, Priority, StudyKind};
use chrono::{DateTime, Utc};
use std::fmt;

/// A request for a provincial specialist to read one study.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewRequest {
    pub request_id: OriginRequestId,
    pub origin: HospitalCode,
    pub department: String,
    pub subspecialty: Option<String>,
    pub priority: Priority,
    pub requested_at: DateTime<Utc>,
    pub patient: Patient,
    pub clinical_question: String,
    pub ordering_clinician: Option<String>,
    pub resubmission_of: Option<OriginRequestId>,
    pub study: Study,
}

impl ReviewRequest {
    pub fn kind(&self) -> StudyKind {
        self.study.kind()
    }
}

/// The pseudonymous patient. `Debug` hides the pseudonym so that a stray `{:?}` in a log line
/// cannot leak even the pseudonymous identity.
#[derive(Clone, PartialEq)]
pub struct Patient {
    pub pseudonym: String,
    pub age_years: u32,
    pub sex: Sex,
}

impl fmt::Debug for Patient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patient")
            .field("pseudonym", &"<redacted>")
            .field("age_years", &self.age_years)
            .field("sex", &self.sex)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

/// The study itself; its variant decides the kind of pool that reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Study {
    Ecg(EcgStudy),
    Imaging(ImagingStudy),
    Pathology(PathologyCase),
}

impl Study {
    pub fn kind(&self) -> StudyKind {
        match self {
            Study::Ecg(_) => StudyKind::Ecg,
            Study::Imaging(_) => StudyKind::Imaging,
            Study::Pathology(_) => StudyKind::Pathology,
        }
    }
}

/// An ECG in canonical form: one sample rate, equal-length leads, ADC units with a gain.
#[derive(Clone, Debug, PartialEq)]
pub struct EcgStudy {
    pub source_format: String,
    pub sample_rate_hz: u32,
    pub leads: Vec<EcgLead>,
    pub acquired_at: Option<DateTime<Utc>>,
    pub device: String,
    pub acquisition: String,
}

impl EcgStudy {
    pub fn samples_per_lead(&self) -> usize {
        self.leads.first().map_or(0, |lead| lead.samples.len())
    }

    pub fn duration_seconds(&self) -> f64 {
        self.samples_per_lead() as f64 / f64::from(self.sample_rate_hz)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EcgLead {
    pub name: String,
    pub gain_adc_per_mv: f64,
    pub baseline_adc: i32,
    pub samples: Vec<i32>,
}

/// Imaging travels as a claim check: the pixels stay in the origin's PACS.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagingStudy {
    pub study_instance_uid: String,
    pub accession_number: String,
    pub modality: String,
    pub body_part: String,
    pub study_description: String,
    pub series_count: u32,
    pub instance_count: u32,
    pub retrieve_url: String,
    pub sha256: String,
    pub study_started_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PathologyCase {
    pub specimen_id: String,
    pub specimen_type: String,
    pub anatomic_site: String,
    pub procedure: String,
    pub frozen_section: bool,
    pub slides: Vec<Slide>,
    pub collected_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Slide {
    pub slide_id: String,
    pub stain: String,
    pub wsi_url: String,
    pub sha256: String,
    pub width_px: u32,
    pub height_px: u32,
}
