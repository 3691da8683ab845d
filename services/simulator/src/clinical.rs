//! The words of the simulation: requesting departments, clinical questions, and what reviewers
//! write back. Nothing here names or identifies a patient; questions read like a county
//! clinician's order and reports like a provincial reviewer's.

use domain::StudyKind;

/// A requesting department and the questions it asks, urgent and non-urgent.
pub(crate) struct Department {
    pub code: &'static str,
    /// Optional subspecialty hint for routing.
    pub subspecialty: &'static str,
    pub urgent_questions: &'static [&'static str],
    pub routine_questions: &'static [&'static str],
}

const ECG_DEPARTMENTS: &[Department] = &[
    Department {
        code: "emergency",
        subspecialty: "",
        urgent_questions: &[
            "chest pain 2 h, rule out STEMI",
            "epigastric pain with sweating 1 h, rule out inferior MI",
            "palpitations and presyncope, rule out VT",
            "syncope at home, rule out complete heart block",
        ],
        routine_questions: &["dizziness since yesterday, assess rhythm"],
    },
    Department {
        code: "cardiology",
        subspecialty: "",
        urgent_questions: &["recurrent chest tightness after PCI, new ischaemia?"],
        routine_questions: &[
            "intermittent palpitations, assess for atrial fibrillation",
            "hypertension follow-up, LVH?",
            "follow-up after PCI, compare with previous ECG",
        ],
    },
    Department {
        code: "internal-medicine",
        subspecialty: "",
        urgent_questions: &["hyperkalaemia on admission, ECG changes?"],
        routine_questions: &[
            "pre-operative assessment before cholecystectomy",
            "type 2 diabetes annual review",
            "QT check after starting a macrolide",
        ],
    },
];

const IMAGING_DEPARTMENTS: &[Department] = &[
    Department {
        code: "emergency",
        subspecialty: "neuro",
        urgent_questions: &[
            "sudden left-sided weakness 90 min, rule out haemorrhage before thrombolysis",
            "head injury after a fall, GCS 13, rule out intracranial bleed",
            "thunderclap headache, rule out subarachnoid haemorrhage",
        ],
        routine_questions: &["persistent headache for 3 weeks, space-occupying lesion?"],
    },
    Department {
        code: "neurology",
        subspecialty: "neuro",
        urgent_questions: &["acute aphasia 3 h, rule out stroke"],
        routine_questions: &[
            "chronic headache, structural lesion?",
            "follow-up of known lacunar infarcts",
        ],
    },
    Department {
        code: "oncology",
        subspecialty: "oncology",
        urgent_questions: &["new confusion in known lung cancer, brain metastases?"],
        routine_questions: &[
            "staging after three cycles of chemotherapy, response?",
            "follow-up of known lesion, compare with previous study",
        ],
    },
];

const PATHOLOGY_DEPARTMENTS: &[Department] = &[
    Department {
        code: "surgery",
        subspecialty: "",
        urgent_questions: &[
            "frozen section: margin status",
            "frozen section: benign or malignant?",
            "frozen section: sentinel lymph node, metastasis?",
        ],
        routine_questions: &[
            "resection specimen, grade and stage",
            "biopsy of mass, rule out malignancy",
        ],
    },
    Department {
        code: "gynaecology",
        subspecialty: "gyn",
        urgent_questions: &["frozen section: ovarian mass, benign or malignant?"],
        routine_questions: &[
            "endometrial biopsy for abnormal uterine bleeding",
            "cervical biopsy after abnormal cytology",
        ],
    },
];

pub(crate) fn departments(kind: StudyKind) -> &'static [Department] {
    match kind {
        StudyKind::Ecg => ECG_DEPARTMENTS,
        StudyKind::Imaging => IMAGING_DEPARTMENTS,
        StudyKind::Pathology => PATHOLOGY_DEPARTMENTS,
    }
}

/// SNOMED CT codes found in the catalogue's `Dx:` lines, in a reviewer's words.
const SNOMED_STATEMENTS: &[(&str, &str)] = &[
    ("426783006", "sinus rhythm"),
    ("426177001", "sinus bradycardia"),
    ("427084000", "sinus tachycardia"),
    ("427393009", "sinus arrhythmia"),
    ("284470004", "premature atrial contractions"),
    ("427172004", "premature ventricular contractions"),
    ("251187003", "atrial escape beats"),
    ("59118001", "right bundle branch block"),
    ("713426002", "incomplete right bundle branch block"),
    ("698252002", "nonspecific intraventricular conduction delay"),
    ("164873001", "left ventricular hypertrophy"),
    ("55827005", "left ventricular high voltage"),
    ("89792004", "right ventricular hypertrophy"),
    ("67741000119109", "left atrial enlargement"),
    ("253352002", "left atrial abnormality"),
    ("111975006", "prolonged QT interval"),
    ("164934002", "T wave abnormality"),
    ("59931005", "T wave inversion"),
    ("55930002", "ST segment changes"),
    ("428750005", "nonspecific ST-T abnormality"),
];

/// Free-text statements from device and header notes, in a reviewer's words.
const TEXT_STATEMENTS: &[(&str, &str)] = &[
    ("ritmo sinusale", "sinus rhythm"),
    ("ecg normale", "normal ECG"),
    ("sinus rhythm", "sinus rhythm"),
    (
        "paroxysmal atrial fibrillation",
        "paroxysmal atrial fibrillation",
    ),
    ("persistent atrial fibrillation", "atrial fibrillation"),
    ("non atrial fibrillation", "sinus rhythm"),
    (
        "pvcs are multiform",
        "multiform premature ventricular contractions",
    ),
    (
        "pvcs are uniform",
        "uniform premature ventricular contractions",
    ),
    (
        "complete heart block",
        "paced rhythm (known complete heart block)",
    ),
    (
        "myocardial infarction",
        "ST elevation in the inferior and lateral leads",
    ),
];

