//! Checked identifiers and values: each newtype has a private field and is built only by its
//! `parse` (or by deserialising, which calls `parse`), so holding one proves it is well-formed
//! ("parse, don't validate"). Each parse error has a French `message_fr()` meant for end users.
//!
//! Existence of INSEE codes is not checked here (see [`super::geo::Geo`]); only their syntax is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Implements the string plumbing shared by every newtype: `as_str`, `Display`, `AsRef<str>`,
/// `FromStr`, `TryFrom<String>` (used by serde) and `From<Newtype> for String`.
macro_rules! string_newtype {
    ($name:ident, $error:ident) => {
        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = $error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl $error {
            /// The French message shown to the user.
            pub fn message_fr(&self) -> String {
                self.to_string()
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// FieldId
// ---------------------------------------------------------------------------------------------

/// Id of a form field, unique in a revision and stable across revisions: `^[a-z][a-z0-9_]{0,62}$`
/// (e.g. `p_siret`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldId(String);

/// Why a string is not a [`FieldId`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldIdError {
    /// The id is empty.
    #[error("L'identifiant du champ est vide")]
    Empty,
    /// More than 63 characters.
    #[error("L'identifiant du champ ne doit pas dépasser 63 caractères")]
    TooLong,
    /// Does not start with a lower-case letter, or holds something else than `[a-z0-9_]`.
    #[error(
        "L'identifiant du champ doit commencer par une lettre minuscule et ne contenir que des \
         lettres minuscules non accentuées, des chiffres et des tirets bas"
    )]
    InvalidCharacters,
}

impl FieldId {
    /// Longest id, in characters.
    pub const MAX_LEN: usize = 63;

    /// Parses a field id.
    pub fn parse(s: &str) -> Result<Self, FieldIdError> {
        let mut chars = s.chars();
        let Some(first) = chars.next() else {
            return Err(FieldIdError::Empty);
        };
        if s.len() > Self::MAX_LEN {
            return Err(FieldIdError::TooLong);
        }
        if !first.is_ascii_lowercase()
            || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(FieldIdError::InvalidCharacters);
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(FieldId, FieldIdError);

// ---------------------------------------------------------------------------------------------
// RowId
// ---------------------------------------------------------------------------------------------

/// Id of a repetition row, chosen by the client (typically a UUID): 1 to 64 characters among
/// `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RowId(String);

/// Why a string is not a [`RowId`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RowIdError {
    /// The id is empty.
    #[error("L'identifiant de la ligne est vide")]
    Empty,
    /// More than 64 characters.
    #[error("L'identifiant de la ligne ne doit pas dépasser 64 caractères")]
    TooLong,
    /// A character outside `[A-Za-z0-9_-]`.
    #[error(
        "L'identifiant de la ligne ne doit contenir que des lettres non accentuées, des chiffres, \
         des tirets et des tirets bas"
    )]
    InvalidCharacters,
}

impl RowId {
    /// Longest id, in characters.
    pub const MAX_LEN: usize = 64;

