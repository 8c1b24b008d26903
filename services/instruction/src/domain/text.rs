//! Free texts of the workflow commands: the [`Motivation`] of a decision and the [`Message`] to
//! the promoteur (correction request, return to construction, re-opening).
//!
//! Parse, don't validate: a command can only carry a text that passed [`Motivation::parse`] or
//! [`Message::parse`], so [`super::workflow::apply`] never sees a blank, oversized or binary one.
//! Both are plain text: trimmed, at most [`MAX_TEXT_CHARS`] characters, no control character
//! other than line breaks and tabs (a NUL byte would fail in PostgreSQL `text` and in emails).

use std::fmt;

use thiserror::Error;

/// Maximum length of a motivation or message, in Unicode characters (the proto's "at most
/// 10 000 characters").
pub const MAX_TEXT_CHARS: usize = 10_000;

/// Which request field a text came from; names the field in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextField {
    /// `motivation` of Accepter / Refuser / ClasserSansSuite.
    Motivation,
    /// `message` of DemanderCorrection / RepasserEnConstruction / RepasserEnInstruction.
    Message,
}

impl TextField {
    /// Name of the request field, for `BadRequest` field violations.
    pub const fn as_str(self) -> &'static str {
        match self {
            TextField::Motivation => "motivation",
            TextField::Message => "message",
        }
    }

    /// French noun with its article, capitalised (« La motivation », « Le message »).
    const fn subject_fr(self) -> &'static str {
        match self {
            TextField::Motivation => "La motivation",
            TextField::Message => "Le message",
        }
    }

    /// Past participle of « saisir » agreeing with the noun (« saisie », « saisi »).
    const fn typed_fr(self) -> &'static str {
        match self {
            TextField::Motivation => "saisie",
            TextField::Message => "saisi",
        }
    }
}

impl fmt::Display for TextField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected motivation or message: an invalid argument (INVALID_ARGUMENT with a field
/// violation on [`TextError::field`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// Empty or only whitespace where a text is required.
    #[error("{field} is required")]
    Required {
        /// The field.
        field: TextField,
    },
    /// Longer than [`MAX_TEXT_CHARS`] after trimming.
    #[error("{field} has {chars} characters, more than {MAX_TEXT_CHARS}")]
    TooLong {
        /// The field.
        field: TextField,
        /// Its length in characters.
        chars: usize,
    },
    /// Contains a control character other than `\n`, `\r` and `\t`.
    #[error("{field} contains a control character")]
    ControlCharacter {
        /// The field.
        field: TextField,
    },
}

impl TextError {
    /// The request field at fault.
    pub const fn field(&self) -> TextField {
        match self {
            TextError::Required { field }
            | TextError::TooLong { field, .. }
            | TextError::ControlCharacter { field } => *field,
        }
    }

    /// Stable machine reason, e.g. `MOTIVATION_REQUIRED`, `MESSAGE_TOO_LONG`.
    pub const fn reason(&self) -> &'static str {
        match self {
            TextError::Required {
                field: TextField::Motivation,
            } => "MOTIVATION_REQUIRED",
            TextError::Required {
                field: TextField::Message,
            } => "MESSAGE_REQUIRED",
            TextError::TooLong {
                field: TextField::Motivation,
                ..
            } => "MOTIVATION_TOO_LONG",
            TextError::TooLong {
                field: TextField::Message,
                ..
            } => "MESSAGE_TOO_LONG",
            TextError::ControlCharacter {
                field: TextField::Motivation,
            } => "MOTIVATION_INVALID_CHARACTER",
            TextError::ControlCharacter {
                field: TextField::Message,
            } => "MESSAGE_INVALID_CHARACTER",
        }
    }

    /// French description for the user (the `BadRequest` violation description).
    pub fn message_fr(&self) -> String {
        let subject = self.field().subject_fr();
        match self {
            TextError::Required { .. } => format!("{subject} est obligatoire"),
            TextError::TooLong { field, chars } => format!(
                "{subject} ne doit pas dépasser {} caractères ({} {})",
                group_thousands_fr(MAX_TEXT_CHARS),
                group_thousands_fr(*chars),
                field.typed_fr(),
            ),
            TextError::ControlCharacter { .. } => {
                format!("{subject} contient un caractère de contrôle non autorisé")
            }
        }
    }
}

