//! The official French administrative referential: régions, départements and communes by their
//! INSEE codes, and the caisses (CPAM, CGSS, CSSM) the forms offer for routing.
//!
//! The lists are the CSV files of `services/forms/data/`, generated from Etalab's npm package
//! `@etalab/decoupage-administratif` by `data/regenerate.sh` (see `data/README.md` for the version,
//! the licence and what is left out). They are embedded in the binary with `include_str!` and
//! parsed once, on first use, into vectors sorted by code: every look-up by code is a binary search
//! that borrows from the embedded text (no allocation).
//!
//! [`Referentiel::official`] never fails: a malformed embedded line is skipped and reported by
//! [`Referentiel::official_errors`], which the unit tests below require to be empty, so such a line
//! can only come from a bad regeneration and breaks the build's tests, not a running service.

use std::borrow::Cow;
use std::sync::LazyLock;

use super::geo::{CommuneInfo, DepartementInfo, Geo, RegionInfo};

/// Text of a parsed cell: borrowed from the source, owned only when it had to be unquoted.
type Text = Cow<'static, str>;

/// The CSV texts a [`Referentiel`] is built from (UTF-8, first line the header).
#[derive(Debug, Clone, Copy)]
pub struct CsvSources {
    /// `code,nom`.
    pub regions: &'static str,
    /// `code,nom,region`.
    pub departements: &'static str,
    /// `code,nom,departement,region`.
    pub communes: &'static str,
    /// `libelle,nom,departement`: `libelle` is the value offered by the forms' CPAM drop-downs.
    pub cpams: &'static str,
}

impl CsvSources {
    /// The files shipped in `services/forms/data/`.
    pub const OFFICIAL: CsvSources = CsvSources {
        regions: include_str!("../../../services/forms/data/regions.csv"),
        departements: include_str!("../../../services/forms/data/departements.csv"),
        communes: include_str!("../../../services/forms/data/communes.csv"),
        cpams: include_str!("../../../services/forms/data/cpam.csv"),
    };
}

/// A line of a source that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {problem}")]
pub struct ReferentielError {
    /// Which source: `"regions.csv"`, `"departements.csv"`, `"communes.csv"` or `"cpam.csv"`.
    pub file: &'static str,
    /// Line number, from 1 (the header is line 1).
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// A caisse offered by the CPAM drop-down of the forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpamInfo<'a> {
    /// Value of the drop-down, unique: the name and the département code
    /// (`"CPAM des Bouches-du-Rhône (13)"`, `"CPAM des Flandres (59)"`).
    pub label: &'a str,
    /// Name of the caisse (`"CPAM des Bouches-du-Rhône"`, `"CGSS de La Réunion"`).
    pub name: &'a str,
    /// INSEE code of the département it serves.
    pub departement: &'a str,
}

#[derive(Debug)]
struct Region {
    code: Text,
    name: Text,
}

#[derive(Debug)]
struct Departement {
    code: Text,
    name: Text,
    /// Index in `Referentiel::regions`.
    region: usize,
}

#[derive(Debug)]
struct Commune {
    code: Text,
    name: Text,
    /// Index in `Referentiel::departements`.
    departement: usize,
}

#[derive(Debug)]
struct Cpam {
    label: Text,
    name: Text,
    /// Index in `Referentiel::departements`.
    departement: usize,
}

/// Régions, départements, communes and caisses, with look-ups by INSEE code.
///
/// Régions, départements and communes are sorted by code (byte order, so `"2A"` and `"2B"` come
/// after `"29"`); caisses keep the order of their file (by département), which is the display order
/// of the forms' drop-down.
#[derive(Debug)]
pub struct Referentiel {
    regions: Vec<Region>,
    departements: Vec<Departement>,
    communes: Vec<Commune>,
    cpams: Vec<Cpam>,
}

const REGIONS: &str = "regions.csv";
const DEPARTEMENTS: &str = "departements.csv";
const COMMUNES: &str = "communes.csv";
const CPAMS: &str = "cpam.csv";

static OFFICIAL: LazyLock<(Referentiel, Vec<ReferentielError>)> =
    LazyLock::new(|| Referentiel::parse(CsvSources::OFFICIAL));

