//! Reads a WFDB record (header plus signal files) into a [`CanonicalEcg`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::FormatError;
use crate::mat;
use crate::wfdb_comments;
use crate::wfdb_header::{SampleFormat, SignalSpec, parse_header};
use crate::{CanonicalEcg, EcgLead, SourceFormat};

/// Reads the whole WFDB record whose header is at `header_path`.
///
/// Signal files are looked up beside the header. Every signal whose header line carries a
/// checksum is verified against it, and a mismatch is an error: a corrupt ECG must not reach a
/// reviewer.
pub fn read_wfdb(header_path: &Path) -> Result<CanonicalEcg, FormatError> {
    let header_bytes = fs::read(header_path).map_err(|e| FormatError::io(header_path, e))?;
    // Comments may be in Latin-1 (PTB); they are informational, so a lossy decode is enough.
    let header = parse_header(&String::from_utf8_lossy(&header_bytes))?;
    let directory = header_path.parent().unwrap_or_else(|| Path::new(""));

    let groups: Vec<&[SignalSpec]> = header
        .signals
        .chunk_by(|a, b| a.file_name == b.file_name)
        .collect();
    check_file_grouping(&groups)?;
    let files = groups
        .into_iter()
        .map(|signals| SignalFile::load(directory, signals))
        .collect::<Result<Vec<_>, _>>()?;

    let samples_per_signal = match header.samples_per_signal {
        Some(declared) => declared,
        None => files.iter().map(|f| f.available).min().unwrap_or(0),
    };
    let mut leads = Vec::with_capacity(header.signals.len());
    for file in &files {
        leads.extend(file.decode(samples_per_signal)?);
    }

    let facts = wfdb_comments::interpret(&header.comments);
    Ok(CanonicalEcg {
        source_format: SourceFormat::Wfdb,
        record_name: header.record_name,
        sample_rate_hz: header.sample_rate_hz,
        leads,
        header_age_years: facts.age_years,
        header_sex: facts.sex,
        diagnoses: facts.diagnoses,
    })
}

/// Reads the first `seconds` of a WFDB record, e.g. the 10 s excerpt a review request carries
/// out of a 30-minute MIT-BIH recording.
///
/// The whole record is still read and every checksum verified, because WFDB checksums cover
/// the whole signal; at a few megabytes per record that costs milliseconds.
pub fn read_wfdb_excerpt(header_path: &Path, seconds: f64) -> Result<CanonicalEcg, FormatError> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(FormatError::InvalidExcerpt(seconds));
    }
    let mut ecg = read_wfdb(header_path)?;
    ecg.truncate_to_seconds(seconds)?;
    Ok(ecg)
}

/// One signal file with the signals the header assigns to it, loaded into memory.
struct SignalFile<'h> {
    path: PathBuf,
    signals: &'h [SignalSpec],
    format: SampleFormat,
    bytes: Vec<u8>,
    data_offset: usize,
    /// Complete samples per signal present in the file.
    available: usize,
}

impl<'h> SignalFile<'h> {
    fn load(directory: &Path, signals: &'h [SignalSpec]) -> Result<Self, FormatError> {
        // `chunk_by` never yields an empty chunk.
        let first = &signals[0];
        if let Some(odd) = signals
            .iter()
            .find(|s| s.format != first.format || s.byte_offset != first.byte_offset)
        {
            return Err(FormatError::bad_header(
                odd.line,
                format!(
                    "signals stored in {} must share one format and byte offset",
                    first.file_name
                ),
            ));
        }
        let path = directory.join(&first.file_name);
        let bytes = fs::read(&path).map_err(|e| FormatError::io(&path, e))?;
        let data_len = bytes.len().saturating_sub(first.byte_offset);
        let present = samples_present(first.format, data_len, signals.len());

        let available = if is_matlab_file(&path) {
            if first.format != SampleFormat::Format16 {
                return Err(FormatError::UnsupportedFormat(format!(
                    "{} is a MATLAB file but the header gives it format 212",
                    first.file_name
                )));
            }
            let layout = mat::check_layout(&path, &bytes, signals.len(), first.byte_offset)?;
            if present < layout.samples_per_signal {
                return Err(FormatError::SignalTooShort {
                    path,
                    expected: layout.samples_per_signal,
                    available: present,
                });
            }
            layout.samples_per_signal
        } else {
            present
        };
        Ok(Self {
            path,
            signals,
            format: first.format,
            data_offset: first.byte_offset,
            bytes,
            available,
        })
    }

