//! Finds the shared data and lists its ECG records.

#![allow(clippy::unwrap_used)]

mod common;

use formats::{ecg_catalog, read_wfdb_excerpt};

#[test]
fn ecg_catalog_lists_every_wfdb_header_sorted() {
    let catalog = ecg_catalog(&common::data_dir());

    assert_eq!(catalog.len(), 35, "PROVENANCE.md lists 35 WFDB records");
    assert!(catalog.windows(2).all(|pair| pair[0] < pair[1]), "sorted");
    assert!(
        catalog
            .iter()
            .all(|path| path.extension().unwrap() == "hea")
    );
    assert!(catalog.contains(&common::ecg("mitdb/100.hea")));
    assert!(catalog.contains(&common::ecg("ptbdb/s0010_re.hea")));
}

#[test]
fn every_catalogued_record_yields_a_ten_second_excerpt() {
    for header in ecg_catalog(&common::data_dir()) {
        let record = read_wfdb_excerpt(&header, 10.0)
            .unwrap_or_else(|e| panic!("{}: {e}", header.display()));
        let expected = 10 * record.sample_rate_hz as usize;
        assert_eq!(record.sample_count(), expected, "{}", record.record_name);
        assert!(
            record
                .leads
                .iter()
                .all(|lead| lead.samples.len() == expected)
        );
    }
}

#[test]
fn missing_data_directory_gives_an_empty_catalog() {
    let scratch = common::ScratchDir::new("empty-catalog");
    assert!(ecg_catalog(scratch.path()).is_empty());
}
