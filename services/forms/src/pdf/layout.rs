//! Line breaking and page layout: turns a [`PdfDocument`] into pages of positioned text runs and
//! rules. Running headers and footers are not laid out here: they need the page count, which is
//! only known once the body has been laid out (see `super::render`).

use super::metrics::Font;
use super::winansi::{self, NBSP};
use super::{PdfDocument, PdfEntry, PdfValue};

/// A4 width in points.
pub(super) const PAGE_WIDTH: f64 = 595.28;
/// A4 height in points.
pub(super) const PAGE_HEIGHT: f64 = 841.89;
/// 20 mm, in points.
pub(super) const MARGIN: f64 = 56.69;
/// Width of the text block.
pub(super) const CONTENT_WIDTH: f64 = PAGE_WIDTH - 2.0 * MARGIN;
/// Top of the body on every page (the running header sits above it, in the margin).
const BODY_TOP: f64 = PAGE_HEIGHT - MARGIN;
/// Lowest point the body may reach (the footer sits below it, in the margin).
const BODY_BOTTOM: f64 = MARGIN;

/// Body text size and line height.
const BODY_SIZE: f64 = 10.0;
const BODY_LEADING: f64 = 13.0;
const TITLE_SIZE: f64 = 18.0;
const TITLE_LEADING: f64 = 22.0;
const SUBTITLE_SIZE: f64 = 12.0;
const SUBTITLE_LEADING: f64 = 15.0;
const SECTION_SIZE: f64 = 13.0;
const SECTION_LEADING: f64 = 17.0;
/// Indentation of a repetition's rows, and again of their fields.
const ROW_INDENT: f64 = 14.0;

/// Grey levels (0 = black).
const BLACK: f64 = 0.0;
const DARK: f64 = 0.25;
const MUTED: f64 = 0.45;
const RULE_GREY: f64 = 0.6;

/// Shown for an unanswered field.
const NOT_FILLED: &str = "Non renseigné";

/// One drawing operation, in PDF user space (points, origin at the bottom left).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    /// A single line of WinAnsi text whose baseline starts at (`x`, `y`).
    Text {
        font: Font,
        size: f64,
        x: f64,
        y: f64,
        grey: f64,
        text: Vec<u8>,
    },
    /// A horizontal rule.
    Rule {
        x1: f64,
        x2: f64,
        y: f64,
        grey: f64,
        width: f64,
    },
}

/// The drawing operations of one page's body.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Page {
    pub(super) ops: Vec<Op>,
}

/// Lays the document body out on as many pages as needed (at least one).
pub(super) fn layout(doc: &PdfDocument) -> Vec<Page> {
    let mut flow = Flow::new();
    flow.paragraphs(
        &doc.title,
        Font::Bold,
        TITLE_SIZE,
        TITLE_LEADING,
        MARGIN,
        BLACK,
    );
    flow.paragraphs(
        &doc.subtitle,
        Font::Regular,
        SUBTITLE_SIZE,
        SUBTITLE_LEADING,
        MARGIN,
        DARK,
    );
    if !doc.meta.is_empty() {
        flow.gap(8.0);
        flow.meta(&doc.meta);
    }
    for section in &doc.sections {
        flow.gap(16.0);
        // Keep the title with its rule and the first entry's label and value.
        flow.ensure(SECTION_LEADING + 6.0 + 2.0 * BODY_LEADING);
        flow.paragraphs(
            &section.title,
            Font::Bold,
            SECTION_SIZE,
            SECTION_LEADING,
            MARGIN,
            BLACK,
        );
        let y = flow.y - 2.0;
        flow.rule(MARGIN, MARGIN + CONTENT_WIDTH, y, RULE_GREY, 0.6);
        flow.y -= 6.0;
        for entry in &section.entries {
            flow.entry(entry);
            flow.gap(6.0);
        }
    }
    flow.finish()
}

/// The cursor running down the pages.
struct Flow {
    done: Vec<Page>,
    page: Page,
    /// Top of the next line box.
    y: f64,
}

