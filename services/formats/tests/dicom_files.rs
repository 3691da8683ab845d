//! Reads the real DICOM files of the shared data set and checks facts from its PROVENANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{ScratchDir, data_dir, dicom, ecg};
use formats::{
    FormatError, Sex, SourceFormat, read_dicom_waveform_ecg, read_imaging_header,
    read_slide_header, sha256_file,
};

#[test]
fn waveform_ecg_yields_twelve_leads_of_10000_samples_at_1000_hz() {
    let ecg = read_dicom_waveform_ecg(&dicom("waveform_ecg.dcm")).unwrap();

    assert_eq!(ecg.source_format, SourceFormat::DicomWaveform);
    assert_eq!(
        ecg.record_name,
        "1.3.6.1.4.1.20029.40.20130125105919.5407.1.1"
    );
    assert_eq!(ecg.sample_rate_hz, 1000);
    let names: Vec<_> = ecg.leads.iter().map(|lead| lead.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"
        ]
    );
    for lead in &ecg.leads {
        assert_eq!(lead.samples.len(), 10_000, "lead {}", lead.name);
        // ChannelSensitivity 1.25 uV per ADC step, correction factor 1, baseline 0.
        assert_eq!(lead.gain_adc_per_mv, 800.0, "lead {}", lead.name);
        assert_eq!(lead.baseline_adc, 0, "lead {}", lead.name);
    }
    assert_eq!(ecg.header_age_years, Some(42));
    assert_eq!(ecg.header_sex, Some(Sex::Female));
    assert_eq!(ecg.diagnoses, ["RITMO SINUSALE", "ECG NORMALE"]);
}

#[test]
fn waveform_ecg_channels_are_demultiplexed_in_frame() {
    let ecg = read_dicom_waveform_ecg(&dicom("waveform_ecg.dcm")).unwrap();
    let lead = |name: &str| &ecg.lead(name).unwrap().samples;
    let (one, two, three, avr) = (lead("I"), lead("II"), lead("III"), lead("aVR"));

    // Einthoven's law (III = II - I) and aVR = -(I + II) / 2 hold only if every channel was
    // taken from its own slot of each multiplexed frame.
    for i in 0..one.len() {
        assert!(
            (one[i] - two[i] + three[i]).abs() <= 2,
            "III = II - I at sample {i}"
        );
        assert!(
            (2 * avr[i] + one[i] + two[i]).abs() <= 4,
            "aVR = -(I + II) / 2 at sample {i}"
        );
    }
    assert!(one.iter().any(|&v| v != 0), "lead I carries a signal");
}

