//! Unicode text to WinAnsiEncoding (Windows code page 1252), the single-byte encoding the
//! standard fonts are declared with, and PDF literal-string escaping.
//!
//! Every `char` maps to at most a couple of bytes and nothing panics: French letters, « », ’, –,
//! —, …, €, œ and Œ keep their own glyphs; the usual Unicode spaces become a space (no-break
//! ones become [`NBSP`], which lines are never broken at); invisible format characters are
//! dropped; a decomposed accent (`e` + U+0301, as macOS produces) is composed back; anything
//! else — emoji, control characters, other scripts — becomes [`REPLACEMENT`].

/// Byte used for characters WinAnsi cannot represent.
pub(super) const REPLACEMENT: u8 = b'?';

/// WinAnsi no-break space: laid out as an unbreakable space, written out as a plain space.
pub(super) const NBSP: u8 = 0xA0;

/// What codes 0x80..=0x9F mean in WinAnsiEncoding (`None`: unassigned).
const HIGH_CONTROLS: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// Letter + combining mark → precomposed letter, for the marks Latin-1 and WinAnsi can show.
const COMPOSITIONS: &[(char, char, char)] = &[
    ('a', '\u{300}', 'à'),
    ('a', '\u{301}', 'á'),
    ('a', '\u{302}', 'â'),
    ('a', '\u{303}', 'ã'),
    ('a', '\u{308}', 'ä'),
    ('a', '\u{30A}', 'å'),
    ('A', '\u{300}', 'À'),
    ('A', '\u{301}', 'Á'),
    ('A', '\u{302}', 'Â'),
    ('A', '\u{303}', 'Ã'),
    ('A', '\u{308}', 'Ä'),
    ('A', '\u{30A}', 'Å'),
    ('c', '\u{327}', 'ç'),
    ('C', '\u{327}', 'Ç'),
    ('e', '\u{300}', 'è'),
    ('e', '\u{301}', 'é'),
    ('e', '\u{302}', 'ê'),
    ('e', '\u{308}', 'ë'),
    ('E', '\u{300}', 'È'),
    ('E', '\u{301}', 'É'),
    ('E', '\u{302}', 'Ê'),
    ('E', '\u{308}', 'Ë'),
    ('i', '\u{300}', 'ì'),
    ('i', '\u{301}', 'í'),
    ('i', '\u{302}', 'î'),
    ('i', '\u{308}', 'ï'),
    ('I', '\u{300}', 'Ì'),
    ('I', '\u{301}', 'Í'),
    ('I', '\u{302}', 'Î'),
    ('I', '\u{308}', 'Ï'),
    ('n', '\u{303}', 'ñ'),
    ('N', '\u{303}', 'Ñ'),
    ('o', '\u{300}', 'ò'),
    ('o', '\u{301}', 'ó'),
    ('o', '\u{302}', 'ô'),
    ('o', '\u{303}', 'õ'),
    ('o', '\u{308}', 'ö'),
    ('O', '\u{300}', 'Ò'),
    ('O', '\u{301}', 'Ó'),
    ('O', '\u{302}', 'Ô'),
    ('O', '\u{303}', 'Õ'),
    ('O', '\u{308}', 'Ö'),
    ('u', '\u{300}', 'ù'),
    ('u', '\u{301}', 'ú'),
    ('u', '\u{302}', 'û'),
    ('u', '\u{308}', 'ü'),
    ('U', '\u{300}', 'Ù'),
    ('U', '\u{301}', 'Ú'),
    ('U', '\u{302}', 'Û'),
    ('U', '\u{308}', 'Ü'),
    ('y', '\u{301}', 'ý'),
    ('y', '\u{308}', 'ÿ'),
    ('Y', '\u{301}', 'Ý'),
    ('Y', '\u{308}', 'Ÿ'),
    ('s', '\u{30C}', 'š'),
    ('S', '\u{30C}', 'Š'),
    ('z', '\u{30C}', 'ž'),
    ('Z', '\u{30C}', 'Ž'),
];

/// The WinAnsi code of `c`, if it has its own glyph there.
fn code_of(c: char) -> Option<u8> {
    match u32::from(c) {
        0x20..=0x7E | 0xA0..=0xFF => u8::try_from(u32::from(c)).ok(),
        _ => HIGH_CONTROLS
            .iter()
            .position(|&h| h == Some(c))
            .and_then(|i| u8::try_from(0x80 + i).ok()),
    }
}

/// The character WinAnsi code `code` stands for (`None` for control and unassigned codes).
pub(super) fn char_of(code: u8) -> Option<char> {
    match code {
        0x20..=0x7E | 0xA0..=0xFF => Some(char::from(code)),
        0x80..=0x9F => HIGH_CONTROLS
            .get(usize::from(code - 0x80))
            .copied()
            .flatten(),
        _ => None,
    }
}

