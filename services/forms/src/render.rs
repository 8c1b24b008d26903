//! Answers as a person reads them (French formats), and the PDF of a dossier built from them:
//! every visible section and answer, with the number, procedure, status and dates.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::app::DossierView;
use crate::domain::form::FieldType;
use crate::domain::geo::Geo;
use crate::domain::validate::visible_answers;
use crate::domain::value::{Choice, Value, paris_datetime};
use crate::pdf::{PdfDocument, PdfEntry, PdfSection, PdfValue};

/// Groups the digits of an integer in French (« 12 500 »), with a narrow no-break space.
fn group_digits(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    if digits.len() < 5 {
        return format!("{sign}{digits}");
    }
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202F}');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn decimal_fr(d: &Decimal) -> String {
    // Keep the scale as typed: an amount entered as 1200.50 reads 1200,50.
    let s = d.to_string();
    match s.split_once('.') {
        Some((int, frac)) => format!("{},{frac}", group_digits(int)),
        None => group_digits(&s),
    }
}

/// A UTC instant as « 12/07/2024 à 14:03 » in Paris time.
pub fn datetime_fr(at: DateTime<Utc>) -> String {
    paris_datetime(at).format("%d/%m/%Y à %H:%M").to_string()
}

/// The French text of an answer.
pub fn display(value: &Value, geo: &dyn Geo) -> String {
    match value {
        Value::Text(t) => t.clone(),
        Value::Integer(i) => group_digits(&i.to_string()),
        Value::Decimal(d) => decimal_fr(d),
        Value::Date(d) => d.format("%d/%m/%Y").to_string(),
        Value::Datetime(at) => datetime_fr(*at),
        Value::Checkbox(b) | Value::YesNo(b) => if *b { "Oui" } else { "Non" }.to_owned(),
        Value::DropDown(Choice::Value(v)) => v.clone(),
        Value::DropDown(Choice::Other(v)) => format!("Autre : {v}"),
        Value::MultiDropDown { values, other } => {
            let mut all = values.clone();
            if let Some(o) = other {
                all.push(format!("Autre : {o}"));
            }
            all.join(", ")
        }
        Value::Siret(s) => s.as_str().to_owned(),
        Value::Email(e) => e.as_str().to_owned(),
        Value::Phone(p) => p.display_fr(),
        Value::Address(a) => {
            if a.label.trim().is_empty() {
                [a.street.as_str(), a.postal_code.as_str(), a.city.as_str()]
                    .iter()
                    .filter(|s| !s.trim().is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                a.label.clone()
            }
        }
        Value::Commune(c) => geo.commune(c.as_str()).map_or_else(
            || c.as_str().to_owned(),
            |i| format!("{} ({})", i.name, i.code),
        ),
        Value::Departement(d) => geo.departement(d.as_str()).map_or_else(
            || d.as_str().to_owned(),
            |i| format!("{} – {}", i.code, i.name),
        ),
        Value::Region(r) => geo
            .region(r.as_str())
            .map_or_else(|| r.as_str().to_owned(), |i| i.name.to_owned()),
        Value::Repetition(rows) => format!("{} ligne(s)", rows.len()),
        Value::Files(files) => files
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::DossierLink(n) => format!("Dossier n° {n}"),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The PDF view of a dossier: visible sections and answers only.
pub fn pdf_document(view: &DossierView, geo: &dyn Geo) -> PdfDocument {
    let answers = visible_answers(&view.form, &view.answers, geo);
    let row = &view.row;
    let mut meta = vec![
        ("Statut".to_owned(), capitalised(view.status.label_fr())),
        ("Créé le".to_owned(), datetime_fr(row.created_at)),
        ("Mis à jour le".to_owned(), datetime_fr(row.updated_at)),
    ];
    if let Some(at) = row.deposited_at {
        meta.push(("Déposé le".to_owned(), datetime_fr(at)));
    }
    meta.push(("Usager".to_owned(), row.owner_email.clone()));
    let mut sections: Vec<PdfSection> = Vec::new();
    let mut current = PdfSection {
        title: "Informations générales".to_owned(),
        entries: Vec::new(),
    };
    for field in view.form.fields() {
        match field.field_type {
            FieldType::HeaderSection => {
                if !current.entries.is_empty() {
                    sections.push(std::mem::take(&mut current));
                }
                current.title = field.label.clone();
                continue;
            }
            FieldType::Explication => continue,
            _ => {}
        }
        if view.hidden.contains(&field.id) {
            continue;
        }
        let value = match answers.get(&field.id) {
            None => PdfValue::Empty,
            Some(Value::Repetition(rows)) => PdfValue::Rows(
                rows.iter()
                    .map(|r| {
                        field
                            .children
                            .iter()
                            .filter(|c| {
                                !matches!(
                                    c.field_type,
                                    FieldType::HeaderSection | FieldType::Explication
                                )
                            })
                            .filter_map(|c| {
                                r.champs
                                    .get(&c.id)
                                    .map(|v| (c.label.clone(), display(v, geo)))
                            })
                            .collect()
                    })
                    .collect(),
            ),
            Some(v) => PdfValue::Text(display(v, geo)),
        };
        current.entries.push(PdfEntry {
            label: field.label.clone(),
            value,
        });
    }
    if !current.entries.is_empty() {
        sections.push(current);
    }
    PdfDocument {
        title: format!("Dossier n° {}", row.number),
        subtitle: view.procedure.row.title.clone(),
        meta,
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_the_french_way() {
        assert_eq!(group_digits("2016"), "2016");
        assert_eq!(group_digits("12500"), "12\u{202F}500");
        assert_eq!(group_digits("-1234567"), "-1\u{202F}234\u{202F}567");
        assert_eq!(decimal_fr(&"4800.50".parse().unwrap()), "4800,50");
        assert_eq!(decimal_fr(&"12500.5".parse().unwrap()), "12\u{202F}500,5");
    }

    #[test]
    fn instants_are_shown_in_paris_time() {
        let summer = "2024-07-12T12:03:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(datetime_fr(summer), "12/07/2024 à 14:03");
        let winter = "2024-12-01T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(datetime_fr(winter), "02/12/2024 à 00:30");
    }
}
