//! Reads the HL7 aECG example of the shared data set.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::{ScratchDir, ecg};
use formats::{FormatError, Sex, SourceFormat, read_hl7_aecg};

#[test]
fn hl7_aecg_rhythm_series_yields_twelve_leads_of_5000_samples_at_500_hz() {
    let record = read_hl7_aecg(&ecg("aecg/ecg_hl7.xml")).unwrap();

    assert_eq!(record.source_format, SourceFormat::Hl7Aecg);
    assert_eq!(record.record_name, "61d1a24f-b47e-41aa-ae95-f8ac302f4eeb");
    assert_eq!(record.sample_rate_hz, 500);
    let names: Vec<_> = record.leads.iter().map(|lead| lead.name.as_str()).collect();
    // The document's own order, which puts the derived limb leads last.
    assert_eq!(
        names,
        [
            "I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF"
        ]
    );
    let first: Vec<_> = record.leads.iter().map(|lead| lead.samples[0]).collect();
    assert_eq!(first, [-2, -7, 43, 55, 40, 28, 23, -9, -5, 4, 1, -6]);
    for lead in &record.leads {
        assert_eq!(lead.samples.len(), 5000, "lead {}", lead.name);
        // origin 0 uV, scale 2.5 uV per digit.
        assert_eq!(lead.gain_adc_per_mv, 400.0, "lead {}", lead.name);
        assert_eq!(lead.baseline_adc, 0, "lead {}", lead.name);
    }
    assert_eq!(record.header_age_years, Some(46));
    assert_eq!(record.header_sex, Some(Sex::Male));
    assert_eq!(record.diagnoses, ["Sinus Rhythm"]);
}

#[test]
fn hl7_aecg_leads_obey_einthovens_law() {
    let record = read_hl7_aecg(&ecg("aecg/ecg_hl7.xml")).unwrap();
    let lead = |name: &str| &record.lead(name).unwrap().samples;
    let (one, two, three) = (lead("I"), lead("II"), lead("III"));
    let worst = (0..one.len())
        .map(|i| (one[i] - two[i] + three[i]).abs())
        .max()
        .unwrap();
    assert!(worst <= 2, "III = II - I within rounding, worst {worst}");
}

#[test]
fn truncated_hl7_aecg_is_refused_without_quoting_the_patient_name() {
    let scratch = ScratchDir::new("truncated-aecg");
    let text = fs::read_to_string(ecg("aecg/ecg_hl7.xml")).unwrap();
    let cut = scratch.path().join("cut.xml");
    // Cut inside an attribute, between two leads, and right after the rhythm sequence set:
    // none of them may pass for a (shorter) ECG.
    let inside_attribute = text.find("MDC_ECG_LEAD_II").unwrap();
    let v3 = text.find("MDC_ECG_LEAD_V3").unwrap();
    let between_leads = text[..v3].rfind("<component>").unwrap();
    let after_sequence_set = text.find("</sequenceSet>").unwrap() + "</sequenceSet>".len();
    for end in [inside_attribute, between_leads, after_sequence_set] {
        fs::write(&cut, &text[..end]).unwrap();

        let err = read_hl7_aecg(&cut).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Xml(_)
                    | FormatError::BadElement {
                        element: "AnnotatedECG",
                        ..
                    }
            ),
            "cut at byte {end}: {err}"
        );
        // The example subject is called Clark; no message may carry the name.
        assert!(!format!("{err} {err:?}").contains("Clark"), "{err:?}");
    }
}
