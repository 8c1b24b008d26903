//! Reading what the SMTP sink received: a message file as written by aiosmtpd's `Mailbox`
//! handler (RFC 5322, with the envelope recipients in `X-RcptTo`), its unfolded headers, and its
//! subject decoded from RFC 2047 encoded-words (`=?utf-8?q?D=C3=A9pos=C3=A9?=` → `Déposé`).
//!
//! Deliberately small: enough to assert on what a service sent, not a MIME parser.

/// One message received by the [`SmtpSink`](crate::SmtpSink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The whole message file as received (lossily decoded as UTF-8).
    pub raw: String,
    /// Every header in order, unfolded (`name`, `value` with surrounding whitespace trimmed),
    /// values still encoded as they arrived.
    pub headers: Vec<(String, String)>,
    /// Envelope recipients (`X-RcptTo`, added by the sink), or the `To` addresses when absent.
    pub to: Vec<String>,
    /// The `Subject` header, RFC 2047 decoded; empty when there is none.
    pub subject: String,
    /// The raw body: everything after the blank line that ends the headers (not MIME-decoded).
    pub body: String,
}

impl ReceivedMail {
    /// Parses a message as stored in the Maildir.
    pub fn parse(raw: String) -> ReceivedMail {
        let (head, body) = split_head_body(&raw);
        let headers = parse_headers(head);
        let body = body.to_owned();
        let first = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let to = first("X-RcptTo")
            .or_else(|| first("To"))
            .map(address_list)
            .unwrap_or_default();
        let subject = first("Subject").map(decode_rfc2047).unwrap_or_default();
        ReceivedMail {
            raw,
            headers,
            to,
            subject,
            body,
        }
    }

    /// The first header named `name` (case-insensitive), undecoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `address` is among the recipients (case-insensitive).
    pub fn is_for(&self, address: &str) -> bool {
        self.to.iter().any(|to| to.eq_ignore_ascii_case(address))
    }
}

/// Splits at the first empty line (CRLF or LF line endings).
fn split_head_body(raw: &str) -> (&str, &str) {
    let mut offset = 0;
    for line in raw.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']).is_empty() {
            return (&raw[..offset], &raw[offset + line.len()..]);
        }
        offset += line.len();
    }
    (raw, "")
}

/// Parses a header block, unfolding continuation lines (RFC 5322 §2.2.3: a line break followed
/// by whitespace is removed, the whitespace kept).
fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.to_owned()));
        }
        // Anything else (an mbox "From " line) is not a header.
    }
    for (_, value) in &mut headers {
        *value = value.trim().to_owned();
    }
    headers
}

/// `a@x, "B" <b@y>` → `["a@x", "b@y"]`.
fn address_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|part| {
            let part = part.trim();
            match (part.rfind('<'), part.rfind('>')) {
                (Some(start), Some(end)) if start < end => part[start + 1..end].trim(),
                _ => part,
            }
            .to_owned()
        })
        .filter(|address| !address.is_empty())
        .collect()
}

/// Decodes the RFC 2047 encoded-words of a header value (`=?charset?B?…?=` and `=?charset?Q?…?=`,
/// case-insensitive) and leaves the rest as is.
///
/// Whitespace between two adjacent encoded-words is dropped (RFC 2047 §6.2), and the bytes of
/// adjacent words in the same charset are joined before decoding, so a UTF-8 character split
/// across two words survives. Charsets: UTF-8 and US-ASCII, ISO-8859-1 (Latin-1); anything else
/// is decoded as UTF-8, lossily. A malformed encoded-word is kept verbatim.
pub fn decode_rfc2047(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    // Decoded bytes of the current run of adjacent encoded-words in one charset.
    let mut pending: Option<(String, Vec<u8>)> = None;
    // Plain text seen since the last encoded-word.
    let mut gap = String::new();
    let mut rest = value;
    while !rest.is_empty() {
        if let Some((charset, bytes, len)) = parse_encoded_word(rest) {
            let only_whitespace = gap.chars().all(char::is_whitespace);
            if !(pending.is_some() && only_whitespace) {
                flush(&mut out, pending.take());
                out.push_str(&gap);
            }
            gap.clear();
            match &mut pending {
                Some((current, buffer)) if *current == charset => buffer.extend(bytes),
                _ => {
                    flush(&mut out, pending.take());
                    pending = Some((charset, bytes));
                }
            }
            rest = &rest[len..];
        } else {
            let mut chars = rest.chars();
            if let Some(c) = chars.next() {
                gap.push(c);
            }
            rest = chars.as_str();
        }
    }
    flush(&mut out, pending);
    out.push_str(&gap);
    out
}

