//! Reads an HL7 v3 annotated ECG (aECG, FDA submission format) into a [`CanonicalEcg`].
//!
//! An aECG document holds one or more series; the rhythm series carries a sequence set with a
//! time sequence (start and sample interval) and one `SLIST_PQ` sequence per lead, whose
//! `digits` are ADC values scaled by `scale` and shifted by `origin`. Representative beats sit
//! in a later `derivation` and are not read. The document is parsed event by event with
//! `quick-xml` instead of being built into a tree, which for a multi-megabyte aECG would cost
//! many times the file's size in memory; `quick-xml` also never expands external entities.

use std::fs;
use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::FormatError;
use crate::{CanonicalEcg, EcgLead, Sex, SourceFormat};

/// LOINC code of the "Reported Age" control variable.
const REPORTED_AGE: &str = "21612-7";

/// MDC annotation codes whose values are diagnostic statements.
const STATEMENT_CODES: [&str; 3] = [
    "MDC_ECG_RHY",
    "MDC_ECG_INTERPRETATION",
    "MDC_ECG_INTERPRETATION_STATEMENT",
];

/// Reads the first (rhythm) sequence set of an HL7 aECG document.
///
/// Leads keep the document's order and are named from their MDC code (`MDC_ECG_LEAD_AVR`
/// becomes `aVR`). Age comes from the "Reported Age" control variable, sex from the subject's
/// administrative gender, diagnoses from the display names of coded rhythm and interpretation
/// annotations. A document that ends with elements still open is refused as truncated.
pub fn read_hl7_aecg(path: &Path) -> Result<CanonicalEcg, FormatError> {
    let text = fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let mut reader = Reader::from_str(&text);
    let mut doc = Document::default();
    loop {
        match reader
            .read_event()
            .map_err(|e| FormatError::Xml(Box::new(e)))?
        {
            Event::Start(element) => {
                doc.element(&element)?;
                doc.stack.push(local_name(&element));
            }
            Event::Empty(element) => doc.element(&element)?,
            Event::Text(content) => doc.text(&content.xml10_content()),
            Event::End(_) => doc.end(),
            Event::Eof => break,
            _ => {}
        }
    }
    doc.finish()
}

/// What has been read so far; the element stack gives each event its context.
#[derive(Default)]
struct Document {
    stack: Vec<String>,
    record_name: Option<String>,
    age_years: Option<u32>,
    sex: Option<Sex>,
    diagnoses: Vec<String>,
    /// The code of each open `annotation`, innermost last.
    annotation_codes: Vec<Option<String>>,
    /// The code of the open `relatedObservation`, to spot the reported age.
    observation_code: Option<String>,
    /// `None` before the first sequence set, then `Some` while and after reading it.
    sequence_set: Option<SequenceSet>,
    sequence: Option<Sequence>,
}

#[derive(Default)]
struct SequenceSet {
    /// Set at the end of the first sequence set, so that later ones are ignored.
    done: bool,
    sequences: Vec<Sequence>,
}

/// One `sequence` being read: its code and the value's attributes and digits.
#[derive(Default)]
struct Sequence {
    code: String,
    increment: Option<(f64, String)>,
    origin: Option<(f64, String)>,
    scale: Option<(f64, String)>,
    digits: String,
}

impl Document {
    fn parent(&self) -> &str {
        self.stack.last().map_or("", String::as_str)
    }

    fn reading_sequences(&self) -> bool {
        self.sequence_set.as_ref().is_some_and(|set| !set.done)
    }