/// `12345` → `12 345` (French digit grouping, with a no-break space).
fn group_thousands_fr(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 2);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{a0}');
        }
        out.push(digit);
    }
    out
}

/// Trims `raw` and checks it; `Ok(None)` when blank.
fn parse_text(field: TextField, raw: &str) -> Result<Option<String>, TextError> {
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(TextError::ControlCharacter { field });
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(TextError::TooLong { field, chars });
    }
    Ok(Some(text.to_owned()))
}

macro_rules! plain_text {
    ($(#[$doc:meta])* $name:ident, $field:expr, $sample:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses a required text: trimmed, non-blank, at most [`MAX_TEXT_CHARS`]
            /// characters, no control character but line breaks and tabs.
            pub fn parse(raw: &str) -> Result<Self, TextError> {
                parse_text($field, raw)?
                    .map(Self)
                    .ok_or(TextError::Required { field: $field })
            }

            /// Parses an optional text: blank (proto3's empty string) is `None`, anything else
            /// as [`Self::parse`].
            pub fn parse_optional(raw: &str) -> Result<Option<Self>, TextError> {
                Ok(parse_text($field, raw)?.map(Self))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, owned.
            pub fn into_string(self) -> String {
                self.0
            }

            /// A fixed valid text for [`super::table`]'s sample commands (checked by a test).
            pub(super) fn sample() -> Self {
                Self(String::from($sample))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

plain_text!(
    /// Motivation of a decision: required to refuse or close without follow-up, optional to
    /// accept. Sent to the promoteur in the decision email.
    Motivation,
    TextField::Motivation,
    "Le projet ne correspond pas aux critères de l'appel à projets."
);

plain_text!(
    /// Message to the promoteur: required with a correction request, optional when the dossier
    /// is sent back en construction or re-opened.
    Message,
    TextField::Message,
    "Merci de joindre le budget prévisionnel signé."
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_text_is_trimmed() {
        let motivation = Motivation::parse("  Budget insuffisant.\n").unwrap();
        assert_eq!(motivation.as_str(), "Budget insuffisant.");
        assert_eq!(motivation.to_string(), "Budget insuffisant.");
    }

    #[test]
    fn a_blank_required_text_is_rejected_naming_its_field() {
        let err = Motivation::parse(" \n\t ").unwrap_err();
        assert_eq!(
            err,
            TextError::Required {
                field: TextField::Motivation
            }
        );
        assert_eq!(err.reason(), "MOTIVATION_REQUIRED");
        assert_eq!(err.field().as_str(), "motivation");
        assert_eq!(err.message_fr(), "La motivation est obligatoire");

        let err = Message::parse("").unwrap_err();
        assert_eq!(err.reason(), "MESSAGE_REQUIRED");
        assert_eq!(err.field().as_str(), "message");
        assert_eq!(err.message_fr(), "Le message est obligatoire");
    }

    #[test]
    fn a_blank_optional_text_is_none() {
        assert_eq!(Motivation::parse_optional("").unwrap(), None);
        assert_eq!(Message::parse_optional("   ").unwrap(), None);
        assert_eq!(
            Message::parse_optional(" Bonjour ").unwrap(),
            Some(Message::parse("Bonjour").unwrap())
        );
    }

    #[test]
    fn ten_thousand_characters_are_accepted_and_one_more_is_rejected() {
        // Multi-byte characters: the limit counts characters, not bytes.
        let at_limit = "é".repeat(MAX_TEXT_CHARS);
        assert!(Motivation::parse(&at_limit).is_ok());
        let over = "é".repeat(MAX_TEXT_CHARS + 1);
        let err = Motivation::parse(&over).unwrap_err();
        assert_eq!(
            err,
            TextError::TooLong {
                field: TextField::Motivation,
                chars: MAX_TEXT_CHARS + 1
            }
        );
        assert_eq!(err.reason(), "MOTIVATION_TOO_LONG");
        assert_eq!(
            err.message_fr(),
            "La motivation ne doit pas dépasser 10\u{a0}000 caractères (10\u{a0}001 saisie)"
        );
        let err = Message::parse_optional(&over).unwrap_err();
        assert_eq!(err.reason(), "MESSAGE_TOO_LONG");
        assert_eq!(
            err.message_fr(),
            "Le message ne doit pas dépasser 10\u{a0}000 caractères (10\u{a0}001 saisi)"
        );
    }

    #[test]
    fn surrounding_whitespace_does_not_count_towards_the_limit() {
        let padded = format!("   {}   ", "a".repeat(MAX_TEXT_CHARS));
        assert_eq!(
            Message::parse(&padded).unwrap().as_str().len(),
            MAX_TEXT_CHARS
        );
    }

    #[test]
    fn control_characters_are_rejected_but_line_breaks_and_tabs_are_kept() {
        let err = Motivation::parse("refusé\u{0}").unwrap_err();
        assert_eq!(err.reason(), "MOTIVATION_INVALID_CHARACTER");
        assert_eq!(
            err.message_fr(),
            "La motivation contient un caractère de contrôle non autorisé"
        );
        assert_eq!(
            Message::parse("a\u{1b}[31m").unwrap_err().reason(),
            "MESSAGE_INVALID_CHARACTER"
        );
        assert_eq!(
            Message::parse("Ligne 1\r\n\tLigne 2").unwrap().as_str(),
            "Ligne 1\r\n\tLigne 2"
        );
    }

    #[test]
    fn the_sample_texts_are_valid() {
        let motivation = Motivation::sample();
        assert_eq!(Motivation::parse(motivation.as_str()), Ok(motivation));
        let message = Message::sample();
        assert_eq!(Message::parse(message.as_str()), Ok(message));
    }

    #[test]
    fn thousands_are_grouped_the_french_way() {
        assert_eq!(group_thousands_fr(0), "0");
        assert_eq!(group_thousands_fr(999), "999");
        assert_eq!(group_thousands_fr(1000), "1\u{a0}000");
        assert_eq!(group_thousands_fr(1_234_567), "1\u{a0}234\u{a0}567");
    }

    proptest! {
        #[test]
        fn a_parsed_text_always_satisfies_the_rules(raw in any::<String>()) {
            match Motivation::parse(&raw) {
                Ok(text) => {
                    let text = text.as_str();
                    prop_assert!(!text.is_empty());
                    prop_assert_eq!(text, raw.trim());
                    prop_assert!(text.chars().count() <= MAX_TEXT_CHARS);
                    prop_assert!(!text
                        .chars()
                        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
                }
                Err(TextError::Required { .. }) => prop_assert!(raw.trim().is_empty()),
                Err(TextError::TooLong { chars, .. }) => {
                    prop_assert!(chars > MAX_TEXT_CHARS);
                }
                Err(TextError::ControlCharacter { .. }) => {
                    prop_assert!(raw
                        .trim()
                        .chars()
                        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
                }
            }
        }

        #[test]
        fn optional_and_required_parsing_agree(raw in any::<String>()) {
            match (Message::parse(&raw), Message::parse_optional(&raw)) {
                (Ok(required), Ok(Some(optional))) => prop_assert_eq!(required, optional),
                (Err(TextError::Required { .. }), Ok(None)) => {}
                (Err(required), Err(optional)) => prop_assert_eq!(required, optional),
                (required, optional) => {
                    prop_assert!(false, "disagree: {:?} vs {:?}", required, optional);
                }
            }
        }
    }
}
