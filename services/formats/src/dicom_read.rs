//! Small accessors over `dicom-object` shared by the DICOM readers.
//!
//! They turn "absent", "present but empty" and "present but unusable" into the crate's error
//! variants in one place. None of them reads a person-name element, and error reasons quote
//! only the structural values they failed to convert.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions, ReadError, Tag};

use crate::error::FormatError;

/// How much of a file to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// Stop before Pixel Data, so that compressed images (JPEG 2000 and the like) are never
    /// touched and large slides are not loaded into memory.
    HeaderOnly,
    /// Everything, for waveforms, whose samples live in the data set proper.
    Whole,
}

/// Opens a DICOM Part 10 file.
pub(crate) fn open(path: &Path, extent: Extent) -> Result<DefaultDicomObject, FormatError> {
    let options = match extent {
        Extent::HeaderOnly => OpenFileOptions::new().read_until(tags::PIXEL_DATA),
        Extent::Whole => OpenFileOptions::new(),
    };
    options.open_file(path).map_err(|error| match error {
        // A missing or unreadable file is an I/O problem, not a parse problem.
        ReadError::OpenFile {
            filename, source, ..
        } => FormatError::io(filename, source),
        other => FormatError::Dicom(Box::new(other)),
    })
}

/// The trimmed text of an element, or `None` when it is absent or empty.
pub(crate) fn text(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
) -> Result<Option<String>, FormatError> {
    let Some(element) = obj.get(tag) else {
        return Ok(None);
    };
    let value = element.to_str().map_err(|_| FormatError::BadElement {
        element: keyword,
        reason: "is not a text value".to_owned(),
    })?;
    let value = value.trim();
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// The trimmed text of an element that must be present and non-empty.
pub(crate) fn required_text(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
) -> Result<String, FormatError> {
    text(obj, tag, keyword)?.ok_or(FormatError::MissingElement(keyword))
}

/// A numeric element (DS, IS, US, UL, ...) as `f64`, or `None` when absent or empty.
pub(crate) fn number(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
) -> Result<Option<f64>, FormatError> {
    let Some(text) = text(obj, tag, keyword)? else {
        return Ok(None);
    };
    let bad = || FormatError::BadElement {
        element: keyword,
        reason: format!("{text:?} is not a finite number"),
    };
    // Going through the text handles decimal strings and binary integers alike.
    let value: f64 = text.parse().map_err(|_| bad())?;
    if value.is_finite() {
        Ok(Some(value))
    } else {
        Err(bad())
    }
}

/// A numeric element that must be present.
pub(crate) fn required_number(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
) -> Result<f64, FormatError> {
    number(obj, tag, keyword)?.ok_or(FormatError::MissingElement(keyword))
}

/// A count (frames, channels, pixels) that must be present and a non-negative integer.
pub(crate) fn required_count(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
) -> Result<u32, FormatError> {
    let value = required_number(obj, tag, keyword)?;
    if value.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&value) {
        Ok(value as u32)
    } else {
        Err(FormatError::BadElement {
            element: keyword,
            reason: format!("{value} is not a count"),
        })
    }
}

/// The items of a sequence, empty when the sequence is absent.
pub(crate) fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// The first item of a sequence, if any.
pub(crate) fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    items(obj, tag).first()
}

/// A coded concept: the first item of a code sequence such as ConceptNameCodeSequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Code {
    /// CodeValue, e.g. `127790008` or `uV`.
    pub value: Option<String>,
    /// CodeMeaning, e.g. `Staining` or `microvolt`.
    pub meaning: Option<String>,
}

/// The coded concept in the first item of `sequence`, or `None` when the sequence is absent
/// or empty.
pub(crate) fn code(obj: &InMemDicomObject, sequence: Tag) -> Result<Option<Code>, FormatError> {
    let Some(item) = first_item(obj, sequence) else {
        return Ok(None);
    };
    Ok(Some(Code {
        value: text(item, tags::CODE_VALUE, "CodeValue")?,
        meaning: text(item, tags::CODE_MEANING, "CodeMeaning")?,
    }))
}
