//! Exports of the dossiers of a procedure as CSV or XLSX, streamed in constant memory.
//!
//! The dossiers are those of the list (`app::board`): same authorization (declared instructeur:
//! his groupes, never a brouillon; admin: every groupe), same tab and filters — the rows come from
//! `store::board::page` with the list's own SQL condition, by number, 500 at a time. For each page
//! the answers are read from forms (`FormsInternalService/StreamDossiers` with the page's numbers)
//! and written at once, so memory holds one page whatever the number of dossiers.
//!
//! Columns: the dossier (number, status label, dates in Europe/Paris time, groupe, owner,
//! headline), then one column per top-level field of the form in revision order, headed by its
//! label (display-only fields left out), then — when asked (`include_annotations`) — one column
//! per annotation privée of the procedure, headed "{label} (annotation privée)", read from the
//! instruction database one query per page. Hidden answers (`hidden_field_ids`) are left empty.
//! Multiple choices are joined with ", ", files by name, addresses by their label, dates as
//! "JJ/MM/AAAA", yes/no and checkboxes as "Oui"/"Non". A repetition shows its number of rows in
//! the main table; its rows go:
//! - in XLSX, to a sheet of their own per repetition ("N° dossier", "Ligne", then the children);
//!   a sheet reaching Excel's row limit continues on a sheet suffixed " (2)", " (3)"…;
//! - in CSV, to a separate export of that repetition's rows (`repetition_field_id`), same columns.
//!
//! CSV: UTF-8 with BOM, ";" separator, RFC 4180 quoting, CRLF line ends; decimals with a decimal
//! comma (French spreadsheets); a text cell starting with "=", "+", "@" or "-" (not a number) is
//! prefixed with "'" so that a spreadsheet never evaluates it as a formula.
//!
//! XLSX: `rust_xlsxwriter` in constant-memory mode writes every row to a temporary file as soon as
//! the next row starts (inline strings, no shared-string table), so memory is bounded by one row
//! per sheet plus the page being written; the zip is then assembled into a temporary file, which
//! is streamed in 64 KiB chunks and removed. The client receives the first byte only once the
//! workbook is complete (a zip's directory comes last).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use futures::Stream;
use mst_kit::auth::{Principal, Role};
use mst_proto::forms::{
    Champ, ChampValue, Dossier, FieldDefinition, FieldType, StreamDossiersRequest, champ_value,
    choice,
};
use rust_xlsxwriter::{Workbook, Worksheet, XlsxError};

use super::avis::{AnnotationDefinition, AnnotationValue};
use super::board::{ListRequest, SortKey, Tab};
use super::{AppError, Instruction};
use crate::domain::Status;
use crate::store::board::{self as store_board, KeyValue, ListSpec};
use crate::store::{self, dossier};

/// Dossiers read from the database (and asked from forms) at a time.
pub const PAGE: u64 = 500;
/// Size of the chunks sent to the client.
pub const CHUNK: usize = 64 * 1024;
/// Most rows of an Excel sheet (header included).
pub const XLSX_MAX_ROWS: u32 = 1_048_576;
/// Most characters of an Excel cell.
const XLSX_MAX_CELL: usize = 32_767;

/// The headers of the dossier columns, before the answers.
pub const DOSSIER_HEADERS: [&str; 13] = [
    "N° dossier",
    "Statut",
    "Déposé le",
    "Mis à jour le",
    "En instruction le",
    "Traité le",
    "Groupe instructeur",
    "Demandeur",
    "Titre",
    "Structure",
    "SIRET",
    "Département",
    "CPAM",
];

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV (UTF-8 with BOM, ";").
    Csv,
    /// Excel workbook.
    Xlsx,
}

/// An export request, parsed from the transport.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Procedure.
    pub procedure_id: String,
    /// Format.
    pub format: Format,
    /// Tab.
    pub tab: Tab,
    /// Only these statuses (brouillon is ignored: never exported).
    pub statuses: Vec<Status>,
    /// Only dossiers the caller follows.
    pub followed_by_me: bool,
    /// Deposited at or after.
    pub deposited_after: Option<DateTime<Utc>>,
    /// Deposited before.
    pub deposited_before: Option<DateTime<Utc>>,
    /// Only these groupes (empty: all the caller's).
    pub groupe_ids: Vec<String>,
    /// Free text.
    pub text: String,
    /// CSV only: export this repetition's rows instead of the main table.
    pub repetition_field_id: Option<String>,
    /// Append the annotations privées (one column per definition of the procedure).
    pub include_annotations: bool,
}

/// File bytes, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, AppError>> + Send>>;

/// A started export.
pub struct Export {
    /// "dossiers-{procedure}-{date}.csv|xlsx".
    pub file_name: String,
    /// Media type.
    pub content_type: &'static str,
    /// The file.
    pub body: ByteStream,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Nothing.
    Empty,
    /// Text.
    Text(String),
    /// Whole number.
    Int(i64),
    /// Canonical decimal string ("1500.50").
    Decimal(String),
}