impl Flow {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            page: Page::default(),
            y: BODY_TOP,
        }
    }

    fn finish(mut self) -> Vec<Page> {
        self.done.push(self.page);
        self.done
    }

    fn page_break(&mut self) {
        self.done.push(std::mem::take(&mut self.page));
        self.y = BODY_TOP;
    }

    /// Starts a new page unless `height` more points fit on this one. An empty page never
    /// breaks, so progress is guaranteed whatever is asked.
    fn ensure(&mut self, height: f64) {
        if self.y - height < BODY_BOTTOM && !self.page.ops.is_empty() {
            self.page_break();
        }
    }

    /// Vertical space between blocks; swallowed at the top of a page. It never breaks the page
    /// itself (the next line does, if it must), so a trailing gap cannot leave an empty page.
    fn gap(&mut self, height: f64) {
        if !self.page.ops.is_empty() {
            self.y -= height;
        }
    }

    /// Reserves a line box of `leading` points and returns the baseline that centres text of
    /// `size` points (Helvetica: ascender 0.718, descender 0.207 em) in it.
    fn next_line(&mut self, size: f64, leading: f64) -> f64 {
        self.ensure(leading);
        let padding = (leading - 0.925 * size) / 2.0;
        let baseline = self.y - padding - 0.718 * size;
        self.y -= leading;
        baseline
    }

    fn text(&mut self, font: Font, size: f64, x: f64, y: f64, grey: f64, text: Vec<u8>) {
        if !text.is_empty() {
            self.page.ops.push(Op::Text {
                font,
                size,
                x,
                y,
                grey,
                text,
            });
        }
    }

    fn rule(&mut self, x1: f64, x2: f64, y: f64, grey: f64, width: f64) {
        self.page.ops.push(Op::Rule {
            x1,
            x2,
            y,
            grey,
            width,
        });
    }

    /// Lays out `lines` one per line box.
    fn lines(&mut self, lines: Vec<Vec<u8>>, style: Style) {
        for line in lines {
            let y = self.next_line(style.size, style.leading);
            self.text(style.font, style.size, style.x, y, style.grey, line);
        }
    }

    /// Wraps `text` (which may hold line breaks) to the remaining width from `x` and lays it out.
    fn paragraphs(&mut self, text: &str, font: Font, size: f64, leading: f64, x: f64, grey: f64) {
        let width = MARGIN + CONTENT_WIDTH - x;
        let style = Style {
            font,
            size,
            leading,
            x,
            grey,
        };
        self.lines(wrap(text, font, size, width), style);
    }

    /// The « label / value » grid under the title: labels in bold in a left column sized to the
    /// longest label (within bounds), values on the right.
    fn meta(&mut self, meta: &[(String, String)]) {
        let widest = meta
            .iter()
            .map(|(label, _)| Font::Bold.width(&winansi::encode(label), BODY_SIZE))
            .fold(0.0, f64::max);
        let column = (widest + 12.0).clamp(70.0, CONTENT_WIDTH * 0.4);
        for (label, value) in meta {
            let labels = wrap(label, Font::Bold, BODY_SIZE, column - 12.0);
            let (values, font, grey) =
                match wrap(value, Font::Regular, BODY_SIZE, CONTENT_WIDTH - column) {
                    lines if lines.is_empty() => {
                        (vec![winansi::encode(NOT_FILLED)], Font::Oblique, MUTED)
                    }
                    lines => (lines, Font::Regular, BLACK),
                };
            let rows = labels.len().max(values.len());
            let mut labels = labels.into_iter();
            let mut values = values.into_iter();
            for _ in 0..rows {
                let y = self.next_line(BODY_SIZE, BODY_LEADING);
                if let Some(label) = labels.next() {
                    self.text(Font::Bold, BODY_SIZE, MARGIN, y, BLACK, label);
                }
                if let Some(value) = values.next() {
                    self.text(font, BODY_SIZE, MARGIN + column, y, grey, value);
                }
            }
        }
    }

    /// A field: its label in bold, then its value below it.
    fn entry(&mut self, entry: &PdfEntry) {
        // Never leave a label alone at the bottom of a page.
        self.ensure(2.0 * BODY_LEADING);
        self.paragraphs(
            &entry.label,
            Font::Bold,
            BODY_SIZE,
            BODY_LEADING,
            MARGIN,
            BLACK,
        );
        match &entry.value {
            PdfValue::Text(text) => self.value(text, MARGIN),
            PdfValue::Empty => self.not_filled(MARGIN),
            PdfValue::Rows(rows) if rows.is_empty() => self.not_filled(MARGIN),
            PdfValue::Rows(rows) => {
                for (index, row) in rows.iter().enumerate() {
                    self.gap(3.0);
                    self.ensure(2.0 * BODY_LEADING);
                    let heading = format!("Ligne {}", index + 1);
                    let x = MARGIN + ROW_INDENT;
                    self.paragraphs(&heading, Font::Bold, BODY_SIZE, BODY_LEADING, x, DARK);
                    let x = MARGIN + 2.0 * ROW_INDENT;
                    if row.is_empty() {
                        self.not_filled(x);
                    }
                    for (label, value) in row {
                        self.ensure(2.0 * BODY_LEADING);
                        self.paragraphs(label, Font::Bold, BODY_SIZE, BODY_LEADING, x, BLACK);
                        self.value(value, x);
                    }
                }
            }
        }
    }

    /// A text answer, or « Non renseigné » when it is blank.
    fn value(&mut self, text: &str, x: f64) {
        let lines = wrap(text, Font::Regular, BODY_SIZE, MARGIN + CONTENT_WIDTH - x);
        if lines.is_empty() {
            self.not_filled(x);
        } else {
            self.lines(lines, Style::body(Font::Regular, x, BLACK));
        }
    }

    fn not_filled(&mut self, x: f64) {
        let y = self.next_line(BODY_SIZE, BODY_LEADING);
        self.text(
            Font::Oblique,
            BODY_SIZE,
            x,
            y,
            MUTED,
            winansi::encode(NOT_FILLED),
        );
    }
}

