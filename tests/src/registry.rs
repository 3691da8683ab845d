//! The registry the tests run against: three origins, one provincial hospital with a pool per
//! kind, and the alliance ECG centre as the province-wide backup for ECGs only.

use store::registry::{
    HospitalEntry, KindBackupEntry, PairingEntry, PoolEntry, RegistryFile, ReviewerEntry,
};

/// Paired with Xiangya for every kind.
pub const HOSPITAL_A: &str = "HN-HH-001";
/// Registered, paired, but never the test's broker user: requests "from" it are forgeries.
pub const HOSPITAL_B: &str = "HN-ZJJ-001";
/// Registered without any pairing: its ECGs fall to the backup pool, its imaging has none.
pub const HOSPITAL_C: &str = "HN-SY-001";

/// Reviewer bearer tokens.
pub mod tokens {
    pub const ECG: &str = "test-token-xy-ecg-liu";
    pub const ECG_SECOND: &str = "test-token-xy-ecg-tan";
    pub const IMAGING: &str = "test-token-xy-img-chen";
    pub const PATHOLOGY: &str = "test-token-xy-path-wang";
    pub const BACKUP_ECG: &str = "test-token-pph-ecg-guo";
}

/// The test registry, with `guest_hospital` publishing as the broker user `guest` (the user the
/// tests connect as); the other hospitals get users nobody connects as.
pub fn test_registry(guest_hospital: &str) -> RegistryFile {
    let hospital = |code: &str, name: &str| HospitalEntry {
        code: code.into(),
        name: name.into(),
        broker_user: Some(if code == guest_hospital {
            "guest".into()
        } else {
            format!("{}-his", code.to_lowercase())
        }),
    };
    let pool = |code: &str, hospital: &str, kind: &str| PoolEntry {
        code: code.into(),
        hospital: hospital.into(),
        kind: kind.into(),
        name: code.into(),
        subspecialty: None,
    };
    let reviewer = |id: &str, pool: &str, token: &str| ReviewerEntry {
        id: id.into(),
        pool: pool.into(),
        name: id.into(),
        token: token.into(),
    };
    let pairing = |origin: &str, kind: &str, pool: &str| PairingEntry {
        origin: origin.into(),
        department: None,
        kind: kind.into(),
        subspecialty: None,
        pool: pool.into(),
        backups: vec![],
    };
    RegistryFile {
        hospitals: vec![
            hospital("HN-XY", "Xiangya"),
            hospital("HN-PPH", "Provincial People's Hospital"),
            hospital(HOSPITAL_A, "Huaihua"),
            hospital(HOSPITAL_B, "Zhangjiajie"),
            hospital(HOSPITAL_C, "Shaoyang"),
        ],
        pools: vec![
            pool("xy-ecg", "HN-XY", "ecg"),
            pool("xy-imaging", "HN-XY", "imaging"),
            pool("xy-pathology", "HN-XY", "pathology"),
            pool("pph-ecg", "HN-PPH", "ecg"),
        ],
        reviewers: vec![
            reviewer("xy-ecg-liu", "xy-ecg", tokens::ECG),
            reviewer("xy-ecg-tan", "xy-ecg", tokens::ECG_SECOND),
            reviewer("xy-img-chen", "xy-imaging", tokens::IMAGING),
            reviewer("xy-path-wang", "xy-pathology", tokens::PATHOLOGY),
            reviewer("pph-ecg-guo", "pph-ecg", tokens::BACKUP_ECG),
        ],
        pairings: vec![
            pairing(HOSPITAL_A, "ecg", "xy-ecg"),
            pairing(HOSPITAL_A, "imaging", "xy-imaging"),
            pairing(HOSPITAL_A, "pathology", "xy-pathology"),
            pairing(HOSPITAL_B, "ecg", "xy-ecg"),
        ],
        kind_backup: vec![KindBackupEntry {
            kind: "ecg".into(),
            pool: "pph-ecg".into(),
        }],
    }
}