/// What the export shows of one dossier besides its answers (from the instruction database).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Number.
    pub number: i64,
    /// Status label ("En instruction").
    pub status: String,
    /// Dates, Europe/Paris, "JJ/MM/AAAA HH:MM" (empty when none).
    pub deposited_at: String,
    /// Last change.
    pub updated_at: String,
    /// Last passage en instruction.
    pub en_instruction_at: String,
    /// Last decision.
    pub decided_at: String,
    /// Groupe label.
    pub groupe: String,
    /// Owner email.
    pub owner_email: String,
    /// Headline.
    pub title: String,
    /// Headline.
    pub structure_name: String,
    /// Headline.
    pub siret: String,
    /// Headline.
    pub departement: String,
    /// Headline.
    pub cpam: String,
    /// Annotations privées by definition id (filled only when the export includes them).
    pub annotations: HashMap<String, AnnotationValue>,
}

impl Meta {
    /// The dossier part of a row.
    pub fn of(row: &dossier::Model, groupe_label: &str) -> Self {
        Self {
            number: row.number,
            status: status_label(&row.status),
            deposited_at: date_text(row.deposited_at),
            updated_at: date_text(Some(row.updated_at)),
            en_instruction_at: date_text(row.en_instruction_at),
            decided_at: date_text(row.decided_at),
            groupe: groupe_label.to_owned(),
            owner_email: row.owner_email.clone(),
            title: row.title.clone(),
            structure_name: row.structure_name.clone(),
            siret: row.siret.clone(),
            departement: row.departement_code.clone(),
            cpam: row.cpam.clone(),
            annotations: HashMap::new(),
        }
    }

    fn cells(&self) -> Vec<Cell> {
        let mut cells = vec![Cell::Int(self.number)];
        cells.extend(
            [
                &self.status,
                &self.deposited_at,
                &self.updated_at,
                &self.en_instruction_at,
                &self.decided_at,
                &self.groupe,
                &self.owner_email,
                &self.title,
                &self.structure_name,
                &self.siret,
                &self.departement,
                &self.cpam,
            ]
            .into_iter()
            .map(|t| text(t.clone())),
        );
        cells
    }
}

/// One column of answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Field id.
    pub field_id: String,
    /// Header.
    pub label: String,
    /// Field type.
    pub kind: FieldType,
}

/// The rows of one repetition field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepetitionLayout {
    /// The REPETITION field.
    pub field_id: String,
    /// Its label (sheet name in XLSX).
    pub label: String,
    /// Child columns.
    pub children: Vec<Column>,
}

/// The columns of an export, from the form's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Top-level fields, in revision order (repetitions included: their row count).
    pub columns: Vec<Column>,
    /// Repetitions, in revision order.
    pub repetitions: Vec<RepetitionLayout>,
    /// Annotations privées appended after the answers (empty unless asked).
    pub annotations: Vec<AnnotationDefinition>,
}

