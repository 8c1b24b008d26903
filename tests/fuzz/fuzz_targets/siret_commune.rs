//! Text, line by line, through the parsers of identifiers and places: SIRET (Luhn, La Poste's
//! rule), INSEE codes of communes, départements and régions and their look-ups in the official
//! referential, look-ups of régions and départements by name (not of communes: a linear scan of
//! ~35,000 names, too slow to fuzz), CPAM labels, email and phone, field ids, row ids, champ paths,
//! and whole addresses (`label|street|postal code|city|commune|département|région`) and COMMUNE /
//! DEPARTEMENT / REGION answers as a form validates them. Checks, besides "no panic": a SIRET
//! is accepted exactly when an independent check says so, parsed values re-parse to themselves
//! and survive JSON, and the places found agree with each other (a commune's département and
//! région exist and match; an accepted address's codes agree, its postal code has 5 digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mst_forms_domain::form::{FieldDefinition, FieldType};
use mst_forms_domain::geo::Geo;
use mst_forms_domain::ids::{
    Email, FieldId, InseeCommune, InseeDepartement, InseeRegion, Phone, RowId, Siret,
};
use mst_forms_domain::referentiel::Referentiel;
use mst_forms_domain::validate::parse_input;
use mst_forms_domain::value::{AddressInput, ChampPath, Input, Value};

/// Independent SIRET rule: 14 digits (spaces ignored) whose Luhn sum is a multiple of 10, or,
/// for La Poste (SIREN 356000000), whose digit sum is a multiple of 5.
fn siret_expected(line: &str) -> bool {
    let digits: Vec<u32> = line
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(10).filter(|_| c.is_ascii_digit()))
        .collect::<Option<_>>()
        .unwrap_or_default();
    if digits.len() != 14 {
        return false;
    }
    let luhn: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                (d * 2) / 10 + (d * 2) % 10
            } else {
                d
            }
        })
        .sum();
    let la_poste = digits[..9] == [3, 5, 6, 0, 0, 0, 0, 0, 0];
    luhn.is_multiple_of(10) || (la_poste && digits.iter().sum::<u32>().is_multiple_of(5))
}

fn json_round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).expect("serialises");
    let back: T = serde_json::from_str(&json).expect("reads back");
    assert_eq!(&back, value);
}

fn places(geo: &Referentiel, line: &str) {
    if let Ok(code) = InseeCommune::parse(line) {
        json_round_trip(&code);
        if let Some(c) = geo.commune(code.as_str()) {
            let d = geo
                .departement(c.departement)
                .expect("a commune's département exists");
            assert_eq!(
                d.region, c.region,
                "a commune's région is its département's"
            );
            assert!(geo.region(c.region).is_some(), "a commune's région exists");
            assert!(
                geo.communes_of_departement(c.departement)
                    .any(|x| x.code == c.code)
            );
        }
    }
    if let Ok(code) = InseeDepartement::parse(line) {
        json_round_trip(&code);
        if let Some(d) = geo.departement(code.as_str()) {
            assert!(
                geo.region(d.region).is_some(),
                "a département's région exists"
            );
            assert!(
                geo.departements_of_region(d.region)
                    .any(|x| x.code == d.code)
            );
            for cpam in geo.cpams_of_departement(d.code) {
                assert_eq!(geo.cpam(cpam.label).map(|c| c.departement), Some(d.code));
            }
        }
    }
    if let Ok(code) = InseeRegion::parse(line) {
        json_round_trip(&code);
    }
    if let Some(r) = geo.region_named(line) {
        assert!(geo.region(r.code).is_some());
    }
    if let Some(d) = geo.departement_named(line) {
        assert!(geo.departement(d.code).is_some());
    }
    if let Some(c) = geo.cpam(line) {
        assert!(geo.departement(c.departement).is_some());
    }
}

fn identifiers(line: &str) {
    let siret = Siret::parse(line);
    assert_eq!(
        siret.is_ok(),
        siret_expected(line),
        "SIRET rule for {line:?}"
    );
    if let Ok(s) = siret {
        assert_eq!(s.as_str().len(), 14);
        assert_eq!(s.siren(), &s.as_str()[..9]);
        assert_eq!(Siret::parse(s.as_str()).as_ref(), Ok(&s));
        json_round_trip(&s);
    }
    if let Ok(e) = Email::parse(line) {
        assert!(e.as_str().len() <= 254);
        assert_eq!(Email::parse(e.as_str()).as_ref(), Ok(&e));
        assert_eq!(format!("{}@{}", e.local_part(), e.domain()), e.as_str());
        json_round_trip(&e);
    }
    if let Ok(p) = Phone::parse(line) {
        assert_eq!(Phone::parse(p.as_str()).as_ref(), Ok(&p));
        assert!(!p.display_fr().is_empty());
        json_round_trip(&p);
    }
    if let Ok(f) = FieldId::parse(line) {
        assert_eq!(FieldId::parse(f.as_str()).as_ref(), Ok(&f));
    }
    if let Ok(r) = RowId::parse(line) {
        assert_eq!(RowId::parse(r.as_str()).as_ref(), Ok(&r));
    }
    if let Ok(p) = ChampPath::parse(line) {
        assert_eq!(ChampPath::parse(&p.to_string()).as_ref(), Ok(&p));
        json_round_trip(&p);
    }
}

fn answers(geo: &Referentiel, line: &str) {
    let field = |t| FieldDefinition::new(FieldId::parse("lieu").expect("id"), "Lieu", t);
    let parts: Vec<&str> = line.split('|').collect();
    if parts.len() >= 4 {
        let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
        let input = Input::Address(AddressInput {
            label: part(0),
            street: part(1),
            postal_code: part(2),
            city: part(3),
            commune_code: part(4),
            departement_code: part(5),
            region_code: part(6),
            latitude: None,
            longitude: None,
        });
        if let Ok(Value::Address(a)) = parse_input(&field(FieldType::Address), input, geo) {
            assert!(a.postal_code.is_empty() || a.postal_code.len() == 5);
            assert!(a.postal_code.bytes().all(|b| b.is_ascii_digit()));
            if let Some(c) = a
                .commune_code
                .as_ref()
                .and_then(|c| geo.commune(c.as_str()))
            {
                let d = a.departement_code.as_ref().map(|d| d.as_str());
                assert_eq!(
                    d,
                    Some(c.departement),
                    "address département is its commune's"
                );
            }
            if let Some(d) = a.departement_code.as_ref() {
                let d = geo
                    .departement(d.as_str())
                    .expect("an address département exists");
                assert_eq!(a.region_code.as_ref().map(|r| r.as_str()), Some(d.region));
            }
            json_round_trip(&a);
        }
    }
    let kinds = [
        (FieldType::Commune, Input::Commune(line.to_owned())),
        (FieldType::Departement, Input::Departement(line.to_owned())),
        (FieldType::Region, Input::Region(line.to_owned())),
        (FieldType::Siret, Input::Siret(line.to_owned())),
    ];
    for (t, input) in kinds {
        if let Ok(v) = parse_input(&field(t), input, geo) {
            assert!(v.fits(t));
            match &v {
                Value::Commune(c) => assert!(geo.commune(c.as_str()).is_some()),
                Value::Departement(d) => assert!(geo.departement(d.as_str()).is_some()),
                Value::Region(r) => assert!(geo.region(r.as_str()).is_some()),
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let geo = Referentiel::official();
    for line in text.lines().take(16) {
        identifiers(line);
        places(geo, line);
        answers(geo, line);
    }
});
