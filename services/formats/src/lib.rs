//! Reads clinical files at the edge of telerelay and turns them into plain Rust structs.
//!
//! County hospitals hold ECGs as PhysioNet WFDB records or DICOM waveform objects, imaging
//! studies as DICOM images and structured reports, and pathology slides as DICOM whole-slide
//! microscopy objects. The simulator and the tests build review requests from the structs this
//! crate returns, so no other crate needs to know a file format:
//!
//! * [`read_wfdb`] and [`read_wfdb_excerpt`] read a WFDB record (formats 16 and 212, `.dat` and
//!   WFDB-compatible MATLAB v4 `.mat` signal files) into a [`CanonicalEcg`], checking every
//!   signal's checksum.
//! * [`read_dicom_waveform_ecg`] reads a DICOM ECG waveform, and [`read_hl7_aecg`] an HL7
//!   annotated ECG, into the same [`CanonicalEcg`].
//! * [`read_imaging_header`] and [`read_slide_header`] read the identifying header of a DICOM
//!   study or slide without decoding pixels.
//! * [`sha256_file`], [`default_data_dir`] and [`ecg_catalog`] help callers find and fingerprint
//!   the files.
//!
//! The crate depends on no other telerelay crate: it is the outermost edge.

mod aecg;
mod data_dir;
mod dicom_header;
mod dicom_read;
mod dicom_waveform;
mod digest;
mod error;
mod mat;
mod wfdb;
mod wfdb_comments;
mod wfdb_header;

pub use aecg::read_hl7_aecg;
pub use data_dir::{default_data_dir, ecg_catalog};
pub use dicom_header::{ImagingHeader, SlideHeader, read_imaging_header, read_slide_header};
pub use dicom_waveform::read_dicom_waveform_ecg;
pub use digest::sha256_file;
pub use error::FormatError;
pub use wfdb::{read_wfdb, read_wfdb_excerpt};

/// The file format an ECG was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// A PhysioNet WFDB record: a `.hea` header plus one or more signal files.
    Wfdb,
    /// A DICOM waveform object such as 12-lead ECG Waveform Storage.
    DicomWaveform,
    /// An HL7 v3 annotated ECG (aECG) XML document.
    Hl7Aecg,
}

/// A patient's sex as the source file records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// Recorded as female.
    Female,
    /// Recorded as male.
    Male,
    /// Recorded, but as neither (for example `Unknown` in a WFDB header or `O` in DICOM).
    Unknown,
}

/// An ECG in one shape, whatever file it came from.
///
/// Samples stay in ADC units, as stored, so that nothing is lost to rounding; each lead carries
/// the gain and baseline to turn them into millivolts.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalEcg {
    /// The format the ECG was read from.
    pub source_format: SourceFormat,
    /// The record's name: the WFDB record name (e.g. `E07500`, `100`), the DICOM SOP Instance
    /// UID, or the aECG document id.
    pub record_name: String,
    /// Samples per second, the same for every lead.
    pub sample_rate_hz: u32,
    /// The leads in file order. Every lead has the same number of samples.
    pub leads: Vec<EcgLead>,
    /// The patient's age in whole years where the file records it.
    pub header_age_years: Option<u32>,
    /// The patient's sex where the file records it.
    pub header_sex: Option<Sex>,
    /// Diagnostic statements: SNOMED CT codes from a WFDB `Dx:` comment, otherwise free text
    /// (header notes, DICOM waveform annotations, aECG rhythm statements).
    pub diagnoses: Vec<String>,
}

/// One lead of an ECG.
#[derive(Debug, Clone, PartialEq)]
pub struct EcgLead {
    /// The lead's name as the file gives it, e.g. `I`, `aVR`, `V1`, `MLII`, `vx`.
    pub name: String,
    /// ADC units per millivolt.
    pub gain_adc_per_mv: f64,
    /// The ADC value that corresponds to 0 mV.
    pub baseline_adc: i32,
    /// The samples in ADC units.
    pub samples: Vec<i32>,
}

impl CanonicalEcg {
    /// The number of samples in each lead.
    pub fn sample_count(&self) -> usize {
        self.leads.first().map_or(0, |lead| lead.samples.len())
    }

    /// How long the recording lasts, in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.sample_count() as f64 / f64::from(self.sample_rate_hz)
    }

    /// The lead with the given name, compared case-sensitively because `aVR` and `AVR` are
    /// spelled differently by different sources and the caller should see which one it got.
    pub fn lead(&self, name: &str) -> Option<&EcgLead> {
        self.leads.iter().find(|lead| lead.name == name)
    }

    /// Keeps only the first `seconds` of every lead.
    ///
    /// The cut is rounded to the nearest sample and keeps at least one sample; a recording
    /// shorter than `seconds` is left whole.
    pub fn truncate_to_seconds(&mut self, seconds: f64) -> Result<(), FormatError> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(FormatError::InvalidExcerpt(seconds));
        }
        let wanted = (seconds * f64::from(self.sample_rate_hz)).round().max(1.0);
        // A float-to-int cast saturates, so an enormous excerpt simply keeps everything.
        let keep = wanted as usize;
        for lead in &mut self.leads {
            lead.samples.truncate(keep);
        }
        Ok(())
    }
}

impl EcgLead {
    /// The samples converted to millivolts.
    pub fn millivolts(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|&adc| (f64::from(adc) - f64::from(self.baseline_adc)) / self.gain_adc_per_mv)
            .collect()
    }
}