fn kind_of(f: &FieldDefinition) -> FieldType {
    FieldType::try_from(f.r#type).unwrap_or(FieldType::Unspecified)
}

fn displayed(f: &FieldDefinition) -> bool {
    !matches!(
        kind_of(f),
        FieldType::HeaderSection | FieldType::Explication | FieldType::Unspecified
    )
}

fn column(f: &FieldDefinition) -> Column {
    Column {
        field_id: f.id.clone(),
        label: if f.label.trim().is_empty() {
            f.id.clone()
        } else {
            f.label.clone()
        },
        kind: kind_of(f),
    }
}

impl Layout {
    /// The layout of a form.
    pub fn new(fields: &[FieldDefinition]) -> Self {
        let mut layout = Layout::default();
        for f in fields.iter().filter(|f| displayed(f)) {
            let mut c = column(f);
            if c.kind == FieldType::Repetition {
                layout.repetitions.push(RepetitionLayout {
                    field_id: f.id.clone(),
                    label: c.label.clone(),
                    children: f
                        .children
                        .iter()
                        .filter(|c| displayed(c))
                        .map(column)
                        .collect(),
                });
                c.label = format!("{} (nombre de lignes)", c.label);
            }
            layout.columns.push(c);
        }
        layout
    }

    /// Headers of the main table.
    pub fn headers(&self) -> Vec<String> {
        DOSSIER_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .chain(self.columns.iter().map(|c| c.label.clone()))
            .chain(
                self.annotations
                    .iter()
                    .map(|a| format!("{} (annotation privée)", a.label)),
            )
            .collect()
    }

    /// Cells of the main table for one dossier (`None`: answers unavailable, left empty).
    pub fn cells(&self, meta: &Meta, dossier: Option<&Dossier>) -> Vec<Cell> {
        let mut cells = meta.cells();
        let answers = Answers::of(dossier);
        cells.extend(self.columns.iter().map(|c| match answers.get(&c.field_id) {
            None => Cell::Empty,
            Some(v) => value_cell(c.kind, v),
        }));
        cells.extend(self.annotations.iter().map(|a| {
            meta.annotations
                .get(&a.id)
                .filter(|v| a.accepts(v))
                .map_or(Cell::Empty, annotation_cell)
        }));
        cells
    }
}

/// The cell of an annotation value.
pub fn annotation_cell(v: &AnnotationValue) -> Cell {
    match v {
        AnnotationValue::Text(t) | AnnotationValue::DropDown(t) => text(t.clone()),
        AnnotationValue::Integer(n) => Cell::Int(*n),
        AnnotationValue::Decimal(d) => Cell::Decimal(d.clone()),
        AnnotationValue::Date(d) => text(french_date(d)),
        AnnotationValue::Checkbox(b) | AnnotationValue::YesNo(b) => yes_no(*b),
    }
}

impl RepetitionLayout {
    /// Headers of the repetition table.
    pub fn headers(&self) -> Vec<String> {
        ["N° dossier".to_owned(), "Ligne".to_owned()]
            .into_iter()
            .chain(self.children.iter().map(|c| c.label.clone()))
            .collect()
    }

    /// Rows of the repetition table for one dossier.
    pub fn rows(&self, number: i64, dossier: Option<&Dossier>) -> Vec<Vec<Cell>> {
        let answers = Answers::of(dossier);
        let Some(Some(champ_value::Value::Repetition(rep))) =
            answers.get(&self.field_id).map(|v| v.value.as_ref())
        else {
            return Vec::new();
        };
        rep.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut cells = vec![
                    Cell::Int(number),
                    Cell::Int(i64::try_from(i + 1).unwrap_or(i64::MAX)),
                ];
                cells.extend(self.children.iter().map(|c| {
                    row.champs
                        .iter()
                        .find(|ch| ch.field_id == c.field_id && !answers.hidden(&c.field_id))
                        .and_then(|ch| ch.value.as_ref())
                        .map_or(Cell::Empty, |v| value_cell(c.kind, v))
                }));
                cells
            })
            .collect()
    }
}

/// The visible answers of a dossier by field id.
struct Answers<'a> {
    by_id: HashMap<&'a str, &'a ChampValue>,
    hidden: HashSet<&'a str>,
}

impl<'a> Answers<'a> {
    fn of(dossier: Option<&'a Dossier>) -> Self {
        let Some(d) = dossier else {
            return Self {
                by_id: HashMap::new(),
                hidden: HashSet::new(),
            };
        };
        let hidden: HashSet<&str> = d.hidden_field_ids.iter().map(String::as_str).collect();
        let by_id = d
            .champs
            .iter()
            .filter(|c| !hidden.contains(c.field_id.as_str()))
            .filter_map(|c: &Champ| c.value.as_ref().map(|v| (c.field_id.as_str(), v)))
            .collect();
        Self { by_id, hidden }
    }

    fn get(&self, id: &str) -> Option<&'a ChampValue> {
        self.by_id.get(id).copied()
    }

    fn hidden(&self, id: &str) -> bool {
        self.hidden.contains(id)
    }
}

fn text(t: String) -> Cell {
    if t.is_empty() {
        Cell::Empty
    } else {
        Cell::Text(t)
    }
}

fn yes_no(b: bool) -> Cell {
    Cell::Text(if b { "Oui" } else { "Non" }.to_owned())
}

/// "YYYY-MM-DD" as "JJ/MM/AAAA" (unchanged when not a date).
fn french_date(d: &str) -> String {
    NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .map(|d| d.format("%d/%m/%Y").to_string())
        .unwrap_or_else(|_| d.to_owned())
}

