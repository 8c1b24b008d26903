//! Whole-file tests: every rendered file is parsed back by a small structural checker (header,
//! cross-reference offsets, trailer, page tree, stream lengths, text), and, when poppler's
//! `pdftotext` or `qpdf` is installed, read by a real PDF implementation too.

use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;

use super::layout::{self, Op};
use super::*;

const GENERATED_AT: &str = "27/11/2026 à 18:45";

fn text(value: &str) -> PdfValue {
    PdfValue::Text(value.to_owned())
}

fn entry(label: &str, value: PdfValue) -> PdfEntry {
    PdfEntry {
        label: label.to_owned(),
        value,
    }
}

fn budget_line(post: &str, amount: &str, funding: &str) -> Vec<(String, String)> {
    vec![
        ("Poste de dépense".to_owned(), post.to_owned()),
        ("Montant".to_owned(), amount.to_owned()),
        ("Financement demandé".to_owned(), funding.to_owned()),
    ]
}

/// A realistic Projet dossier of the Mois sans tabac procedure.
fn projet_dossier() -> PdfDocument {
    PdfDocument {
        title: "Dossier n° 42".to_owned(),
        subtitle: "Mois sans tabac 2024 — Appel à projets régional (Projet)".to_owned(),
        meta: vec![
            ("Statut".to_owned(), "En construction".to_owned()),
            ("Créé le".to_owned(), "03/07/2024 à 09:12".to_owned()),
            ("Déposé le".to_owned(), "12/07/2024 à 14:03".to_owned()),
            (
                "Promoteur".to_owned(),
                "camille.lefèvre@ligue-herault.fr".to_owned(),
            ),
            ("Instruit le".to_owned(), String::new()),
        ],
        sections: vec![
            PdfSection {
                title: "Structure porteuse".to_owned(),
                entries: vec![
                    entry(
                        "Nom de la structure",
                        text("Ligue contre le cancer – Comité de l’Hérault"),
                    ),
                    entry("SIRET", text("775 672 272 00012")),
                    entry(
                        "Adresse",
                        text(
                            "1600 rue de la Croix-Verte\nBâtiment « Les Œillets »\n34090 Montpellier",
                        ),
                    ),
                    entry("Téléphone", PdfValue::Empty),
                    entry(
                        "Statut juridique",
                        text("Association loi 1901 reconnue d’utilité publique"),
                    ),
                ],
            },
            PdfSection {
                title: "Projet".to_owned(),
                entries: vec![
                    entry(
                        "Intitulé du projet",
                        text("« Ensemble, on arrête ! » : défi collectif en entreprise"),
                    ),
                    entry(
                        "Description",
                        text(
                            "Le projet vise à accompagner les salariés fumeurs des PME de l’Hérault \
                             pendant le Mois sans tabac : ateliers de sensibilisation, consultations \
                             avec une tabacologue, kits d’aide à l’arrêt et suivi à trois mois.\n\n\
                             Les actions sont co-construites avec les services de santé au travail ; \
                             l’évaluation s’appuie sur un questionnaire avant/après — taux d’arrêt, \
                             réduction de consommation, satisfaction…",
                        ),
                    ),
                    entry(
                        "Public visé",
                        text("Salariés fumeurs, cœur de cible 25–45 ans"),
                    ),
                    entry("Date de début", text("01/11/2024")),
                    entry("Partenaires", PdfValue::Empty),
                ],
            },
            PdfSection {
                title: "Budget prévisionnel".to_owned(),
                entries: vec![
                    entry(
                        "Lignes budgétaires",
                        PdfValue::Rows(vec![
                            budget_line(
                                "Interventions d’une tabacologue",
                                "4\u{202F}800,00 €",
                                "Oui",
                            ),
                            budget_line(
                                "Kits d’aide à l’arrêt (substituts)",
                                "2\u{202F}150,50 €",
                                "Oui",
                            ),
                            vec![
                                ("Poste de dépense".to_owned(), "Communication".to_owned()),
                                ("Montant".to_owned(), "750,00 €".to_owned()),
                                ("Financement demandé".to_owned(), String::new()),
                            ],
                        ]),
                    ),
                    entry("Montant total demandé", text("6\u{202F}950,50 €")),
                    entry("Cofinancements", PdfValue::Rows(Vec::new())),
                ],
            },
        ],
    }
}