/// The ECG statements a reviewer would write for a record's diagnoses, in order, without
/// repeats. Unknown codes and notes (medications, comorbidities) are left out.
pub(crate) fn ecg_statements(diagnoses: &[String]) -> Vec<&'static str> {
    let mut statements = Vec::new();
    for diagnosis in diagnoses {
        let lower = diagnosis.trim().to_ascii_lowercase();
        let coded = SNOMED_STATEMENTS
            .iter()
            .filter(|(code, _)| *code == lower)
            .map(|(_, text)| *text);
        let written = TEXT_STATEMENTS
            .iter()
            .filter(|(phrase, _)| lower.contains(phrase))
            .map(|(_, text)| *text);
        for statement in coded.chain(written) {
            if !statements.contains(&statement) {
                statements.push(statement);
            }
        }
    }
    statements
}

/// Findings a radiologist may write, by modality.
pub(crate) fn imaging_findings(modality: &str) -> &'static [&'static str] {
    match modality {
        "CT" => &[
            "No intracranial haemorrhage. Grey-white matter differentiation preserved. No midline shift.",
            "Small chronic lacunar infarcts in the basal ganglia. No acute haemorrhage.",
            "Mild generalised atrophy appropriate for age. Ventricles not dilated.",
        ],
        "MR" => &[
            "No restricted diffusion. No mass lesion. Normal flow voids.",
            "Scattered T2 hyperintensities in the white matter, consistent with small-vessel disease.",
        ],
        _ => &["Report reviewed against the referenced images; measurements confirmed."],
    }
}

pub(crate) const IMAGING_CONCLUSIONS: &[&str] = &[
    "No acute abnormality.",
    "Chronic small-vessel changes; no acute findings.",
    "No change compared with the previous study.",
];

pub(crate) const PATHOLOGY_FINDINGS: &[&str] = &[
    "Fibrofatty tissue with chronic inflammation. No atypia.",
    "Well-differentiated adenocarcinoma; lymphovascular invasion not identified.",
    "Reactive changes only; no dysplasia or malignancy.",
];

pub(crate) const FROZEN_FINDINGS: &[&str] = &[
    "Frozen section: margins free of tumour, closest margin 6 mm.",
    "Frozen section: benign; no malignancy seen. Defer to permanent sections.",
    "Frozen section: sentinel node negative for metastatic carcinoma.",
];

/// A critical value a reviewer of `kind` may find unexpectedly.
pub(crate) fn unexpected_critical(kind: StudyKind) -> &'static str {
    match kind {
        StudyKind::Ecg => "new third-degree AV block",
        StudyKind::Imaging => "acute intracranial haemorrhage",
        StudyKind::Pathology => "unexpected malignancy in frozen section",
    }
}

/// Why a reviewer of `kind` sends a request back, with the detail they would write.
/// What a reviewer adds to a signed report once a prior study or more history arrives.
pub(crate) fn addendum_text(kind: StudyKind) -> &'static str {
    match kind {
        StudyKind::Ecg => "Compared with the prior ECG sent by the origin: no interval change.",
        StudyKind::Imaging => "Prior study now available: the finding is unchanged in size.",
        StudyKind::Pathology => "Immunohistochemistry received; it supports the diagnosis above.",
    }
}

/// What a reviewer corrects in a signed report.
pub(crate) fn amendment_text(kind: StudyKind) -> &'static str {
    match kind {
        StudyKind::Ecg => {
            "QTc re-measured manually in lead II: corrected value within normal limits."
        }
        StudyKind::Imaging => {
            "Laterality corrected: the finding is in the left, not the right, lobe."
        }
        StudyKind::Pathology => {
            "Margin status corrected on review of the remaining slides: margins clear."
        }
    }
}

pub(crate) fn return_reason(
    kind: StudyKind,
    unreadable_signal: bool,
) -> (&'static str, &'static str) {
    match kind {
        _ if unreadable_signal => (
            "unreadable_signal",
            "baseline wander and muscle artefact obscure the ST segments; please repeat the ECG",
        ),
        StudyKind::Ecg => (
            "insufficient_clinical_info",
            "please state symptom onset and previous ECG findings",
        ),
        StudyKind::Imaging => (
            "missing_series",
            "contrast-enhanced series not in the study; please resend",
        ),
        StudyKind::Pathology => (
            "unsuitable_specimen",
            "tissue crushed and fragmented; please submit a new block",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_statements_translate_codes_and_notes_without_repeats() {
        let diagnoses = ["426783006", "55930002", "RITMO SINUSALE", "12345"].map(String::from);
        assert_eq!(
            ecg_statements(&diagnoses),
            ["sinus rhythm", "ST segment changes"]
        );
    }

    #[test]
    fn every_department_asks_questions_of_both_urgencies() {
        for kind in StudyKind::ALL {
            for department in departments(kind) {
                assert!(
                    !department.urgent_questions.is_empty(),
                    "{}",
                    department.code
                );
                assert!(
                    !department.routine_questions.is_empty(),
                    "{}",
                    department.code
                );
            }
        }
    }
}