/// The cell of one answer.
pub fn value_cell(kind: FieldType, v: &ChampValue) -> Cell {
    use champ_value::Value as V;
    let Some(value) = &v.value else {
        return Cell::Empty;
    };
    match value {
        V::Text(t)
        | V::Siret(t)
        | V::Email(t)
        | V::Phone(t)
        | V::Commune(t)
        | V::Departement(t)
        | V::Region(t) => text(t.clone()),
        V::Integer(n) | V::DossierLink(n) => Cell::Int(*n),
        V::Decimal(d) => Cell::Decimal(d.clone()),
        V::Date(d) => text(french_date(d)),
        V::Datetime(ts) => text(date_text(DateTime::from_timestamp(
            ts.seconds,
            u32::try_from(ts.nanos).unwrap_or(0),
        ))),
        V::Checkbox(b) | V::YesNo(b) => yes_no(*b),
        V::DropDown(c) => match &c.choice {
            Some(choice::Choice::Value(s) | choice::Choice::Other(s)) => text(s.clone()),
            None => Cell::Empty,
        },
        V::MultiDropDown(m) => text(
            m.values
                .iter()
                .chain(m.other.iter())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        V::Address(a) => text(a.label.clone()),
        V::Repetition(r) if kind == FieldType::Repetition || kind == FieldType::Unspecified => {
            Cell::Int(i64::try_from(r.rows.len()).unwrap_or(i64::MAX))
        }
        V::Repetition(r) => Cell::Int(i64::try_from(r.rows.len()).unwrap_or(i64::MAX)),
        V::PieceJustificative(p) => text(
            p.files
                .iter()
                .map(|f| f.file_name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

fn last_sunday(year: i32, month: u32) -> Option<NaiveDate> {
    let first_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let last = first_next.pred_opt()?;
    let back = last.weekday().num_days_from_sunday();
    last.checked_sub_signed(TimeDelta::days(i64::from(back)))
}

/// Europe/Paris wall-clock time of an instant (EU summer time rule; the lists of `app::board`
/// show their dates through [`date_text`] too).
fn paris(instant: DateTime<Utc>) -> NaiveDateTime {
    let utc = instant.naive_utc();
    let start = last_sunday(utc.year(), 3).and_then(|d| d.and_hms_opt(1, 0, 0));
    let end = last_sunday(utc.year(), 10).and_then(|d| d.and_hms_opt(1, 0, 0));
    let offset = match (start, end) {
        (Some(s), Some(e)) if s <= utc && utc < e => 2,
        _ => 1,
    };
    utc.checked_add_signed(TimeDelta::hours(offset))
        .unwrap_or(utc)
}

/// An instant as "JJ/MM/AAAA HH:MM", Europe/Paris; empty when none.
pub fn date_text(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| paris(at).format("%d/%m/%Y %H:%M").to_string())
        .unwrap_or_default()
}

/// The French label of a status name.
pub fn status_label(status: &str) -> String {
    match status.parse::<Status>() {
        Ok(Status::Brouillon) => "Brouillon".into(),
        Ok(Status::EnConstruction) => "En construction".into(),
        Ok(Status::EnInstruction) => "En instruction".into(),
        Ok(Status::Accepte) => "Accepté".into(),
        Ok(Status::Refuse) => "Refusé".into(),
        Ok(Status::SansSuite) => "Classé sans suite".into(),
        Err(_) => status.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Appends one CSV field (RFC 4180: quoted when it holds ";", a quote or a line break).
fn csv_field(out: &mut Vec<u8>, cell: &Cell) {
    let owned;
    let s: &str = match cell {
        Cell::Empty => "",
        Cell::Int(n) => {
            owned = n.to_string();
            &owned
        }
        Cell::Decimal(d) => {
            owned = d.replace('.', ",");
            &owned
        }
        Cell::Text(t) => {
            let risky = t.starts_with(['=', '+', '@', '\t', '\r'])
                || (t.starts_with('-') && t.parse::<f64>().is_err());
            if risky {
                owned = format!("'{t}");
                &owned
            } else {
                t
            }
        }
    };
    if s.contains([';', '"', '\r', '\n']) {
        out.push(b'"');
        for part in s.split_inclusive('"') {
            out.extend_from_slice(part.as_bytes());
            if part.ends_with('"') {
                out.push(b'"');
            }
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn csv_line(out: &mut Vec<u8>, cells: &[Cell]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b';');
        }
        csv_field(out, c);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a CSV export row by row into a buffer the caller drains with [`CsvWriter::take`].
#[derive(Debug)]
pub struct CsvWriter {
    layout: Layout,
    repetition: Option<usize>,
    buffer: Vec<u8>,
}

impl CsvWriter {
    /// The main table (`repetition` `None`) or the rows of a repetition field, header written.
    /// Errors: NOT_FOUND when `repetition` is no repetition field of `layout`.
    pub fn new(layout: Layout, repetition: Option<&str>) -> Result<Self, AppError> {
        let repetition = match repetition {
            None => None,
            Some(id) => Some(
                layout
                    .repetitions
                    .iter()
                    .position(|r| r.field_id == id)
                    .ok_or_else(|| AppError::NotFound("repetition field", id.to_owned()))?,
            ),
        };
        let headers = match repetition.and_then(|i| layout.repetitions.get(i)) {
            Some(r) => r.headers(),
            None => layout.headers(),
        };
        let mut buffer = Vec::with_capacity(CHUNK * 2);
        buffer.extend_from_slice("\u{feff}".as_bytes());
        let headers: Vec<Cell> = headers.into_iter().map(Cell::Text).collect();
        csv_line(&mut buffer, &headers);
        Ok(Self {
            layout,
            repetition,
            buffer,
        })
    }

    /// Appends the line(s) of one dossier.
    pub fn row(&mut self, meta: &Meta, dossier: Option<&Dossier>) {
        match self.repetition.and_then(|i| self.layout.repetitions.get(i)) {
            Some(r) => {
                for cells in r.rows(meta.number, dossier) {
                    csv_line(&mut self.buffer, &cells);
                }
            }
            None => {
                let cells = self.layout.cells(meta, dossier);
                csv_line(&mut self.buffer, &cells);
            }
        }
    }

    /// Bytes written so far, not yet taken.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK * 2))
    }
}

// ---------------------------------------------------------------------------------------------
// XLSX

fn xlsx_error(e: XlsxError) -> AppError {
    AppError::Unexpected(anyhow::anyhow!("xlsx: {e}"))
}

/// A sheet name Excel accepts: no `[]:*?/\`, at most 31 characters, unique (case-insensitive).
fn sheet_name(wanted: &str, taken: &mut HashSet<String>) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| if "[]:*?/\\".contains(c) { ' ' } else { c })
        .collect();
    let clean = clean.trim().trim_matches('\'').trim();
    let base = if clean.is_empty() {
        "Répétition"
    } else {
        clean
    };
    let mut n = 1;
    loop {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!(" ({n})")
        };
        let keep = 31 - suffix.chars().count();
        let name: String = base.chars().take(keep).collect::<String>() + &suffix;
        if !name.eq_ignore_ascii_case("history") && taken.insert(name.to_lowercase()) {
            return name;
        }
        n += 1;
    }
}

/// One logical table, spread over as many sheets as Excel's row limit requires.
struct Sheet {
    name: String,
    headers: Vec<String>,
    current: Worksheet,
    parts: Vec<Worksheet>,
    part: u32,
    row: u32,
}

fn write_cells(ws: &mut Worksheet, row: u32, cells: &[Cell]) -> Result<(), XlsxError> {
    for (col, cell) in cells.iter().enumerate() {
        let col = u16::try_from(col).unwrap_or(u16::MAX);
        match cell {
            Cell::Empty => {}
            Cell::Text(t) => {
                if t.chars().count() > XLSX_MAX_CELL {
                    let cut: String = t.chars().take(XLSX_MAX_CELL).collect();
                    ws.write_string(row, col, cut)?;
                } else {
                    ws.write_string(row, col, t)?;
                }
            }
            #[allow(clippy::cast_precision_loss)]
            Cell::Int(n) => {
                ws.write_number(row, col, *n as f64)?;
            }
            Cell::Decimal(d) => match d.parse::<f64>() {
                Ok(x) => {
                    ws.write_number(row, col, x)?;
                }
                Err(_) => {
                    ws.write_string(row, col, d)?;
                }
            },
        }
    }
    Ok(())
}

/// Writes an XLSX export row by row (constant-memory worksheets backed by temporary files in
/// `tempdir`); [`XlsxWriter::finish`] assembles the workbook into a temporary file.
pub struct XlsxWriter {
    workbook: Workbook,
    layout: Layout,
    main: Sheet,
    repetitions: Vec<Sheet>,
    taken: HashSet<String>,
    tempdir: std::path::PathBuf,
}

impl std::fmt::Debug for XlsxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxWriter").finish_non_exhaustive()
    }
}

impl XlsxWriter {
    /// A workbook with a "Dossiers" sheet and one sheet per repetition, headers written.
    pub fn new(layout: Layout, tempdir: &Path) -> Result<Self, AppError> {
        let mut workbook = Workbook::new();
        workbook.set_tempdir(tempdir).map_err(xlsx_error)?;
        let mut taken = HashSet::new();
        let main_name = sheet_name("Dossiers", &mut taken);
        let main = Self::sheet(&mut workbook, main_name, layout.headers())?;
        let mut repetitions = Vec::new();
        for r in &layout.repetitions {
            let name = sheet_name(&r.label, &mut taken);
            repetitions.push(Self::sheet(&mut workbook, name, r.headers())?);
        }
        Ok(Self {
            workbook,
            layout,
            main,
            repetitions,
            taken,
            tempdir: tempdir.to_owned(),
        })
    }

    fn worksheet(
        workbook: &mut Workbook,
        name: &str,
        headers: &[String],
    ) -> Result<Worksheet, AppError> {
        let mut ws = workbook.new_worksheet_with_constant_memory();
        ws.set_name(name).map_err(xlsx_error)?;
        let cells: Vec<Cell> = headers.iter().cloned().map(Cell::Text).collect();
        write_cells(&mut ws, 0, &cells).map_err(xlsx_error)?;
        Ok(ws)
    }

    fn sheet(
        workbook: &mut Workbook,
        name: String,
        headers: Vec<String>,
    ) -> Result<Sheet, AppError> {
        let current = Self::worksheet(workbook, &name, &headers)?;
        Ok(Sheet {
            name,
            headers,
            current,
            parts: Vec::new(),
            part: 1,
            row: 1,
        })
    }

    fn write(
        workbook: &mut Workbook,
        taken: &mut HashSet<String>,
        sheet: &mut Sheet,
        cells: &[Cell],
    ) -> Result<(), AppError> {
        if sheet.row >= XLSX_MAX_ROWS {
            sheet.part += 1;
            let name = sheet_name(&format!("{} ({})", sheet.name, sheet.part), taken);
            let next = Self::worksheet(workbook, &name, &sheet.headers)?;
            let full = std::mem::replace(&mut sheet.current, next);
            sheet.parts.push(full);
            sheet.row = 1;
        }
        write_cells(&mut sheet.current, sheet.row, cells).map_err(xlsx_error)?;
        sheet.row += 1;
        Ok(())
    }

    /// Writes the rows of one dossier (main sheet and repetition sheets).
    pub fn row(&mut self, meta: &Meta, dossier: Option<&Dossier>) -> Result<(), AppError> {
        let cells = self.layout.cells(meta, dossier);
        Self::write(&mut self.workbook, &mut self.taken, &mut self.main, &cells)?;
        for (r, sheet) in self.layout.repetitions.iter().zip(&mut self.repetitions) {
            for cells in r.rows(meta.number, dossier) {
                Self::write(&mut self.workbook, &mut self.taken, sheet, &cells)?;
            }
        }
        Ok(())
    }

    /// Assembles the workbook into a temporary file (blocking: call off the async threads).
    pub fn finish(self) -> Result<tempfile::NamedTempFile, AppError> {
        let Self {
            mut workbook,
            main,
            repetitions,
            tempdir,
            ..
        } = self;
        // Each table in order, its parts in order: the main table, then each repetition.
        for sheet in std::iter::once(main).chain(repetitions) {
            for ws in sheet
                .parts
                .into_iter()
                .chain(std::iter::once(sheet.current))
            {
                workbook.push_worksheet(ws);
            }
        }
        let file = tempfile::Builder::new()
            .prefix("export-")
            .suffix(".xlsx")
            .tempfile_in(&tempdir)
            .map_err(|e| AppError::Unexpected(e.into()))?;
        let mut out = std::io::BufWriter::new(file.as_file());
        workbook.save_to_writer(&mut out).map_err(xlsx_error)?;
        out.flush().map_err(|e| AppError::Unexpected(e.into()))?;
        drop(out);
        Ok(file)
    }
}

// ---------------------------------------------------------------------------------------------
// The use case

enum Writer {
    Csv(CsvWriter),
    Xlsx(Box<XlsxWriter>),
}

impl Writer {
    /// Whether the rows carry annotation columns (their values are then read per page).
    fn with_annotations(&self) -> bool {
        let layout = match self {
            Writer::Csv(w) => &w.layout,
            Writer::Xlsx(w) => &w.layout,
        };
        !layout.annotations.is_empty()
    }
}

async fn send(tx: &tokio::sync::mpsc::Sender<Result<Bytes, AppError>>, bytes: Vec<u8>) -> bool {
    for chunk in bytes.chunks(CHUNK) {
        if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
            return false;
        }
    }
    true
}

fn forms_error(s: &tonic::Status) -> AppError {
    match s.code() {
        tonic::Code::NotFound => AppError::NotFound("procedure", s.message().to_owned()),
        _ => AppError::Unavailable(format!("forms stream: {}", s.message())),
    }
}

impl Instruction {
    /// The list spec of an export (authorization and validation as `list_dossiers`), by number.
    async fn export_spec(
        &self,
        who: &Principal,
        req: &ExportRequest,
    ) -> Result<ListSpec, AppError> {
        // The list validates everything (role, declared instructeur, groupes, text, procedure)
        // with its own messages; one row is enough.
        self.list_dossiers(
            who,
            ListRequest {
                procedure_id: req.procedure_id.clone(),
                tab: req.tab,
                statuses: req.statuses.clone(),
                followed_by_me: req.followed_by_me,
                deposited_after: req.deposited_after,
                deposited_before: req.deposited_before,
                groupe_ids: req.groupe_ids.clone(),
                text: req.text.clone(),
                sort: SortKey::Number,
                descending: false,
                columns: vec!["number".to_owned()],
                page_size: 1,
                page_token: String::new(),
            },
        )
        .await?;
        let db = self.db();
        let mut groupes = if !req.groupe_ids.is_empty() {
            req.groupe_ids.clone()
        } else if who.has(Role::Admin) {
            store::roster::all_groupes(db)
                .await?
                .into_iter()
                .map(|g| g.id)
                .collect()
        } else {
            self.groupes_of(&who.email).await?
        };
        groupes.sort();
        groupes.dedup();
        let mut statuses: Vec<Status> = req
            .statuses
            .iter()
            .copied()
            .filter(|s| *s != Status::Brouillon)
            .collect();
        statuses.sort();
        statuses.dedup();
        Ok(ListSpec {
            procedure_id: req.procedure_id.clone(),
            groupes,
            me: who.email.to_lowercase(),
            tab: req.tab,
            statuses: if statuses.is_empty() && !req.statuses.is_empty() {
                vec![Status::Brouillon]
            } else {
                statuses
            },
            followed_by_me: req.followed_by_me,
            deposited_after: req.deposited_after,
            deposited_before: req.deposited_before,
            words: req
                .text
                .to_lowercase()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            sort: SortKey::Number,
            descending: false,
        })
    }

    /// The answers of `numbers` from forms, by number.
    async fn export_answers(
        &self,
        procedure_id: &str,
        numbers: &[i64],
    ) -> Result<HashMap<i64, Dossier>, AppError> {
        use futures::StreamExt as _;
        let mut client = self.forms().client()?;
        let mut stream = client
            .stream_dossiers(StreamDossiersRequest {
                procedure_id: procedure_id.to_owned(),
                numbers: numbers.to_vec(),
                statuses: Vec::new(),
            })
            .await
            .map_err(|s| forms_error(&s))?
            .into_inner();
        let mut out = HashMap::with_capacity(numbers.len());
        while let Some(item) = stream.next().await {
            let item = item.map_err(|s| forms_error(&s))?;
            if let Some(d) = item.dossier {
                out.insert(d.number, d);
            }
        }
        Ok(out)
    }

    /// The stored annotations of a page of dossiers, by number then definition id.
    async fn export_annotations(
        &self,
        page: &[dossier::Model],
    ) -> Result<HashMap<i64, HashMap<String, AnnotationValue>>, AppError> {
        let numbers: Vec<i64> = page.iter().map(|r| r.number).collect();
        let mut out: HashMap<i64, HashMap<String, AnnotationValue>> = HashMap::new();
        if numbers.is_empty() {
            return Ok(out);
        }
        for v in store::avis::annotation_values_of_many(self.db(), &numbers).await? {
            let value: AnnotationValue = serde_json::from_str(&v.value)?;
            out.entry(v.dossier_number)
                .or_default()
                .insert(v.annotation_id, value);
        }
        Ok(out)
    }

    /// The form fields of the export: those of the procedure's published revision.
    ///
    /// The top-level fields of the procedure's published revision, labels included (from
    /// `FormsService/GetProcedure`).
    async fn export_fields(&self, procedure_id: &str) -> Result<Vec<FieldDefinition>, AppError> {
        let response = self
            .forms()
            .service()?
            .get_procedure(mst_proto::forms::GetProcedureRequest {
                procedure_id: procedure_id.to_owned(),
                include_published_revision: true,
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => AppError::NotFound("procedure", procedure_id.to_owned()),
                _ => AppError::Unavailable(format!("forms GetProcedure: {}", s.message())),
            })?
            .into_inner();
        Ok(response
            .published_revision
            .map(|r| r.fields)
            .unwrap_or_default())
    }

    /// Exports the dossiers of a procedure (the list's tab and filters) as CSV or XLSX. Errors
    /// before the first byte come as `Err`; later ones end the stream with an `Err` item.
    /// Role: instructeur (his groupes), admin.
    pub async fn export(&self, who: &Principal, req: ExportRequest) -> Result<Export, AppError> {
        let spec = self.export_spec(who, &req).await?;
        let db = self.db();
        let labels: HashMap<String, String> = store::roster::all_groupes(db)
            .await?
            .into_iter()
            .map(|g| (g.id, g.label))
            .collect();
        let first = store_board::page(db, &spec, None, PAGE).await?;
        let numbers: Vec<i64> = first.iter().map(|r| r.number).collect();
        // Forms unreachable: UNAVAILABLE before the first byte. (No numbers would mean "every
        // dossier of the procedure" to forms: never ask with none.)
        let first_answers = if numbers.is_empty() {
            HashMap::new()
        } else {
            self.export_answers(&spec.procedure_id, &numbers).await?
        };
        let fields = self.export_fields(&spec.procedure_id).await?;
        let mut layout = Layout::new(&fields);
        if req.include_annotations {
            layout.annotations = self
                .annotation_definitions(who, &spec.procedure_id)
                .await?
                .definitions;
        }
        let date = paris(Utc::now()).format("%Y-%m-%d");
        let (writer, extension, content_type) = match req.format {
            Format::Csv => (
                Writer::Csv(CsvWriter::new(
                    layout,
                    req.repetition_field_id.as_deref().filter(|r| !r.is_empty()),
                )?),
                "csv",
                "text/csv; charset=utf-8",
            ),
            Format::Xlsx => (
                Writer::Xlsx(Box::new(XlsxWriter::new(layout, &std::env::temp_dir())?)),
                "xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
        };
        let file_name = format!("dossiers-{}-{date}.{extension}", spec.procedure_id);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, AppError>>(4);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this
                .export_run(spec, labels, first, first_answers, writer, &tx)
                .await
            {
                tracing::warn!(error = %e, "export failed after the first byte");
                let _ = tx.send(Err(e)).await;
            }
        });
        let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Export {
            file_name,
            content_type,
            body: Box::pin(body),
        })
    }

    async fn export_run(
        &self,
        spec: ListSpec,
        labels: HashMap<String, String>,
        mut page: Vec<dossier::Model>,
        mut answers: HashMap<i64, Dossier>,
        mut writer: Writer,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, AppError>>,
    ) -> Result<(), AppError> {
        loop {
            let mut annotations = if writer.with_annotations() {
                self.export_annotations(&page).await?
            } else {
                HashMap::new()
            };
            for row in &page {
                let mut meta = Meta::of(
                    row,
                    row.groupe_id
                        .as_ref()
                        .and_then(|g| labels.get(g))
                        .map_or("", String::as_str),
                );
                meta.annotations = annotations.remove(&row.number).unwrap_or_default();
                let d = answers.get(&row.number);
                match &mut writer {
                    Writer::Csv(w) => {
                        w.row(&meta, d);
                        if w.pending() >= CHUNK && !send(tx, w.take()).await {
                            return Ok(()); // the client went away
                        }
                    }
                    Writer::Xlsx(w) => w.row(&meta, d)?,
                }
            }
            if tx.is_closed() {
                return Ok(());
            }
            let Some(last) = page.last().map(|r| r.number) else {
                break;
            };
            if (page.len() as u64) < PAGE {
                break;
            }
            page = store_board::page(self.db(), &spec, Some(&(KeyValue::Int(last), last)), PAGE)
                .await?;
            let numbers: Vec<i64> = page.iter().map(|r| r.number).collect();
            answers = if numbers.is_empty() {
                HashMap::new()
            } else {
                self.export_answers(&spec.procedure_id, &numbers).await?
            };
        }
        match writer {
            Writer::Csv(mut w) => {
                send(tx, w.take()).await;
            }
            Writer::Xlsx(w) => {
                let file = tokio::task::spawn_blocking(move || w.finish())
                    .await
                    .map_err(|e| AppError::Unexpected(e.into()))??;
                stream_file(file, tx).await?;
            }
        }
        Ok(())
    }
}