/// What the structural checker read back from a file.
#[derive(Debug)]
struct Checked {
    /// The text runs of each page, decoded, in drawing order.
    pages: Vec<Vec<String>>,
}

impl Checked {
    fn all_text(&self) -> Vec<&str> {
        self.pages.iter().flatten().map(String::as_str).collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn ascii_number(bytes: &[u8]) -> usize {
    let digits: String = bytes
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    digits.parse().unwrap_or_else(|_| {
        panic!(
            "number expected at {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
        )
    })
}

/// The number following `key` (e.g. `/Count `) in a dictionary.
fn number_after(dict: &[u8], key: &str) -> usize {
    let at = find(dict, key.as_bytes()).unwrap_or_else(|| panic!("{key} missing"));
    ascii_number(&dict[at + key.len()..])
}

/// Checks the file's structure, panicking with a reason on the first violation.
fn check_structure(pdf: &[u8]) -> Checked {
    assert!(pdf.starts_with(b"%PDF-1.4\n"), "header");
    assert!(pdf.ends_with(b"%%EOF\n"), "%%EOF at the end");

    // startxref → the xref table.
    let startxref = rfind(pdf, b"startxref\n").expect("startxref");
    let xref = ascii_number(&pdf[startxref + 10..]);
    assert!(
        pdf[xref..].starts_with(b"xref\n0 "),
        "startxref points at the xref table"
    );
    let size = ascii_number(&pdf[xref + 7..]);
    let entries_at = xref + format!("xref\n0 {size}\n").len();
    let entry = |i: usize| &pdf[entries_at + 20 * i..entries_at + 20 * (i + 1)];
    assert_eq!(entry(0), b"0000000000 65535 f \n", "free-list head");
    let mut offsets = vec![0; size];
    for (id, offset) in offsets.iter_mut().enumerate().skip(1) {
        let e = entry(id);
        assert_eq!(
            &e[10..],
            b" 00000 n \n",
            "entry {id} is in use and 20 bytes long"
        );
        *offset = ascii_number(e);
        assert!(
            pdf[*offset..].starts_with(format!("{id} 0 obj\n").as_bytes()),
            "xref offset of object {id} points at `{id} 0 obj`"
        );
    }
    let trailer = &pdf[entries_at + 20 * size..startxref];
    assert!(
        trailer.starts_with(b"trailer\n<<"),
        "trailer follows the table"
    );
    assert_eq!(number_after(trailer, "/Size "), size, "trailer /Size");
    let root = number_after(trailer, "/Root ");

    // Object bodies: from `n 0 obj\n` to `\nendobj\n`, bounded by the next object in the file.
    let mut ends: Vec<usize> = offsets[1..].to_vec();
    ends.push(xref);
    ends.sort_unstable();
    let body = |id: usize| -> &[u8] {
        let start = offsets[id] + format!("{id} 0 obj\n").len();
        let end = ends
            .iter()
            .copied()
            .find(|&e| e > offsets[id])
            .expect("object end");
        let raw = &pdf[start..end];
        assert!(raw.ends_with(b"\nendobj\n"), "object {id} ends with endobj");
        &raw[..raw.len() - 8]
    };

    let catalog = body(root);
    assert!(
        find(catalog, b"/Type /Catalog").is_some(),
        "root is the catalog"
    );
    let tree_id = number_after(catalog, "/Pages ");
    let tree = body(tree_id);
    assert!(find(tree, b"/Type /Pages").is_some(), "page tree");
    let count = number_after(tree, "/Count ");
    let kids_at = find(tree, b"/Kids [").expect("kids") + 7;
    let kids_end = kids_at + find(&tree[kids_at..], b"]").expect("kids end");
    let kids: Vec<usize> = String::from_utf8_lossy(&tree[kids_at..kids_end])
        .split(" 0 R")
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    assert_eq!(kids.len(), count, "/Count matches /Kids");
    let page_objects = (1..size)
        .filter(|&id| find(body(id), b"/Type /Page ").is_some())
        .count();
    assert_eq!(page_objects, count, "/Count matches the page objects");

    let mut pages = Vec::new();
    for kid in kids {
        let page = body(kid);
        assert!(find(page, b"/Type /Page ").is_some(), "kid {kid} is a page");
        assert!(
            find(page, format!("/Parent {tree_id} 0 R").as_bytes()).is_some(),
            "parent"
        );
        assert!(
            find(page, b"/MediaBox [0 0 595.28 841.89]").is_some(),
            "A4 portrait"
        );
        for (font, base) in [
            ("/F1 ", "Helvetica "),
            ("/F2 ", "Helvetica-Bold "),
            ("/F3 ", "Helvetica-Oblique "),
        ] {
            let font_obj = body(number_after(page, font));
            let expected = format!("/Subtype /Type1 /BaseFont /{base}/Encoding /WinAnsiEncoding");
            assert!(find(font_obj, expected.as_bytes()).is_some(), "font {font}");
        }
        let stream = body(number_after(page, "/Contents "));
        let length = number_after(stream, "/Length ");
        let data_at = find(stream, b">>\nstream\n").expect("stream keyword") + 10;
        assert_eq!(
            stream.len() - data_at,
            length + 10,
            "/Length then `\\nendstream`"
        );
        assert!(stream.ends_with(b"\nendstream"), "endstream");
        let data = &stream[data_at..data_at + length];
        assert!(data.is_ascii(), "content streams are 7-bit");
        pages.push(text_runs(data));
    }
    Checked { pages }
}

/// The decoded literal strings shown with `Tj` in a content stream.
fn text_runs(data: &[u8]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'(' {
            i += 1;
            continue;
        }
        let mut bytes = Vec::new();
        i += 1;
        loop {
            match data[i] {
                b')' => break,
                b'\\' if data[i + 1].is_ascii_digit() => {
                    let octal = std::str::from_utf8(&data[i + 1..i + 4]).expect("octal");
                    bytes.push(u8::from_str_radix(octal, 8).expect("octal escape"));
                    i += 4;
                }
                b'\\' => {
                    bytes.push(data[i + 1]);
                    i += 2;
                }
                b => {
                    assert!(b != b'(', "unescaped parenthesis");
                    bytes.push(b);
                    i += 1;
                }
            }
        }
        assert!(data[i..].starts_with(b") Tj ET\n"), "string shown with Tj");
        runs.push(
            bytes
                .iter()
                .map(|&b| winansi::char_of(b).expect("WinAnsi code"))
                .collect(),
        );
        i += 1;
    }
    runs
}

/// Runs an installed PDF tool as `tool ARGS FILE TRAILING` on `pdf`; `None`, with a note, when
/// the tool is not installed.
fn run_tool(
    tool: &str,
    args: &[&str],
    trailing: &[&str],
    pdf: &[u8],
    name: &str,
) -> Option<std::process::Output> {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "mst-forms-pdf-{}-{name}-{tool}.pdf",
        std::process::id()
    ));
    std::fs::write(&path, pdf).expect("write the PDF to a temporary file");
    let output = Command::new(tool)
        .args(args)
        .arg(&path)
        .args(trailing)
        .output();
    let _ = std::fs::remove_file(&path);
    match output {
        Ok(output) => Some(output),
        Err(_) => {
            println!(
                "note: `{tool}` is not installed (apt-get install poppler-utils qpdf); skipping its check"
            );
            None
        }
    }
}

