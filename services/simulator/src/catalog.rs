//! The real clinical files a county sends, decoded once at start-up.
//!
//! Every request carries real content: ECG waveforms from PhysioNet WFDB records, a DICOM
//! waveform and an HL7 aECG; imaging claim checks from real DICOM headers and file hashes; a
//! pathology case from a real DICOM whole-slide image. The builders that turn these into
//! review requests are in `requests.rs`.

use crate::clinical;
use crate::ids::sanitize_label;
use contract::v1;
use std::path::{Path, PathBuf};

/// Why the catalogue could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no usable ECG under {0}")]
    NoEcgRecords(PathBuf),
    #[error("no readable imaging study under {0}")]
    NoImaging(PathBuf),
    #[error("cannot read {file}")]
    Read {
        file: PathBuf,
        #[source]
        source: formats::FormatError,
    },
}

/// The decoded real files.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub(crate) ecgs: Vec<EcgRecord>,
    pub(crate) imaging: Vec<ImagingSource>,
    pub(crate) slide: SlideSource,
}

/// One ECG, already in wire form.
#[derive(Clone, Debug)]
pub struct EcgRecord {
    /// The record's name made safe for a request id: `E07500`, `105`, `s0010_re`, `dcmwave`.
    pub label: String,
    pub file: PathBuf,
    /// The study without `acquired_at`, which each request sets.
    pub study: v1::EcgStudy,
    pub age_years: Option<u32>,
    pub sex: Option<v1::Sex>,
    /// What a reviewer reads in it, from the record's diagnoses.
    pub statements: Vec<&'static str>,
    /// The critical value a reviewer reports for this record, if any.
    pub critical_finding: Option<&'static str>,
    /// The signal is too noisy to report; a reviewer returns it.
    pub unreadable: bool,
}

/// One imaging object whose header and hash stand for a study in the origin's PACS.
#[derive(Clone, Debug)]
pub struct ImagingSource {
    /// `ct`, `mr`, `mrj2k` or `sr`.
    pub label: &'static str,
    pub header: formats::ImagingHeader,
    pub sha256: String,
}

#[derive(Clone, Debug)]
pub(crate) struct SlideSource {
    pub header: formats::SlideHeader,
    pub sha256: String,
}

/// The imaging files of the shared data and their labels.
const IMAGING_FILES: [(&str, &str); 4] = [
    ("CT_small.dcm", "ct"),
    ("MR_small.dcm", "mr"),
    ("MR_small_jp2klossless.dcm", "mrj2k"),
    ("test-SR.dcm", "sr"),
];

/// MIT-BIH records whose reference rhythm annotations contain runs of ventricular tachycardia.
const VT_RECORDS: [&str; 2] = ["106", "208"];

/// Every ECG is sent as a 10 s excerpt, the length of a resting ECG.
const ECG_SECONDS: f64 = 10.0;

impl Catalog {
    /// Reads and decodes every file once. An ECG that cannot be read, or whose samples do not
    /// fit the contract's 16 bits, is left out with a warning; the catalogue needs at least one
    /// ECG, one imaging study and the slide.
    pub fn load(data_dir: &Path) -> Result<Catalog, CatalogError> {
        let mut sources: Vec<(PathBuf, Result<formats::CanonicalEcg, formats::FormatError>)> =
            formats::ecg_catalog(data_dir)
                .into_iter()
                .map(|header| {
                    let ecg = formats::read_wfdb_excerpt(&header, ECG_SECONDS);
                    (header, ecg)
                })
                .collect();
        let waveform = data_dir.join("dicom/waveform_ecg.dcm");
        let ecg = formats::read_dicom_waveform_ecg(&waveform).and_then(|mut ecg| {
            ecg.truncate_to_seconds(ECG_SECONDS)?;
            Ok(ecg)
        });
        sources.push((waveform, ecg));
        let aecg = data_dir.join("ecg/aecg/ecg_hl7.xml");
        let ecg = formats::read_hl7_aecg(&aecg).and_then(|mut ecg| {
            ecg.truncate_to_seconds(ECG_SECONDS)?;
            Ok(ecg)
        });
        sources.push((aecg, ecg));

        let mut ecgs = Vec::new();
        for (file, ecg) in sources {
            match ecg
                .map_err(|error| error.to_string())
                .and_then(|ecg| EcgRecord::from_canonical(&file, ecg))
            {
                Ok(record) => ecgs.push(record),
                Err(reason) => {
                    tracing::warn!(file = %file.display(), reason, "ECG left out of the catalogue")
                }
            }
        }
        if ecgs.is_empty() {
            return Err(CatalogError::NoEcgRecords(data_dir.to_owned()));
        }

        let mut imaging = Vec::new();
        for (name, label) in IMAGING_FILES {
            let file = data_dir.join("dicom").join(name);
            match formats::read_imaging_header(&file)
                .and_then(|header| Ok((header, formats::sha256_file(&file)?)))
            {
                Ok((header, sha256)) => imaging.push(ImagingSource {
                    label,
                    header,
                    sha256,
                }),
                Err(error) => {
                    tracing::warn!(file = %file.display(), error = %error, "imaging file left out")
                }
            }
        }
        if imaging.is_empty() {
            return Err(CatalogError::NoImaging(data_dir.to_owned()));
        }

        let file = data_dir.join("dicom/sm_image.dcm");
        let read = |source| CatalogError::Read {
            file: file.clone(),
            source,
        };
        let slide = SlideSource {
            header: formats::read_slide_header(&file).map_err(read)?,
            sha256: formats::sha256_file(&file).map_err(read)?,
        };
        Ok(Catalog {
            ecgs,
            imaging,
            slide,
        })
    }

