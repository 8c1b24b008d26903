//! The PDF of a dossier: its number, procedure, status and dates, then every visible section
//! with its answers, in French (issue 3, « PDF of a dossier »).
//!
//! A self-contained renderer: the caller (the `GetDossierPdf` RPC) builds a [`PdfDocument`] from
//! the dossier — visibility already applied, values already formatted for display — and
//! [`render`] returns the bytes of a complete PDF 1.4 file, ready to be streamed in chunks.
//!
//! No dependency is needed: the file uses the standard Type 1 fonts every PDF reader has
//! (Helvetica, Helvetica-Bold, Helvetica-Oblique) with `/WinAnsiEncoding`, so nothing is
//! embedded; text is transcoded to Windows-1252 (`winansi`), broken into lines with the fonts'
//! real glyph widths (`metrics`, `layout`), and written as uncompressed content streams with an
//! exact cross-reference table (`writer`). Rendering is pure and deterministic — the same input
//! gives the same bytes (no creation date or random file identifier is written) — and it never
//! panics: any Unicode input renders, unrepresentable characters as `?`.
//!
//! Layout: A4 portrait, 20 mm margins; the title, subtitle and a « label / value » grid of the
//! metadata on the first page; then each section title in bold over a rule, and each field as
//! its label in bold above its value. A repetition is shown as numbered, indented blocks
//! « Ligne 1 », « Ligne 2 »…; an unanswered field as « Non renseigné » in grey italics. Every
//! page carries a running header (the title, and the subtitle when it fits) and a footer
//! « Page n / N — généré le … ».
//!
//! ```
//! use mst_forms::pdf::{PdfDocument, PdfEntry, PdfSection, PdfValue, render};
//!
//! let doc = PdfDocument {
//!     title: "Dossier n° 42".into(),
//!     subtitle: "Mois sans tabac 2024 — Projet".into(),
//!     meta: vec![("Statut".into(), "En construction".into())],
//!     sections: vec![PdfSection {
//!         title: "Structure porteuse".into(),
//!         entries: vec![PdfEntry { label: "SIRET".into(), value: PdfValue::Empty }],
//!     }],
//! };
//! let bytes = render(&doc, "27/11/2026 à 18:45");
//! assert!(bytes.starts_with(b"%PDF-1.4"));
//! ```

mod layout;
mod metrics;
mod winansi;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use layout::{CONTENT_WIDTH, MARGIN, Op, PAGE_HEIGHT, PAGE_WIDTH};
use metrics::Font;
use writer::PdfWriter;

/// Media type of the rendered bytes.
pub const CONTENT_TYPE: &str = "application/pdf";

/// What the PDF shows: everything is display text, already formatted by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PdfDocument {
    /// Main title, also the running header, e.g. « Dossier n° 42 ».
    pub title: String,
    /// Under the title, e.g. the procedure title; also in the running header when it fits.
    pub subtitle: String,
    /// Label / value pairs under the title, e.g. (« Statut », « En construction »),
    /// (« Déposé le », « 12/07/2024 à 14:03 »). A blank value shows « Non renseigné ».
    pub meta: Vec<(String, String)>,
    /// The visible sections, in form order.
    pub sections: Vec<PdfSection>,
}

/// A titled group of fields (a `header_section` of the form, or a fixed block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PdfSection {
    /// Shown in bold over a rule.
    pub title: String,
    /// The section's visible fields, in form order.
    pub entries: Vec<PdfEntry>,
}

/// One field and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfEntry {
    /// The field's label, shown in bold.
    pub label: String,
    /// The answer.
    pub value: PdfValue,
}

/// An answer as displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdfValue {
    /// Display text; may contain line breaks, which are kept. Blank text shows as [`Self::Empty`].
    Text(String),
    /// No answer: « Non renseigné » in grey italics.
    Empty,
    /// A repetition: each row a list of (label, value), shown as numbered, indented blocks
    /// « Ligne 1 », « Ligne 2 »… No row shows « Non renseigné », and so does a blank value.
    Rows(Vec<Vec<(String, String)>>),
}

/// Renders `doc` as a complete PDF file. `generated_at` is the display date of the footer
/// (« généré le 27/11/2026 à 18:45 »). Deterministic, and never panics.
pub fn render(doc: &PdfDocument, generated_at: &str) -> Vec<u8> {
    let pages = layout::layout(doc);
    let total = pages.len();
    let header = running_header(doc);

    let mut pdf = PdfWriter::new();
    let catalog = pdf.reserve();
    let tree = pdf.reserve();
    let fonts: Vec<(Font, u32)> = Font::ALL
        .iter()
        .map(|&font| (font, pdf.reserve()))
        .collect();
    let info = pdf.reserve();

    let mut resources = String::from("<< /Font <<");
    for (font, id) in &fonts {
        let _ = write!(resources, " /{} {id} 0 R", font.resource());
    }
    resources.push_str(" >> /ProcSet [/PDF /Text] >>");

    let mut kids = String::new();
    for (index, page) in pages.iter().enumerate() {
        let page_id = pdf.reserve();
        let content_id = pdf.reserve();
        let footer = footer(index + 1, total, generated_at);
        let ops = page.ops.iter().chain(&header).chain(&footer);
        pdf.stream(content_id, &content_stream(ops));
        let page_dict = format!(
            "<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 {} {}] /Resources {resources} \
             /Contents {content_id} 0 R >>",
            num(PAGE_WIDTH),
            num(PAGE_HEIGHT),
        );
        pdf.object(page_id, page_dict.as_bytes());
        if !kids.is_empty() {
            kids.push(' ');
        }
        let _ = write!(kids, "{page_id} 0 R");
    }

    let tree_dict = format!("<< /Type /Pages /Kids [{kids}] /Count {total} >>");
    pdf.object(tree, tree_dict.as_bytes());
    for (font, id) in &fonts {
        let font_dict = format!(
            "<< /Type /Font /Subtype /Type1 /BaseFont /{} /Encoding /WinAnsiEncoding >>",
            font.base_font()
        );
        pdf.object(*id, font_dict.as_bytes());
    }
    let info_dict = format!(
        "<< /Title {} /Subject {} /Producer (mst-dossiers) /Creator (mst-dossiers forms) >>",
        utf16_text_string(&doc.title),
        utf16_text_string(&doc.subtitle),
    );
    pdf.object(info, info_dict.as_bytes());
    let catalog_dict = format!("<< /Type /Catalog /Pages {tree} 0 R /Lang (fr-FR) >>");
    pdf.object(catalog, catalog_dict.as_bytes());
    pdf.finish(catalog, info)
}