    /// Handles an opening (or empty) element before it is pushed on the stack.
    fn element(&mut self, element: &BytesStart<'_>) -> Result<(), FormatError> {
        let name = local_name(element);
        let parent = self.parent().to_owned();
        match (name.as_str(), parent.as_str()) {
            ("id", "AnnotatedECG") => self.record_name = attribute(element, "root")?,
            ("administrativeGenderCode", _) => {
                self.sex = attribute(element, "code")?.map(|code| match code.as_str() {
                    "F" => Sex::Female,
                    "M" => Sex::Male,
                    _ => Sex::Unknown,
                });
            }
            ("relatedObservation", _) => self.observation_code = None,
            ("code", "relatedObservation") => self.observation_code = attribute(element, "code")?,
            // Ages are read in years (`a`); other units are left out rather than guessed at.
            ("value", "relatedObservation")
                if self.observation_code.as_deref() == Some(REPORTED_AGE)
                    && attribute(element, "unit")?.as_deref() == Some("a") =>
            {
                self.age_years = attribute(element, "value")?.and_then(|v| v.parse().ok());
            }
            ("annotation", _) => self.annotation_codes.push(None),
            ("code", "annotation") => {
                if let Some(top) = self.annotation_codes.last_mut() {
                    *top = attribute(element, "code")?;
                }
            }
            ("value", "annotation") => {
                let is_statement = self
                    .annotation_codes
                    .last()
                    .and_then(Option::as_deref)
                    .is_some_and(|code| STATEMENT_CODES.contains(&code));
                if is_statement && let Some(statement) = attribute(element, "displayName")? {
                    self.diagnoses.push(statement);
                }
            }
            // The representative beats of a `derivation` are not the recording.
            ("sequenceSet", _) if self.sequence_set.is_none() && !self.inside("derivation") => {
                self.sequence_set = Some(SequenceSet::default());
            }
            ("sequence", _) if self.reading_sequences() => {
                self.sequence = Some(Sequence::default())
            }
            ("code", "sequence") => {
                if let Some(sequence) = self.sequence.as_mut() {
                    sequence.code = attribute(element, "code")?.unwrap_or_default();
                }
            }
            ("increment" | "origin" | "scale", "value") => {
                if let Some(sequence) = self.sequence.as_mut() {
                    let quantity = quantity(element)?;
                    match name.as_str() {
                        "increment" => sequence.increment = quantity,
                        "origin" => sequence.origin = quantity,
                        _ => sequence.scale = quantity,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, content: &str) {
        if self.parent() == "digits"
            && let Some(sequence) = self.sequence.as_mut()
        {
            sequence.digits.push_str(content);
            sequence.digits.push(' ');
        }
    }

    /// Handles a closing element and takes it off the stack.
    fn end(&mut self) {
        match self.stack.pop().as_deref() {
            Some("annotation") => {
                self.annotation_codes.pop();
            }
            Some("sequence") => {
                if let (Some(sequence), Some(set)) =
                    (self.sequence.take(), self.sequence_set.as_mut())
                {
                    set.sequences.push(sequence);
                }
            }
            Some("sequenceSet") if self.reading_sequences() => {
                if let Some(set) = self.sequence_set.as_mut() {
                    set.done = true;
                }
            }
            _ => {}
        }
    }

    fn inside(&self, name: &str) -> bool {
        self.stack.iter().any(|open| open == name)
    }

    fn finish(self) -> Result<CanonicalEcg, FormatError> {
        // The parser reports end of input without complaint even with elements still open, and
        // a document cut off between two leads would otherwise pass for a shorter ECG.
        if let Some(open) = self.stack.last() {
            return Err(FormatError::BadElement {
                element: "AnnotatedECG",
                reason: format!("the document ends inside <{open}>, so it is truncated"),
            });
        }
        let set = self
            .sequence_set
            .ok_or(FormatError::MissingElement("sequenceSet"))?;
        let mut interval = None;
        let mut leads = Vec::new();
        for sequence in set.sequences {
            if sequence.code.starts_with("TIME_") {
                interval = sequence.increment;
            } else if let Some(lead) = sequence.code.strip_prefix("MDC_ECG_LEAD_") {
                leads.push(lead_from(lead, &sequence)?);
            }
        }
        let (increment, unit) = interval.ok_or(FormatError::MissingElement("increment"))?;
        let sample_rate_hz = sample_rate(increment, &unit)?;
        let Some(first) = leads.first() else {
            return Err(FormatError::MissingElement("sequence"));
        };
        let samples = first.samples.len();
        if let Some(odd) = leads.iter().find(|lead| lead.samples.len() != samples) {
            return Err(FormatError::BadElement {
                element: "digits",
                reason: format!(
                    "lead {} has {} samples, lead {} has {samples}",
                    odd.name,
                    odd.samples.len(),
                    first.name
                ),
            });
        }
        Ok(CanonicalEcg {
            source_format: SourceFormat::Hl7Aecg,
            record_name: self.record_name.ok_or(FormatError::MissingElement("id"))?,
            sample_rate_hz,
            leads,
            header_age_years: self.age_years,
            header_sex: self.sex,
            diagnoses: self.diagnoses,
        })
    }
}

/// Builds a lead from an `SLIST_PQ` sequence: physical value = origin + scale x digit.
fn lead_from(code_suffix: &str, sequence: &Sequence) -> Result<EcgLead, FormatError> {
    let name = match code_suffix {
        "AVR" => "aVR".to_owned(),
        "AVL" => "aVL".to_owned(),
        "AVF" => "aVF".to_owned(),
        other => other.to_owned(),
    };
    let (scale, scale_unit) = sequence
        .scale
        .as_ref()
        .ok_or(FormatError::MissingElement("scale"))?;
    let (origin, origin_unit) = sequence
        .origin
        .as_ref()
        .ok_or(FormatError::MissingElement("origin"))?;
    if !(scale.is_finite() && *scale != 0.0) {
        return Err(FormatError::BadElement {
            element: "scale",
            reason: format!("scale {scale} of lead {name} is unusable"),
        });
    }
    let gain_adc_per_mv = units_per_mv(scale_unit)? / scale;
    let baseline_adc = (-origin / units_per_mv(origin_unit)? * gain_adc_per_mv).round();
    if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&baseline_adc) {
        return Err(FormatError::BadElement {
            element: "origin",
            reason: format!("origin {origin} of lead {name} is out of range"),
        });
    }
    let samples = sequence
        .digits
        .split_whitespace()
        .map(|digit| {
            digit.parse().map_err(|_| FormatError::BadElement {
                element: "digits",
                reason: format!("{digit:?} in lead {name} is not an integer"),
            })
        })
        .collect::<Result<Vec<i32>, _>>()?;
    Ok(EcgLead {
        name,
        gain_adc_per_mv,
        baseline_adc: baseline_adc as i32,
        samples,
    })
}

/// How many of `unit` make a millivolt.
fn units_per_mv(unit: &str) -> Result<f64, FormatError> {
    match unit {
        "uV" => Ok(1000.0),
        "mV" => Ok(1.0),
        "V" => Ok(0.001),
        other => Err(FormatError::UnsupportedFormat(format!(
            "aECG lead measured in {other:?}, not in volts"
        ))),
    }
}

/// The sampling rate implied by the time sequence's increment.
fn sample_rate(increment: f64, unit: &str) -> Result<u32, FormatError> {
    let seconds = match unit {
        "s" => increment,
        "ms" => increment / 1000.0,
        other => {
            return Err(FormatError::UnsupportedFormat(format!(
                "aECG time increment in {other:?}"
            )));
        }
    };
    let rate = 1.0 / seconds;
    let whole = rate.round();
    // Increments such as 0.002 s are not exact in binary, so allow for rounding.
    if whole >= 1.0 && whole <= f64::from(u32::MAX) && (rate - whole).abs() < 1e-6 * whole {
        Ok(whole as u32)
    } else {
        Err(FormatError::UnsupportedFormat(format!(
            "aECG sample interval {increment} {unit} is not a whole number of hertz"
        )))
    }
}

fn local_name(element: &BytesStart<'_>) -> String {
    element.local_name().as_ref().to_owned()
}

/// The value of the attribute whose local name is `name`, ignoring any namespace prefix.
fn attribute(element: &BytesStart<'_>, name: &str) -> Result<Option<String>, FormatError> {
    for attr in element.attributes() {
        let attr = attr.map_err(|e| FormatError::Xml(Box::new(e.into())))?;
        if attr.key.local_name().as_ref() == name {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| FormatError::Xml(Box::new(e)))?;
            return Ok(Some(value.trim().to_owned()));
        }
    }
    Ok(None)
}

/// A physical quantity written as `value` and `unit` attributes.
fn quantity(element: &BytesStart<'_>) -> Result<Option<(f64, String)>, FormatError> {
    let Some(value) = attribute(element, "value")? else {
        return Ok(None);
    };
    let number: f64 = value.parse().map_err(|_| FormatError::BadElement {
        element: "value",
        reason: format!("{value:?} is not a number"),
    })?;
    Ok(Some((
        number,
        attribute(element, "unit")?.unwrap_or_default(),
    )))
}