    /// Parses a row id.
    pub fn parse(s: &str) -> Result<Self, RowIdError> {
        if s.is_empty() {
            return Err(RowIdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(RowIdError::TooLong);
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(RowIdError::InvalidCharacters);
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(RowId, RowIdError);

// ---------------------------------------------------------------------------------------------
// Siret
// ---------------------------------------------------------------------------------------------

/// SIREN of La Poste, whose establishments' SIRETs follow a different check rule.
const LA_POSTE_SIREN: &str = "356000000";

/// SIRET number of an establishment: 14 digits whose Luhn check holds — or, for La Poste
/// (SIREN 356000000), whose digit sum is a multiple of 5.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Siret(String);

/// Why a string is not a [`Siret`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SiretError {
    /// Something else than digits and spaces.
    #[error("Le numéro SIRET ne doit contenir que des chiffres")]
    NotDigits,
    /// Not 14 digits.
    #[error("Le numéro SIRET doit comporter 14 chiffres")]
    WrongLength,
    /// The check fails.
    #[error("Le numéro SIRET n'est pas valide (clé de contrôle incorrecte)")]
    InvalidChecksum,
}

impl Siret {
    /// Parses a SIRET; spaces (including non-breaking ones) are ignored.
    pub fn parse(s: &str) -> Result<Self, SiretError> {
        let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(SiretError::NotDigits);
        }
        if digits.len() != 14 {
            return Err(SiretError::WrongLength);
        }
        let valid = luhn_holds(&digits)
            || (digits.starts_with(LA_POSTE_SIREN) && digit_sum(&digits).is_multiple_of(5));
        if !valid {
            return Err(SiretError::InvalidChecksum);
        }
        Ok(Self(digits))
    }

    /// The SIREN: the first 9 digits, identifying the company.
    pub fn siren(&self) -> &str {
        self.0.get(..9).unwrap_or(&self.0)
    }
}

string_newtype!(Siret, SiretError);

/// Luhn check on a string of ASCII digits (other characters count as 0).
fn luhn_holds(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0')) % 10;
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Sum of the digits of a string of ASCII digits.
fn digit_sum(digits: &str) -> u32 {
    digits
        .bytes()
        .map(|b| u32::from(b.wrapping_sub(b'0')) % 10)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Email
// ---------------------------------------------------------------------------------------------

/// An email address, in a pragmatic subset of RFC 5322: `local@domain`, the local part made of
/// "atext" characters and single dots, the domain of at least two dot-separated labels; ASCII only,
/// at most 254 characters. The domain is stored in lower case; the local part as given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmailError {
    /// Empty (or only spaces).
    #[error("L'adresse électronique est vide")]
    Empty,
    /// More than 254 characters.
    #[error("L'adresse électronique ne doit pas dépasser 254 caractères")]
    TooLong,
    /// Spaces, line breaks or other control characters inside the address.
    #[error("L'adresse électronique ne doit pas contenir d'espace ni de retour à la ligne")]
    Whitespace,
    /// No `@`, or more than one.
    #[error(
        "L'adresse électronique doit contenir un seul caractère « @ » (par exemple nom@exemple.fr)"
    )]
    AtSign,
    /// The part before `@` is empty, too long or holds a forbidden character.
    #[error("La partie de l'adresse électronique située avant « @ » n'est pas valide")]
    LocalPart,
    /// The part after `@` is not a domain name.
    #[error(
        "Le nom de domaine de l'adresse électronique n'est pas valide (par exemple exemple.fr)"
    )]
    Domain,
}

impl Email {
    /// Longest address, in characters.
    pub const MAX_LEN: usize = 254;
    /// Longest local part, in characters.
    pub const MAX_LOCAL_LEN: usize = 64;

    /// Parses an email address; surrounding spaces and tabs are ignored.
    pub fn parse(s: &str) -> Result<Self, EmailError> {
        let s = s.trim_matches([' ', '\t']);
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Whitespace);
        }
        if s.len() > Self::MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::AtSign);
        };
        if !valid_local_part(local) {
            return Err(EmailError::LocalPart);
        }
        if !valid_domain(domain) {
            return Err(EmailError::Domain);
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    /// The part before `@`.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }

    /// The domain, in lower case.
    pub fn domain(&self) -> &str {
        self.0.rsplit('@').next().unwrap_or_default()
    }
}

string_newtype!(Email, EmailError);

/// RFC 5322 dot-atom: atext characters separated by single dots.
fn valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.len() <= Email::MAX_LOCAL_LEN
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
        })
}

/// At least two labels of `[A-Za-z0-9-]` (1–63 characters, not starting or ending with `-`);
/// the last label (top-level domain) is not all digits.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// Phone
// ---------------------------------------------------------------------------------------------

/// A French phone number, stored in E.164 form (`+33612345678`, `+262692123456`).
///
/// Accepted: national numbers (`06 12 34 56 78`, `06.12.34.56.78`, `06-12-…`), `+33 6 12 34 56 78`,
/// `+33 (0)6 …`, `0033 6 …`, and the overseas country codes of the French numbering plans:
/// +262 (La Réunion, Mayotte), +590 (Guadeloupe, Saint-Martin, Saint-Barthélemy), +594 (Guyane),
/// +596 (Martinique), +508 (Saint-Pierre-et-Miquelon), +681 (Wallis-et-Futuna),
/// +687 (Nouvelle-Calédonie), +689 (Polynésie française). National numbers of the overseas
/// départements (`0692 …`, `0590 …`, …) are stored with their own country code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

