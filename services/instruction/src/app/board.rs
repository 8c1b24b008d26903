//! The instructeur dashboard and lists: counters per procedure × groupe (à suivre, suivis,
//! traités, tous, archivés), the filtered, sorted, keyset-paginated dossier list with the columns
//! the instructeur chose, and his column preferences.
//!
//! Counters are not counted at read time: [`sync_dossier`] maintains them in the transaction of
//! every change (see `store::board`); only « suivis », which depends on the caller, is counted —
//! from his own open follows, through the `follows_email` index.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use mst_kit::auth::{Principal, Role};
use sea_orm::ConnectionTrait;

use super::export::{date_text, status_label};
use super::{AppError, Instruction, page_size};
use crate::domain::Status;
use crate::store::board::{self as store_board, KeyValue, ListSpec};
pub use crate::store::board::{SortKey, Tab};
use crate::store::{self, dossier, procedure};

/// Most columns an instructeur may show.
pub const MAX_COLUMNS: usize = 20;
/// Longest free-text filter, in characters.
pub const MAX_FILTER_TEXT: usize = 200;

/// The built-in columns (id, French header), in the order they are offered.
pub const COLUMNS: [(&str, &str); 14] = [
    ("number", "N° dossier"),
    ("status", "Statut"),
    ("title", "Titre"),
    ("structure_name", "Structure"),
    ("siret", "SIRET"),
    ("departement", "Département"),
    ("cpam", "CPAM"),
    ("groupe", "Groupe instructeur"),
    ("deposited_at", "Déposé le"),
    ("updated_at", "Mis à jour le"),
    ("en_instruction_at", "En instruction le"),
    ("decided_at", "Traité le"),
    ("followers", "Suivi par"),
    ("owner_email", "Demandeur"),
];

/// The columns shown when the instructeur chose none.
pub const DEFAULT_COLUMNS: [&str; 6] = [
    "number",
    "structure_name",
    "title",
    "cpam",
    "status",
    "updated_at",
];

/// Counters of one procedure × groupe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Deposited, followed by nobody, not decided, not archived.
    pub a_suivre: i64,
    /// Followed by the caller, not decided, not archived.
    pub suivis: i64,
    /// Decided, not archived.
    pub traites: i64,
    /// Deposited, not archived.
    pub tous: i64,
    /// Archived.
    pub archives: i64,
}

/// One dashboard line.
#[derive(Debug, Clone)]
pub struct DashboardEntry {
    /// Procedure.
    pub procedure: procedure::Model,
    /// Groupe id.
    pub groupe_id: String,
    /// Groupe label.
    pub groupe_label: String,
    /// Counters.
    pub counts: Counts,
}

/// A list request, parsed from the transport.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// Procedure.
    pub procedure_id: String,
    /// Tab.
    pub tab: Tab,
    /// Only these statuses (brouillon is ignored: never listed).
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
    /// Sort key.
    pub sort: SortKey,
    /// Descending.
    pub descending: bool,
    /// Column ids (empty: the caller's preferences).
    pub columns: Vec<String>,
    /// Requested page size (0: default).
    pub page_size: i32,
    /// Cursor ("" for the first page).
    pub page_token: String,
}

/// One listed dossier.
#[derive(Debug, Clone)]
pub struct ListRow {
    /// The row.
    pub row: dossier::Model,
    /// Whether the caller follows it.
    pub followed_by_me: bool,
    /// Cells (column id, text), in column order.
    pub cells: Vec<(String, String)>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Rows.
    pub rows: Vec<ListRow>,
    /// Columns (id, header), in order.
    pub columns: Vec<(String, String)>,
    /// Cursor of the next page ("" on the last).
    pub next_page_token: String,
    /// Matching dossiers, all pages (at most [`COUNT_CAP`] when filters apply).
    pub total_count: i64,
    /// More than `total_count` dossiers match (the count stopped at [`COUNT_CAP`]).
    pub total_count_capped: bool,
}

/// With filters, a list counts its matching dossiers up to this many (a whole tab is counted
/// exactly, from the dashboard counters).
pub const COUNT_CAP: u64 = 1_000;

/// Brings the dashboard counters up to date with dossier `number` as it is now in `txn`. Call it
/// in the transaction of every change of a dossier's status, archive flag, groupe, deletion or
/// followers, after the change. Idempotent.
pub async fn sync_dossier<C: ConnectionTrait>(txn: &C, number: i64) -> Result<(), AppError> {
    Ok(store_board::sync_dossier(txn, number).await?)
}

