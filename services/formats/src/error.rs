//! The one error type every reader in this crate returns.

use std::path::PathBuf;

/// Why a clinical file could not be turned into a canonical struct.
///
/// Each variant names one kind of fault so that a caller can decide what to do with the file
/// (reject it as corrupt, report it as unsupported, retry after an I/O hiccup) without parsing
/// the message. Messages never contain a patient name: the DICOM readers do not read any
/// person-name element, and the WFDB messages quote only structural fields of the header.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A file could not be opened or read. `path` is the file that failed, which for WFDB may
    /// be a signal file named by the header rather than the header itself.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// A WFDB header line is malformed or missing.
    #[error("bad WFDB header at line {line}: {reason}")]
    BadHeader {
        /// One-based line number in the header file; one past the last line when the header
        /// ends early.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// The file is well formed but uses a feature this crate does not read, such as a WFDB
    /// signal format other than 16 and 212 or a DICOM waveform that is not 16-bit signed.
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),

    /// A WFDB signal's samples do not add up to the checksum its header records, so the
    /// signal file is corrupt or belongs to another record.
    #[error(
        "checksum mismatch in signal {signal}: header says {expected}, samples sum to {actual}"
    )]
    ChecksumMismatch {
        /// The signal's description (the lead name).
        signal: String,
        /// The header's checksum, reduced modulo 65536.
        expected: u16,
        /// The 16-bit sum of the samples read.
        actual: u16,
    },

    /// A WFDB signal file holds fewer samples than the header promises.
    #[error("signal file {} holds {available} samples per signal, the header promises {expected}", path.display())]
    SignalTooShort {
        /// The signal file.
        path: PathBuf,
        /// Samples per signal the header declares.
        expected: usize,
        /// Complete samples per signal present in the file.
        available: usize,
    },

    /// A WFDB-compatible MATLAB v4 signal file does not have the layout its header implies.
    #[error("bad MATLAB v4 signal file {}: {reason}", path.display())]
    BadMatFile {
        /// The `.mat` file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    /// An excerpt length that is not a positive, finite number of seconds.
    #[error("an excerpt must last a positive, finite number of seconds, not {0}")]
    InvalidExcerpt(f64),

    /// The DICOM parser rejected the file.
    #[error("cannot parse DICOM data set")]
    Dicom(#[source] Box<dicom_object::ReadError>),

    /// The aECG XML is not well formed.
    #[error("cannot parse XML")]
    Xml(#[source] Box<quick_xml::Error>),

    /// An element this reader needs is absent or empty. The payload is the DICOM keyword
    /// (e.g. `StudyInstanceUID`) or the aECG XML element name (e.g. `sequenceSet`).
    #[error("missing element {0}")]
    MissingElement(&'static str),

    /// A DICOM or aECG element is present but its value cannot be used.
    #[error("element {element} has an unusable value: {reason}")]
    BadElement {
        /// The DICOM keyword or XML element name.
        element: &'static str,
        /// Why the value cannot be used.
        reason: String,
    },
}

impl FormatError {
    /// Wraps an I/O error together with the file it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a [`FormatError::BadHeader`] for a one-based header line.
    pub(crate) fn bad_header(line: usize, reason: impl Into<String>) -> Self {
        Self::BadHeader {
            line,
            reason: reason.into(),
        }
    }
}
