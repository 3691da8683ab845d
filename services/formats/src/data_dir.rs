//! Finds the shared clinical test data and the ECG records in it.

use std::path::{Path, PathBuf};

/// Environment variable that overrides where the shared data lives.
const DATA_DIR_VARIABLE: &str = "TELERELAY_DATA_DIR";

/// Where the shared clinical data lives.
///
/// In order: `$TELERELAY_DATA_DIR` if set; else the first existing of `../shared/data`,
/// `../../shared/data` and `../../../shared/data` relative to the current directory, which
/// covers running from the workspace root, a service folder and a crate's `tests`; else the
/// location relative to this crate's sources, which holds when the workspace sits beside
/// `shared/` as on the development machines. The returned directory is not checked to exist,
/// so callers can report the path they looked at.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_DIR_VARIABLE) {
        return PathBuf::from(dir);
    }
    [
        "../shared/data",
        "../../shared/data",
        "../../../shared/data",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|candidate| candidate.is_dir())
    .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")))
}

/// Every WFDB header (`*.hea`) under `data_dir/ecg`, at any depth, sorted by path.
///
/// A missing or unreadable directory contributes no records; callers that need records should
/// check that the list is not empty.
pub fn ecg_catalog(data_dir: &Path) -> Vec<PathBuf> {
    let mut headers = Vec::new();
    collect_headers(&data_dir.join("ecg"), &mut headers);
    headers.sort();
    headers
}

fn collect_headers(dir: &Path, headers: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_headers(&path, headers);
        } else if path.extension().is_some_and(|ext| ext == "hea") {
            headers.push(path);
        }
    }
}
