//! The closed vocabularies of the workflow: the dossier [`Status`], the status-changing
//! [`TransitionKind`]s of DESIGN.md §3 and the [`CorrectionReason`] of a correction request.
//!
//! Each has a stable snake_case name (`as_str`, parsed back by `FromStr`) for the store and the
//! logs; the proto enums are mapped at the gRPC boundary, not here.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A stored name that matches no value of a vocabulary (a corrupt row or a newer writer).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {vocabulary} `{value}`")]
pub struct UnknownValue {
    /// Which vocabulary was parsed, e.g. "status".
    pub vocabulary: &'static str,
    /// The rejected text.
    pub value: String,
}

/// Status of a dossier (DESIGN.md §3). Archiving is a flag beside it, not a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Draft: visible to its owner and invitees only, never to an instructeur.
    Brouillon,
    /// Deposited; the promoteur may still edit it.
    EnConstruction,
    /// Under examination; content frozen.
    EnInstruction,
    /// Decided: accepted.
    Accepte,
    /// Decided: refused.
    Refuse,
    /// Decided: closed without follow-up.
    SansSuite,
}

impl Status {
    /// Every status, in the order of the workflow.
    pub const ALL: [Status; 6] = [
        Status::Brouillon,
        Status::EnConstruction,
        Status::EnInstruction,
        Status::Accepte,
        Status::Refuse,
        Status::SansSuite,
    ];

    /// Stable snake_case name (`brouillon`, `en_construction`, …), as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Brouillon => "brouillon",
            Status::EnConstruction => "en_construction",
            Status::EnInstruction => "en_instruction",
            Status::Accepte => "accepte",
            Status::Refuse => "refuse",
            Status::SansSuite => "sans_suite",
        }
    }

    /// French label completing « Le dossier est … » (« en instruction », « classé sans suite »).
    pub const fn label_fr(self) -> &'static str {
        match self {
            Status::Brouillon => "en brouillon",
            Status::EnConstruction => "en construction",
            Status::EnInstruction => "en instruction",
            Status::Accepte => "accepté",
            Status::Refuse => "refusé",
            Status::SansSuite => "classé sans suite",
        }
    }

    /// Whether a decision was taken (accepté, refusé, classé sans suite).
    pub const fn is_decided(self) -> bool {
        match self {
            Status::Accepte | Status::Refuse | Status::SansSuite => true,
            Status::Brouillon | Status::EnConstruction | Status::EnInstruction => false,
        }
    }

    /// Whether the dossier was deposited, i.e. is no longer a brouillon (instructeurs see it).
    pub const fn is_deposited(self) -> bool {
        !matches!(self, Status::Brouillon)
    }

    /// Whether the content is frozen (invariant I1): en instruction or decided.
    pub const fn is_frozen(self) -> bool {
        match self {
            Status::EnInstruction | Status::Accepte | Status::Refuse | Status::SansSuite => true,
            Status::Brouillon | Status::EnConstruction => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownValue {
                vocabulary: "status",
                value: s.to_owned(),
            })
    }
}

/// A status-changing command of DESIGN.md §3, as recorded in a traitement and carried by
/// `DossierStatusChanged.transition`. Correction resolution, archive and unarchive change no
/// status and are not transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransitionKind {
    /// brouillon → en_construction, by the owner.
    Deposer,
    /// en_construction → en_instruction, by an instructeur of the dossier's groupe.
    PasserEnInstruction,
    /// en_construction → en_instruction, by the system at the procedure's closing date.
    PasserEnInstructionAuto,
    /// en_instruction → en_construction.
    RepasserEnConstruction,
    /// en_instruction → en_construction with a pending correction request.
    DemanderCorrection,
    /// en_instruction → accepte.
    Accepter,
    /// en_instruction → refuse.
    Refuser,
    /// en_instruction → sans_suite.
    ClasserSansSuite,
    /// accepte | refuse | sans_suite → en_instruction.
    RepasserEnInstruction,
}

impl TransitionKind {
    /// Every transition, in the order of the proto enum.
    pub const ALL: [TransitionKind; 9] = [
        TransitionKind::Deposer,
        TransitionKind::PasserEnInstruction,
        TransitionKind::PasserEnInstructionAuto,
        TransitionKind::RepasserEnConstruction,
        TransitionKind::DemanderCorrection,
        TransitionKind::Accepter,
        TransitionKind::Refuser,
        TransitionKind::ClasserSansSuite,
        TransitionKind::RepasserEnInstruction,
    ];