/// Why a string is not a [`Phone`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PhoneError {
    /// Empty (or only separators).
    #[error("Le numéro de téléphone est vide")]
    Empty,
    /// Characters other than digits, spaces, dots, dashes, parentheses and a leading `+`.
    #[error(
        "Le numéro de téléphone ne doit contenir que des chiffres (et éventuellement « + » au début)"
    )]
    InvalidCharacters,
    /// A national number that does not have 10 digits starting with 0.
    #[error("Le numéro de téléphone doit comporter 10 chiffres (par exemple 06 12 34 56 78)")]
    WrongLength,
    /// An international number outside the French numbering plans, or of the wrong length.
    #[error(
        "Le numéro de téléphone doit être un numéro français (par exemple 06 12 34 56 78 ou \
         +33 6 12 34 56 78)"
    )]
    NotFrench,
}

/// Country codes of the French overseas numbering plans with the number of digits that follow.
const OVERSEAS_CODES: [(&str, usize); 8] = [
    ("262", 9),
    ("590", 9),
    ("594", 9),
    ("596", 9),
    ("508", 6),
    ("681", 6),
    ("687", 6),
    ("689", 8),
];

impl Phone {
    /// Parses a French phone number.
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        let mut compact = String::with_capacity(s.len().min(32));
        for c in s.chars() {
            match c {
                c if c.is_ascii_digit() || c == '+' => compact.push(c),
                ' ' | '.' | '-' | '(' | ')' | '/' | '\t' | '\u{a0}' | '\u{202f}' => {}
                _ => return Err(PhoneError::InvalidCharacters),
            }
            if compact.len() > 32 {
                return Err(PhoneError::NotFrench);
            }
        }
        if compact.is_empty() {
            return Err(PhoneError::Empty);
        }
        let international = if let Some(rest) = compact.strip_prefix('+') {
            Some(rest)
        } else {
            compact.strip_prefix("00")
        };
        let e164 = match international {
            Some(rest) => international_to_e164(rest)?,
            None => {
                if compact.contains('+') {
                    return Err(PhoneError::InvalidCharacters);
                }
                match compact.strip_prefix('0') {
                    Some(nine) if nine.len() == 9 && !nine.starts_with('0') => {
                        national_to_e164(nine)
                    }
                    _ => return Err(PhoneError::WrongLength),
                }
            }
        };
        Ok(Self(e164))
    }

    /// The number as French users write it: `06 12 34 56 78` for metropolitan and overseas
    /// département numbers; other numbers in E.164 form.
    pub fn display_fr(&self) -> String {
        let national = ["+33", "+262", "+590", "+594", "+596"]
            .iter()
            .find_map(|cc| self.0.strip_prefix(cc))
            .filter(|nine| nine.len() == 9);
        match national {
            Some(nine) => {
                let ten = format!("0{nine}");
                let pairs: Vec<&str> = (0..5).filter_map(|i| ten.get(2 * i..2 * i + 2)).collect();
                pairs.join(" ")
            }
            None => self.0.clone(),
        }
    }
}

string_newtype!(Phone, PhoneError);

/// E.164 form of a national number given without its leading 0 (9 digits): overseas
/// départements get their own country code.
fn national_to_e164(nine: &str) -> String {
    let code = match nine.get(..3) {
        Some("262" | "263" | "269" | "639" | "692" | "693") => "262",
        Some("590" | "690" | "691") => "590",
        Some("594" | "694") => "594",
        Some("596" | "696" | "697") => "596",
        _ => "33",
    };
    format!("+{code}{nine}")
}

/// E.164 form of an international number given after `+` or `00`.
fn international_to_e164(rest: &str) -> Result<String, PhoneError> {
    if !rest.chars().all(|c| c.is_ascii_digit()) {
        return Err(PhoneError::InvalidCharacters);
    }
    // "+33 (0)6 …" and "+33 06 …" carry the national trunk 0 after the country code.
    let subscriber = |after: &str, len: usize| -> Option<String> {
        let after = match after.strip_prefix('0') {
            Some(rest) if rest.len() == len => rest,
            _ => after,
        };
        (after.len() == len && !after.starts_with('0')).then(|| after.to_owned())
    };
    if let Some(after) = rest.strip_prefix("33") {
        return subscriber(after, 9)
            .map(|nine| national_to_e164(&nine))
            .ok_or(PhoneError::NotFrench);
    }
    for (code, len) in OVERSEAS_CODES {
        if let Some(after) = rest.strip_prefix(code) {
            return subscriber(after, len)
                .map(|digits| format!("+{code}{digits}"))
                .ok_or(PhoneError::NotFrench);
        }
    }
    Err(PhoneError::NotFrench)
}