fn flush(out: &mut String, pending: Option<(String, Vec<u8>)>) {
    if let Some((charset, bytes)) = pending {
        out.push_str(&decode_charset(&charset, &bytes));
    }
}

/// Parses an encoded-word at the start of `s`: (lowercase charset, decoded bytes, length in `s`).
fn parse_encoded_word(s: &str) -> Option<(String, Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, after_charset) = inner.split_once('?')?;
    if charset.is_empty() || charset.contains(|c: char| c.is_whitespace() || c == '=') {
        return None;
    }
    let mut after = after_charset.chars();
    let encoding = after.next()?;
    let text_and_rest = after.as_str().strip_prefix('?')?;
    let end = text_and_rest.find("?=")?;
    let text = &text_and_rest[..end];
    if text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        'b' | 'B' => decode_base64(text)?,
        'q' | 'Q' => decode_q(text)?,
        _ => return None,
    };
    // RFC 2231 allows a language suffix: `utf-8*fr`.
    let charset = charset
        .split('*')
        .next()
        .unwrap_or(charset)
        .to_ascii_lowercase();
    // `text_and_rest` is a suffix of `s`: the word ends 2 bytes after the text.
    let len = s.len() - text_and_rest.len() + end + "?=".len();
    Some((charset, bytes, len))
}

fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    match charset {
        "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "l1" => {
            bytes.iter().map(|&b| char::from(b)).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Standard base64 (RFC 4648 alphabet); padding optional.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut accumulator: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        if c == b'=' {
            break;
        }
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        accumulator = (accumulator << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((accumulator >> bits) & 0xff) as u8);
            accumulator &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The "Q" encoding: `_` is a space, `=XX` a byte in hex, anything else itself.
fn decode_q(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let high = hex_value(*bytes.get(i + 1)?)?;
                let low = hex_value(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_encoded_word_is_decoded() {
        assert_eq!(decode_rfc2047("=?utf-8?q?D=C3=A9pos=C3=A9?="), "Déposé");
    }

    #[test]
    fn b_encoded_word_is_decoded() {
        assert_eq!(decode_rfc2047("=?utf-8?b?RMOpcG9zw6k=?="), "Déposé");
        assert_eq!(
            decode_rfc2047("=?utf-8?b?Vm90cmUgZG9zc2llciBhIMOpdMOpIGTDqXBvc8Op?="),
            "Votre dossier a été déposé"
        );
    }

    #[test]
    fn charset_and_encoding_letters_are_case_insensitive() {
        assert_eq!(decode_rfc2047("=?UTF-8?Q?D=c3=a9pos=c3=a9?="), "Déposé");
        assert_eq!(decode_rfc2047("=?Utf-8?B?RMOpcG9zw6k?="), "Déposé");
    }

    #[test]
    fn underscore_is_a_space_in_q_encoding() {
        assert_eq!(
            decode_rfc2047("=?utf-8?q?a_=C3=A9t=C3=A9_d=C3=A9pos=C3=A9?="),
            "a été déposé"
        );
    }

    #[test]
    fn plain_text_around_an_encoded_word_is_kept() {
        assert_eq!(
            decode_rfc2047("Dossier =?utf-8?q?d=C3=A9pos=C3=A9?= le 3 mars"),
            "Dossier déposé le 3 mars"
        );
        assert_eq!(decode_rfc2047("Plain ASCII subject"), "Plain ASCII subject");
        assert_eq!(decode_rfc2047(""), "");
    }

    #[test]
    fn whitespace_between_adjacent_encoded_words_is_dropped() {
        // What Python's email.header produces for a long French subject, unfolded.
        let folded = "=?utf-8?q?Votre_dossier_n=C2=B0_2024-0042_a_=C3=A9t=C3=A9_d=C3=A9pos=C3=A9_e?= \
                      =?utf-8?q?t_sera_instruit_par_la_mairie_de_Saint-=C3=89tienne?=";
        assert_eq!(
            decode_rfc2047(folded),
            "Votre dossier n° 2024-0042 a été déposé et sera instruit par la mairie de Saint-Étienne"
        );
    }

    #[test]
    fn a_character_split_across_two_encoded_words_is_rebuilt() {
        assert_eq!(
            decode_rfc2047("=?utf-8?q?d=C3?= =?utf-8?q?=A9pos=C3=A9?="),
            "déposé"
        );
        assert_eq!(
            decode_rfc2047("=?utf-8?b?ZMM=?=\r\n =?utf-8?b?qXBvc8Op?="),
            "déposé"
        );
    }

    #[test]
    fn latin1_is_decoded() {
        assert_eq!(decode_rfc2047("=?iso-8859-1?q?d=E9pos=E9?="), "déposé");
    }

    #[test]
    fn language_suffix_is_ignored() {
        assert_eq!(decode_rfc2047("=?utf-8*fr?q?d=C3=A9pos=C3=A9?="), "déposé");
    }

    #[test]
    fn malformed_encoded_words_are_kept_verbatim() {
        assert_eq!(decode_rfc2047("=?utf-8?x?abc?="), "=?utf-8?x?abc?=");
        assert_eq!(decode_rfc2047("=?utf-8?q?=ZZ?="), "=?utf-8?q?=ZZ?=");
        assert_eq!(
            decode_rfc2047("=?utf-8?q?unterminated"),
            "=?utf-8?q?unterminated"
        );
        assert_eq!(decode_rfc2047("a =? b"), "a =? b");
    }

    #[test]
    fn text_between_encoded_words_is_kept() {
        assert_eq!(
            decode_rfc2047("=?utf-8?q?=C3=A9?= et =?utf-8?q?=C3=A0?="),
            "é et à"
        );
    }

    #[test]
    fn a_message_file_is_parsed() {
        let raw = "X-Peer: ('127.0.0.1', 40000)\n\
                   From: mairie@example.fr\n\
                   To: \"Jeanne\" <jeanne@example.fr>\n\
                   Subject: =?utf-8?q?Votre_dossier_a_=C3=A9t=C3=A9?=\n \
                   =?utf-8?q?_d=C3=A9pos=C3=A9?=\n\
                   X-MailFrom: mairie@example.fr\n\
                   X-RcptTo: jeanne@example.fr, paul@example.fr\n\
                   \n\
                   Bonjour,\n\nCorps.\n";
        let mail = ReceivedMail::parse(raw.to_owned());
        assert_eq!(mail.subject, "Votre dossier a été déposé");
        assert_eq!(mail.to, ["jeanne@example.fr", "paul@example.fr"]);
        assert!(mail.is_for("Paul@Example.fr"));
        assert_eq!(mail.header("from"), Some("mairie@example.fr"));
        assert_eq!(
            mail.header("Subject"),
            Some("=?utf-8?q?Votre_dossier_a_=C3=A9t=C3=A9?= =?utf-8?q?_d=C3=A9pos=C3=A9?=")
        );
        assert_eq!(mail.body, "Bonjour,\n\nCorps.\n");
        assert_eq!(mail.headers.len(), 6);
    }

    #[test]
    fn recipients_fall_back_to_the_to_header() {
        let raw =
            "To: \"Jeanne\" <jeanne@example.fr>, paul@example.fr\r\nSubject: Hi\r\n\r\nBody\r\n";
        let mail = ReceivedMail::parse(raw.to_owned());
        assert_eq!(mail.to, ["jeanne@example.fr", "paul@example.fr"]);
        assert_eq!(mail.subject, "Hi");
        assert_eq!(mail.body, "Body\r\n");
    }
}