    /// Stable snake_case name (`deposer`, `passer_en_instruction`, …), as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Deposer => "deposer",
            TransitionKind::PasserEnInstruction => "passer_en_instruction",
            TransitionKind::PasserEnInstructionAuto => "passer_en_instruction_auto",
            TransitionKind::RepasserEnConstruction => "repasser_en_construction",
            TransitionKind::DemanderCorrection => "demander_correction",
            TransitionKind::Accepter => "accepter",
            TransitionKind::Refuser => "refuser",
            TransitionKind::ClasserSansSuite => "classer_sans_suite",
            TransitionKind::RepasserEnInstruction => "repasser_en_instruction",
        }
    }

    /// The status a dossier has after this transition (each transition has exactly one target).
    pub const fn target(self) -> Status {
        match self {
            TransitionKind::Deposer
            | TransitionKind::RepasserEnConstruction
            | TransitionKind::DemanderCorrection => Status::EnConstruction,
            TransitionKind::PasserEnInstruction
            | TransitionKind::PasserEnInstructionAuto
            | TransitionKind::RepasserEnInstruction => Status::EnInstruction,
            TransitionKind::Accepter => Status::Accepte,
            TransitionKind::Refuser => Status::Refuse,
            TransitionKind::ClasserSansSuite => Status::SansSuite,
        }
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransitionKind {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransitionKind::ALL
            .into_iter()
            .find(|transition| transition.as_str() == s)
            .ok_or_else(|| UnknownValue {
                vocabulary: "transition",
                value: s.to_owned(),
            })
    }
}

/// Why an instructeur asks for a correction. The proto's UNSPECIFIED has no counterpart: the
/// boundary rejects it as a missing argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CorrectionReason {
    /// An answer is wrong.
    Incorrect,
    /// An answer or a document is missing.
    Incomplete,
    /// A document is out of date.
    Outdated,
    /// Anything else; the message explains.
    Other,
}

impl CorrectionReason {
    /// Every reason.
    pub const ALL: [CorrectionReason; 4] = [
        CorrectionReason::Incorrect,
        CorrectionReason::Incomplete,
        CorrectionReason::Outdated,
        CorrectionReason::Other,
    ];

    /// Stable snake_case name, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            CorrectionReason::Incorrect => "incorrect",
            CorrectionReason::Incomplete => "incomplete",
            CorrectionReason::Outdated => "outdated",
            CorrectionReason::Other => "other",
        }
    }

    /// French label shown to the promoteur.
    pub const fn label_fr(self) -> &'static str {
        match self {
            CorrectionReason::Incorrect => "Des informations sont incorrectes",
            CorrectionReason::Incomplete => "Le dossier est incomplet",
            CorrectionReason::Outdated => "Un document n'est plus à jour",
            CorrectionReason::Other => "Autre motif",
        }
    }
}

impl fmt::Display for CorrectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CorrectionReason {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CorrectionReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownValue {
                vocabulary: "correction reason",
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_value() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for transition in TransitionKind::ALL {
            assert_eq!(
                transition.as_str().parse::<TransitionKind>(),
                Ok(transition)
            );
        }
        for reason in CorrectionReason::ALL {
            assert_eq!(reason.as_str().parse::<CorrectionReason>(), Ok(reason));
        }
    }

    #[test]
    fn an_unknown_name_is_rejected_with_its_vocabulary() {
        let err = "Accepte".parse::<Status>().unwrap_err();
        assert_eq!(err.vocabulary, "status");
        assert_eq!(err.value, "Accepte");
        assert!("".parse::<TransitionKind>().is_err());
        assert!("unspecified".parse::<CorrectionReason>().is_err());
    }

    #[test]
    fn status_names_and_french_labels_are_the_documented_ones() {
        let names: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "brouillon",
                "en_construction",
                "en_instruction",
                "accepte",
                "refuse",
                "sans_suite"
            ]
        );
        let labels: Vec<_> = Status::ALL.iter().map(|s| s.label_fr()).collect();
        assert_eq!(
            labels,
            [
                "en brouillon",
                "en construction",
                "en instruction",
                "accepté",
                "refusé",
                "classé sans suite"
            ]
        );
    }

    #[test]
    fn only_accepte_refuse_and_sans_suite_are_decided() {
        let decided: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_decided()).collect();
        assert_eq!(
            decided,
            [Status::Accepte, Status::Refuse, Status::SansSuite]
        );
        let frozen: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_frozen()).collect();
        assert_eq!(
            frozen,
            [
                Status::EnInstruction,
                Status::Accepte,
                Status::Refuse,
                Status::SansSuite
            ]
        );
        assert!(!Status::Brouillon.is_deposited());
        assert!(Status::EnConstruction.is_deposited());
    }

    #[test]
    fn each_transition_targets_the_status_of_design_section_3() {
        use TransitionKind as T;
        let targets: Vec<_> = T::ALL.iter().map(|t| (*t, t.target())).collect();
        assert_eq!(
            targets,
            [
                (T::Deposer, Status::EnConstruction),
                (T::PasserEnInstruction, Status::EnInstruction),
                (T::PasserEnInstructionAuto, Status::EnInstruction),
                (T::RepasserEnConstruction, Status::EnConstruction),
                (T::DemanderCorrection, Status::EnConstruction),
                (T::Accepter, Status::Accepte),
                (T::Refuser, Status::Refuse),
                (T::ClasserSansSuite, Status::SansSuite),
                (T::RepasserEnInstruction, Status::EnInstruction),
            ]
        );
    }
}
