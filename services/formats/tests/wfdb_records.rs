//! Reads the real WFDB records of the shared data set and checks facts from its PROVENANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::{ScratchDir, ecg, header_initial_values};
use formats::{CanonicalEcg, FormatError, Sex, SourceFormat, read_wfdb, read_wfdb_excerpt};

const TWELVE_LEADS: [&str; 12] = [
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
];

fn lead_names(ecg: &CanonicalEcg) -> Vec<&str> {
    ecg.leads.iter().map(|lead| lead.name.as_str()).collect()
}

fn first_samples(ecg: &CanonicalEcg) -> Vec<i32> {
    ecg.leads.iter().map(|lead| lead.samples[0]).collect()
}

fn assert_equal_lengths(ecg: &CanonicalEcg, expected: usize) {
    for lead in &ecg.leads {
        assert_eq!(
            lead.samples.len(),
            expected,
            "lead {} of {}",
            lead.name,
            ecg.record_name
        );
    }
}

/// The largest |I - II + III| over the record, in ADC units. Einthoven's law makes it (close
/// to) zero in a correctly demultiplexed 12-lead ECG, so it catches leads read out of frame.
fn einthoven_residual(ecg: &CanonicalEcg, names: [&str; 3]) -> i32 {
    let [one, two, three] = names.map(|name| &ecg.lead(name).unwrap().samples);
    (0..one.len())
        .map(|i| (one[i] - two[i] + three[i]).abs())
        .max()
        .unwrap()
}

#[test]
fn e07500_has_twelve_leads_at_500_hz_gain_1000_and_the_header_initial_values() {
    let record = read_wfdb(&ecg("cinc2021/E07500.hea")).unwrap();

    assert_eq!(record.source_format, SourceFormat::Wfdb);
    assert_eq!(record.record_name, "E07500");
    assert_eq!(record.sample_rate_hz, 500);
    assert_eq!(lead_names(&record), TWELVE_LEADS);
    assert_equal_lengths(&record, 5000);
    for lead in &record.leads {
        assert_eq!(lead.gain_adc_per_mv, 1000.0);
        assert_eq!(lead.baseline_adc, 0);
    }
    assert_eq!(
        first_samples(&record),
        [-68, -58, 9, 63, -39, -24, 156, 97, -146, -68, -48, -156]
    );
    assert_eq!(record.header_age_years, Some(78));
    assert_eq!(record.header_sex, Some(Sex::Male));
    assert_eq!(record.diagnoses, ["67741000119109", "426177001"]);
    assert_eq!(record.lead("I").unwrap().millivolts()[0], -0.068);
    assert!(einthoven_residual(&record, ["I", "II", "III"]) <= 2);
}

#[test]
fn every_cinc2021_record_loads_with_checksums_ok_and_its_header_initial_values() {
    let headers: Vec<_> = formats::ecg_catalog(&common::data_dir())
        .into_iter()
        .filter(|path| path.parent().unwrap().ends_with("cinc2021"))
        .collect();
    assert_eq!(headers.len(), 25, "PROVENANCE.md lists 25 cinc2021 records");

    for header in headers {
        let record = read_wfdb(&header).unwrap_or_else(|e| panic!("{}: {e}", header.display()));
        assert_eq!(record.sample_rate_hz, 500, "{}", record.record_name);
        assert_eq!(lead_names(&record), TWELVE_LEADS, "{}", record.record_name);
        assert_equal_lengths(&record, 5000);
        assert_eq!(
            first_samples(&record),
            header_initial_values(&header),
            "{}",
            record.record_name
        );
        assert!(
            record.header_age_years.is_some(),
            "{} has an age",
            record.record_name
        );
        assert!(
            record.header_sex.is_some(),
            "{} has a sex",
            record.record_name
        );
        assert!(
            !record.diagnoses.is_empty(),
            "{} has Dx codes",
            record.record_name
        );
        assert!(
            einthoven_residual(&record, ["I", "II", "III"]) <= 2,
            "{} obeys Einthoven's law",
            record.record_name
        );
    }
}

