//! The administrative geography the forms check answers against: communes, départements and
//! régions by their INSEE codes. The domain only sees this trait; [`super::referentiel`] implements
//! it with the official lists shipped in the repository.

/// A commune (current INSEE code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommuneInfo<'a> {
    /// INSEE code, 5 characters (`"13055"`, `"2A004"`).
    pub code: &'a str,
    /// Name (`"Marseille"`).
    pub name: &'a str,
    /// INSEE code of its département (`"13"`, `"2A"`, `"971"`).
    pub departement: &'a str,
    /// INSEE code of its région (`"93"`).
    pub region: &'a str,
}

/// A département.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepartementInfo<'a> {
    /// INSEE code (`"13"`, `"2A"`, `"971"`).
    pub code: &'a str,
    /// Name (`"Bouches-du-Rhône"`).
    pub name: &'a str,
    /// INSEE code of its région.
    pub region: &'a str,
}

/// A région.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo<'a> {
    /// INSEE code (`"93"`).
    pub code: &'a str,
    /// Name (`"Provence-Alpes-Côte d'Azur"`).
    pub name: &'a str,
}

/// Look-ups by INSEE code. Codes are compared exactly (callers trim; `"2a004"` is not a code).
pub trait Geo: Send + Sync {
    /// The commune with this code, if it exists.
    fn commune(&self, code: &str) -> Option<CommuneInfo<'_>>;
    /// The département with this code, if it exists.
    fn departement(&self, code: &str) -> Option<DepartementInfo<'_>>;
    /// The région with this code, if it exists.
    fn region(&self, code: &str) -> Option<RegionInfo<'_>>;
}
