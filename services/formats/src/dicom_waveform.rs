//! Reads a DICOM ECG waveform object (e.g. 12-lead ECG Waveform Storage) into a
//! [`CanonicalEcg`].
//!
//! A waveform object may hold several multiplex groups; ECG carts usually write the rhythm
//! strip first and derived data (such as median beats) after it. Only the first group, the
//! recording itself, is read.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::dicom_read::{self, Extent};
use crate::error::FormatError;
use crate::{CanonicalEcg, EcgLead, Sex, SourceFormat};

/// Reads the first waveform multiplex group of a DICOM ECG.
///
/// Only 16-bit signed samples (`WaveformBitsAllocated` 16, `WaveformSampleInterpretation`
/// `SS`), by far the common case for ECGs, are supported. Channel sensitivity, its units
/// (`uV`, `mV` or `V`), correction factor and baseline become each lead's gain and baseline.
/// Lead names come from the channel source's code meaning with the `Lead ` prefix and any
/// parenthetical dropped, so `Lead I (Einthoven)` becomes `I`. Free-text waveform annotations
/// (the cart's interpretation, e.g. `ECG NORMALE`) become the diagnoses.
pub fn read_dicom_waveform_ecg(path: &Path) -> Result<CanonicalEcg, FormatError> {
    let obj = dicom_read::open(path, Extent::Whole)?;
    let group = dicom_read::first_item(&obj, tags::WAVEFORM_SEQUENCE)
        .ok_or(FormatError::MissingElement("WaveformSequence"))?;

    let channel_count = dicom_read::required_count(
        group,
        tags::NUMBER_OF_WAVEFORM_CHANNELS,
        "NumberOfWaveformChannels",
    )? as usize;
    let sample_count = dicom_read::required_count(
        group,
        tags::NUMBER_OF_WAVEFORM_SAMPLES,
        "NumberOfWaveformSamples",
    )? as usize;
    let frequency =
        dicom_read::required_number(group, tags::SAMPLING_FREQUENCY, "SamplingFrequency")?;
    if !(frequency > 0.0 && frequency.fract() == 0.0 && frequency <= f64::from(u32::MAX)) {
        return Err(FormatError::UnsupportedFormat(format!(
            "waveform sampling frequency {frequency} Hz is not a positive whole number"
        )));
    }
    let bits = dicom_read::required_count(
        group,
        tags::WAVEFORM_BITS_ALLOCATED,
        "WaveformBitsAllocated",
    )?;
    let interpretation = dicom_read::required_text(
        group,
        tags::WAVEFORM_SAMPLE_INTERPRETATION,
        "WaveformSampleInterpretation",
    )?;
    if bits != 16 || interpretation != "SS" {
        return Err(FormatError::UnsupportedFormat(format!(
            "waveform samples of {bits} bits with interpretation {interpretation} \
             (only 16-bit SS is read)"
        )));
    }

    let definitions = dicom_read::items(group, tags::CHANNEL_DEFINITION_SEQUENCE);
    if definitions.len() != channel_count {
        return Err(FormatError::BadElement {
            element: "ChannelDefinitionSequence",
            reason: format!(
                "has {} items for {channel_count} channels",
                definitions.len()
            ),
        });
    }
    let data = waveform_words(group)?;
    if data.len() != channel_count * sample_count {
        return Err(FormatError::BadElement {
            element: "WaveformData",
            reason: format!(
                "holds {} samples, not {channel_count} channels x {sample_count} samples",
                data.len()
            ),
        });
    }

    let leads = definitions
        .iter()
        .enumerate()
        .map(|(index, definition)| {
            let samples = data
                .iter()
                .skip(index)
                .step_by(channel_count)
                .map(|&v| i32::from(v))
                .collect();
            channel_lead(definition, samples)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let diagnoses = dicom_read::items(&obj, tags::WAVEFORM_ANNOTATION_SEQUENCE)
        .iter()
        .map(|item| dicom_read::text(item, tags::UNFORMATTED_TEXT_VALUE, "UnformattedTextValue"))
        .filter_map(Result::transpose)
        .collect::<Result<Vec<_>, _>>()?;

    Ok(CanonicalEcg {
        source_format: SourceFormat::DicomWaveform,
        record_name: dicom_read::required_text(&obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        sample_rate_hz: frequency as u32,
        leads,
        header_age_years: parse_age(
            dicom_read::text(&obj, tags::PATIENT_AGE, "PatientAge")?.as_deref(),
        ),
        header_sex: parse_sex(dicom_read::text(&obj, tags::PATIENT_SEX, "PatientSex")?.as_deref()),
        diagnoses,
    })
}

/// Builds one lead from its channel definition item.
fn channel_lead(definition: &InMemDicomObject, samples: Vec<i32>) -> Result<EcgLead, FormatError> {
    let source = dicom_read::code(definition, tags::CHANNEL_SOURCE_SEQUENCE)?
        .ok_or(FormatError::MissingElement("ChannelSourceSequence"))?;
    let name = source
        .meaning
        .as_deref()
        .map(lead_name)
        .or(source.value)
        .ok_or(FormatError::MissingElement("CodeMeaning"))?;

    let sensitivity =
        dicom_read::required_number(definition, tags::CHANNEL_SENSITIVITY, "ChannelSensitivity")?;
    let units = dicom_read::code(definition, tags::CHANNEL_SENSITIVITY_UNITS_SEQUENCE)?
        .and_then(|code| code.value)
        .ok_or(FormatError::MissingElement(
            "ChannelSensitivityUnitsSequence",
        ))?;
    // UCUM unit codes, as DICOM requires for channel sensitivity units.
    let units_per_mv = match units.as_str() {
        "uV" => 1000.0,
        "mV" => 1.0,
        "V" => 0.001,
        other => {
            return Err(FormatError::UnsupportedFormat(format!(
                "channel {name} measured in {other}, not in volts"
            )));
        }
    };
    let correction = dicom_read::number(
        definition,
        tags::CHANNEL_SENSITIVITY_CORRECTION_FACTOR,
        "ChannelSensitivityCorrectionFactor",
    )?
    .unwrap_or(1.0);
    let baseline =
        dicom_read::number(definition, tags::CHANNEL_BASELINE, "ChannelBaseline")?.unwrap_or(0.0);

    // One ADC step is worth `sensitivity * correction` units, and the physical value of a
    // sample is `adc * step + baseline`.
    let step = sensitivity * correction;
    if !(step.is_finite() && step != 0.0) {
        return Err(FormatError::BadElement {
            element: "ChannelSensitivity",
            reason: format!("sensitivity {sensitivity} times correction {correction} is unusable"),
        });
    }
    // WFDB's convention, which the canonical struct uses, is `(adc - baseline_adc) / gain`;
    // a DICOM baseline is a physical offset, so it becomes the ADC value of zero volts,
    // rounded to the nearest unit.
    let baseline_adc = (-baseline / step).round();
    if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&baseline_adc) {
        return Err(FormatError::BadElement {
            element: "ChannelBaseline",
            reason: format!("baseline {baseline} is out of range"),
        });
    }
    Ok(EcgLead {
        name,
        gain_adc_per_mv: units_per_mv / step,
        baseline_adc: baseline_adc as i32,
        samples,
    })
}

/// The multiplexed samples of a waveform group as signed 16-bit values.
fn waveform_words(group: &InMemDicomObject) -> Result<Vec<i16>, FormatError> {
    let element = group
        .get(tags::WAVEFORM_DATA)
        .ok_or(FormatError::MissingElement("WaveformData"))?;
    // The parser decodes OW into 16-bit words in the file's byte order, so reinterpreting the
    // bits as signed is all that is left to do.
    if let Ok(words) = element.uint16_slice() {
        return Ok(words.iter().map(|&w| w as i16).collect());
    }
    if let Ok(words) = element.int16_slice() {
        return Ok(words.to_vec());
    }
    // Waveform data written as OB or UN arrives as raw bytes, little-endian in practice.
    if let Ok(bytes) = element.uint8_slice() {
        return Ok(bytes
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect());
    }
    Err(FormatError::BadElement {
        element: "WaveformData",
        reason: "is not binary sample data".to_owned(),
    })
}

/// Turns a code meaning such as `Lead I (Einthoven)` or `Lead aVR` into `I` or `aVR`.
fn lead_name(meaning: &str) -> String {
    let name = meaning.strip_prefix("Lead ").unwrap_or(meaning);
    let name = name.split(" (").next().unwrap_or(name);
    name.trim().to_owned()
}

/// Parses a DICOM age string (`042Y`, `006M`, `003W`, `010D`) into whole years.
fn parse_age(age: Option<&str>) -> Option<u32> {
    let age = age?;
    let (number, unit) = age.split_at_checked(age.len().checked_sub(1)?)?;
    let number: u32 = number.parse().ok()?;
    match unit {
        "Y" => Some(number),
        "M" => Some(number / 12),
        "W" => Some(number / 52),
        "D" => Some(number / 365),
        _ => None,
    }
}

fn parse_sex(sex: Option<&str>) -> Option<Sex> {
    match sex? {
        "F" => Some(Sex::Female),
        "M" => Some(Sex::Male),
        _ => Some(Sex::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_names_lose_prefix_and_parenthetical() {
        assert_eq!(lead_name("Lead I (Einthoven)"), "I");
        assert_eq!(lead_name("Lead aVR"), "aVR");
        assert_eq!(lead_name("V6"), "V6");
    }

    #[test]
    fn dicom_ages_are_whole_years() {
        assert_eq!(parse_age(Some("042Y")), Some(42));
        assert_eq!(parse_age(Some("018M")), Some(1));
        assert_eq!(parse_age(Some("042")), None);
        assert_eq!(parse_age(Some("")), None);
        assert_eq!(parse_age(None), None);
    }
}
