//! Exports (CSV and XLSX) of 100,000 generated dossiers stay under a fixed memory bound and parse
//! back. The writers of `app::export` are fed a generated stream of `mst.forms.v1.Dossier`
//! messages (answers of every type, hidden fields, repetitions), the way the use case feeds them
//! page by page from forms; the output goes to a file, as it goes to the client. Peak memory is
//! the process's VmHWM (Linux), measured before and after, and printed.
//!
//! `cargo test -p mst-instruction --test export --release -- --nocapture` prints the figures.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::time::Instant;

use mst_instruction::app::export::{CsvWriter, Layout, Meta, XlsxWriter};
use mst_proto::events::FileRef;
use mst_proto::forms::{
    Address, Champ, ChampValue, Choice, Dossier, FieldDefinition, FieldType, MultiChoice,
    PieceJustificative, Repetition, RepetitionRow, champ_value::Value, choice,
};

const N: i64 = 100_000;
/// Peak resident memory an export may add, whatever the number of dossiers.
const BOUND_BYTES: u64 = 64 * 1024 * 1024;

fn field(id: &str, label: &str, kind: FieldType) -> FieldDefinition {
    FieldDefinition {
        id: id.to_owned(),
        label: label.to_owned(),
        r#type: kind as i32,
        ..FieldDefinition::default()
    }
}

fn form() -> Vec<FieldDefinition> {
    let mut depenses = field("p_depenses", "Dépenses", FieldType::Repetition);
    depenses.children = vec![
        field("p_dep_objet", "Objet", FieldType::Text),
        field("p_dep_montant", "Montant", FieldType::Decimal),
    ];
    vec![
        field("s_porteur", "Le porteur", FieldType::HeaderSection),
        field("p_titre", "Titre du projet", FieldType::Text),
        field("p_effectif", "Effectif", FieldType::Integer),
        field("p_budget", "Budget total", FieldType::Decimal),
        field("p_debut", "Date de début", FieldType::Date),
        field("p_public", "Public jeune ?", FieldType::YesNo),
        field("p_theme", "Thème", FieldType::DropDown),
        field("p_cibles", "Cibles", FieldType::MultiDropDown),
        field("p_adresse", "Adresse", FieldType::Address),
        field("p_pieces", "Pièces", FieldType::PieceJustificative),
        field("p_secret", "Champ masqué", FieldType::Text),
        depenses,
    ]
}

fn champ(id: &str, value: Value) -> Champ {
    Champ {
        field_id: id.to_owned(),
        value: Some(ChampValue { value: Some(value) }),
    }
}

/// Dossier `n`: every answer type, a hidden answer, `n % 4` repetition rows.
fn dossier(n: i64) -> Dossier {
    let rows = (0..n % 4)
        .map(|r| RepetitionRow {
            row_id: format!("row-{n}-{r}"),
            champs: vec![
                champ(
                    "p_dep_objet",
                    Value::Text(format!("Objet {r}; \"spécial\"")),
                ),
                champ(
                    "p_dep_montant",
                    Value::Decimal(format!("{}.50", 100 * (r + 1))),
                ),
            ],
        })
        .collect();
    Dossier {
        number: n,
        champs: vec![
            champ(
                "p_titre",
                Value::Text(format!("Projet n°{n}\nsur deux lignes")),
            ),
            champ("p_effectif", Value::Integer(n % 50)),
            champ("p_budget", Value::Decimal("1500.50".into())),
            champ("p_debut", Value::Date("2025-03-05".into())),
            champ("p_public", Value::YesNo(n % 2 == 0)),
            champ(
                "p_theme",
                Value::DropDown(Choice {
                    choice: Some(choice::Choice::Value("Sport".into())),
                }),
            ),
            champ(
                "p_cibles",
                Value::MultiDropDown(MultiChoice {
                    values: vec!["Jeunes".into(), "Seniors".into()],
                    other: Some("Aidants".into()),
                }),
            ),
            champ(
                "p_adresse",
                Value::Address(Address {
                    label: "12 rue de la Paix 13001 Marseille".into(),
                    ..Address::default()
                }),
            ),
            champ(
                "p_pieces",
                Value::PieceJustificative(PieceJustificative {
                    files: vec![
                        FileRef {
                            file_name: "budget.pdf".into(),
                            ..FileRef::default()
                        },
                        FileRef {
                            file_name: "statuts.pdf".into(),
                            ..FileRef::default()
                        },
                    ],
                }),
            ),
            champ("p_secret", Value::Text("ne doit pas sortir".into())),
            champ("p_depenses", Value::Repetition(Repetition { rows })),
        ],
        hidden_field_ids: vec!["p_secret".into()],
        ..Dossier::default()
    }
}