/// How a run of lines is set.
#[derive(Debug, Clone, Copy)]
struct Style {
    font: Font,
    size: f64,
    leading: f64,
    x: f64,
    grey: f64,
}

impl Style {
    fn body(font: Font, x: f64, grey: f64) -> Self {
        Self {
            font,
            size: BODY_SIZE,
            leading: BODY_LEADING,
            x,
            grey,
        }
    }
}

/// Breaks `text` into WinAnsi lines no wider than `max_width` points: on its line breaks, then
/// between words, and inside a word only when the word alone is wider than the line. Runs of
/// spaces collapse; blank lines inside the text are kept, blank lines around it are not, so a
/// blank text gives no line at all.
pub(super) fn wrap(text: &str, font: Font, size: f64, max_width: f64) -> Vec<Vec<u8>> {
    let max_units = if size > 0.0 {
        (max_width.max(0.0) * 1000.0 / size) as u64
    } else {
        u64::MAX
    };
    let mut lines = Vec::new();
    for paragraph in text
        .split("\r\n")
        .flat_map(|part| part.split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']))
    {
        let before = lines.len();
        wrap_paragraph(&winansi::encode(paragraph), font, max_units, &mut lines);
        if lines.len() == before {
            lines.push(Vec::new());
        }
    }
    let start = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |i| i + 1);
    lines.truncate(end);
    lines.drain(..start);
    lines
}

