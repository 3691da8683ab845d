//! Parses the text of a WFDB header (`.hea`) file.
//!
//! The layout follows the WFDB header specification (PhysioNet `header(5)`): one record line,
//! one line per signal, and `#` comment lines anywhere. Blank lines are skipped and line
//! endings may be LF or CRLF, mixed within one file, because edited copies in the wild are.

use crate::error::FormatError;

/// WFDB's gain when a header gives none or gives zero (`WFDB_DEFGAIN`), in ADC units per
/// millivolt.
const DEFAULT_GAIN: f64 = 200.0;

/// WFDB's sampling frequency when the record line gives none (`WFDB_DEFFREQ`).
const DEFAULT_FREQUENCY_HZ: f64 = 250.0;

/// How samples are packed in a signal file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SampleFormat {
    /// Format 16: 16-bit two's complement, little-endian.
    Format16,
    /// Format 212: two 12-bit two's complement samples packed into three bytes.
    Format212,
}

/// Everything the header says about a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WfdbHeader {
    pub record_name: String,
    pub sample_rate_hz: u32,
    /// Samples per signal; `None` when the header leaves it to the signal file's length.
    pub samples_per_signal: Option<usize>,
    pub signals: Vec<SignalSpec>,
    /// Comment lines without the leading `#`, trimmed, in file order.
    pub comments: Vec<String>,
}

/// One signal line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SignalSpec {
    /// One-based header line, kept for error messages about the line.
    pub line: usize,
    pub file_name: String,
    pub format: SampleFormat,
    /// Bytes to skip at the start of the signal file before the first sample.
    pub byte_offset: usize,
    pub gain_adc_per_mv: f64,
    pub baseline_adc: i32,
    /// The header's checksum reduced modulo 65536, so that signed (`-1244`) and unsigned
    /// (`64292`, as CPSC 2021 writes it) spellings compare equal.
    pub checksum: Option<u16>,
    /// The signal's description, which for ECGs is the lead name.
    pub description: String,
}

/// Parses a whole header file.
pub(crate) fn parse_header(text: &str) -> Result<WfdbHeader, FormatError> {
    let mut record: Option<RecordLine> = None;
    let mut signals = Vec::new();
    let mut comments = Vec::new();
    let mut line_count = 0;

    // `str::lines` strips a trailing `\r` from each line, which is what makes mixed LF and
    // CRLF endings harmless.
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        line_count = line_no;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            comments.push(comment.trim().to_owned());
            continue;
        }
        match &record {
            None => record = Some(parse_record_line(line_no, line)?),
            Some(rec) if signals.len() < rec.signal_count => {
                signals.push(parse_signal_line(line_no, line, signals.len())?);
            }
            Some(_) => {
                return Err(FormatError::bad_header(
                    line_no,
                    "unexpected line after the last signal line",
                ));
            }
        }
    }

    let record = record.ok_or_else(|| FormatError::bad_header(line_count + 1, "no record line"))?;
    if signals.len() < record.signal_count {
        return Err(FormatError::bad_header(
            line_count + 1,
            format!(
                "the record line declares {} signals but only {} signal lines follow",
                record.signal_count,
                signals.len()
            ),
        ));
    }
    Ok(WfdbHeader {
        record_name: record.name,
        sample_rate_hz: record.sample_rate_hz,
        samples_per_signal: record.samples_per_signal,
        signals,
        comments,
    })
}

struct RecordLine {
    name: String,
    signal_count: usize,
    sample_rate_hz: u32,
    samples_per_signal: Option<usize>,
}

/// Parses `name[/segments] signals [frequency[/counter[(base)]] [samples [time [date]]]]`.
fn parse_record_line(line_no: usize, line: &str) -> Result<RecordLine, FormatError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let name = fields[0];
    if name.contains('/') {
        return Err(FormatError::UnsupportedFormat(format!(
            "multi-segment WFDB record {name}"
        )));
    }
    let signal_count: usize = parse_field(line_no, fields.get(1).copied(), "number of signals")?
        .ok_or_else(|| {
            FormatError::bad_header(line_no, "record line lacks the number of signals")
        })?;
    if signal_count == 0 {
        return Err(FormatError::UnsupportedFormat(format!(
            "WFDB record {name} has no signals"
        )));
    }

    // The counter frequency and base counter value after `/` only matter for annotations.
    let frequency_field = fields.get(2).and_then(|f| f.split('/').next());
    let frequency: f64 = parse_field(line_no, frequency_field, "sampling frequency")?
        .unwrap_or(DEFAULT_FREQUENCY_HZ);
    if !(frequency.is_finite() && frequency > 0.0) {
        return Err(FormatError::bad_header(
            line_no,
            format!("sampling frequency {frequency} is not positive"),
        ));
    }
    if frequency.fract() != 0.0 || frequency > f64::from(u32::MAX) {
        return Err(FormatError::UnsupportedFormat(format!(
            "non-integer sampling frequency {frequency} Hz"
        )));
    }

    // Zero samples means "unknown" in WFDB, the same as leaving the field out.
    let samples: Option<usize> = parse_field(line_no, fields.get(3).copied(), "number of samples")?;
    Ok(RecordLine {
        name: name.to_owned(),
        signal_count,
        sample_rate_hz: frequency as u32,
        samples_per_signal: samples.filter(|&n| n > 0),
    })
}

