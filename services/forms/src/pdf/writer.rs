//! A minimal PDF 1.4 file writer: numbered indirect objects, a cross-reference table with the
//! exact byte offset of each object, and the trailer (ISO 32000-1 §7.5).

use std::fmt::Write as _;

/// Builds a PDF file object by object. Object numbers are reserved first (so objects can refer
/// to each other in any order) and written once each.
#[derive(Debug)]
pub(super) struct PdfWriter {
    buf: Vec<u8>,
    /// Byte offset of object `n` at index `n - 1`; `None` until written.
    offsets: Vec<Option<usize>>,
}

impl PdfWriter {
    /// Starts a file: the version header, then a comment of high bytes marking it as binary.
    pub(super) fn new() -> Self {
        let mut buf = Vec::with_capacity(16 * 1024);
        buf.extend_from_slice(b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n");
        Self {
            buf,
            offsets: Vec::new(),
        }
    }

    /// Reserves the next object number.
    pub(super) fn reserve(&mut self) -> u32 {
        self.offsets.push(None);
        u32::try_from(self.offsets.len()).unwrap_or(u32::MAX)
    }

    /// Writes object `id` with the given body (a dictionary, array, …).
    pub(super) fn object(&mut self, id: u32, body: &[u8]) {
        self.begin(id);
        self.buf.extend_from_slice(body);
        self.buf.extend_from_slice(b"\nendobj\n");
    }

    /// Writes object `id` as a stream of `data` (no filter).
    pub(super) fn stream(&mut self, id: u32, data: &[u8]) {
        self.begin(id);
        let dict = format!("<< /Length {} >>\nstream\n", data.len());
        self.buf.extend_from_slice(dict.as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\nendstream\nendobj\n");
    }

    fn begin(&mut self, id: u32) {
        let offset = self.buf.len();
        let index = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        if let Some(slot) = index.and_then(|i| self.offsets.get_mut(i)) {
            *slot = Some(offset);
        }
        self.buf
            .extend_from_slice(format!("{id} 0 obj\n").as_bytes());
    }

    /// Ends the file: the cross-reference table, the trailer pointing at `root` (the catalog)
    /// and `info`, `startxref` and `%%EOF`. A reserved object never written becomes `null`, so
    /// every table entry points at a real object.
    pub(super) fn finish(mut self, root: u32, info: u32) -> Vec<u8> {
        for index in 0..self.offsets.len() {
            if self.offsets.get(index).is_some_and(Option::is_none) {
                let id = u32::try_from(index + 1).unwrap_or(u32::MAX);
                self.object(id, b"null");
            }
        }
        let xref = self.buf.len();
        let size = self.offsets.len() + 1;
        let mut table = String::with_capacity(32 + 20 * size);
        // Each entry is exactly 20 bytes: 10-digit offset, 5-digit generation, type, EOL.
        let _ = write!(table, "xref\n0 {size}\n0000000000 65535 f \n");
        for offset in &self.offsets {
            let _ = writeln!(table, "{:010} 00000 n ", offset.unwrap_or(0));
        }
        let _ = write!(
            table,
            "trailer\n<< /Size {size} /Root {root} 0 R /Info {info} 0 R >>\nstartxref\n{xref}\n%%EOF\n"
        );
        self.buf.extend_from_slice(table.as_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xref_entries_are_20_bytes_and_point_at_their_objects() {
        let mut w = PdfWriter::new();
        let a = w.reserve();
        let b = w.reserve();
        let c = w.reserve();
        w.stream(b, b"BT ET");
        w.object(a, b"<< /Type /Catalog >>");
        let pdf = w.finish(a, c);
        let xref_at = 1 + pdf
            .windows(6)
            .rposition(|w| w == b"\nxref\n")
            .unwrap_or_default();
        let tail = String::from_utf8_lossy(&pdf[xref_at..]);
        let entries: Vec<&str> = tail.lines().skip(2).take(4).collect();
        assert_eq!(entries[0], "0000000000 65535 f ");
        for (n, entry) in entries.iter().enumerate().skip(1) {
            let offset: usize = entry[..10].parse().unwrap_or_default();
            assert!(
                pdf[offset..].starts_with(format!("{n} 0 obj\n").as_bytes()),
                "object {n}"
            );
        }
        let null_object = b"3 0 obj\nnull\nendobj\n";
        let nulled = pdf.windows(null_object.len()).any(|w| w == null_object);
        assert!(nulled, "an unwritten object becomes null");
        assert!(tail.ends_with(&format!("startxref\n{xref_at}\n%%EOF\n")));
    }
}