/// Size of the running header and footer text.
const MARGIN_TEXT_SIZE: f64 = 8.0;

/// The title (bold) at the left of every page's top margin, the subtitle right-aligned when
/// room is left, both cut with « … » when too long, over a thin rule.
fn running_header(doc: &PdfDocument) -> Vec<Op> {
    let size = MARGIN_TEXT_SIZE;
    let baseline = PAGE_HEIGHT - 36.0;
    let subtitle = winansi::encode(doc.subtitle.trim());
    let title_room = if subtitle.is_empty() {
        CONTENT_WIDTH
    } else {
        CONTENT_WIDTH * 0.6
    };
    let title = layout::truncate(
        &winansi::encode(doc.title.trim()),
        Font::Bold,
        size,
        title_room,
    );
    let mut ops = Vec::new();
    let title_width = Font::Bold.width(&title, size);
    if !title.is_empty() {
        ops.push(Op::Text {
            font: Font::Bold,
            size,
            x: MARGIN,
            y: baseline,
            grey: 0.25,
            text: title,
        });
    }
    let room = CONTENT_WIDTH - title_width - 16.0;
    if !subtitle.is_empty() && room > 40.0 {
        let subtitle = layout::truncate(&subtitle, Font::Regular, size, room);
        let width = Font::Regular.width(&subtitle, size);
        ops.push(Op::Text {
            font: Font::Regular,
            size,
            x: MARGIN + CONTENT_WIDTH - width,
            y: baseline,
            grey: 0.45,
            text: subtitle,
        });
    }
    ops.push(Op::Rule {
        x1: MARGIN,
        x2: MARGIN + CONTENT_WIDTH,
        y: baseline - 6.0,
        grey: 0.75,
        width: 0.5,
    });
    ops
}

/// « Page n / N — généré le … », centred in the bottom margin.
fn footer(page: usize, total: usize, generated_at: &str) -> Vec<Op> {
    let generated_at = generated_at.trim();
    let label = if generated_at.is_empty() {
        format!("Page {page} / {total}")
    } else {
        format!("Page {page} / {total} — généré le {generated_at}")
    };
    let size = MARGIN_TEXT_SIZE;
    let text = layout::truncate(&winansi::encode(&label), Font::Regular, size, CONTENT_WIDTH);
    let width = Font::Regular.width(&text, size);
    vec![Op::Text {
        font: Font::Regular,
        size,
        x: MARGIN + (CONTENT_WIDTH - width) / 2.0,
        y: 30.0,
        grey: 0.45,
        text,
    }]
}

/// Serialises drawing operations as a content stream.
fn content_stream<'a>(ops: impl Iterator<Item = &'a Op>) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Text {
                font,
                size,
                x,
                y,
                grey,
                text,
            } => {
                let head = format!(
                    "{} g BT /{} {} Tf {} {} Td (",
                    num(*grey),
                    font.resource(),
                    num(*size),
                    num(*x),
                    num(*y)
                );
                out.extend_from_slice(head.as_bytes());
                winansi::escape_into(&mut out, text);
                out.extend_from_slice(b") Tj ET\n");
            }
            Op::Rule {
                x1,
                x2,
                y,
                grey,
                width,
            } => {
                let line = format!(
                    "{} G {} w {} {} m {} {} l S\n",
                    num(*grey),
                    num(*width),
                    num(*x1),
                    num(*y),
                    num(*x2),
                    num(*y)
                );
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out
}

/// A PDF number with at most two decimals and no exponent (`12.5`, `0`, `785.2`).
fn num(value: f64) -> String {
    let value = if value.is_finite() { value } else { 0.0 };
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "" | "-0" => "0".to_owned(),
        _ => text.to_owned(),
    }
}

/// Longest document-information string written, in characters.
const INFO_MAX_CHARS: usize = 500;

/// A PDF text string in UTF-16BE with a byte-order mark, as a hex string: the document
/// properties keep every character, emoji included.
fn utf16_text_string(text: &str) -> String {
    let mut out = String::from("<FEFF");
    let mut buf = [0u16; 2];
    for c in text.trim().chars().take(INFO_MAX_CHARS) {
        for unit in c.encode_utf16(&mut buf) {
            let _ = write!(out, "{unit:04X}");
        }
    }
    out.push('>');
    out
}
