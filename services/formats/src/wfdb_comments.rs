//! Reads the patient's age, sex and diagnoses out of WFDB header comments.
//!
//! WFDB leaves comments free-form, and each database fills them its own way. Three layouts
//! occur in the data telerelay sees, and they are told apart in this order:
//!
//! 1. `Key: value` fields with an `Age`, `Sex` or `Dx` key (PhysioNet Challenge 2021, PTB).
//!    Diagnoses come from `Dx` (comma-separated SNOMED CT codes) and from PTB's
//!    `Reason for admission` and `Additional diagnoses`.
//! 2. MIT-BIH: a line `<age> <sex> ...`, then a line of medications, then clinical notes,
//!    which become one free-text diagnosis.
//! 3. Anything else: every comment line is taken as a free-text diagnosis (CPSC 2021 writes
//!    just the rhythm, e.g. `persistent atrial fibrillation`).

use crate::Sex;

/// What the comments say about the patient.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct HeaderFacts {
    pub age_years: Option<u32>,
    pub sex: Option<Sex>,
    pub diagnoses: Vec<String>,
}

/// Keys whose presence marks a header as using `Key: value` comments.
const DEMOGRAPHIC_KEYS: [&str; 3] = ["age", "sex", "dx"];

/// PTB keys whose values are diagnoses in free text.
const FREE_TEXT_DIAGNOSIS_KEYS: [&str; 2] = ["reason for admission", "additional diagnoses"];

/// Values that PTB writes where it has nothing to say.
const PLACEHOLDER_VALUES: [&str; 5] = ["n/a", "na", "no", "none", "unknown"];

/// Interprets the comment lines of one header.
pub(crate) fn interpret(comments: &[String]) -> HeaderFacts {
    let fields: Vec<(String, &str)> = comments.iter().filter_map(|c| split_field(c)).collect();
    if fields
        .iter()
        .any(|(key, _)| DEMOGRAPHIC_KEYS.contains(&key.as_str()))
    {
        return from_fields(&fields);
    }
    if let Some(position) = comments
        .iter()
        .position(|c| mitbih_demographics(c).is_some())
    {
        return from_mitbih(comments, position);
    }
    HeaderFacts {
        diagnoses: comments.iter().filter(|c| !c.is_empty()).cloned().collect(),
        ..HeaderFacts::default()
    }
}

/// Splits `Key: value` into a lower-case key and the trimmed value.
fn split_field(comment: &str) -> Option<(String, &str)> {
    let (key, value) = comment.split_once(':')?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.trim()))
}

fn from_fields(fields: &[(String, &str)]) -> HeaderFacts {
    let mut facts = HeaderFacts::default();
    for (key, value) in fields {
        match key.as_str() {
            "age" => facts.age_years = value.parse().ok(),
            "sex" => facts.sex = parse_sex(value),
            "dx" => facts.diagnoses.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|code| !code.is_empty())
                    .map(str::to_owned),
            ),
            key if FREE_TEXT_DIAGNOSIS_KEYS.contains(&key) && is_meaningful(value) => {
                facts.diagnoses.push((*value).to_owned());
            }
            _ => {}
        }
    }
    facts
}

fn from_mitbih(comments: &[String], position: usize) -> HeaderFacts {
    let (age_years, sex) = mitbih_demographics(&comments[position]).unwrap_or((None, None));
    // The line after the demographics lists medications; the notes after it wrap over several
    // comment lines and read as one statement.
    let notes = comments
        .iter()
        .skip(position + 2)
        .flat_map(|line| line.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    HeaderFacts {
        age_years,
        sex,
        diagnoses: if notes.is_empty() {
            Vec::new()
        } else {
            vec![notes]
        },
    }
}

/// Recognises MIT-BIH's `<age> <M|F> ...` line, where an age of `-1` means unknown.
fn mitbih_demographics(comment: &str) -> Option<(Option<u32>, Option<Sex>)> {
    let mut tokens = comment.split_whitespace();
    let age: i64 = tokens.next()?.parse().ok()?;
    let sex = match tokens.next()? {
        "M" => Sex::Male,
        "F" => Sex::Female,
        _ => return None,
    };
    Some((u32::try_from(age).ok(), Some(sex)))
}

fn parse_sex(value: &str) -> Option<Sex> {
    match value.to_ascii_lowercase().as_str() {
        "" => None,
        "female" | "f" => Some(Sex::Female),
        "male" | "m" => Some(Sex::Male),
        _ => Some(Sex::Unknown),
    }
}

fn is_meaningful(value: &str) -> bool {
    !value.is_empty() && !PLACEHOLDER_VALUES.contains(&value.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn challenge_fields_give_age_sex_and_snomed_codes() {
        let facts = interpret(&lines(&[
            "Age: 78",
            "Sex: Male",
            "Dx: 67741000119109,426177001",
            "Rx: Unknown",
        ]));
        assert_eq!(facts.age_years, Some(78));
        assert_eq!(facts.sex, Some(Sex::Male));
        assert_eq!(facts.diagnoses, ["67741000119109", "426177001"]);
    }

    #[test]
    fn unknown_age_and_sex_are_kept_apart() {
        let facts = interpret(&lines(&["Age: NaN", "Sex: Unknown"]));
        assert_eq!(facts.age_years, None);
        assert_eq!(facts.sex, Some(Sex::Unknown));
    }

    #[test]
    fn ptb_reason_for_admission_is_a_diagnosis_and_placeholders_are_not() {
        let facts = interpret(&lines(&[
            "age: 81",
            "sex: female",
            "Diagnose:",
            "Reason for admission: Myocardial infarction",
            "Additional diagnoses: n/a",
        ]));
        assert_eq!(facts.sex, Some(Sex::Female));
        assert_eq!(facts.diagnoses, ["Myocardial infarction"]);
    }

    #[test]
    fn mitbih_demographics_and_wrapped_notes_are_read() {
        let facts = interpret(&lines(&[
            "unnecessary comment",
            "23 F 2546 N/A x1",
            "None",
            "The PVCs are uniform.  The couplets are",
            "often seen in a bigeminal pattern.",
        ]));
        assert_eq!(facts.age_years, Some(23));
        assert_eq!(facts.sex, Some(Sex::Female));
        assert_eq!(
            facts.diagnoses,
            ["The PVCs are uniform. The couplets are often seen in a bigeminal pattern."]
        );
    }

    #[test]
    fn mitbih_unknown_age_is_none() {
        let facts = interpret(&lines(&["-1 M 742 654 x1", "Diapres, Xyloprim"]));
        assert_eq!(facts.age_years, None);
        assert_eq!(facts.sex, Some(Sex::Male));
        assert!(facts.diagnoses.is_empty());
    }

    #[test]
    fn plain_comments_are_free_text_diagnoses() {
        let facts = interpret(&lines(&["persistent atrial fibrillation"]));
        assert_eq!(facts.diagnoses, ["persistent atrial fibrillation"]);
        assert_eq!(facts.sex, None);
    }
}