/// Text extracted by poppler's `pdftotext`, whitespace collapsed.
fn pdftotext(pdf: &[u8], name: &str) -> Option<String> {
    let output = run_tool("pdftotext", &["-enc", "UTF-8"], &["-"], pdf, name)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "pdftotext: {stderr}"
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 from pdftotext");
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `qpdf --check` accepts the file, when qpdf is installed.
fn assert_qpdf_accepts(pdf: &[u8], name: &str) {
    if let Some(output) = run_tool("qpdf", &["--check"], &[], pdf, name) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "qpdf --check failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("No syntax or stream encoding errors found"),
            "qpdf: {stdout}"
        );
    }
}

#[test]
fn a_realistic_french_dossier_shows_every_section_answer_and_repetition_row() {
    let pdf = render(&projet_dossier(), GENERATED_AT);
    let checked = check_structure(&pdf);
    let text = checked.all_text();
    for expected in [
        "Dossier n° 42",
        "Mois sans tabac 2024 — Appel à projets régional (Projet)",
        "Statut",
        "En construction",
        "Déposé le",
        "12/07/2024 à 14:03",
        "Structure porteuse",
        "Ligue contre le cancer – Comité de l’Hérault",
        "Bâtiment « Les Œillets »",
        "34090 Montpellier",
        "Budget prévisionnel",
        "Ligne 1",
        "Ligne 2",
        "Ligne 3",
        "Kits d’aide à l’arrêt (substituts)",
        "4 800,00 €",
        "Salariés fumeurs, cœur de cible 25–45 ans",
    ] {
        assert!(
            text.contains(&expected),
            "{expected:?} missing from {text:#?}"
        );
    }
    // Téléphone, Partenaires, the blank budget value, the empty repetition and « Instruit le ».
    assert_eq!(text.iter().filter(|t| **t == "Non renseigné").count(), 5);
    let total = checked.pages.len();
    assert_eq!(
        checked.pages[0].last().map(String::as_str),
        Some(format!("Page 1 / {total} — généré le {GENERATED_AT}").as_str())
    );
    assert_qpdf_accepts(&pdf, "realistic");
}