#[test]
fn every_mitdb_cpsc2021_and_ptbdb_record_loads_with_checksums_ok() {
    // (record, rate, leads, samples per lead) from the PROVENANCE.md tables and headers.
    let expected: [(&str, u32, &[&str], usize); 10] = [
        ("mitdb/100.hea", 360, &["MLII", "V5"], 650_000),
        ("mitdb/103.hea", 360, &["MLII", "V2"], 650_000),
        ("mitdb/105.hea", 360, &["MLII", "V1"], 650_000),
        ("mitdb/106.hea", 360, &["MLII", "V1"], 650_000),
        ("mitdb/107.hea", 360, &["MLII", "V1"], 650_000),
        ("mitdb/208.hea", 360, &["MLII", "V1"], 650_000),
        ("cpsc2021/data_8_2.hea", 200, &["I", "II"], 43_092),
        ("cpsc2021/data_101_6.hea", 200, &["I", "II"], 22_355),
        ("cpsc2021/data_21_7.hea", 200, &["I", "II"], 47_201),
        (
            "ptbdb/s0010_re.hea",
            1000,
            &[
                "i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx",
                "vy", "vz",
            ],
            38_400,
        ),
    ];
    for (path, rate, leads, samples) in expected {
        let header = ecg(path);
        let record = read_wfdb(&header).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(record.sample_rate_hz, rate, "{path}");
        assert_eq!(lead_names(&record), leads, "{path}");
        assert_equal_lengths(&record, samples);
        assert_eq!(
            first_samples(&record),
            header_initial_values(&header),
            "{path}"
        );
    }
}

#[test]
fn mitdb_100_ten_second_excerpt_has_3600_samples_of_mlii_and_v5() {
    let record = read_wfdb_excerpt(&ecg("mitdb/100.hea"), 10.0).unwrap();

    assert_eq!(record.record_name, "100");
    assert_eq!(record.sample_rate_hz, 360);
    assert_eq!(lead_names(&record), ["MLII", "V5"]);
    assert_equal_lengths(&record, 3600);
    assert_eq!(record.duration_seconds(), 10.0);
    assert_eq!(first_samples(&record), [995, 1011]);
    let mlii = record.lead("MLII").unwrap();
    // No gain units and no baseline in the header: WFDB's millivolts and the ADC zero apply.
    assert_eq!(mlii.gain_adc_per_mv, 200.0);
    assert_eq!(mlii.baseline_adc, 1024);
    // From the MIT-BIH demographics line `69 M 1085 1629 x1` after the edited leading comment.
    assert_eq!(record.header_age_years, Some(69));
    assert_eq!(record.header_sex, Some(Sex::Male));
}

#[test]
fn ptbdb_s0010_re_reads_both_signal_files_and_the_clinical_summary() {
    let record = read_wfdb(&ecg("ptbdb/s0010_re.hea")).unwrap();

    assert_eq!(record.leads.len(), 15);
    for frank in ["vx", "vy", "vz"] {
        assert!(
            record.lead(frank).is_some(),
            "Frank lead {frank} from s0010_re.xyz"
        );
    }
    assert_equal_lengths(&record, 38_400);
    assert_eq!(record.lead("i").unwrap().gain_adc_per_mv, 2000.0);
    assert_eq!(record.header_age_years, Some(81));
    assert_eq!(record.header_sex, Some(Sex::Female));
    assert_eq!(
        record.diagnoses,
        ["Myocardial infarction", "Diabetes mellitus"]
    );
    assert!(einthoven_residual(&record, ["i", "ii", "iii"]) <= 2);
}

#[test]
fn cpsc2021_headers_with_unsigned_checksums_and_baselines_are_read() {
    let record = read_wfdb(&ecg("cpsc2021/data_101_6.hea")).unwrap();

    let lead_i = record.lead("I").unwrap();
    assert_eq!(lead_i.baseline_adc, -161_790);
    assert!((lead_i.gain_adc_per_mv - 30_061.276_794_035_417).abs() < 1e-9);
    assert_eq!(record.diagnoses, ["paroxysmal atrial fibrillation"]);
    assert_eq!(record.header_age_years, None);
}

#[test]
fn mitdb_notes_become_a_free_text_diagnosis() {
    let record = read_wfdb_excerpt(&ecg("mitdb/107.hea"), 10.0).unwrap();
    assert_eq!(record.header_age_years, Some(63));
    assert_eq!(
        record.diagnoses,
        ["Complete heart block is present. The PVCs are multiform."]
    );
}

