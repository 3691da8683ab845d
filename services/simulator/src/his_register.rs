//! The county HIS's own register of its patients: the name and resident identity card number
//! (居民身份证号) behind each pseudonym, as every HIS holds them. The wire contract has no field
//! for either, so they stay in the county; only the pseudonym, age and sex travel.
//!
//! The register is written to a CSV file when `sim_his_register` names one (tests do, to prove
//! that no name or national id ever reaches the relay's logs); otherwise it is only generated.

use chrono::{Datelike as _, Months, Utc};
use contract::v1;
use rand::Rng as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

pub(crate) struct HisRegister {
    file: Option<Mutex<std::fs::File>>,
}

impl HisRegister {
    /// A register kept nowhere, for tests of the parts.
    #[cfg(test)]
    pub fn none() -> Self {
        Self { file: None }
    }

    /// A register that writes to `path` (created or truncated, with a header line), or to none.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => {
                let mut file = std::fs::File::create(path)?;
                writeln!(file, "pseudonym,name,national_id")?;
                Some(Mutex::new(file))
            }
            None => None,
        };
        Ok(Self { file })
    }

    /// Registers a new patient of `origin` under `patient`'s pseudonym: a name and a national id
    /// consistent with the patient's age and sex.
    pub fn admit(&self, patient: &v1::Patient) {
        let Some(file) = &self.file else {
            return;
        };
        let female = patient.sex == v1::Sex::Female as i32;
        let line = format!(
            "{},{},{}\n",
            patient.pseudonym,
            name(female),
            national_id(patient.age_years, female)
        );
        if let Ok(mut file) = file.lock() {
            // A register that cannot be written only weakens a test's search; it must not stop
            // the county's publishing.
            let _ = file.write_all(line.as_bytes());
        }
    }
}

const SURNAMES: [&str; 12] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "向", "田",
];
const GIVEN_FEMALE: [&str; 8] = [
    "秀英", "桂英", "玉兰", "丽华", "春梅", "小红", "淑珍", "海燕",
];
const GIVEN_MALE: [&str; 8] = [
    "建国", "志强", "国华", "德明", "永福", "卫东", "海波", "长生",
];

fn name(female: bool) -> String {
    let mut rng = rand::rng();
    let given = if female { &GIVEN_FEMALE } else { &GIVEN_MALE };
    format!(
        "{}{}",
        SURNAMES[rng.random_range(0..SURNAMES.len())],
        given[rng.random_range(0..given.len())]
    )
}

/// An 18-character resident identity card number (GB 11643-1999): a Huaihua area code, the
/// birth date, a sequence whose last digit is odd for men and even for women, and the
/// ISO 7064 MOD 11-2 check character.
fn national_id(age_years: u32, female: bool) -> String {
    let mut rng = rand::rng();
    let birth = Utc::now()
        .date_naive()
        .checked_sub_months(Months::new(age_years * 12 + rng.random_range(0..12)))
        .unwrap_or_default();
    let sequence = rng.random_range(0..50u32) * 2 + u32::from(!female) + 100;
    let body = format!(
        "431202{:04}{:02}{:02}{sequence:03}",
        birth.year(),
        birth.month(),
        birth.day()
    );
    format!("{body}{}", check_character(&body))
}

fn check_character(body: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .chars()
        .filter_map(|c| c.to_digit(10))
        .zip(WEIGHTS)
        .map(|(digit, weight)| digit * weight)
        .sum();
    ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn national_ids_have_the_official_form_and_check_character() {
        // The standard's worked example.
        assert_eq!(check_character("11010519491231002"), 'X');
        let id = national_id(64, true);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("431202"));
        let sequence_last = id[16..17].parse::<u32>().unwrap_or(1);
        assert_eq!(sequence_last % 2, 0, "women have an even sequence: {id}");
        assert_eq!(id.chars().last(), Some(check_character(&id[..17])));
    }
}