#[test]
fn ct_small_header_gives_modality_study_and_instance_identifiers() {
    let header = read_imaging_header(&dicom("CT_small.dcm")).unwrap();

    assert_eq!(header.modality, "CT");
    assert_eq!(
        header.study_instance_uid,
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    );
    assert_eq!(
        header.series_instance_uid,
        "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    );
    assert_eq!(
        header.sop_instance_uid,
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    );
    assert_eq!(header.study_date.as_deref(), Some("2004-01-19"));
    assert_eq!(header.manufacturer.as_deref(), Some("GE MEDICAL SYSTEMS"));
    // The file carries an empty AccessionNumber and no BodyPartExamined.
    assert_eq!(header.accession_number, None);
    assert_eq!(header.body_part, None);
}

#[test]
fn jpeg_2000_mr_header_is_read_without_decoding_pixels() {
    let header = read_imaging_header(&dicom("MR_small_jp2klossless.dcm")).unwrap();

    assert_eq!(header.modality, "MR");
    assert_eq!(header.manufacturer.as_deref(), Some("TOSHIBA_MEC"));
    assert_eq!(
        header.study_instance_uid,
        "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
    );
    assert_eq!(header.study_date.as_deref(), Some("2004-08-26"));
}

#[test]
fn uncompressed_mr_and_structured_report_headers_are_read() {
    let mr = read_imaging_header(&dicom("MR_small.dcm")).unwrap();
    assert_eq!(mr.modality, "MR");

    let sr = read_imaging_header(&dicom("test-SR.dcm")).unwrap();
    assert_eq!(sr.modality, "SR");
    assert_eq!(
        sr.study_description.as_deref(),
        Some("OFFIS Structured Reporting Test Document")
    );
    // The report leaves StudyDate and Manufacturer empty.
    assert_eq!(sr.study_date, None);
    assert_eq!(sr.manufacturer, None);
}

#[test]
fn sm_image_slide_header_gives_container_matrix_specimen_and_stain() {
    let slide = read_slide_header(&dicom("sm_image.dcm")).unwrap();

    assert_eq!(slide.container_id, "S19-1_A_1_1");
    assert_eq!((slide.total_width_px, slide.total_height_px), (50, 50));
    assert_eq!(slide.frame_count, 25);
    assert_eq!(slide.specimen_id.as_deref(), Some("S19-1_A_1_1"));
    assert_eq!(
        slide.stain.as_deref(),
        Some("Hematoxylin stain, Water soluble eosin stain")
    );
    assert_eq!(slide.anatomic_site.as_deref(), Some("Brain"));
    assert_eq!(
        slide.study_instance_uid,
        "1.2.826.0.1.3680043.9.7433.3.82970457260936734119270346325882945"
    );
}

#[test]
fn sha256_of_ct_small_matches_provenance() {
    assert_eq!(
        sha256_file(&dicom("CT_small.dcm")).unwrap(),
        "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6"
    );
}

#[test]
fn sha256_of_every_file_in_the_provenance_table_matches() {
    let provenance = fs::read_to_string(data_dir().join("dicom/PROVENANCE.md")).unwrap();
    // Rows look like: | `dicom/CT_small.dcm` | 39206 | `3dd3...` | source |
    let rows: Vec<(String, String)> = provenance
        .lines()
        .filter(|line| line.starts_with("| `dicom/"))
        .map(|line| {
            let cells: Vec<&str> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            (cells[1].to_owned(), cells[3].to_owned())
        })
        .collect();
    assert_eq!(rows.len(), 7, "PROVENANCE.md lists 7 DICOM files");
    for (file, expected) in rows {
        assert_eq!(
            sha256_file(&data_dir().join(&file)).unwrap(),
            expected,
            "{file}"
        );
    }
}

#[test]
fn readers_name_the_missing_element_when_given_the_wrong_kind_of_object() {
    let err = read_slide_header(&dicom("CT_small.dcm")).unwrap_err();
    assert!(
        matches!(err, FormatError::MissingElement("ContainerIdentifier")),
        "{err}"
    );

    let err = read_dicom_waveform_ecg(&dicom("CT_small.dcm")).unwrap_err();
    assert!(
        matches!(err, FormatError::MissingElement("WaveformSequence")),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_dicom_is_a_dicom_error() {
    let err = read_imaging_header(&ecg("mitdb/100.hea")).unwrap_err();
    assert!(matches!(err, FormatError::Dicom(_)), "{err}");
}

#[test]
fn a_missing_file_is_an_io_error_with_its_path() {
    let scratch = ScratchDir::new("missing-dicom");
    let missing = scratch.path().join("absent.dcm");
    for err in [
        read_imaging_header(&missing).unwrap_err(),
        read_slide_header(&missing).unwrap_err(),
        read_dicom_waveform_ecg(&missing).unwrap_err(),
        sha256_file(&missing).unwrap_err(),
    ] {
        assert!(
            matches!(&err, FormatError::Io { path, .. } if *path == missing),
            "{err}"
        );
    }
}

#[test]
fn error_messages_never_quote_patient_names() {
    // Patient and physician names found in the sample files (grep for `^` and "Anonymous").
    const NAMES: [&str; 5] = [
        "anonymous",
        "compressedsamples",
        "test^patient",
        "riesmeier",
        "test^physician",
    ];
    let scratch = ScratchDir::new("truncated-dicom");
    let mut messages = Vec::new();
    for file in [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_jp2klossless.dcm",
        "test-SR.dcm",
        "waveform_ecg.dcm",
        "sm_image.dcm",
        "sm_annotations.dcm",
    ] {
        // Each whole file, and a copy cut off in the middle so that the parser fails too.
        let whole = dicom(file);
        let bytes = fs::read(&whole).unwrap();
        let truncated = scratch.path().join(file);
        fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        for path in [&whole, &truncated] {
            messages.extend(read_imaging_header(path).err().map(|e| error_chain(&e)));
            messages.extend(read_slide_header(path).err().map(|e| error_chain(&e)));
            messages.extend(read_dicom_waveform_ecg(path).err().map(|e| error_chain(&e)));
        }
    }
    assert!(
        messages.len() > 10,
        "the readers failed on the wrong and truncated files"
    );
    for message in messages {
        let lower = message.to_lowercase();
        for name in NAMES {
            assert!(!lower.contains(name), "{name} in {message}");
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