#[test]
fn corrupted_matlab_signal_file_fails_with_checksum_mismatch() {
    let scratch = ScratchDir::new("corrupt-mat");
    let header = scratch.copy_in(&ecg("cinc2021/E07500.hea"));
    let signal = scratch.copy_in(&ecg("cinc2021/E07500.mat"));
    // Low byte of sample 100 of the fourth lead (aVR): 24-byte MATLAB header, 12 signals of
    // 2 bytes per frame.
    flip_byte(&signal, 24 + (100 * 12 + 3) * 2);

    let err = read_wfdb(&header).unwrap_err();
    assert!(
        matches!(&err, FormatError::ChecksumMismatch { signal, .. } if signal == "aVR"),
        "{err}"
    );
}

#[test]
fn excerpt_still_verifies_the_checksum_of_the_whole_signal() {
    let scratch = ScratchDir::new("corrupt-212");
    let header = scratch.copy_in(&ecg("mitdb/100.hea"));
    let signal = scratch.copy_in(&ecg("mitdb/100.dat"));
    // The first byte of a 212 triple holds the low byte of an MLII sample; this one lies about
    // 25 minutes into the record, far beyond the excerpt.
    flip_byte(&signal, 3 * 540_000);

    let err = read_wfdb_excerpt(&header, 10.0).unwrap_err();
    assert!(
        matches!(&err, FormatError::ChecksumMismatch { signal, .. } if signal == "MLII"),
        "{err}"
    );
}

#[test]
fn truncated_header_yields_bad_header() {
    let scratch = ScratchDir::new("short-header");
    scratch.copy_in(&ecg("cinc2021/E07500.mat"));
    let full = fs::read_to_string(ecg("cinc2021/E07500.hea")).unwrap();
    let header = scratch.path().join("E07500.hea");
    let first_six_lines: String = full.lines().take(6).map(|l| format!("{l}\n")).collect();
    fs::write(&header, first_six_lines).unwrap();

    let err = read_wfdb(&header).unwrap_err();
    assert!(
        matches!(err, FormatError::BadHeader { line: 7, .. }),
        "{err}"
    );

    fs::write(&header, "# only a comment\n").unwrap();
    let err = read_wfdb(&header).unwrap_err();
    assert!(matches!(err, FormatError::BadHeader { .. }), "{err}");
}

#[test]
fn truncated_signal_files_yield_signal_too_short() {
    let scratch = ScratchDir::new("short-signal");
    let dat_header = scratch.copy_in(&ecg("cpsc2021/data_8_2.hea"));
    let dat = fs::read(ecg("cpsc2021/data_8_2.dat")).unwrap();
    fs::write(scratch.path().join("data_8_2.dat"), &dat[..dat.len() / 2]).unwrap();
    let err = read_wfdb(&dat_header).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::SignalTooShort {
                expected: 43_092,
                available: 21_546,
                ..
            }
        ),
        "{err}"
    );

    let mat_header = scratch.copy_in(&ecg("cinc2021/E07501.hea"));
    let mat = fs::read(ecg("cinc2021/E07501.mat")).unwrap();
    fs::write(scratch.path().join("E07501.mat"), &mat[..mat.len() - 2]).unwrap();
    let err = read_wfdb(&mat_header).unwrap_err();
    assert!(matches!(err, FormatError::SignalTooShort { .. }), "{err}");
}

#[test]
fn missing_signal_file_is_an_io_error_naming_that_file() {
    let scratch = ScratchDir::new("missing-signal");
    let header = scratch.copy_in(&ecg("ptbdb/s0010_re.hea"));
    scratch.copy_in(&ecg("ptbdb/s0010_re.dat"));

    let err = read_wfdb(&header).unwrap_err();
    match err {
        FormatError::Io { path, .. } => assert_eq!(path.file_name().unwrap(), "s0010_re.xyz"),
        other => panic!("expected an I/O error, got {other}"),
    }
}

#[test]
fn excerpt_length_must_be_positive_and_finite() {
    let header = ecg("mitdb/100.hea");
    for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = read_wfdb_excerpt(&header, seconds).unwrap_err();
        assert!(
            matches!(err, FormatError::InvalidExcerpt(_)),
            "{seconds}: {err}"
        );
    }
}

#[test]
fn excerpt_longer_than_the_record_keeps_the_whole_record() {
    let record = read_wfdb_excerpt(&ecg("cinc2021/HR06000.hea"), 60.0).unwrap();
    assert_equal_lengths(&record, 5000);
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0xff;
    fs::write(path, bytes).unwrap();
}