/// Sends a (temporary) file in chunks; it is removed when done.
async fn stream_file(
    file: tempfile::NamedTempFile,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, AppError>>,
) -> Result<(), AppError> {
    use tokio::io::AsyncReadExt as _;
    let mut f = tokio::fs::File::open(file.path())
        .await
        .map_err(|e| AppError::Unexpected(e.into()))?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = f
            .read(&mut buffer)
            .await
            .map_err(|e| AppError::Unexpected(e.into()))?;
        if n == 0 {
            break;
        }
        if tx
            .send(Ok(Bytes::copy_from_slice(
                buffer.get(..n).unwrap_or_default(),
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(cells: &[Cell]) -> String {
        let mut out = Vec::new();
        csv_line(&mut out, cells);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn csv_quotes_as_rfc_4180_and_defuses_formulas() {
        assert_eq!(
            csv(&[
                Cell::Int(1),
                Cell::Text("a;b".into()),
                Cell::Text("dit \"oui\"".into()),
                Cell::Empty,
                Cell::Decimal("1500.50".into()),
            ]),
            "1;\"a;b\";\"dit \"\"oui\"\"\";;1500,50\r\n"
        );
        assert_eq!(csv(&[Cell::Text("=1+1".into())]), "'=1+1\r\n");
        assert_eq!(csv(&[Cell::Text("-12".into())]), "-12\r\n");
        assert_eq!(csv(&[Cell::Text("l1\nl2".into())]), "\"l1\nl2\"\r\n");
    }

    #[test]
    fn sheet_names_are_valid_and_unique() {
        let mut taken = HashSet::new();
        assert_eq!(sheet_name("Dépenses [HT]", &mut taken), "Dépenses  HT");
        assert_eq!(sheet_name("dépenses  ht", &mut taken), "dépenses  ht (2)");
        let long = "x".repeat(40);
        assert_eq!(sheet_name(&long, &mut taken).chars().count(), 31);
    }

    #[test]
    fn paris_time_follows_summer_time() {
        use chrono::{TimeZone as _, Weekday};
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single();
        assert_eq!(date_text(at(2024, 1, 15, 23)), "16/01/2024 00:00");
        assert_eq!(date_text(at(2024, 7, 1, 10)), "01/07/2024 12:00");
        assert_eq!(
            last_sunday(2024, 10).map(|d| d.weekday()),
            Some(Weekday::Sun)
        );
    }

    #[test]
    fn dates_are_french() {
        assert_eq!(french_date("2024-03-05"), "05/03/2024");
        assert_eq!(status_label("en_instruction"), "En instruction");
    }
}