#[test]
fn french_text_round_trips_through_pdftotext() {
    let pdf = render(&projet_dossier(), GENERATED_AT);
    let total = check_structure(&pdf).pages.len();
    let Some(text) = pdftotext(&pdf, "roundtrip") else {
        return;
    };
    let footer = format!("Page {total} / {total} — généré le 27/11/2026 à 18:45");
    for expected in [
        "Dossier n° 42",
        "Structure porteuse",
        "Ligue contre le cancer – Comité de l’Hérault",
        "Bâtiment « Les Œillets »",
        "« Ensemble, on arrête ! » : défi collectif en entreprise",
        "Salariés fumeurs, cœur de cible 25–45 ans",
        "satisfaction…",
        "questionnaire avant/après — taux d’arrêt",
        "Ligne 3",
        "2 150,50 €",
        "Non renseigné",
        "Page 1 / ",
        &footer,
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from pdftotext output:\n{text}"
        );
    }
}

/// A dossier with `n` short entries in one section.
fn long_dossier(n: usize) -> PdfDocument {
    PdfDocument {
        title: "Dossier n° 1337".to_owned(),
        subtitle: "Mois sans tabac 2024 — Action".to_owned(),
        meta: vec![("Statut".to_owned(), "En instruction".to_owned())],
        sections: vec![PdfSection {
            title: "Actions menées".to_owned(),
            entries: (1..=n)
                .map(|i| {
                    entry(
                        &format!("Question n° {i}"),
                        text(&format!("Réponse n° {i} : été, à, où")),
                    )
                })
                .collect(),
        }],
    }
}

