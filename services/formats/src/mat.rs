//! Checks the header of a WFDB-compatible MATLAB v4 signal file.
//!
//! PhysioNet's `wfdb2mat` (used for the Challenge 2021 data) writes one MATLAB v4 matrix named
//! `val` with one row per signal and one column per sample. MATLAB stores matrices column by
//! column, so the samples of one instant lie next to each other, which is exactly the frame
//! layout of a format 16 `.dat` file. The WFDB header accounts for the MATLAB header with a
//! byte offset (`16x1+24`), so after this check the file is read like any other format 16
//! file. The check is still worth doing: it catches a header that names the wrong file, and it
//! gives the exact sample count.

use std::path::Path;

use crate::error::FormatError;

/// Bytes in the fixed part of a MATLAB v4 matrix header: five 32-bit integers.
const FIXED_HEADER_LEN: usize = 20;

/// MATLAB v4 type code `MOPT` = 0030: little-endian IEEE machine (M=0), 16-bit signed
/// integers (P=3), full numeric matrix (T=0).
const LITTLE_ENDIAN_INT16_MATRIX: i32 = 30;

/// Where the samples are and how many there are per signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MatLayout {
    pub data_offset: usize,
    pub samples_per_signal: usize,
}

/// Reads and checks the MATLAB v4 header at the start of `bytes`.
///
/// `signal_count` is the number of signals the WFDB header assigns to this file and
/// `header_offset` the byte offset it gives for them; both must agree with the MATLAB header.
pub(crate) fn check_layout(
    path: &Path,
    bytes: &[u8],
    signal_count: usize,
    header_offset: usize,
) -> Result<MatLayout, FormatError> {
    let bad = |reason: String| FormatError::BadMatFile {
        path: path.to_owned(),
        reason,
    };
    let field = |index: usize| -> Result<i32, FormatError> {
        let start = index * 4;
        bytes
            .get(start..start + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
            .ok_or_else(|| {
                bad(format!(
                    "only {} bytes, shorter than a MATLAB header",
                    bytes.len()
                ))
            })
    };
    let (type_code, rows, columns, imaginary, name_len) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);

    if type_code != LITTLE_ENDIAN_INT16_MATRIX {
        return Err(bad(format!(
            "matrix type code {type_code} is not a little-endian 16-bit integer matrix (30)"
        )));
    }
    if imaginary != 0 {
        return Err(bad("matrix has an imaginary part".to_owned()));
    }
    if usize::try_from(rows).ok() != Some(signal_count) {
        return Err(bad(format!(
            "matrix has {rows} rows but the WFDB header assigns {signal_count} signals to it"
        )));
    }
    let name_len = usize::try_from(name_len)
        .map_err(|_| bad(format!("negative variable name length {name_len}")))?;
    let data_offset = FIXED_HEADER_LEN + name_len;
    if data_offset != header_offset {
        return Err(bad(format!(
            "samples start at byte {data_offset} but the WFDB header says {header_offset}"
        )));
    }
    let samples_per_signal =
        usize::try_from(columns).map_err(|_| bad(format!("negative column count {columns}")))?;
    Ok(MatLayout {
        data_offset,
        samples_per_signal,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn header(type_code: i32, rows: i32, columns: i32) -> Vec<u8> {
        [type_code, rows, columns, 0, 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain(*b"val\0")
            .collect()
    }

    #[test]
    fn wfdb2mat_header_gives_offset_and_sample_count() {
        let layout = check_layout(Path::new("x.mat"), &header(30, 12, 5000), 12, 24).unwrap();
        assert_eq!(
            layout,
            MatLayout {
                data_offset: 24,
                samples_per_signal: 5000
            }
        );
    }

    #[test]
    fn double_precision_matrix_is_refused() {
        let err = check_layout(Path::new("x.mat"), &header(0, 12, 5000), 12, 24).unwrap_err();
        assert!(matches!(err, FormatError::BadMatFile { .. }), "{err}");
    }

    #[test]
    fn row_count_must_match_the_signals_in_the_file() {
        let err = check_layout(Path::new("x.mat"), &header(30, 3, 5000), 12, 24).unwrap_err();
        assert!(matches!(err, FormatError::BadMatFile { .. }), "{err}");
    }
}