/// Encodes one line of text: line breaks inside it become spaces (split paragraphs first where
/// they matter).
pub(super) fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        push_char(&mut out, c);
    }
    out
}

fn push_char(out: &mut Vec<u8>, c: char) {
    if is_combining_mark(c) {
        compose_last(out, c);
        return;
    }
    if let Some(code) = code_of(c) {
        // U+00AD soft hyphen: an invisible break hint, not a glyph to print.
        if code != 0xAD {
            out.push(code);
        }
        return;
    }
    match c {
        '\t' | '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{85}' => out.push(b' '),
        '\u{2000}'..='\u{2006}' | '\u{2008}'..='\u{200A}' | '\u{205F}' | '\u{3000}' => {
            out.push(b' ')
        }
        '\u{2007}' | '\u{202F}' => out.push(NBSP),
        '\u{200B}'..='\u{200F}'
        | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{E0100}'..='\u{E01EF}' => {}
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2043}' | '\u{2212}' => out.push(b'-'),
        '\u{2015}' => out.push(0x97),
        '\u{2032}' | '\u{02BC}' => out.push(0x92),
        '\u{2033}' => out.push(b'"'),
        '\u{2264}' => out.extend_from_slice(b"<="),
        '\u{2265}' => out.extend_from_slice(b">="),
        '\u{2192}' => out.extend_from_slice(b"->"),
        '\u{FB00}' => out.extend_from_slice(b"ff"),
        '\u{FB01}' => out.extend_from_slice(b"fi"),
        '\u{FB02}' => out.extend_from_slice(b"fl"),
        _ => out.push(REPLACEMENT),
    }
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{300}'..='\u{36F}')
}

/// Folds a combining mark into the letter before it when WinAnsi has the composed letter;
/// otherwise the mark is dropped, keeping the bare letter readable.
fn compose_last(out: &mut [u8], mark: char) {
    let Some(&last) = out.last() else { return };
    let Some(base) = char_of(last) else { return };
    let composed = COMPOSITIONS
        .iter()
        .find(|&&(b, m, _)| b == base && m == mark)
        .and_then(|&(_, _, c)| code_of(c));
    if let (Some(code), Some(slot)) = (composed, out.last_mut()) {
        *slot = code;
    }
}

/// Writes `text` as the body of a PDF literal string (without the parentheses): `(`, `)` and
/// `\` are escaped, bytes outside printable ASCII are written as octal escapes so content
/// streams stay 7-bit, and [`NBSP`] is written as a plain space.
pub(super) fn escape_into(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'(' | b')' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            NBSP => out.push(b' '),
            0x20..=0x7E => out.push(b),
            _ => out.extend_from_slice(&[
                b'\\',
                b'0' + (b >> 6),
                b'0' + ((b >> 3) & 7),
                b'0' + (b & 7),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|&b| char_of(b).unwrap_or('\u{FFFD}'))
            .collect()
    }

    #[test]
    fn french_text_keeps_every_accent_and_typographic_sign() {
        let text = "Déposé à Saint-Étienne : « cœur », l’été — œuvre… 12 € ÇÀÈÉÊËÎÏÔÙÛÜŸ Œ – ç";
        let bytes = encode(text);
        assert_eq!(decode(&bytes), text);
        assert_eq!(bytes.len(), text.chars().count(), "one byte per character");
        assert!(!bytes.contains(&REPLACEMENT));
    }

    #[test]
    fn spaces_become_plain_or_unbreakable_spaces() {
        assert_eq!(
            encode("a\u{A0}b\u{202F}c\u{2009}d\te\nf"),
            b"a\xA0b\xA0c d e f"
        );
    }

    #[test]
    fn unrepresentable_characters_become_question_marks() {
        assert_eq!(encode("a\0b😀c\u{7}d\u{81}e中"), b"a?b?c?d?e?");
        // The emoji's variation selector and the zero-width joiner are invisible: dropped.
        assert_eq!(encode("❤\u{FE0F}\u{200D}x"), b"?x");
    }

    #[test]
    fn decomposed_accents_are_composed_back() {
        assert_eq!(decode(&encode("e\u{301}te\u{301} c\u{327}a")), "été ça");
        // No composed form: the mark is dropped, the letter stays.
        assert_eq!(encode("q\u{301}"), b"q");
        assert_eq!(encode("\u{301}x"), b"x");
    }

    #[test]
    fn literal_strings_escape_delimiters_and_high_bytes() {
        let mut out = Vec::new();
        escape_into(&mut out, &encode("(a)\\é\u{A0}€"));
        assert_eq!(out, b"\\(a\\)\\\\\\351 \\200");
    }
}
