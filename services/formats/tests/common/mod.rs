//! Helpers shared by the integration tests: locating the shared data and scratch folders.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// The shared data folder. Fails the test, rather than skipping it, when the data is missing.
pub fn data_dir() -> PathBuf {
    let dir = formats::default_data_dir();
    assert!(
        dir.join("ecg").is_dir() && dir.join("dicom").is_dir(),
        "shared clinical test data not found at {} (it must hold ecg/ and dicom/; \
         set TELERELAY_DATA_DIR to point at it)",
        dir.display()
    );
    dir
}

/// A file under `ecg/` of the shared data.
pub fn ecg(relative: &str) -> PathBuf {
    data_dir().join("ecg").join(relative)
}

/// A file under `dicom/` of the shared data.
pub fn dicom(relative: &str) -> PathBuf {
    data_dir().join("dicom").join(relative)
}

/// The "initial value" column (the first sample) of each signal line of a WFDB header, read
/// independently of the crate's parser so that the two can check each other.
pub fn header_initial_values(header: &Path) -> Vec<i32> {
    let text = fs::read_to_string(header).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .skip(1)
        .map(|line| line.split_whitespace().nth(5).unwrap().parse().unwrap())
        .collect()
}

/// A temporary folder, removed when dropped, for corrupted copies of real files.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates an empty folder whose name is unique to this process and `label`.
    pub fn new(label: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("formats-test-{}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Copies `source` into the folder under its own name and returns the copy's path.
    pub fn copy_in(&self, source: &Path) -> PathBuf {
        let target = self.0.join(source.file_name().unwrap());
        fs::copy(source, &target).unwrap();
        target
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