#[test]
fn three_hundred_entries_spread_over_pages_each_with_header_and_footer() {
    let doc = long_dossier(300);
    let pdf = render(&doc, GENERATED_AT);
    let checked = check_structure(&pdf);
    let total = checked.pages.len();
    // 300 entries × (label + value + gap) ≈ 9600 pt of body, ≈ 728 pt per page.
    assert!((12..=16).contains(&total), "{total} pages");
    for (index, page) in checked.pages.iter().enumerate() {
        let header: Vec<&String> = page.iter().filter(|t| *t == "Dossier n° 1337").collect();
        assert_eq!(
            header.len(),
            if index == 0 { 2 } else { 1 },
            "header on page {}",
            index + 1
        );
        assert!(
            page.contains(&"Mois sans tabac 2024 — Action".to_owned()),
            "subtitle in the header"
        );
        let footer = format!("Page {} / {total} — généré le {GENERATED_AT}", index + 1);
        assert_eq!(page.last(), Some(&footer));
    }
    // Every answer is there once, in order, and no label is separated from its value.
    let text = checked.all_text();
    let answers: Vec<&str> = text
        .iter()
        .copied()
        .filter(|t| t.starts_with("Réponse n° "))
        .collect();
    assert_eq!(answers.len(), 300);
    assert_eq!(answers[299], "Réponse n° 300 : été, à, où");
    for page in &checked.pages {
        let body: Vec<&String> = page
            .iter()
            .filter(|t| t.starts_with("Question") || t.starts_with("Réponse"))
            .collect();
        assert!(
            body.first().is_some_and(|t| t.starts_with("Question")),
            "a page never starts with an orphaned value"
        );
        assert!(
            body.last().is_some_and(|t| t.starts_with("Réponse")),
            "a page never ends with an orphaned label"
        );
    }
    if let Some(text) = pdftotext(&pdf, "paginated") {
        assert!(text.contains(&format!(
            "Page {total} / {total} — généré le {GENERATED_AT}"
        )));
        assert!(text.contains("Réponse n° 300 : été, à, où"));
    }
    assert_qpdf_accepts(&pdf, "paginated");
}

#[test]
fn body_text_stays_inside_the_margins() {
    let mut doc = projet_dossier();
    doc.sections.push(long_dossier(120).sections.remove(0));
    doc.sections[0]
        .entries
        .push(entry("Mot interminable", text(&"W".repeat(2_000))));
    for page in layout::layout(&doc) {
        for op in &page.ops {
            if let Op::Text {
                font,
                size,
                x,
                y,
                text,
                ..
            } = op
            {
                assert!(*x >= MARGIN - 1e-6);
                assert!(
                    x + font.width(text, *size) <= PAGE_WIDTH - MARGIN + 1e-6,
                    "{:?}",
                    String::from_utf8_lossy(text)
                );
                assert!(*y >= MARGIN - 0.21 * size && *y <= PAGE_HEIGHT - MARGIN);
            }
        }
    }
}

fn hostile_dossier() -> PdfDocument {
    let huge: String = "Lorem ipsum dolor sit amet, été ".repeat(3_200);
    assert!(huge.chars().count() >= 100_000);
    let nasty =
        "NUL\0 ) ( \\ )(\\ \\) endobj %%EOF 😀👩‍👩‍👧 \u{7}\u{1b}[31m \u{202E}RTL 中文 ﷽ \r\n\t x";
    PdfDocument {
        title: format!("Dossier n° 7 {nasty}"),
        subtitle: "A".repeat(100_000),
        meta: vec![
            (nasty.to_owned(), nasty.to_owned()),
            (String::new(), String::new()),
        ],
        sections: vec![
            PdfSection {
                title: nasty.to_owned(),
                entries: vec![
                    entry(nasty, text(nasty)),
                    entry("Sans espaces", text(&"x".repeat(100_000))),
                    entry("Texte long", text(&huge)),
                    entry(
                        &"Libellé ".repeat(500),
                        PdfValue::Rows(vec![vec![(nasty.to_owned(), huge.clone())], vec![]]),
                    ),
                    entry("", text("\n\n\n")),
                    entry("Combinants", text("e\u{301}\u{301}\u{301}\u{20DD}")),
                ],
            },
            PdfSection {
                title: String::new(),
                entries: Vec::new(),
            },
        ],
    }
}