    pub fn ecg_records(&self) -> &[EcgRecord] {
        &self.ecgs
    }

    /// The ECG with the given label (see [`EcgRecord::label`]).
    pub fn ecg_record(&self, label: &str) -> Option<&EcgRecord> {
        self.ecgs.iter().find(|record| record.label == label)
    }

    pub fn imaging_sources(&self) -> &[ImagingSource] {
        &self.imaging
    }
}

impl EcgRecord {
    /// Converts a decoded ECG; refuses one whose samples do not fit in 16 bits (never clamped:
    /// a clipped waveform could hide or fake an ST change).
    fn from_canonical(file: &Path, ecg: formats::CanonicalEcg) -> Result<EcgRecord, String> {
        let label = match ecg.source_format {
            formats::SourceFormat::Wfdb => sanitize_label(&ecg.record_name),
            formats::SourceFormat::DicomWaveform => "dcmwave".into(),
            formats::SourceFormat::Hl7Aecg => "aecg".into(),
        };
        let mut leads = Vec::with_capacity(ecg.leads.len());
        for lead in ecg.leads {
            if let Some(bad) = lead
                .samples
                .iter()
                .find(|value| i16::try_from(**value).is_err())
            {
                return Err(format!(
                    "lead {} holds {bad}, which does not fit in 16 bits",
                    lead.name
                ));
            }
            leads.push(v1::EcgLead {
                name: standard_lead_name(&lead.name),
                gain_adc_per_mv: lead.gain_adc_per_mv,
                baseline_adc: lead.baseline_adc,
                samples: lead.samples,
            });
        }
        let statements = clinical::ecg_statements(&ecg.diagnoses);
        let mentions = |phrase: &str| {
            ecg.diagnoses
                .iter()
                .any(|d| d.to_ascii_lowercase().contains(phrase))
        };
        // The catalogue's only infarct is PTB patient001, an acute infero-lateral MI.
        let critical_finding = if mentions("myocardial infarction") {
            Some("acute inferolateral STEMI")
        } else if VT_RECORDS.contains(&label.as_str()) {
            Some("runs of ventricular tachycardia")
        } else {
            None
        };
        let acquisition = if leads.len() >= 12 {
            "resting-12-lead"
        } else {
            "holter-excerpt"
        };
        Ok(EcgRecord {
            file: file.to_owned(),
            study: v1::EcgStudy {
                source_format: source_format(ecg.source_format).into(),
                sample_rate_hz: ecg.sample_rate_hz,
                leads,
                acquired_at: None,
                device: String::new(),
                acquisition: acquisition.into(),
            },
            age_years: ecg
                .header_age_years
                .filter(|age| *age <= domain::wire::limits::MAX_AGE_YEARS),
            sex: ecg.header_sex.map(|sex| match sex {
                formats::Sex::Female => v1::Sex::Female,
                formats::Sex::Male => v1::Sex::Male,
                formats::Sex::Unknown => v1::Sex::Unknown,
            }),
            statements,
            critical_finding,
            unreadable: mentions("noise"),
            label,
        })
    }
}

fn source_format(format: formats::SourceFormat) -> &'static str {
    match format {
        formats::SourceFormat::Wfdb => "wfdb",
        formats::SourceFormat::DicomWaveform => "dicom-waveform",
        formats::SourceFormat::Hl7Aecg => "hl7-aecg",
    }
}

/// `i`, `avr`, `v1` (PTB's spelling) become `I`, `aVR`, `V1`; other labels stay as they are.
fn standard_lead_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "i" | "ii" | "iii" | "v1" | "v2" | "v3" | "v4" | "v5" | "v6" => lower.to_ascii_uppercase(),
        "avr" | "avl" | "avf" => format!("aV{}", lower[2..].to_ascii_uppercase()),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
