//! Reads the identifying header of DICOM imaging studies and whole-slide microscopy images.
//!
//! Both readers stop before Pixel Data: a review request needs the identifiers, not the
//! pixels, and compressed pixel data (JPEG 2000 and the like) is then never touched.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::dicom_read::{self, Extent};
use crate::error::FormatError;

/// SNOMED CT "Processing type" (DCM 111701) value that marks a staining step.
const STAINING: &str = "127790008";
/// DCM code for the concept "Processing type".
const PROCESSING_TYPE: &str = "111701";
/// SNOMED CT code for the concept "Using substance", the stain of a staining step.
const USING_SUBSTANCE: &str = "424361007";

/// What identifies an imaging object (CT, MR, SR, ...) and the study it belongs to.
///
/// Elements that DICOM allows to be empty or absent are `Option`s, `None` when the file leaves
/// them empty; the sample files in the shared data set all leave AccessionNumber empty and
/// BodyPartExamined out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagingHeader {
    /// StudyInstanceUID (0020,000D).
    pub study_instance_uid: String,
    /// AccessionNumber (0008,0050).
    pub accession_number: Option<String>,
    /// Modality (0008,0060), e.g. `CT`, `MR`, `SR`.
    pub modality: String,
    /// BodyPartExamined (0018,0015).
    pub body_part: Option<String>,
    /// StudyDescription (0008,1030).
    pub study_description: Option<String>,
    /// SeriesInstanceUID (0020,000E).
    pub series_instance_uid: String,
    /// SOPInstanceUID (0008,0018).
    pub sop_instance_uid: String,
    /// StudyDate (0008,0020) as ISO 8601 `YYYY-MM-DD`.
    pub study_date: Option<String>,
    /// Manufacturer (0008,0070).
    pub manufacturer: Option<String>,
}

/// What identifies a whole-slide microscopy image and the specimen on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlideHeader {
    /// StudyInstanceUID (0020,000D).
    pub study_instance_uid: String,
    /// ContainerIdentifier (0040,0512): the slide's label, e.g. `S19-1_A_1_1`.
    pub container_id: String,
    /// SpecimenIdentifier of the first SpecimenDescriptionSequence item.
    pub specimen_id: Option<String>,
    /// The substances of the staining steps in SpecimenPreparationSequence, joined with
    /// `", "`, e.g. `Hematoxylin stain, Water soluble eosin stain`.
    pub stain: Option<String>,
    /// TotalPixelMatrixColumns (0048,0006).
    pub total_width_px: u32,
    /// TotalPixelMatrixRows (0048,0007).
    pub total_height_px: u32,
    /// NumberOfFrames (0028,0008): the tiles in this file.
    pub frame_count: u32,
    /// The code meaning of the first PrimaryAnatomicStructureSequence item of the specimen,
    /// e.g. `Brain`.
    pub anatomic_site: Option<String>,
}

/// Reads the identifying header of a DICOM imaging object without decoding pixels.
pub fn read_imaging_header(path: &Path) -> Result<ImagingHeader, FormatError> {
    let obj = dicom_read::open(path, Extent::HeaderOnly)?;
    let study_date = dicom_read::text(&obj, tags::STUDY_DATE, "StudyDate")?
        .map(|date| iso_date(&date))
        .transpose()?;
    Ok(ImagingHeader {
        study_instance_uid: dicom_read::required_text(
            &obj,
            tags::STUDY_INSTANCE_UID,
            "StudyInstanceUID",
        )?,
        accession_number: dicom_read::text(&obj, tags::ACCESSION_NUMBER, "AccessionNumber")?,
        modality: dicom_read::required_text(&obj, tags::MODALITY, "Modality")?,
        body_part: dicom_read::text(&obj, tags::BODY_PART_EXAMINED, "BodyPartExamined")?,
        study_description: dicom_read::text(&obj, tags::STUDY_DESCRIPTION, "StudyDescription")?,
        series_instance_uid: dicom_read::required_text(
            &obj,
            tags::SERIES_INSTANCE_UID,
            "SeriesInstanceUID",
        )?,
        sop_instance_uid: dicom_read::required_text(
            &obj,
            tags::SOP_INSTANCE_UID,
            "SOPInstanceUID",
        )?,
        study_date,
        manufacturer: dicom_read::text(&obj, tags::MANUFACTURER, "Manufacturer")?,
    })
}