impl Referentiel {
    /// The referential shipped with the service, parsed on first use.
    pub fn official() -> &'static Referentiel {
        &OFFICIAL.0
    }

    /// The lines of the shipped files that [`Referentiel::official`] had to skip; empty unless the
    /// files were edited by hand or badly regenerated (a unit test checks it). For the service to
    /// log at start-up; calling it also forces the parsing, which otherwise happens on first use.
    pub fn official_errors() -> &'static [ReferentielError] {
        &OFFICIAL.1
    }

    /// Builds a referential from CSV texts.
    ///
    /// # Errors
    ///
    /// Every unusable line, in reading order: a wrong header, a malformed record, an invalid or
    /// repeated code, a reference to an unknown région or département, a commune whose région is
    /// not its département's.
    pub fn from_csv(sources: CsvSources) -> Result<Referentiel, Vec<ReferentielError>> {
        let (referentiel, errors) = Self::parse(sources);
        if errors.is_empty() {
            Ok(referentiel)
        } else {
            Err(errors)
        }
    }

    /// Parses what can be parsed, and lists the lines skipped, in reading order.
    fn parse(sources: CsvSources) -> (Referentiel, Vec<ReferentielError>) {
        let mut errors = Vec::new();

        let rows = read_table(
            REGIONS,
            sources.regions,
            ["code", "nom"],
            &mut errors,
            |[code, name]| {
                if !is_region_code(&code) {
                    Err(format!("{code:?} is not a région code"))
                } else if name.is_empty() {
                    Err(format!("région {code} has no name"))
                } else {
                    Ok(Region { code, name })
                }
            },
        );
        let regions = sorted_unique(REGIONS, rows, |r| &r.code, &mut errors);

        let rows = read_table(
            DEPARTEMENTS,
            sources.departements,
            ["code", "nom", "region"],
            &mut errors,
            |[code, name, region]| {
                if !is_departement_code(&code) {
                    Err(format!("{code:?} is not a département code"))
                } else if name.is_empty() {
                    Err(format!("département {code} has no name"))
                } else if let Some(region) = position(&regions, |r| &r.code, &region) {
                    Ok(Departement { code, name, region })
                } else {
                    Err(format!(
                        "département {code} is in unknown région {region:?}"
                    ))
                }
            },
        );
        let departements = sorted_unique(DEPARTEMENTS, rows, |d| &d.code, &mut errors);

        let rows = read_table(
            COMMUNES,
            sources.communes,
            ["code", "nom", "departement", "region"],
            &mut errors,
            |[code, name, departement, region]| {
                if !is_commune_code(&code) {
                    return Err(format!("{code:?} is not a commune code"));
                }
                if name.is_empty() {
                    return Err(format!("commune {code} has no name"));
                }
                if !code.starts_with(&*departement) {
                    return Err(format!(
                        "commune {code} does not start with its département {departement:?}"
                    ));
                }
                match position(&departements, |d| &d.code, &departement) {
                    None => Err(format!(
                        "commune {code} is in unknown département {departement:?}"
                    )),
                    Some(d) if regions[departements[d].region].code != region => Err(format!(
                        "commune {code}: région {region:?} is not that of département {departement}"
                    )),
                    Some(departement) => Ok(Commune {
                        code,
                        name,
                        departement,
                    }),
                }
            },
        );
        let communes = sorted_unique(COMMUNES, rows, |c| &c.code, &mut errors);

        let rows = read_table(
            CPAMS,
            sources.cpams,
            ["libelle", "nom", "departement"],
            &mut errors,
            |[label, name, departement]| {
                if label.is_empty() || name.is_empty() {
                    Err(format!("caisse {label:?} has an empty label or name"))
                } else if let Some(departement) = position(&departements, |d| &d.code, &departement)
                {
                    Ok(Cpam {
                        label,
                        name,
                        departement,
                    })
                } else {
                    Err(format!(
                        "caisse {label:?} serves unknown département {departement:?}"
                    ))
                }
            },
        );
        // Caisses keep their file order (the drop-down's); only repeated labels are dropped.
        let mut cpams: Vec<Cpam> = Vec::with_capacity(rows.len());
        for (line, cpam) in rows {
            if cpams.iter().any(|c| c.label == cpam.label) {
                let problem = format!("duplicate caisse label {:?}", cpam.label);
                errors.push(ReferentielError {
                    file: CPAMS,
                    line,
                    problem,
                });
            } else {
                cpams.push(cpam);
            }
        }

        let order = |file: &str| {
            [REGIONS, DEPARTEMENTS, COMMUNES, CPAMS]
                .iter()
                .position(|f| *f == file)
        };
        errors.sort_by_key(|e| (order(e.file), e.line));
        let referentiel = Referentiel {
            regions,
            departements,
            communes,
            cpams,
        };
        (referentiel, errors)
    }

    /// Every région, by code.
    pub fn regions(&self) -> impl ExactSizeIterator<Item = RegionInfo<'_>> + '_ {
        self.regions.iter().map(|r| self.region_info(r))
    }

    /// Every département, by code.
    pub fn departements(&self) -> impl ExactSizeIterator<Item = DepartementInfo<'_>> + '_ {
        self.departements.iter().map(|d| self.departement_info(d))
    }

    /// Every commune, by code.
    pub fn communes(&self) -> impl ExactSizeIterator<Item = CommuneInfo<'_>> + '_ {
        self.communes.iter().map(|c| self.commune_info(c))
    }

    /// The départements of a région, by code; none for an unknown région.
    pub fn departements_of_region<'a>(
        &'a self,
        region: &str,
    ) -> impl Iterator<Item = DepartementInfo<'a>> + 'a {
        let index = position(&self.regions, |r| &r.code, region);
        self.departements
            .iter()
            .filter(move |d| Some(d.region) == index)
            .map(|d| self.departement_info(d))
    }

    /// The communes of a département, by code; none for an unknown département.
    pub fn communes_of_departement<'a>(
        &'a self,
        departement: &str,
    ) -> impl Iterator<Item = CommuneInfo<'a>> + 'a {
        // A commune code starts with its département code, so its communes form one run of the
        // sorted list, from the first code not below the département's; the run ends at the first
        // commune of another département, and an unknown code ("97", "2a") yields nothing.
        let index = position(&self.departements, |d| &d.code, departement);
        let start = self.communes.partition_point(|c| &*c.code < departement);
        self.communes[start..]
            .iter()
            .take_while(move |c| index.is_some_and(|i| c.departement == i))
            .map(|c| self.commune_info(c))
    }

    /// The région with this name, compared without regard to case, accents, hyphens and
    /// apostrophes (`"ile de france"` finds `"Île-de-France"`).
    pub fn region_named(&self, name: &str) -> Option<RegionInfo<'_>> {
        let wanted = fold_name(name);
        self.regions
            .iter()
            .find(|r| fold_name(&r.name) == wanted)
            .map(|r| self.region_info(r))
    }

    /// The département with this name, compared as in [`Referentiel::region_named`].
    pub fn departement_named(&self, name: &str) -> Option<DepartementInfo<'_>> {
        let wanted = fold_name(name);
        self.departements
            .iter()
            .find(|d| fold_name(&d.name) == wanted)
            .map(|d| self.departement_info(d))
    }

    /// The communes with this name (several communes share a name), compared as in
    /// [`Referentiel::region_named`]; a linear scan, meant for imports and tools.
    pub fn communes_named(&self, name: &str) -> Vec<CommuneInfo<'_>> {
        let wanted = fold_name(name);
        self.communes
            .iter()
            .filter(|c| fold_name(&c.name) == wanted)
            .map(|c| self.commune_info(c))
            .collect()
    }

    /// Every caisse of the CPAM drop-down, in display order (by département).
    pub fn cpams(&self) -> impl ExactSizeIterator<Item = CpamInfo<'_>> + '_ {
        self.cpams.iter().map(|c| self.cpam_info(c))
    }

    /// The caisse whose drop-down label is exactly `label`.
    pub fn cpam(&self, label: &str) -> Option<CpamInfo<'_>> {
        self.cpams
            .iter()
            .find(|c| c.label == label)
            .map(|c| self.cpam_info(c))
    }

    /// The caisses serving a département (one, except in the Nord, the Pas-de-Calais and the
    /// Pyrénées-Atlantiques).
    pub fn cpams_of_departement<'a>(
        &'a self,
        departement: &'a str,
    ) -> impl Iterator<Item = CpamInfo<'a>> + 'a {
        self.cpams
            .iter()
            .filter(move |c| self.departements[c.departement].code == departement)
            .map(|c| self.cpam_info(c))
    }

    fn region_info<'a>(&'a self, r: &'a Region) -> RegionInfo<'a> {
        RegionInfo {
            code: &r.code,
            name: &r.name,
        }
    }

    fn departement_info<'a>(&'a self, d: &'a Departement) -> DepartementInfo<'a> {
        DepartementInfo {
            code: &d.code,
            name: &d.name,
            region: &self.regions[d.region].code,
        }
    }

    fn commune_info<'a>(&'a self, c: &'a Commune) -> CommuneInfo<'a> {
        let departement = &self.departements[c.departement];
        CommuneInfo {
            code: &c.code,
            name: &c.name,
            departement: &departement.code,
            region: &self.regions[departement.region].code,
        }
    }

    fn cpam_info<'a>(&'a self, c: &'a Cpam) -> CpamInfo<'a> {
        CpamInfo {
            label: &c.label,
            name: &c.name,
            departement: &self.departements[c.departement].code,
        }
    }
}