/// The same for `row` as it now is in `txn`, with its current `followers` (emails) in hand.
pub async fn sync_row<C: ConnectionTrait>(
    txn: &C,
    row: &crate::store::dossier::Model,
    followers: Vec<String>,
) -> Result<(), AppError> {
    Ok(store_board::sync_row(txn, row, followers).await?)
}

/// The dossiers `email` follows now: collect them before ending his follows in bulk, then
/// [`sync_dossier`] each after.
pub async fn followed_numbers<C: ConnectionTrait>(
    txn: &C,
    email: &str,
) -> Result<Vec<i64>, AppError> {
    Ok(store_board::followed_numbers(txn, email).await?)
}

fn bad(field: &str, message: impl Into<String>) -> AppError {
    AppError::BadRequest(vec![(field.to_owned(), message.into())])
}

/// Checks a column list: known ids, no duplicates, at most [`MAX_COLUMNS`].
fn check_columns(field: &str, columns: &[String]) -> Result<(), AppError> {
    let mut violations = Vec::new();
    if columns.len() > MAX_COLUMNS {
        violations.push((
            field.to_owned(),
            format!("Au plus {MAX_COLUMNS} colonnes peuvent être affichées"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in columns.iter().enumerate() {
        if !COLUMNS.iter().any(|(id, _)| id == c) {
            violations.push((
                format!("{field}[{i}]"),
                format!("Colonne inconnue : « {c} »"),
            ));
        } else if !seen.insert(c.as_str()) {
            violations.push((
                format!("{field}[{i}]"),
                format!("Colonne en double : « {c} »"),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AppError::BadRequest(violations))
    }
}

fn header(id: &str) -> String {
    COLUMNS
        .iter()
        .find(|(c, _)| *c == id)
        .map(|(_, l)| (*l).to_owned())
        .unwrap_or_default()
}

/// 64-bit FNV-1a: a stable fingerprint binding a cursor to its query.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    f: u64,
    k: KeyValue,
    n: i64,
}

fn encode_token(c: &Cursor) -> Result<String, AppError> {
    let json = serde_json::to_vec(c)?;
    Ok(json.iter().map(|b| format!("{b:02x}")).collect())
}

fn decode_token(token: &str, expected: u64, sort: SortKey) -> Result<(KeyValue, i64), AppError> {
    let invalid = || bad("page_token", "Jeton de page invalide");
    if !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if c.f != expected {
        return Err(bad(
            "page_token",
            "Jeton de page d'une autre liste (démarche, onglet, filtre ou tri différents)",
        ));
    }
    let kind_ok = matches!(
        (sort, &c.k),
        (SortKey::Number, KeyValue::Int(_))
            | (SortKey::DepositedAt | SortKey::UpdatedAt, KeyValue::At(_))
            | (
                SortKey::Status | SortKey::Title | SortKey::StructureName,
                KeyValue::Text(_)
            )
    );
    if !kind_ok {
        return Err(invalid());
    }
    Ok((c.k, c.n))
}

impl Instruction {
    /// The groupes the caller may see: `None` for an admin (all), his groupes for a declared
    /// instructeur; anyone else is refused.
    async fn board_scope(&self, who: &Principal) -> Result<Option<Vec<String>>, AppError> {
        if who.has(Role::Admin) {
            return Ok(None);
        }
        if who.has(Role::Instructeur) {
            let groupes = self.groupes_of(&who.email).await?;
            if groupes.is_empty() {
                return Err(AppError::Forbidden(format!(
                    "{} is not a declared instructeur",
                    who.email
                )));
            }
            return Ok(Some(groupes));
        }
        Err(AppError::Forbidden(format!(
            "{} is neither instructeur nor admin",
            who.email
        )))
    }

    async fn known_procedure(&self, id: &str) -> Result<procedure::Model, AppError> {
        store::procedure(self.db(), id)
            .await?
            .ok_or_else(|| AppError::NotFound("procedure", id.to_owned()))
    }

    /// Counters of every procedure × groupe of the caller (all groupes for an admin), or of one
    /// procedure, ordered by procedure title then groupe label. Role: instructeur, admin.
    pub async fn dashboard(
        &self,
        who: &Principal,
        procedure_id: Option<&str>,
    ) -> Result<Vec<DashboardEntry>, AppError> {
        let scope = self.board_scope(who).await?;
        let db = self.db();
        let groupes: Vec<(String, String)> = match &scope {
            Some(ids) => store::roster::groupes_by_ids(db, ids).await?,
            None => store::roster::all_groupes(db).await?,
        }
        .into_iter()
        .map(|g| (g.id, g.label))
        .collect();
        let ids: Vec<String> = groupes.iter().map(|(id, _)| id.clone()).collect();
        let mut procedures = match procedure_id {
            Some(id) => store::procedure(db, id).await?.into_iter().collect(),
            None => store_board::all_procedures(db).await?,
        };
        procedures.sort_by(|a, b| a.title.cmp(&b.title).then_with(|| a.id.cmp(&b.id)));
        let mut counts: HashMap<(String, String), Counts> = HashMap::new();
        for c in store_board::counters(db, Some(&ids), procedure_id).await? {
            let e = counts.entry((c.procedure_id, c.groupe_id)).or_default();
            match c.bucket.as_str() {
                "a_suivre" => e.a_suivre = c.n,
                "traites" => e.traites = c.n,
                "tous" => e.tous = c.n,
                "archives" => e.archives = c.n,
                _ => {}
            }
        }
        for (p, g, n) in
            store_board::suivis(db, &who.email.to_lowercase(), Some(&ids), procedure_id).await?
        {
            counts.entry((p, g)).or_default().suivis = n;
        }
        let mut sorted_groupes = groupes;
        sorted_groupes.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let mut entries = Vec::new();
        for p in procedures {
            for (gid, label) in &sorted_groupes {
                entries.push(DashboardEntry {
                    counts: counts
                        .get(&(p.id.clone(), gid.clone()))
                        .copied()
                        .unwrap_or_default(),
                    procedure: p.clone(),
                    groupe_id: gid.clone(),
                    groupe_label: label.clone(),
                });
            }
        }
        Ok(entries)
    }

    /// The columns the caller may show for a procedure, and those he shows. Role: instructeur,
    /// admin.
    pub async fn column_preferences(
        &self,
        who: &Principal,
        procedure_id: &str,
    ) -> Result<(Vec<(String, String)>, Vec<String>), AppError> {
        self.board_scope(who).await?;
        self.known_procedure(procedure_id).await?;
        let available = COLUMNS
            .iter()
            .map(|(id, l)| ((*id).to_owned(), (*l).to_owned()))
            .collect();
        Ok((available, self.selected_columns(who, procedure_id).await?))
    }

    async fn selected_columns(
        &self,
        who: &Principal,
        procedure_id: &str,
    ) -> Result<Vec<String>, AppError> {
        let saved =
            store_board::column_preferences(self.db(), &who.email.to_lowercase(), procedure_id)
                .await?
                // A column withdrawn since it was saved is dropped, not an error.
                .map(|cols| {
                    cols.into_iter()
                        .filter(|c| COLUMNS.iter().any(|(id, _)| id == c))
                        .collect::<Vec<_>>()
                })
                .filter(|cols| !cols.is_empty());
        Ok(saved.unwrap_or_else(|| DEFAULT_COLUMNS.iter().map(|c| (*c).to_owned()).collect()))
    }

    /// Saves the columns the caller shows for a procedure (empty restores the defaults); returns
    /// those now shown. Role: instructeur, admin.
    pub async fn update_column_preferences(
        &self,
        who: &Principal,
        procedure_id: &str,
        columns: Vec<String>,
    ) -> Result<Vec<String>, AppError> {
        self.board_scope(who).await?;
        check_columns("columns", &columns)?;
        self.known_procedure(procedure_id).await?;
        store_board::save_column_preferences(
            self.db(),
            &who.email.to_lowercase(),
            procedure_id,
            &columns,
            Utc::now(),
        )
        .await?;
        self.selected_columns(who, procedure_id).await
    }

    /// One page of the dossiers of a procedure in a tab. Role: instructeur (his groupes), admin.
    pub async fn list_dossiers(
        &self,
        who: &Principal,
        req: ListRequest,
    ) -> Result<ListPage, AppError> {
        let scope = self.board_scope(who).await?;
        let db = self.db();
        let mut violations = Vec::new();
        if req.text.chars().count() > MAX_FILTER_TEXT {
            violations.push((
                "filter.text".to_owned(),
                format!("Le texte recherché dépasse {MAX_FILTER_TEXT} caractères"),
            ));
        }
        if !req.columns.is_empty()
            && let Err(AppError::BadRequest(v)) = check_columns("columns", &req.columns)
        {
            violations.extend(v);
        }
        let visible: Vec<String> = match &scope {
            Some(ids) => ids.clone(),
            None => store::roster::all_groupes(db)
                .await?
                .into_iter()
                .map(|g| g.id)
                .collect(),
        };
        for (i, g) in req.groupe_ids.iter().enumerate() {
            if !visible.contains(g) {
                violations.push((
                    format!("filter.groupe_ids[{i}]"),
                    format!("Le groupe « {g} » n'est pas l'un des vôtres"),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(AppError::BadRequest(violations));
        }
        self.known_procedure(&req.procedure_id).await?;
        let mut groupes = if req.groupe_ids.is_empty() {
            visible
        } else {
            req.groupe_ids.clone()
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
        let spec = ListSpec {
            procedure_id: req.procedure_id.clone(),
            groupes,
            me: who.email.to_lowercase(),
            tab: req.tab,
            // Only brouillons asked: nothing can match.
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
            sort: req.sort,
            descending: req.descending,
        };
        let fp = fingerprint(&format!("{spec:?}"));
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(decode_token(&req.page_token, fp, req.sort)?)
        };
        let columns = if req.columns.is_empty() {
            self.selected_columns(who, &req.procedure_id).await?
        } else {
            req.columns.clone()
        };
        let limit = page_size(req.page_size, 50, 500);
        let mut rows = store_board::page(db, &spec, after.as_ref(), limit + 1).await?;
        let next_page_token = if rows.len() as u64 > limit {
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            match rows.last() {
                Some(last) => encode_token(&Cursor {
                    f: fp,
                    k: KeyValue::of(req.sort, last),
                    n: last.number,
                })?,
                None => String::new(),
            }
        } else {
            String::new()
        };
        let (total, total_count_capped) = store_board::count(db, &spec, COUNT_CAP).await?;
        let total_count = i64::try_from(total).unwrap_or(i64::MAX);
        let numbers: Vec<i64> = rows.iter().map(|r| r.number).collect();
        let mut followers: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (n, email) in store_board::followers_of(db, &numbers).await? {
            followers.entry(n).or_default().push(email);
        }
        let labels: HashMap<String, String> = if columns.iter().any(|c| c == "groupe") {
            let ids: Vec<String> = rows.iter().filter_map(|r| r.groupe_id.clone()).collect();
            store::roster::groupes_by_ids(db, &ids)
                .await?
                .into_iter()
                .map(|g| (g.id, g.label))
                .collect()
        } else {
            HashMap::new()
        };
        let me = who.email.to_lowercase();
        let rows = rows
            .into_iter()
            .map(|row| {
                let f = followers.get(&row.number).cloned().unwrap_or_default();
                let cells = columns
                    .iter()
                    .map(|c| {
                        let text = match c.as_str() {
                            "number" => row.number.to_string(),
                            "status" => status_label(&row.status),
                            "title" => row.title.clone(),
                            "structure_name" => row.structure_name.clone(),
                            "siret" => row.siret.clone(),
                            "departement" => row.departement_code.clone(),
                            "cpam" => row.cpam.clone(),
                            "groupe" => row
                                .groupe_id
                                .as_ref()
                                .and_then(|g| labels.get(g).cloned())
                                .unwrap_or_default(),
                            "deposited_at" => date_text(row.deposited_at),
                            "updated_at" => date_text(Some(row.updated_at)),
                            "en_instruction_at" => date_text(row.en_instruction_at),
                            "decided_at" => date_text(row.decided_at),
                            "followers" => f.join(", "),
                            "owner_email" => row.owner_email.clone(),
                            _ => String::new(),
                        };
                        (c.clone(), text)
                    })
                    .collect();
                ListRow {
                    followed_by_me: f.iter().any(|e| e.eq_ignore_ascii_case(&me)),
                    row,
                    cells,
                }
            })
            .collect();
        Ok(ListPage {
            rows,
            columns: columns.iter().map(|c| (c.clone(), header(c))).collect(),
            next_page_token,
            total_count,
            total_count_capped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_checked_for_unknown_ids_duplicates_and_count() {
        assert!(check_columns("c", &["number".into(), "title".into()]).is_ok());
        assert!(check_columns("c", &["nope".into()]).is_err());
        assert!(check_columns("c", &["number".into(), "number".into()]).is_err());
        let many: Vec<String> = (0..21).map(|_| "number".to_owned()).collect();
        assert!(check_columns("c", &many).is_err());
    }

    #[test]
    fn a_token_of_another_query_is_refused() {
        let token = encode_token(&Cursor {
            f: 1,
            k: KeyValue::Int(5),
            n: 5,
        })
        .ok()
        .unwrap_or_default();
        assert!(decode_token(&token, 1, SortKey::Number).is_ok());
        assert!(decode_token(&token, 2, SortKey::Number).is_err());
        assert!(decode_token("zz", 1, SortKey::Number).is_err());
    }
}