// ---------------------------------------------------------------------------------------------
// INSEE codes
// ---------------------------------------------------------------------------------------------

/// Syntax of an INSEE commune code: 5 digits, or `2A`/`2B` followed by 3 digits (Corse).
/// Lower-case `2a`/`2b` are accepted and upper-cased. Existence is checked through `Geo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InseeCommune(String);

/// Why a string is not an [`InseeCommune`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InseeCommuneError {
    /// Not 5 digits (or 2A/2B and 3 digits).
    #[error("Le code commune INSEE doit comporter 5 caractères (par exemple 13055 ou 2A004)")]
    Invalid,
}

impl InseeCommune {
    /// Parses a commune code; surrounding spaces are ignored.
    pub fn parse(s: &str) -> Result<Self, InseeCommuneError> {
        let code = s.trim().to_ascii_uppercase();
        let digits_from = if code.starts_with("2A") || code.starts_with("2B") {
            2
        } else {
            0
        };
        let valid = code.len() == 5
            && code
                .get(digits_from..)
                .is_some_and(|d| d.chars().all(|c| c.is_ascii_digit()));
        if !valid {
            return Err(InseeCommuneError::Invalid);
        }
        Ok(Self(code))
    }
}

string_newtype!(InseeCommune, InseeCommuneError);

/// Syntax of an INSEE département code: `01`–`95`, `2A`, `2B`, `971`–`976`. Lower-case `2a`/`2b`
/// are accepted and upper-cased. Existence is checked through `Geo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InseeDepartement(String);

/// Why a string is not an [`InseeDepartement`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InseeDepartementError {
    /// Not one of the département code shapes.
    #[error("Le code département INSEE n'est pas valide (par exemple 13, 2A ou 971)")]
    Invalid,
}

impl InseeDepartement {
    /// Parses a département code; surrounding spaces are ignored.
    pub fn parse(s: &str) -> Result<Self, InseeDepartementError> {
        let code = s.trim().to_ascii_uppercase();
        let all_digits = code.chars().all(|c| c.is_ascii_digit());
        let valid = match code.len() {
            2 if code == "2A" || code == "2B" => true,
            2 if all_digits => code.parse::<u16>().is_ok_and(|n| (1..=95).contains(&n)),
            3 if all_digits => code.parse::<u16>().is_ok_and(|n| (971..=976).contains(&n)),
            _ => false,
        };
        if !valid {
            return Err(InseeDepartementError::Invalid);
        }
        Ok(Self(code))
    }
}

string_newtype!(InseeDepartement, InseeDepartementError);

/// Syntax of an INSEE région code: 2 digits. Existence is checked through `Geo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InseeRegion(String);

/// Why a string is not an [`InseeRegion`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InseeRegionError {
    /// Not 2 digits.
    #[error("Le code région INSEE doit comporter 2 chiffres (par exemple 93)")]
    Invalid,
}

impl InseeRegion {
    /// Parses a région code; surrounding spaces are ignored.
    pub fn parse(s: &str) -> Result<Self, InseeRegionError> {
        let code = s.trim();
        if code.len() != 2 || !code.chars().all(|c| c.is_ascii_digit()) {
            return Err(InseeRegionError::Invalid);
        }
        Ok(Self(code.to_owned()))
    }
}