impl Geo for Referentiel {
    fn commune(&self, code: &str) -> Option<CommuneInfo<'_>> {
        position(&self.communes, |c| &c.code, code).map(|i| self.commune_info(&self.communes[i]))
    }

    fn departement(&self, code: &str) -> Option<DepartementInfo<'_>> {
        position(&self.departements, |d| &d.code, code)
            .map(|i| self.departement_info(&self.departements[i]))
    }

    fn region(&self, code: &str) -> Option<RegionInfo<'_>> {
        position(&self.regions, |r| &r.code, code).map(|i| self.region_info(&self.regions[i]))
    }
}

/// Index of the item with this code in a list sorted by code.
fn position<T>(items: &[T], code_of: impl Fn(&T) -> &Text, code: &str) -> Option<usize> {
    items
        .binary_search_by(|item| code_of(item).as_ref().cmp(code))
        .ok()
}

/// Sorts rows by code and drops (reporting them) the rows repeating an earlier code.
fn sorted_unique<T>(
    file: &'static str,
    mut rows: Vec<(usize, T)>,
    code_of: impl Fn(&T) -> &Text,
    errors: &mut Vec<ReferentielError>,
) -> Vec<T> {
    rows.sort_by(|(la, a), (lb, b)| code_of(a).cmp(code_of(b)).then(la.cmp(lb)));
    let mut out: Vec<T> = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        if out
            .last()
            .is_some_and(|last| code_of(last) == code_of(&row))
        {
            errors.push(ReferentielError {
                file,
                line,
                problem: format!("duplicate code {}", code_of(&row)),
            });
        } else {
            out.push(row);
        }
    }
    out
}