/// Parses `file format[xspf][:skew][+offset] [gain[(baseline)][/units] [resolution [zero
/// [initial [checksum [block [description]]]]]]]`.
fn parse_signal_line(line_no: usize, line: &str, index: usize) -> Result<SignalSpec, FormatError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let file_name = fields[0];
    // Signal files must sit beside the header: a header from outside must not make us read
    // arbitrary files, and `-` (standard input) makes no sense for a file on disk.
    if file_name == "-" || file_name == "." || file_name == ".." || file_name.contains(['/', '\\'])
    {
        return Err(FormatError::bad_header(
            line_no,
            format!("signal file {file_name:?} does not name a file beside the header"),
        ));
    }
    let format_field = fields
        .get(1)
        .ok_or_else(|| FormatError::bad_header(line_no, "signal line lacks the format"))?;
    let (format, byte_offset) = parse_format_spec(line_no, format_field)?;
    let (gain, baseline, units_per_mv) = match fields.get(2) {
        Some(spec) => parse_gain_spec(line_no, spec)?,
        None => (None, None, 1.0),
    };
    // A zero gain means "uncalibrated" in WFDB and is replaced by the default like a missing
    // one.
    let gain = gain.filter(|&g| g != 0.0).unwrap_or(DEFAULT_GAIN);
    let adc_zero: i32 = parse_field(line_no, fields.get(4).copied(), "ADC zero")?.unwrap_or(0);
    let checksum: Option<i64> = parse_field(line_no, fields.get(6).copied(), "checksum")?;
    let description = if fields.len() > 8 {
        fields[8..].join(" ")
    } else {
        format!("signal {index}")
    };
    Ok(SignalSpec {
        line: line_no,
        file_name: file_name.to_owned(),
        format,
        byte_offset,
        gain_adc_per_mv: gain * units_per_mv,
        // The specification says a missing baseline equals the ADC zero.
        baseline_adc: baseline.unwrap_or(adc_zero),
        checksum: checksum.map(|sum| sum.rem_euclid(65_536) as u16),
        description,
    })
}

/// Parses `format[xspf][:skew][+offset]`.
fn parse_format_spec(line_no: usize, spec: &str) -> Result<(SampleFormat, usize), FormatError> {
    let (rest, offset) = match spec.split_once('+') {
        Some((rest, offset)) => (rest, Some(offset)),
        None => (spec, None),
    };
    let (rest, skew) = match rest.split_once(':') {
        Some((rest, skew)) => (rest, Some(skew)),
        None => (rest, None),
    };
    let (format, frame) = match rest.split_once('x') {
        Some((format, frame)) => (format, Some(frame)),
        None => (rest, None),
    };
    let format: u32 = parse_field(line_no, Some(format), "signal format")?.unwrap_or(0);
    let samples_per_frame: u32 = parse_field(line_no, frame, "samples per frame")?.unwrap_or(1);
    let skew: u32 = parse_field(line_no, skew, "skew")?.unwrap_or(0);
    let offset: usize = parse_field(line_no, offset, "byte offset")?.unwrap_or(0);
    let format = match format {
        16 => SampleFormat::Format16,
        212 => SampleFormat::Format212,
        other => {
            return Err(FormatError::UnsupportedFormat(format!(
                "WFDB signal format {other}"
            )));
        }
    };
    if samples_per_frame != 1 {
        return Err(FormatError::UnsupportedFormat(format!(
            "{samples_per_frame} samples per frame (multi-frequency record)"
        )));
    }
    if skew != 0 {
        return Err(FormatError::UnsupportedFormat(format!(
            "signal skew {skew}"
        )));
    }
    Ok((format, offset))
}