string_newtype!(InseeRegion, InseeRegionError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_ids_follow_the_proto_syntax() {
        for ok in ["p", "p_siret", "a1", &format!("a{}", "b".repeat(62))] {
            assert_eq!(FieldId::parse(ok).map(|f| f.to_string()), Ok(ok.to_owned()));
        }
        assert_eq!(FieldId::parse(""), Err(FieldIdError::Empty));
        assert_eq!(FieldId::parse(&"a".repeat(64)), Err(FieldIdError::TooLong));
        for bad in ["1a", "_a", "P_siret", "p-siret", "p siret", "pé", "p.x"] {
            assert_eq!(
                FieldId::parse(bad),
                Err(FieldIdError::InvalidCharacters),
                "{bad}"
            );
        }
    }

    #[test]
    fn row_ids_accept_uuids_and_refuse_other_characters() {
        assert!(RowId::parse("5f0c3e2a-8d1b-4c1e-9a51-2b7d9f6e0a11").is_ok());
        assert!(RowId::parse("row_1").is_ok());
        assert_eq!(RowId::parse(""), Err(RowIdError::Empty));
        assert_eq!(RowId::parse(&"a".repeat(65)), Err(RowIdError::TooLong));
        assert!(RowId::parse(&"a".repeat(64)).is_ok());
        for bad in ["a b", "a/b", "a.b", "é", "a]"] {
            assert_eq!(
                RowId::parse(bad),
                Err(RowIdError::InvalidCharacters),
                "{bad}"
            );
        }
    }

    /// Known SIRETs and their expected verdicts.
    const SIRET_VECTORS: &[(&str, Result<&str, SiretError>)] = &[
        // Google France, Luhn.
        ("44306184100047", Ok("44306184100047")),
        ("443 061 841 00047", Ok("44306184100047")),
        ("443\u{a0}061\u{a0}841\u{a0}00047", Ok("44306184100047")),
        ("73282932000074", Ok("73282932000074")),
        ("55210055400013", Ok("55210055400013")),
        // La Poste head office: passes Luhn (digit sum 26).
        ("35600000000048", Ok("35600000000048")),
        // La Poste establishments: fail Luhn, digit sum a multiple of 5.
        ("35600000049837", Ok("35600000049837")),
        ("35600000000001", Ok("35600000000001")),
        // La Poste, neither rule.
        ("35600000012345", Err(SiretError::InvalidChecksum)),
        ("35600000000013", Err(SiretError::InvalidChecksum)),
        // Digit sum multiple of 5 is not enough outside La Poste.
        ("12345678901234", Err(SiretError::InvalidChecksum)),
        ("44306184100048", Err(SiretError::InvalidChecksum)),
        ("4430618410004", Err(SiretError::WrongLength)),
        ("443061841000470", Err(SiretError::WrongLength)),
        ("", Err(SiretError::WrongLength)),
        ("4430618410004A", Err(SiretError::NotDigits)),
        ("443-061-841-00047", Err(SiretError::NotDigits)),
        ("４４３０６１８４１０００４７", Err(SiretError::NotDigits)),
    ];

    #[test]
    fn sirets_follow_luhn_with_the_la_poste_exception() {
        for (input, expected) in SIRET_VECTORS {
            let got = Siret::parse(input);
            assert_eq!(
                got.as_ref().map(Siret::as_str).map_err(Clone::clone),
                expected.clone(),
                "{input}"
            );
        }
        assert_eq!(
            Siret::parse("44306184100047").map(|s| s.siren().to_owned()),
            Ok("443061841".to_owned())
        );
    }

    #[test]
    fn siret_messages_read_as_french() {
        assert_eq!(
            SiretError::WrongLength.message_fr(),
            "Le numéro SIRET doit comporter 14 chiffres"
        );
        assert_eq!(
            SiretError::InvalidChecksum.message_fr(),
            "Le numéro SIRET n'est pas valide (clé de contrôle incorrecte)"
        );
    }

    #[test]
    fn emails_in_the_pragmatic_subset_are_accepted_and_normalised() {
        let ok = [
            ("jean.dupont@exemple.fr", "jean.dupont@exemple.fr"),
            ("  Jean.Dupont@Exemple.FR ", "Jean.Dupont@exemple.fr"),
            ("a+tag@sous.domaine.gouv.fr", "a+tag@sous.domaine.gouv.fr"),
            ("o'neil@x-y.com", "o'neil@x-y.com"),
            ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example"),
        ];
        for (input, stored) in ok {
            let email = Email::parse(input);
            assert_eq!(email.as_ref().map(Email::as_str), Ok(stored), "{input}");
        }
        let email = Email::parse("Jean@Exemple.fr").ok();
        assert_eq!(email.as_ref().map(Email::local_part), Some("Jean"));
        assert_eq!(email.as_ref().map(Email::domain), Some("exemple.fr"));
    }

    #[test]
    fn malformed_emails_are_refused_with_a_reason() {
        let cases = [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("jean dupont@exemple.fr", EmailError::Whitespace),
            ("jean@exemple.fr\r\nBcc: x@y.fr", EmailError::Whitespace),
            ("jean@exemple.fr\n", EmailError::Whitespace),
            ("jean.exemple.fr", EmailError::AtSign),
            ("jean@@exemple.fr", EmailError::AtSign),
            ("a@b@exemple.fr", EmailError::AtSign),
            ("@exemple.fr", EmailError::LocalPart),
            (".jean@exemple.fr", EmailError::LocalPart),
            ("jean.@exemple.fr", EmailError::LocalPart),
            ("je..an@exemple.fr", EmailError::LocalPart),
            ("jéan@exemple.fr", EmailError::LocalPart),
            ("jean@exemple", EmailError::Domain),
            ("jean@", EmailError::Domain),
            ("jean@-exemple.fr", EmailError::Domain),
            ("jean@exemple-.fr", EmailError::Domain),
            ("jean@exemple..fr", EmailError::Domain),
            ("jean@exemple_1.fr", EmailError::Domain),
            ("jean@10.0.0.1", EmailError::Domain),
            ("jean@exemple.fr.", EmailError::Domain),
        ];
        for (input, error) in cases {
            assert_eq!(Email::parse(input), Err(error), "{input:?}");
        }
        let long_local = format!("{}@exemple.fr", "a".repeat(65));
        assert_eq!(Email::parse(&long_local), Err(EmailError::LocalPart));
        assert!(Email::parse(&format!("{}@exemple.fr", "a".repeat(64))).is_ok());
        let long = format!("a@{}.fr", vec!["b".repeat(60); 5].join("."));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn french_phone_numbers_are_normalised_to_e164() {
        let cases = [
            ("06 12 34 56 78", "+33612345678"),
            ("0612345678", "+33612345678"),
            ("06.12.34.56.78", "+33612345678"),
            ("06-12-34-56-78", "+33612345678"),
            ("01 23 45 67 89", "+33123456789"),
            ("09 70 12 34 56", "+33970123456"),
            ("+33 6 12 34 56 78", "+33612345678"),
            ("+33 (0)6 12 34 56 78", "+33612345678"),
            ("+33 06 12 34 56 78", "+33612345678"),
            ("0033 6 12 34 56 78", "+33612345678"),
            ("0033612345678", "+33612345678"),
            // Overseas départements, national and international forms.
            ("0692 12 34 56", "+262692123456"),
            ("02 62 12 34 56", "+262262123456"),
            ("0639 12 34 56", "+262639123456"),
            ("+262 692 12 34 56", "+262692123456"),
            ("+33 692 12 34 56", "+262692123456"),
            ("0590 12 34 56", "+590590123456"),
            ("0690 12 34 56", "+590690123456"),
            ("+594 594 12 34 56", "+594594123456"),
            ("0696 12 34 56", "+596696123456"),
            // Overseas collectivities with their own plans.
            ("+687 12 34 56", "+687123456"),
            ("+689 87 12 34 56", "+68987123456"),
            ("+508 41 12 34", "+508411234"),
            ("+681 72 12 34", "+681721234"),
        ];
        for (input, e164) in cases {
            assert_eq!(
                Phone::parse(input).as_ref().map(Phone::as_str),
                Ok(e164),
                "{input}"
            );
        }
    }

    #[test]
    fn other_phone_numbers_are_refused_with_a_reason() {
        let cases = [
            ("", PhoneError::Empty),
            (" . - ", PhoneError::Empty),
            ("06 12 34 56 7a", PhoneError::InvalidCharacters),
            ("06+12345678", PhoneError::InvalidCharacters),
            ("+33+612345678", PhoneError::InvalidCharacters),
            ("06 12 34 56 7", PhoneError::WrongLength),
            ("06 12 34 56 789", PhoneError::WrongLength),
            ("612345678", PhoneError::WrongLength),
            ("00 12 34 56 78", PhoneError::NotFrench),
            ("0012345678", PhoneError::NotFrench),
            ("+44 20 7946 0958", PhoneError::NotFrench),
            ("+1 202 555 0143", PhoneError::NotFrench),
            ("+269 321 23 45", PhoneError::NotFrench),
            ("+33 6 12 34 56", PhoneError::NotFrench),
            ("+33 0 12 34 56 78", PhoneError::NotFrench),
            ("+687 12 34 567", PhoneError::NotFrench),
        ];
        for (input, error) in cases {
            assert_eq!(Phone::parse(input), Err(error), "{input:?}");
        }
    }

    #[test]
    fn phones_display_in_the_french_way() {
        let display = |s: &str| Phone::parse(s).map(|p| p.display_fr());
        assert_eq!(display("+33612345678"), Ok("06 12 34 56 78".to_owned()));
        assert_eq!(display("0692123456"), Ok("06 92 12 34 56".to_owned()));
        assert_eq!(display("+687 12 34 56"), Ok("+687123456".to_owned()));
    }

    #[test]
    fn insee_codes_are_checked_for_syntax() {
        for ok in ["13055", "75056", "2A004", "2b033", " 97411 "] {
            assert!(InseeCommune::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            InseeCommune::parse("2a004").map(String::from),
            Ok("2A004".to_owned())
        );
        for bad in ["", "1305", "130550", "2C004", "2A0A4", "ABCDE", "13 55"] {
            assert_eq!(
                InseeCommune::parse(bad),
                Err(InseeCommuneError::Invalid),
                "{bad}"
            );
        }
        for ok in ["01", "13", "95", "2A", "2b", "971", "976"] {
            assert!(InseeDepartement::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "00", "96", "1", "977", "970", "2C", "013", "A1"] {
            assert_eq!(
                InseeDepartement::parse(bad),
                Err(InseeDepartementError::Invalid),
                "{bad}"
            );
        }
        for ok in ["93", "11", "01", "94"] {
            assert!(InseeRegion::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "9", "933", "2A", "ab"] {
            assert_eq!(
                InseeRegion::parse(bad),
                Err(InseeRegionError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn newtypes_deserialise_only_through_parse() {
        let ok: Result<Siret, _> = serde_json::from_str("\"44306184100047\"");
        assert!(ok.is_ok());
        let bad: Result<Siret, _> = serde_json::from_str("\"44306184100048\"");
        assert!(bad.is_err());
        let bad: Result<FieldId, _> = serde_json::from_str("\"P\"");
        assert!(bad.is_err());
        let json = serde_json::to_string(&Phone::parse("06 12 34 56 78").ok());
        assert_eq!(json.ok().as_deref(), Some("\"+33612345678\""));
    }

    /// Appends the Luhn check digit to 13 digits.
    fn with_luhn_digit(thirteen: &str) -> String {
        (0..10)
            .map(|d| format!("{thirteen}{d}"))
            .find(|candidate| luhn_holds(candidate))
            .unwrap_or_default()
    }

    proptest! {
        #[test]
        fn siret_parse_never_panics(s in "\\PC*") {
            let _ = Siret::parse(&s);
        }

        #[test]
        fn siret_parse_never_panics_on_digit_soup(s in "[0-9 ]{0,20}") {
            let _ = Siret::parse(&s);
        }

        #[test]
        fn every_number_with_a_luhn_check_digit_is_a_siret(thirteen in "[0-9]{13}") {
            let siret = with_luhn_digit(&thirteen);
            prop_assert_eq!(Siret::parse(&siret).map(String::from), Ok(siret));
        }

        #[test]
        fn a_wrong_check_digit_is_refused_outside_la_poste(thirteen in "[0-9]{13}", delta in 1u8..10) {
            prop_assume!(!thirteen.starts_with(LA_POSTE_SIREN));
            let good = with_luhn_digit(&thirteen);
            let last = good.as_bytes()[13] - b'0';
            let bad = format!("{thirteen}{}", (last + delta) % 10);
            prop_assert_eq!(Siret::parse(&bad), Err(SiretError::InvalidChecksum));
        }

        #[test]
        fn email_parse_never_panics(s in "\\PC*") {
            let _ = Email::parse(&s);
        }

        #[test]
        fn email_parse_never_panics_on_plausible_addresses(s in "[a-zA-Z0-9.@ _-]{0,80}") {
            if let Ok(email) = Email::parse(&s) {
                prop_assert!(Email::parse(email.as_str()).is_ok());
            }
        }

        #[test]
        fn phone_parse_never_panics(s in "\\PC*") {
            let _ = Phone::parse(&s);
        }

        #[test]
        fn phone_parse_is_idempotent(s in "[0-9+ .()-]{0,24}") {
            if let Ok(phone) = Phone::parse(&s) {
                prop_assert_eq!(Phone::parse(phone.as_str()), Ok(phone.clone()));
            }
        }

        #[test]
        fn insee_parsers_never_panic(s in "\\PC{0,8}") {
            let _ = InseeCommune::parse(&s);
            let _ = InseeDepartement::parse(&s);
            let _ = InseeRegion::parse(&s);
            let _ = FieldId::parse(&s);
            let _ = RowId::parse(&s);
        }
    }
}