/// The data rows of a CSV text whose header is `header`, each built by `build` from its cells,
/// with their line numbers. A line that does not split into exactly `N` cells, or that `build`
/// refuses, is reported and skipped; a wrong header skips the whole file.
fn read_table<T, const N: usize>(
    file: &'static str,
    text: &'static str,
    header: [&str; N],
    errors: &mut Vec<ReferentielError>,
    mut build: impl FnMut([Text; N]) -> Result<T, String>,
) -> Vec<(usize, T)> {
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line));
    match lines.next() {
        Some((_, first)) if first.split(',').eq(header) => {}
        first => {
            errors.push(ReferentielError {
                file,
                line: 1,
                problem: format!(
                    "header {:?} instead of {:?}",
                    first.map_or("", |(_, l)| l),
                    header.join(",")
                ),
            });
            return Vec::new();
        }
    }
    let mut rows = Vec::new();
    for (line, text) in lines.filter(|(_, text)| !text.is_empty()) {
        let built = split_record(text).and_then(|cells| {
            let count = cells.len();
            let cells = <[Text; N]>::try_from(cells)
                .map_err(|_| format!("{count} cells instead of {N}"))?;
            build(cells)
        });
        match built {
            Ok(row) => rows.push((line, row)),
            Err(problem) => errors.push(ReferentielError {
                file,
                line,
                problem,
            }),
        }
    }
    rows
}