fn meta(n: i64) -> Meta {
    Meta {
        number: n,
        status: "En instruction".into(),
        deposited_at: "05/03/2025 10:00".into(),
        updated_at: "06/03/2025 11:00".into(),
        groupe: "CPAM des Bouches-du-Rhône (13)".into(),
        owner_email: format!("porteur{n}@asso.test"),
        title: format!("Projet n°{n}"),
        structure_name: "Association =sport".into(),
        siret: "12345678901234".into(),
        departement: "13".into(),
        cpam: "CPAM 13".into(),
        ..Meta::default()
    }
}

/// Peak resident set size of the process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / (1024.0 * 1024.0)
}

/// Writes `count` dossiers as CSV (main table or a repetition's rows) to `out`.
fn write_csv(count: i64, repetition: Option<&str>, out: &mut impl std::io::Write) {
    let mut w = CsvWriter::new(Layout::new(&form()), repetition).expect("csv writer");
    for n in 1..=count {
        let d = dossier(n);
        w.row(&meta(n), Some(&d));
        if w.pending() >= 64 * 1024 {
            out.write_all(&w.take()).expect("write");
        }
    }
    out.write_all(&w.take()).expect("write");
}

#[test]
fn csv_and_xlsx_exports_of_100k_dossiers_stay_in_bounded_memory_and_parse_back() {
    let dir = tempfile::tempdir().expect("tempdir");

    // Warm up (allocator arenas, lazy statics) on a small export, then measure the big ones.
    let mut sink = std::io::sink();
    write_csv(1_000, None, &mut sink);
    let base = peak_rss();

    // CSV, main table.
    let started = Instant::now();
    let csv_path = dir.path().join("dossiers.csv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&csv_path).expect("file"));
        write_csv(N, None, &mut file);
        file.flush().expect("flush");
    }
    let csv_time = started.elapsed();
    let csv_peak = peak_rss();
    let csv_size = std::fs::metadata(&csv_path).map(|m| m.len()).unwrap_or(0);

    // CSV, rows of the repetition.
    let rep_path = dir.path().join("depenses.csv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&rep_path).expect("file"));
        write_csv(N, Some("p_depenses"), &mut file);
        file.flush().expect("flush");
    }

    // XLSX.
    let started = Instant::now();
    let mut x = XlsxWriter::new(Layout::new(&form()), dir.path()).expect("xlsx writer");
    for n in 1..=N {
        let d = dossier(n);
        x.row(&meta(n), Some(&d)).expect("row");
    }
    let xlsx = x.finish().expect("finish");
    let xlsx_time = started.elapsed();
    let xlsx_peak = peak_rss();
    let xlsx_size = std::fs::metadata(xlsx.path()).map(|m| m.len()).unwrap_or(0);

    println!(
        "export of {N} dossiers: CSV {:.1} MiB in {:.2?}, XLSX {:.1} MiB in {:.2?}; \
         peak RSS {:.1} MiB before, {:.1} MiB after CSV (+{:.1}), {:.1} MiB after XLSX (+{:.1}); \
         bound +{:.0} MiB",
        mib(csv_size),
        csv_time,
        mib(xlsx_size),
        xlsx_time,
        mib(base),
        mib(csv_peak),
        mib(csv_peak.saturating_sub(base)),
        mib(xlsx_peak),
        mib(xlsx_peak.saturating_sub(base)),
        mib(BOUND_BYTES),
    );
    if base > 0 {
        assert!(
            xlsx_peak.saturating_sub(base) < BOUND_BYTES,
            "the exports grew the peak RSS by {:.1} MiB",
            mib(xlsx_peak.saturating_sub(base))
        );
        // The output is several times larger than what memory grew by: it was not kept.
        assert!(csv_size > 4 * xlsx_peak.saturating_sub(base) && xlsx_size > 0);
    }

    // CSV parses back: BOM, ";" and CRLF, one record per dossier, quoted values intact, the
    // hidden answer left out, the display-only field absent.
    let mut raw = std::fs::File::open(&csv_path).expect("open");
    let mut bom = [0u8; 3];
    raw.read_exact(&mut bom).expect("bom");
    assert_eq!(bom, [0xef, 0xbb, 0xbf]);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(BufReader::new(raw));
    let headers = reader.headers().expect("headers").clone();
    let at = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {headers:?}"))
    };
    assert_eq!(headers.get(0), Some("N° dossier"));
    assert!(!headers.iter().any(|h| h == "Le porteur"));
    let (titre, budget, debut, cibles, pieces, secret, depenses, structure) = (
        at("Titre du projet"),
        at("Budget total"),
        at("Date de début"),
        at("Cibles"),
        at("Pièces"),
        at("Champ masqué"),
        at("Dépenses (nombre de lignes)"),
        at("Structure"),
    );
    let mut count = 0i64;
    for record in reader.records() {
        let r = record.expect("record");
        count += 1;
        assert_eq!(r.get(0), Some(count.to_string().as_str()));
        if count == 7 {
            assert_eq!(r.get(titre), Some("Projet n°7\nsur deux lignes"));
            assert_eq!(r.get(budget), Some("1500,50"));
            assert_eq!(r.get(debut), Some("05/03/2025"));
            assert_eq!(r.get(cibles), Some("Jeunes, Seniors, Aidants"));
            assert_eq!(r.get(pieces), Some("budget.pdf, statuts.pdf"));
            assert_eq!(r.get(secret), Some(""));
            assert_eq!(r.get(depenses), Some("3"));
            assert_eq!(r.get(structure), Some("Association =sport"));
        }
    }
    assert_eq!(count, N);
    let lines = BufReader::new(std::fs::File::open(&csv_path).expect("open"))
        .split(b'\n')
        .take(1)
        .map(|l| l.expect("line"))
        .collect::<Vec<_>>();
    // (Line breaks inside quoted values are kept as they are.)
    assert!(lines.iter().all(|l| l.ends_with(b"\r")), "CRLF line ends");

    // Repetition rows: sum over n of n % 4.
    let expected_rows: i64 = (1..=N).map(|n| n % 4).sum();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(&rep_path)
        .expect("open");
    let mut rows = 0i64;
    for record in reader.records() {
        let r = record.expect("record");
        rows += 1;
        if rows == 1 {
            // Dossier 1 has one row.
            assert_eq!(r.get(0), Some("1"));
            assert_eq!(r.get(1), Some("1"));
            assert_eq!(r.get(2), Some("Objet 0; \"spécial\""));
            assert_eq!(r.get(3), Some("100,50"));
        }
    }
    assert_eq!(rows, expected_rows);

    // XLSX parses back: a "Dossiers" sheet with a row per dossier plus the header, a "Dépenses"
    // sheet with a row per repetition row plus the header.
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(xlsx.path()).expect("open")).expect("a zip");
    let mut workbook = String::new();
    archive
        .by_name("xl/workbook.xml")
        .expect("workbook")
        .read_to_string(&mut workbook)
        .expect("read");
    assert!(workbook.contains("name=\"Dossiers\""), "{workbook}");
    assert!(workbook.contains("name=\"Dépenses\""), "{workbook}");
    let count_rows = |archive: &mut zip::ZipArchive<std::fs::File>, name: &str| {
        let mut sheet = BufReader::new(archive.by_name(name).expect("sheet"));
        let (mut rows, mut found, mut carry) = (0i64, false, Vec::new());
        loop {
            let buf = sheet.fill_buf().expect("read");
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            carry.extend_from_slice(buf);
            sheet.consume(n);
            rows += i64::try_from(carry.windows(5).filter(|w| w == b"<row ").count())
                .unwrap_or_default();
            found |= carry.windows(8).any(|w| w == b"Projet n");
            // Keep a tail so a tag split across reads is counted once, in the next window.
            let keep = carry.len().min(7);
            let tail = carry.split_off(carry.len() - keep);
            rows -= i64::try_from(tail.windows(5).filter(|w| w == b"<row ").count())
                .unwrap_or_default();
            carry = tail;
        }
        rows +=
            i64::try_from(carry.windows(5).filter(|w| w == b"<row ").count()).unwrap_or_default();
        (rows, found)
    };
    let (main_rows, has_title) = count_rows(&mut archive, "xl/worksheets/sheet1.xml");
    assert_eq!(main_rows, N + 1);
    assert!(has_title);
    let (rep_rows, _) = count_rows(&mut archive, "xl/worksheets/sheet2.xml");
    assert_eq!(rep_rows, expected_rows + 1);
}

#[test]
fn an_unknown_repetition_is_not_found() {
    let err = CsvWriter::new(Layout::new(&form()), Some("p_titre")).map(|_| ());
    assert!(err.is_err());
}