/// Greedy line filling of one paragraph (no line breaks in `bytes`).
fn wrap_paragraph(bytes: &[u8], font: Font, max_units: u64, lines: &mut Vec<Vec<u8>>) {
    let space = u64::from(font.glyph_units(b' '));
    let mut line: Vec<u8> = Vec::new();
    let mut line_units = 0;
    // A "word" of no-break spaces only is blank: dropped like runs of spaces.
    let words = bytes
        .split(|&b| b == b' ')
        .filter(|w| w.iter().any(|&b| b != NBSP));
    for word in words {
        let units = font.units(word);
        if !line.is_empty() && line_units + space + units <= max_units {
            line.push(b' ');
            line.extend_from_slice(word);
            line_units += space + units;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if units <= max_units {
            line.extend_from_slice(word);
            line_units = units;
            continue;
        }
        // A word wider than the line: cut it, at least one character per line.
        line_units = 0;
        for &b in word {
            let glyph = u64::from(font.glyph_units(b));
            if !line.is_empty() && line_units + glyph > max_units {
                lines.push(std::mem::take(&mut line));
                line_units = 0;
            }
            line.push(b);
            line_units += glyph;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
}

/// Shortens a single line to `max_width` points, ending it with « … » when something was cut.
pub(super) fn truncate(text: &[u8], font: Font, size: f64, max_width: f64) -> Vec<u8> {
    if font.width(text, size) <= max_width {
        return text.to_vec();
    }
    const ELLIPSIS: u8 = 0x85;
    let max_units = (max_width.max(0.0) * 1000.0 / size.max(f64::MIN_POSITIVE)) as u64;
    let mut units = u64::from(font.glyph_units(ELLIPSIS));
    let mut out = Vec::new();
    for &b in text {
        let glyph = u64::from(font.glyph_units(b));
        if units + glyph > max_units {
            break;
        }
        units += glyph;
        out.push(b);
    }
    while out.last().is_some_and(|&b| b == b' ' || b == NBSP) {
        out.pop();
    }
    out.push(ELLIPSIS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_fill_lines_up_to_the_real_glyph_widths() {
        // "aaa" = 3 × 556 = 1668 units; "aaa aaa" = 3614 units = 36.14 pt at 10 pt.
        let lines = wrap("aaa aaa aaa", Font::Regular, 10.0, 36.14);
        assert_eq!(lines, vec![b"aaa aaa".to_vec(), b"aaa".to_vec()]);
        let lines = wrap("aaa aaa aaa", Font::Regular, 10.0, 36.13);
        assert_eq!(lines.len(), 3);
        // Bold is wider: "iii iii" is 1610 units regular, 1946 bold.
        assert_eq!(wrap("iii iii", Font::Regular, 10.0, 16.2).len(), 1);
        assert_eq!(wrap("iii iii", Font::Bold, 10.0, 16.2).len(), 2);
    }

    #[test]
    fn long_words_are_cut_and_no_break_spaces_are_kept_together() {
        let lines = wrap(&"m".repeat(100), Font::Regular, 10.0, 50.0);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| Font::Regular.width(l, 10.0) <= 50.0));
        assert_eq!(lines.concat(), "m".repeat(100).into_bytes());
        let lines = wrap("montant 12\u{202F}000\u{A0}€", Font::Regular, 10.0, 45.0);
        assert_eq!(lines[1], b"12\xA0000\xA0\x80");
    }

    #[test]
    fn line_breaks_are_kept_and_blank_text_gives_no_line() {
        let lines = wrap("\n\nun\r\n\r\ndeux\rtrois\n \n", Font::Regular, 10.0, 400.0);
        assert_eq!(
            lines,
            vec![b"un".to_vec(), vec![], b"deux".to_vec(), b"trois".to_vec()]
        );
        assert!(wrap(" \n\t\u{A0}\u{202F}\n", Font::Regular, 10.0, 400.0).is_empty());
    }

    #[test]
    fn truncation_ends_with_an_ellipsis_within_the_width() {
        let text = winansi::encode("Projet de prévention du tabagisme au collège");
        let short = truncate(&text, Font::Bold, 8.0, 80.0);
        assert!(Font::Bold.width(&short, 8.0) <= 80.0);
        assert_eq!(short.last(), Some(&0x85));
        assert_eq!(truncate(b"court", Font::Bold, 8.0, 80.0), b"court");
    }

    #[test]
    fn no_page_is_left_empty_whatever_the_length() {
        let entry = |i: usize| PdfEntry {
            label: format!("Question {i}"),
            value: PdfValue::Text(format!("Réponse {i}")),
        };
        for n in 1..=150 {
            let doc = PdfDocument {
                title: "Dossier n° 1".to_owned(),
                sections: vec![super::super::PdfSection {
                    title: "Section".to_owned(),
                    entries: (0..n).map(entry).collect(),
                }],
                ..PdfDocument::default()
            };
            let pages = layout(&doc);
            assert!(pages.iter().all(|p| !p.ops.is_empty()), "{n} entries");
        }
        assert_eq!(layout(&PdfDocument::default()), vec![Page::default()]);
    }

    proptest! {
        #[test]
        fn wrapped_lines_never_exceed_the_width(text in "\\PC{0,300}", width in 5.0f64..500.0) {
            for line in wrap(&text, Font::Regular, 10.0, width) {
                // A single glyph wider than the line is the only allowed overflow.
                prop_assert!(Font::Regular.width(&line, 10.0) <= width || line.len() == 1);
            }
        }
    }
}