/// Splits one CSV record (RFC 4180, no line break inside a field): fields are separated by commas,
/// and a field may be quoted, a quote inside it doubled.
fn split_record(line: &'static str) -> Result<Vec<Text>, String> {
    let mut cells = Vec::new();
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut tail = quoted;
            loop {
                let Some(end) = tail.find('"') else {
                    return Err("unterminated quoted field".to_owned());
                };
                value.push_str(&tail[..end]);
                tail = &tail[end + 1..];
                match tail.strip_prefix('"') {
                    Some(after) => {
                        value.push('"');
                        tail = after;
                    }
                    None => break,
                }
            }
            cells.push(Cow::Owned(value));
            match tail.strip_prefix(',') {
                Some(after) => rest = after,
                None if tail.is_empty() => return Ok(cells),
                None => return Err("text after a closing quote".to_owned()),
            }
        } else {
            match rest.split_once(',') {
                Some((cell, after)) => {
                    cells.push(unquoted(cell)?);
                    rest = after;
                }
                None => {
                    cells.push(unquoted(rest)?);
                    return Ok(cells);
                }
            }
        }
    }
}

fn unquoted(cell: &'static str) -> Result<Text, String> {
    if cell.contains('"') {
        Err(format!("stray quote in {cell:?}"))
    } else {
        Ok(Cow::Borrowed(cell))
    }
}

fn is_region_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit())
}

fn is_departement_code(code: &str) -> bool {
    let b = code.as_bytes();
    match b {
        [b'2', b'A' | b'B'] => true,
        [x, y] => x.is_ascii_digit() && y.is_ascii_digit(),
        [b'9', b'7', z] => z.is_ascii_digit(),
        _ => false,
    }
}

fn is_commune_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 5
        && b[0].is_ascii_digit()
        && (b[1].is_ascii_digit() || b[1] == b'A' || b[1] == b'B')
        && b[2..].iter().all(u8::is_ascii_digit)
}

