//! Glyph widths of the standard Helvetica faces for the WinAnsi code points, so lines are broken
//! where a PDF viewer will really end them.
//!
//! The widths are the `WX` values of Adobe's public AFM files for Helvetica and Helvetica-Bold
//! (Core 14 fonts), in thousandths of the font size, for codes 0x20..=0xFF of WinAnsiEncoding.
//! Helvetica-Oblique is Helvetica slanted: it shares Helvetica's widths.

/// One of the three standard fonts the renderer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Font {
    /// Helvetica: values and running text.
    Regular,
    /// Helvetica-Bold: titles and labels.
    Bold,
    /// Helvetica-Oblique: « Non renseigné ».
    Oblique,
}

impl Font {
    /// Every font, in resource order (`/F1`, `/F2`, `/F3`).
    pub(super) const ALL: [Font; 3] = [Font::Regular, Font::Bold, Font::Oblique];

    /// The resource name used in content streams.
    pub(super) fn resource(self) -> &'static str {
        match self {
            Font::Regular => "F1",
            Font::Bold => "F2",
            Font::Oblique => "F3",
        }
    }

    /// The PostScript name of the standard font.
    pub(super) fn base_font(self) -> &'static str {
        match self {
            Font::Regular => "Helvetica",
            Font::Bold => "Helvetica-Bold",
            Font::Oblique => "Helvetica-Oblique",
        }
    }

    fn widths(self) -> &'static [u16; 224] {
        match self {
            Font::Regular | Font::Oblique => &HELVETICA,
            Font::Bold => &HELVETICA_BOLD,
        }
    }

    /// Advance width of one WinAnsi code, in thousandths of the font size (0 for control codes,
    /// which the encoder never produces).
    pub(super) fn glyph_units(self, code: u8) -> u32 {
        match code.checked_sub(0x20) {
            Some(index) => self
                .widths()
                .get(usize::from(index))
                .map_or(0, |w| u32::from(*w)),
            None => 0,
        }
    }

    /// Advance width of a WinAnsi string, in thousandths of the font size.
    pub(super) fn units(self, text: &[u8]) -> u64 {
        text.iter().map(|&b| u64::from(self.glyph_units(b))).sum()
    }

    /// Width in points of a WinAnsi string set at `size` points.
    pub(super) fn width(self, text: &[u8], size: f64) -> f64 {
        // Lossless: a u64 sum of 16-bit widths stays far below 2^53 for any realistic input.
        self.units(text) as f64 * size / 1000.0
    }
}

/// Helvetica, codes 0x20..=0xFF (AFM `WX`; unassigned WinAnsi codes carry the bullet width).
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // 0x20
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 0x30
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // 0x40
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // 0x50
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // 0x60
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 350, // 0x70
    556, 350, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 350, 611, 350, // 0x80
    350, 222, 222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 350, 500, 667, // 0x90
    278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333, // 0xA0
    400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611, // 0xB0
    667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, // 0xC0
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, // 0xD0
    556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, // 0xE0
    556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500, // 0xF0
];

/// Helvetica-Bold, codes 0x20..=0xFF (AFM `WX`; unassigned WinAnsi codes carry the bullet width).
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, // 0x20
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, // 0x30
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, // 0x40
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, // 0x50
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, // 0x60
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, 350, // 0x70
    556, 350, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 350, 611, 350, // 0x80
    350, 278, 278, 500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 350, 500, 667, // 0x90
    278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370, 556, 584, 333, 737, 333, // 0xA0
    400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611, // 0xB0
    722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, // 0xC0
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, // 0xD0
    556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278, // 0xE0
    611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556, // 0xF0
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_match_the_afm_values_of_well_known_glyphs() {
        // space, i, m, W, é, ç, œ, € in Helvetica / Helvetica-Bold.
        let regular: Vec<u32> = [0x20, b'i', b'm', b'W', 0xE9, 0xE7, 0x9C, 0x80]
            .iter()
            .map(|&c| Font::Regular.glyph_units(c))
            .collect();
        assert_eq!(regular, [278, 222, 833, 944, 556, 500, 944, 556]);
        let bold: Vec<u32> = [0x20, b'i', b'm', b'W', 0xE9, 0xE7, 0x9C, 0x80]
            .iter()
            .map(|&c| Font::Bold.glyph_units(c))
            .collect();
        assert_eq!(bold, [278, 278, 889, 944, 556, 556, 944, 556]);
        assert_eq!(
            Font::Oblique.units(b"Projet"),
            Font::Regular.units(b"Projet")
        );
    }

    #[test]
    fn width_scales_with_the_font_size() {
        // "Dossier" in Helvetica: D722 o556 s500 s500 i222 e556 r333 = 3389 units.
        assert_eq!(Font::Regular.units(b"Dossier"), 3389);
        assert!((Font::Regular.width(b"Dossier", 10.0) - 33.89).abs() < 1e-9);
        assert_eq!(Font::Regular.glyph_units(0), 0);
    }
}