/// Parses `gain[(baseline)][/units]` into the gain as written, the baseline, and the factor
/// that turns "ADC units per unit" into "ADC units per millivolt".
fn parse_gain_spec(
    line_no: usize,
    spec: &str,
) -> Result<(Option<f64>, Option<i32>, f64), FormatError> {
    let (rest, units) = match spec.split_once('/') {
        Some((rest, units)) => (rest, Some(units)),
        None => (spec, None),
    };
    let (gain, baseline) = match rest.split_once('(') {
        Some((gain, baseline)) => {
            let baseline = baseline.strip_suffix(')').ok_or_else(|| {
                FormatError::bad_header(line_no, format!("unclosed baseline in {spec:?}"))
            })?;
            (gain, Some(baseline))
        }
        None => (rest, None),
    };
    let gain: Option<f64> = parse_field(line_no, Some(gain), "gain")?;
    if gain.is_some_and(|g| !g.is_finite()) {
        return Err(FormatError::bad_header(
            line_no,
            format!("gain in {spec:?} is not finite"),
        ));
    }
    let baseline: Option<i32> = parse_field(line_no, baseline, "baseline")?;
    // WFDB assumes millivolts when no units are given.
    let units_per_mv = match units.map(str::to_ascii_lowercase).as_deref() {
        None | Some("mv") => 1.0,
        Some("uv") | Some("µv") | Some("μv") => 1000.0,
        Some("v") => 0.001,
        Some(other) => {
            return Err(FormatError::UnsupportedFormat(format!(
                "signal measured in {other}, not in volts"
            )));
        }
    };
    Ok((gain, baseline, units_per_mv))
}

/// Parses an optional field, naming it in the error when it is present but malformed.
fn parse_field<T: std::str::FromStr>(
    line_no: usize,
    field: Option<&str>,
    what: &str,
) -> Result<Option<T>, FormatError> {
    match field {
        None => Ok(None),
        Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            FormatError::bad_header(line_no, format!("{what} {text:?} is not a number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn mixed_line_endings_blank_lines_and_leading_comment_are_accepted() {
        let text = "# unnecessary comment\n100 2 360 650000\r\n\
                    100.dat 212 200 11 1024 995 -22131 0 MLII\n\r\n\
                    100.dat 212 200 11 1024 1011 20052 0 V5\r\n# 69 M 1085 1629 x1\r\n";
        let header = parse_header(text).unwrap();
        assert_eq!(header.record_name, "100");
        assert_eq!(header.signals.len(), 2);
        assert_eq!(header.signals[1].description, "V5");
        assert_eq!(header.signals[1].line, 5);
        assert_eq!(
            header.comments,
            ["unnecessary comment", "69 M 1085 1629 x1"]
        );
    }

    #[test]
    fn baseline_defaults_to_adc_zero_and_gain_to_200() {
        let header = parse_header("r 2 360\nr.dat 212 0 11 1024\nr.dat 212\n").unwrap();
        assert_eq!(header.signals[0].gain_adc_per_mv, 200.0);
        assert_eq!(header.signals[0].baseline_adc, 1024);
        assert_eq!(header.signals[1].baseline_adc, 0);
        assert_eq!(header.signals[1].description, "signal 1");
        assert_eq!(header.samples_per_signal, None);
    }

    #[test]
    fn gain_spec_with_baseline_and_microvolts_is_converted_to_adc_per_millivolt() {
        let header = parse_header("r 1 200 10\nr.dat 16 2.5(-167477)/uV 16 0 1 2 0 I\n").unwrap();
        assert_eq!(header.signals[0].gain_adc_per_mv, 2500.0);
        assert_eq!(header.signals[0].baseline_adc, -167_477);
    }

    #[test]
    fn unsigned_and_signed_checksums_compare_equal() {
        let signed = parse_header("r 1\nr.dat 16 200 16 0 0 -1244 0 I\n").unwrap();
        let unsigned = parse_header("r 1\nr.dat 16 200 16 0 0 64292 0 I\n").unwrap();
        assert_eq!(signed.signals[0].checksum, unsigned.signals[0].checksum);
    }

    #[test]
    fn matlab_format_spec_yields_byte_offset() {
        let header =
            parse_header("E 1 500 5000\nE.mat 16x1+24 1000.0(0)/mV 16 0 -68 1250 0 I\n").unwrap();
        assert_eq!(header.signals[0].byte_offset, 24);
        assert_eq!(header.signals[0].format, SampleFormat::Format16);
    }

    #[test]
    fn missing_signal_lines_are_reported_after_the_last_line() {
        let err = parse_header("r 3 360\nr.dat 212\n").unwrap_err();
        assert!(
            matches!(err, FormatError::BadHeader { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn signal_file_outside_the_header_directory_is_refused() {
        let err = parse_header("r 1\n../etc/passwd 16\n").unwrap_err();
        assert!(
            matches!(err, FormatError::BadHeader { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_signal_format_is_unsupported() {
        let err = parse_header("r 1\nr.dat 310\n").unwrap_err();
        assert!(matches!(err, FormatError::UnsupportedFormat(_)), "{err}");
    }
}