#[test]
fn hostile_input_renders_a_valid_file_without_panicking() {
    let pdf = render(&hostile_dossier(), "\0)😀");
    let checked = check_structure(&pdf);
    assert!(
        checked.pages.len() > 10,
        "100 000 characters take many pages"
    );
    let text = checked.all_text().join("\n");
    assert!(
        text.contains("\nNUL? ) ( \\ )(\\ \\) endobj %%EOF ???? ??[31m ?RTL ?? ?\nx\n"),
        "{}",
        text.chars().take(2000).collect::<String>()
    );
    assert!(text.contains("Combinants\né?"));
    // The running header's subtitle is cut to one line.
    let header = &checked.pages[1][checked.pages[1].len() - 2];
    assert!(
        header.starts_with('A') && header.ends_with('…') && header.len() < 400,
        "{header}"
    );
    assert_qpdf_accepts(&pdf, "hostile");
    if let Some(text) = pdftotext(&pdf, "hostile") {
        assert!(text.contains("endobj %%EOF"));
    }
}

#[test]
fn an_empty_document_is_one_valid_page() {
    let checked = check_structure(&render(&PdfDocument::default(), ""));
    assert_eq!(checked.pages, vec![vec!["Page 1 / 1".to_owned()]]);
}

#[test]
fn the_same_input_renders_the_same_bytes() {
    assert_eq!(
        render(&projet_dossier(), GENERATED_AT),
        render(&projet_dossier(), GENERATED_AT)
    );
    let hostile = hostile_dossier();
    assert_eq!(
        render(&hostile, GENERATED_AT),
        render(&hostile, GENERATED_AT)
    );
    assert_ne!(
        render(&projet_dossier(), GENERATED_AT),
        render(&projet_dossier(), "28/11/2026 à 08:00")
    );
}

#[test]
fn numbers_are_written_without_exponent_or_trailing_zeros() {
    assert_eq!(num(785.2), "785.2");
    assert_eq!(num(10.0), "10");
    assert_eq!(num(-0.001), "0");
    assert_eq!(num(f64::NAN), "0");
    assert_eq!(num(1e20), "100000000000000000000");
    assert_eq!(utf16_text_string(" é😀 "), "<FEFF00E9D83DDE00>");
}

fn any_value() -> impl Strategy<Value = PdfValue> {
    prop_oneof![
        any::<String>().prop_map(PdfValue::Text),
        Just(PdfValue::Empty),
        prop::collection::vec(
            prop::collection::vec((any::<String>(), any::<String>()), 0..3),
            0..3
        )
        .prop_map(PdfValue::Rows),
    ]
}

fn any_document() -> impl Strategy<Value = PdfDocument> {
    let entry = (any::<String>(), any_value()).prop_map(|(label, value)| PdfEntry { label, value });
    let section = (any::<String>(), prop::collection::vec(entry, 0..6))
        .prop_map(|(title, entries)| PdfSection { title, entries });
    (
        any::<String>(),
        any::<String>(),
        prop::collection::vec((any::<String>(), any::<String>()), 0..4),
        prop::collection::vec(section, 0..4),
    )
        .prop_map(|(title, subtitle, meta, sections)| PdfDocument {
            title,
            subtitle,
            meta,
            sections,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_document_renders_a_valid_file(doc in any_document(), generated_at in any::<String>()) {
        let checked = check_structure(&render(&doc, &generated_at));
        prop_assert!(!checked.pages.is_empty());
    }
}