    /// Decodes the first `samples_per_signal` samples of each signal and verifies checksums.
    fn decode(&self, samples_per_signal: usize) -> Result<Vec<EcgLead>, FormatError> {
        let too_short = || FormatError::SignalTooShort {
            path: self.path.clone(),
            expected: samples_per_signal,
            available: self.available,
        };
        if self.available < samples_per_signal {
            return Err(too_short());
        }
        let signal_count = self.signals.len();
        let total = samples_per_signal * signal_count;
        let needed = bytes_needed(self.format, total);
        // Slicing to exactly the bytes needed keeps every index below in bounds.
        let data = self
            .bytes
            .get(self.data_offset..self.data_offset + needed)
            .ok_or_else(too_short)?;

        let mut columns = vec![Vec::with_capacity(samples_per_signal); signal_count];
        let mut sums = vec![0u16; signal_count];
        // Samples are stored frame by frame: one sample of each signal in turn.
        for k in 0..total {
            let value = sample_at(data, self.format, k);
            let signal = k % signal_count;
            columns[signal].push(value);
            // The WFDB checksum is the sum of the samples modulo 65536.
            sums[signal] = sums[signal].wrapping_add(value as u16);
        }

        let mut leads = Vec::with_capacity(signal_count);
        for ((spec, samples), actual) in self.signals.iter().zip(columns).zip(sums) {
            if let Some(expected) = spec.checksum
                && expected != actual
            {
                return Err(FormatError::ChecksumMismatch {
                    signal: spec.description.clone(),
                    expected,
                    actual,
                });
            }
            leads.push(EcgLead {
                name: spec.description.clone(),
                gain_adc_per_mv: spec.gain_adc_per_mv,
                baseline_adc: spec.baseline_adc,
                samples,
            });
        }
        Ok(leads)
    }
}

/// Refuses a header that spreads one file's signals over non-adjacent lines: WFDB requires
/// them to be adjacent, and reading such a file twice would give wrong frames.
fn check_file_grouping(groups: &[&[SignalSpec]]) -> Result<(), FormatError> {
    for (index, group) in groups.iter().enumerate() {
        let name = &group[0].file_name;
        if groups[..index].iter().any(|g| &g[0].file_name == name) {
            return Err(FormatError::bad_header(
                group[0].line,
                format!("signals of {name} are not on adjacent lines"),
            ));
        }
    }
    Ok(())
}

fn is_matlab_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("mat"))
}

/// Complete samples per signal held by `data_len` bytes of interleaved data.
fn samples_present(format: SampleFormat, data_len: usize, signal_count: usize) -> usize {
    let total = match format {
        SampleFormat::Format16 => data_len / 2,
        // Three bytes hold two samples; two trailing bytes hold one more.
        SampleFormat::Format212 => data_len / 3 * 2 + usize::from(data_len % 3 >= 2),
    };
    total / signal_count.max(1)
}

/// Bytes occupied by the first `total` samples.
fn bytes_needed(format: SampleFormat, total: usize) -> usize {
    match format {
        SampleFormat::Format16 => total * 2,
        SampleFormat::Format212 => total / 2 * 3 + total % 2 * 2,
    }
}

/// Decodes sample number `k` of the interleaved stream.
fn sample_at(data: &[u8], format: SampleFormat, k: usize) -> i32 {
    match format {
        SampleFormat::Format16 => i32::from(i16::from_le_bytes([data[2 * k], data[2 * k + 1]])),
        SampleFormat::Format212 => {
            let base = k / 2 * 3;
            let middle = i32::from(data[base + 1]);
            let raw = if k.is_multiple_of(2) {
                // First sample: the first byte and the low nibble of the middle byte.
                i32::from(data[base]) | ((middle & 0x0f) << 8)
            } else {
                // Second sample: the third byte and the high nibble of the middle byte.
                i32::from(data[base + 2]) | ((middle & 0xf0) << 4)
            };
            // Sign-extend the 12-bit two's complement value.
            if raw >= 0x800 { raw - 0x1000 } else { raw }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_212_unpacks_two_signed_12_bit_samples_from_three_bytes() {
        // 0x3e3 (995) and 0xc4f (-945) packed as in the WFDB documentation.
        let data = [0xe3, 0xc3, 0x4f];
        assert_eq!(sample_at(&data, SampleFormat::Format212, 0), 995);
        assert_eq!(sample_at(&data, SampleFormat::Format212, 1), -945);
    }

    #[test]
    fn format_212_sample_counts_include_a_trailing_odd_sample() {
        assert_eq!(samples_present(SampleFormat::Format212, 5, 1), 3);
        assert_eq!(bytes_needed(SampleFormat::Format212, 3), 5);
        assert_eq!(samples_present(SampleFormat::Format212, 6, 2), 2);
    }

    #[test]
    fn format_16_is_little_endian_twos_complement() {
        assert_eq!(sample_at(&[0xbc, 0xff], SampleFormat::Format16, 0), -68);
    }
}