/// A name reduced for loose comparison: lower case, no accents, hyphens and apostrophes as spaces,
/// runs of spaces collapsed, trimmed.
fn fold_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let mapped: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ý' | 'ÿ' => "y",
            'œ' => "oe",
            'æ' => "ae",
            '-' | '\'' | '’' | ' ' | '\t' => " ",
            _ => {
                out.push(c);
                continue;
            }
        };
        if mapped == " " && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push_str(mapped);
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn official() -> &'static Referentiel {
        Referentiel::official()
    }

    #[test]
    fn the_shipped_files_parse_without_a_single_skipped_line() {
        assert_eq!(Referentiel::official_errors(), &[] as &[ReferentielError]);
        let r = official();
        assert_eq!(r.regions().len(), 18);
        assert_eq!(r.departements().len(), 101);
        assert!(
            r.communes().len() > 34_000,
            "{} communes",
            r.communes().len()
        );
        assert_eq!(r.cpams().len(), 106);
    }

    #[test]
    fn communes_are_found_by_code_with_their_departement_and_region() {
        let r = official();
        let cases = [
            ("13055", "Marseille", "13", "93"),
            ("2A004", "Ajaccio", "2A", "94"),
            ("97411", "Saint-Denis", "974", "04"),
            ("75056", "Paris", "75", "11"),
            ("69123", "Lyon", "69", "84"),
            ("97611", "Mamoudzou", "976", "06"),
        ];
        for (code, name, departement, region) in cases {
            assert_eq!(
                r.commune(code),
                Some(CommuneInfo {
                    code,
                    name,
                    departement,
                    region
                }),
                "{code}"
            );
        }
    }

    #[test]
    fn unknown_or_non_current_codes_are_not_communes() {
        let r = official();
        // Unknown, lower-case Corsican, padded, empty, arrondissement municipal, commune of a COM.
        for code in [
            "99999", "2a004", " 13055", "13055 ", "", "75112", "13201", "97502",
        ] {
            assert_eq!(r.commune(code), None, "{code:?}");
        }
    }

    #[test]
    fn departements_and_regions_are_found_by_code() {
        let r = official();
        assert_eq!(
            r.departement("2A"),
            Some(DepartementInfo {
                code: "2A",
                name: "Corse-du-Sud",
                region: "94"
            })
        );
        assert_eq!(
            r.departement("13"),
            Some(DepartementInfo {
                code: "13",
                name: "Bouches-du-Rhône",
                region: "93"
            })
        );
        assert_eq!(r.departement("974").map(|d| d.region), Some("04"));
        assert_eq!(
            r.region("93"),
            Some(RegionInfo {
                code: "93",
                name: "Provence-Alpes-Côte d'Azur"
            })
        );
        assert_eq!(r.region("06").map(|d| d.name), Some("Mayotte"));
        for code in ["20", "2a", "975", "99", "1", ""] {
            assert_eq!(r.departement(code), None, "{code:?}");
        }
        for code in ["975", "00", "6", "", "93 "] {
            assert_eq!(r.region(code), None, "{code:?}");
        }
    }

    #[test]
    fn every_departement_belongs_to_exactly_one_region() {
        let r = official();
        let corse: Vec<_> = r.departements_of_region("94").map(|d| d.code).collect();
        assert_eq!(corse, ["2A", "2B"]);
        assert_eq!(r.departements_of_region("11").count(), 8);
        assert_eq!(
            r.departements_of_region("04")
                .map(|d| d.code)
                .collect::<Vec<_>>(),
            ["974"]
        );
        assert_eq!(r.departements_of_region("99").count(), 0);
        let total: usize = r
            .regions()
            .map(|g| r.departements_of_region(g.code).count())
            .sum();
        assert_eq!(total, 101);
    }

    #[test]
    fn communes_of_a_departement_are_all_and_only_its_communes() {
        let r = official();
        let mut total = 0;
        for d in r.departements() {
            let communes: Vec<_> = r.communes_of_departement(d.code).collect();
            assert!(!communes.is_empty(), "{}", d.code);
            assert!(
                communes
                    .iter()
                    .all(|c| c.departement == d.code && c.region == d.region)
            );
            total += communes.len();
        }
        assert_eq!(total, r.communes().len());
        assert_eq!(r.communes_of_departement("97").count(), 0);
        assert_eq!(r.communes_of_departement("2a").count(), 0);
        assert_eq!(r.communes_of_departement("976").count(), 17);
    }

    #[test]
    fn names_are_found_without_regard_to_case_accents_and_hyphens() {
        let r = official();
        assert_eq!(r.region_named("ile de france").map(|g| g.code), Some("11"));
        assert_eq!(
            r.region_named("Provence-Alpes-Côte d’Azur").map(|g| g.code),
            Some("93")
        );
        assert_eq!(
            r.departement_named("BOUCHES DU RHONE").map(|d| d.code),
            Some("13")
        );
        assert_eq!(
            r.departement_named("La Réunion").map(|d| d.code),
            Some("974")
        );
        assert_eq!(r.departement_named("Atlantis"), None);
        let saint_denis: Vec<_> = r
            .communes_named("saint-denis")
            .iter()
            .map(|c| c.code)
            .collect();
        assert!(
            saint_denis.contains(&"93066") && saint_denis.contains(&"97411"),
            "{saint_denis:?}"
        );
        assert_eq!(r.communes_named("Marseille").len(), 1);
    }

    #[test]
    fn every_departement_has_a_caisse_and_labels_are_unique() {
        let r = official();
        for d in r.departements() {
            assert!(r.cpams_of_departement(d.code).count() >= 1, "{}", d.code);
        }
        assert_eq!(r.cpams_of_departement("59").count(), 4);
        assert_eq!(r.cpams_of_departement("62").count(), 2);
        assert_eq!(r.cpams_of_departement("64").count(), 2);
        assert_eq!(
            r.cpam("CPAM des Bouches-du-Rhône (13)"),
            Some(CpamInfo {
                label: "CPAM des Bouches-du-Rhône (13)",
                name: "CPAM des Bouches-du-Rhône",
                departement: "13"
            })
        );
        assert_eq!(
            r.cpam("CGSS de La Réunion (974)").map(|c| c.departement),
            Some("974")
        );
        assert_eq!(r.cpam("CPAM de l'Atlantide (00)"), None);
    }

    /// The CPAM drop-downs of the shipped procedures offer exactly the caisses of `cpam.csv`, in
    /// its order (the procedures were written from it; this keeps them in step).
    #[test]
    fn the_shipped_procedures_offer_exactly_the_caisses_of_the_referential() {
        let labels: Vec<&str> = official().cpams().map(|c| c.label).collect();
        let procedures = [
            (
                "mst-2024-projet",
                include_str!("../../../services/forms/procedures/mst-2024-projet.json"),
            ),
            (
                "mst-2024-action",
                include_str!("../../../services/forms/procedures/mst-2024-action.json"),
            ),
        ];
        for (id, text) in procedures {
            let definition: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(definition["id"], id);
            let fields = definition["fields"].as_array().unwrap();
            let cpam: Vec<_> = fields
                .iter()
                .filter(|f| f["purpose"] == "FIELD_PURPOSE_CPAM")
                .collect();
            assert_eq!(cpam.len(), 1, "{id}: one CPAM field");
            let values: Vec<&str> = cpam[0]["choice"]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(values, labels, "{id}");
        }
    }

    fn sources(
        regions: &'static str,
        departements: &'static str,
        communes: &'static str,
        cpams: &'static str,
    ) -> CsvSources {
        CsvSources {
            regions,
            departements,
            communes,
            cpams,
        }
    }

    #[test]
    fn quoted_cells_are_unquoted() {
        let r = Referentiel::from_csv(sources(
            "code,nom\n93,\"Provence, \"\"Alpes\"\"\"\n",
            "code,nom,region\n13,Bouches-du-Rhône,93\r\n",
            "code,nom,departement,region\n13055,\"Marseille\",13,93\n",
            "libelle,nom,departement\n\"CPAM, 13\",CPAM,13\n",
        ))
        .unwrap();
        assert_eq!(r.region("93").unwrap().name, "Provence, \"Alpes\"");
        assert_eq!(r.commune("13055").unwrap().name, "Marseille");
        assert_eq!(r.cpam("CPAM, 13").unwrap().departement, "13");
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_file_and_line_and_the_rest_is_kept() {
        let errors = Referentiel::from_csv(sources(
            "code,nom\n93,Provence-Alpes-Côte d'Azur\n93,Doublon\nX1,Mauvaise\n",
            "code,nom,region\n13,Bouches-du-Rhône,93\n83,Var,99\n",
            concat!(
                "code,nom,departement,region\n",
                "13055,Marseille,13,93\n",
                "13001,Aix-en-Provence,13\n",
                "83137,Toulon,83,93\n",
                "13004,Arles,13,11\n",
                "13005,\"Aubagne,13,93\n",
                "13055,Marseille bis,13,93\n",
                "1300,Court,13,93\n",
                "14001,Ailleurs,13,93\n",
            ),
            "libelle,nom,departement\nA,CPAM,13\nA,CPAM,13\nB,CPAM,83\n",
        ))
        .unwrap_err();
        let at: Vec<(&str, usize)> = errors.iter().map(|e| (e.file, e.line)).collect();
        assert_eq!(
            at,
            [
                ("regions.csv", 3),
                ("regions.csv", 4),
                ("departements.csv", 3),
                ("communes.csv", 3),
                ("communes.csv", 4),
                ("communes.csv", 5),
                ("communes.csv", 6),
                ("communes.csv", 7),
                ("communes.csv", 8),
                ("communes.csv", 9),
                ("cpam.csv", 3),
                ("cpam.csv", 4),
            ],
            "{errors:#?}"
        );
        assert_eq!(
            errors[0].to_string(),
            "regions.csv, line 3: duplicate code 93"
        );
        // The same sources, leniently: the good lines are all there.
        let (r, _) = Referentiel::parse(sources(
            "code,nom\n93,Provence-Alpes-Côte d'Azur\n93,Doublon\n",
            "code,nom,region\n13,Bouches-du-Rhône,93\n",
            "code,nom,departement,region\n13055,Marseille,13,93\n13004,Arles,13,11\n",
            "libelle,nom,departement\n",
        ));
        assert_eq!(r.region("93").unwrap().name, "Provence-Alpes-Côte d'Azur");
        assert_eq!(r.communes().map(|c| c.code).collect::<Vec<_>>(), ["13055"]);
    }

    #[test]
    fn a_wrong_header_rejects_the_whole_file() {
        let errors = Referentiel::from_csv(sources(
            "code;nom\n93;PACA\n",
            "code,nom,region\n",
            "code,nom,departement,region\n",
            "libelle,nom,departement\n",
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].file, errors[0].line), ("regions.csv", 1));
        assert!(Referentiel::from_csv(sources("", "", "", "")).is_err());
    }

    #[test]
    fn names_fold_to_a_loose_form() {
        assert_eq!(fold_name("  Côte-d’Or "), "cote d or");
        assert_eq!(fold_name("L'Haÿ-les-Roses"), "l hay les roses");
        assert_eq!(fold_name("ŒUVRE"), "oeuvre");
    }
}