/// Reads the identifying header of a VL Whole Slide Microscopy image without decoding pixels.
pub fn read_slide_header(path: &Path) -> Result<SlideHeader, FormatError> {
    let obj = dicom_read::open(path, Extent::HeaderOnly)?;
    let specimen = dicom_read::first_item(&obj, tags::SPECIMEN_DESCRIPTION_SEQUENCE);
    let (specimen_id, stain, anatomic_site) = match specimen {
        Some(specimen) => (
            dicom_read::text(specimen, tags::SPECIMEN_IDENTIFIER, "SpecimenIdentifier")?,
            stain(specimen)?,
            dicom_read::code(specimen, tags::PRIMARY_ANATOMIC_STRUCTURE_SEQUENCE)?
                .and_then(|code| code.meaning),
        ),
        None => (None, None, None),
    };
    Ok(SlideHeader {
        study_instance_uid: dicom_read::required_text(
            &obj,
            tags::STUDY_INSTANCE_UID,
            "StudyInstanceUID",
        )?,
        container_id: dicom_read::required_text(
            &obj,
            tags::CONTAINER_IDENTIFIER,
            "ContainerIdentifier",
        )?,
        specimen_id,
        stain,
        total_width_px: dicom_read::required_count(
            &obj,
            tags::TOTAL_PIXEL_MATRIX_COLUMNS,
            "TotalPixelMatrixColumns",
        )?,
        total_height_px: dicom_read::required_count(
            &obj,
            tags::TOTAL_PIXEL_MATRIX_ROWS,
            "TotalPixelMatrixRows",
        )?,
        frame_count: dicom_read::required_count(&obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?,
        anatomic_site,
    })
}

/// Collects the substances of every staining step of a specimen.
///
/// Each SpecimenPreparationSequence item is one step described by content items; a step is a
/// staining step when its "Processing type" is "Staining", and its "Using substance" items name
/// the stains, as a code or as text.
fn stain(specimen: &InMemDicomObject) -> Result<Option<String>, FormatError> {
    let mut substances = Vec::new();
    for step in dicom_read::items(specimen, tags::SPECIMEN_PREPARATION_SEQUENCE) {
        let content =
            dicom_read::items(step, tags::SPECIMEN_PREPARATION_STEP_CONTENT_ITEM_SEQUENCE);
        let mut is_staining = false;
        let mut step_substances = Vec::new();
        for item in content {
            let concept = dicom_read::code(item, tags::CONCEPT_NAME_CODE_SEQUENCE)?;
            let concept = concept.and_then(|c| c.value);
            let coded_value = dicom_read::code(item, tags::CONCEPT_CODE_SEQUENCE)?;
            match concept.as_deref() {
                Some(PROCESSING_TYPE) => {
                    is_staining |=
                        coded_value.is_some_and(|c| c.value.as_deref() == Some(STAINING));
                }
                Some(USING_SUBSTANCE) => {
                    let name = match coded_value {
                        Some(code) => code.meaning.or(code.value),
                        None => dicom_read::text(item, tags::TEXT_VALUE, "TextValue")?,
                    };
                    step_substances.extend(name);
                }
                _ => {}
            }
        }
        if is_staining {
            substances.append(&mut step_substances);
        }
    }
    Ok((!substances.is_empty()).then(|| substances.join(", ")))
}

/// Converts a DICOM date (`YYYYMMDD`) to ISO 8601 (`YYYY-MM-DD`).
fn iso_date(date: &str) -> Result<String, FormatError> {
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]))
    } else {
        Err(FormatError::BadElement {
            element: "StudyDate",
            reason: format!("{date:?} is not a YYYYMMDD date"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dicom_dates_become_iso_dates() {
        assert_eq!(iso_date("20040119").unwrap(), "2004-01-19");
        assert!(iso_date("2004.01.19").is_err());
    }
}
