//! Roster use cases: groupes instructeurs and their routing keys, the declared instructeurs, the
//! CNAMTS roster import, and the routing of a deposited dossier to a groupe.
//!
//! Rules kept here:
//! - a groupe label is unique without regard to case and accents; a CPAM value (compared the same
//!   way) or a département code routes to one groupe at most; there is at most one default groupe
//!   (making a groupe the default takes the flag from the previous one);
//! - **an instructeur is declared while he belongs to at least one groupe**: removing him from his
//!   last groupe (or deleting that groupe) removes him from the roster, since only declared
//!   instructeurs can instruct anything. His current follows on the dossiers of the groupes he
//!   leaves end; the traitements keep his past actions;
//! - every write runs in one `begin_write` transaction that also takes the roster lock
//!   ([`store::lock_roster`]), so the checks spanning rows hold against concurrent admins.
//!
//! The rules of the CSV file and the value checks are the pure functions at the end of the file.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use mst_kit::auth::{Principal, Role};
use sea_orm::ConnectionTrait;

use super::{AppError, Instruction, page_size, require};
use crate::store::roster::{
    self as store, KIND_CPAM, KIND_DEPARTEMENT, groupe, groupe_instructeur, instructeur,
};

/// Largest roster file accepted, in bytes (5 MiB).
pub const MAX_ROSTER_BYTES: usize = 5 * 1024 * 1024;
/// Longest groupe label, CPAM value or instructeur name, in characters (the column width).
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest email address, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Default and maximum page sizes of the roster lists.
const PAGE_DEFAULT: u64 = 100;
const PAGE_MAX: u64 = 1000;

/// A groupe instructeur as the use cases return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupeView {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
    /// CPAM answer values routed here, in value order.
    pub cpam_values: Vec<String>,
    /// Départements routed here, in code order.
    pub departement_codes: Vec<String>,
    /// Whether dossiers matching no groupe go here.
    pub is_default: bool,
    /// Number of declared instructeurs.
    pub instructeur_count: i64,
    /// Version.
    pub version: i64,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// The fields of a new groupe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGroupe {
    /// Label.
    pub label: String,
    /// CPAM answer values.
    pub cpam_values: Vec<String>,
    /// Département codes.
    pub departement_codes: Vec<String>,
    /// Whether it becomes the default groupe.
    pub is_default: bool,
}

/// The fields of a groupe to change (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupePatch {
    /// New label.
    pub label: Option<String>,
    /// New CPAM values (replace the old ones).
    pub cpam_values: Option<Vec<String>>,
    /// New département codes (replace the old ones).
    pub departement_codes: Option<Vec<String>>,
    /// New default flag.
    pub is_default: Option<bool>,
}

impl GroupePatch {
    fn is_empty(&self) -> bool {
        self.label.is_none()
            && self.cpam_values.is_none()
            && self.departement_codes.is_none()
            && self.is_default.is_none()
    }
}

/// A declared instructeur.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructeurView {
    /// Email, lower-cased.
    pub email: String,
    /// Name (may be empty).
    pub name: String,
    /// His groupes (id, label), by label.
    pub groupes: Vec<(String, String)>,
    /// When first declared.
    pub added_at: DateTime<Utc>,
}

/// Options of a roster import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Report without changing anything.
    pub dry_run: bool,
    /// Create the groupes named on lines that match none.
    pub create_missing_groupes: bool,
}

/// What became of one roster line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// A new instructeur, or a new membership of a known one.
    Added,
    /// Already in the groupe; his name changed.
    Updated,
    /// Already in the groupe with the same name.
    Unchanged,
    /// Not applied, with the reason in French.
    Rejected(String),
}

/// The report of one data line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    /// Line number in the file (the header is line 1).
    pub line: u32,
    /// Email as read.
    pub email: String,
    /// Groupe as read.
    pub groupe: String,
    /// Outcome.
    pub outcome: LineOutcome,
}

/// The report of a roster import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// One report per data line, in file order (blank lines are skipped).
    pub lines: Vec<LineReport>,
    /// Lines added.
    pub added: u32,
    /// Lines updated.
    pub updated: u32,
    /// Lines unchanged.
    pub unchanged: u32,
    /// Lines rejected.
    pub rejected: u32,
    /// Whether nothing was written.
    pub dry_run: bool,
}

impl ImportReport {
    fn push(&mut self, line: u32, email: &str, groupe: &str, outcome: LineOutcome) {
        match outcome {
            LineOutcome::Added => self.added += 1,
            LineOutcome::Updated => self.updated += 1,
            LineOutcome::Unchanged => self.unchanged += 1,
            LineOutcome::Rejected(_) => self.rejected += 1,
        }
        self.lines.push(LineReport {
            line,
            email: email.to_owned(),
            groupe: groupe.to_owned(),
            outcome,
        });
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> AppError {
    AppError::BadRequest(vec![(field.into(), message.into())])
}

/// Now, at the precision the databases keep (microseconds), so that what a use case returns is
/// what a later read gives.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Roles allowed to read the whole roster.
fn reads_all(who: &Principal) -> bool {
    who.has(Role::Admin) || who.has(Role::System)
}

impl Instruction {
    // -----------------------------------------------------------------------------------------
    // Routing and access (used by the workflow)
    // -----------------------------------------------------------------------------------------

    /// The groupe (id, label) a dossier deposited with this CPAM answer and département goes to:
    /// the groupe routing this CPAM value (exactly, else without regard to case and accents); else
    /// the groupe routing the département; else the default groupe; else `None`.
    pub async fn route(
        &self,
        cpam: &str,
        departement: &str,
    ) -> Result<Option<(String, String)>, AppError> {
        route_on(self.db(), cpam, departement).await
    }

    /// The groupe ids of the instructeur `email` (any case), by id; empty when he is not declared.
    pub async fn groupes_of(&self, email: &str) -> Result<Vec<String>, AppError> {
        groupes_of_on(self.db(), email).await
    }

    /// Whether `email` (any case) is a declared instructeur (belongs to a groupe).
    pub async fn is_declared(&self, email: &str) -> Result<bool, AppError> {
        Ok(!self.groupes_of(email).await?.is_empty())
    }

    // -----------------------------------------------------------------------------------------
    // Groupes
    // -----------------------------------------------------------------------------------------

    /// Creates a groupe. Role: admin.
    pub async fn create_groupe(
        &self,
        who: &Principal,
        new: NewGroupe,
    ) -> Result<GroupeView, AppError> {
        require(who, Role::Admin)?;
        let NewGroupe {
            label,
            cpam_values,
            departement_codes,
            is_default,
        } = new;
        let (label, cpam_values, departement_codes) =
            valid_groupe_fields(&label, &cpam_values, &departement_codes)?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        store::lock_roster(&txn).await?;
        check_unique(&txn, None, &label, &cpam_values, &departement_codes).await?;
        let row = groupe::Model {
            id: uuid::Uuid::now_v7().to_string(),
            label,
            is_default,
            version: 1,
            created_at: now(),
        };
        store::insert_groupe(&txn, row.clone()).await?;
        store::replace_routes(&txn, &row.id, KIND_CPAM, &cpam_values).await?;
        store::replace_routes(&txn, &row.id, KIND_DEPARTEMENT, &departement_codes).await?;
        if is_default {
            store::clear_default(&txn, &row.id).await?;
        }
        let view = one_view(&txn, row).await?;
        txn.commit().await?;
        tracing::info!(groupe = %view.id, "groupe created");
        Ok(view)
    }

    /// A groupe. Role: admin, system; instructeur (his groupes only, others are not found).
    pub async fn groupe(&self, who: &Principal, id: &str) -> Result<GroupeView, AppError> {
        let visible = self.visible_groupes(who).await?;
        let not_found = || AppError::NotFound("groupe", id.to_owned());
        if visible
            .as_ref()
            .is_some_and(|ids| !ids.iter().any(|g| g == id))
        {
            return Err(not_found());
        }
        let row = store::groupe(self.db(), id).await?.ok_or_else(not_found)?;
        one_view(self.db(), row).await
    }

    /// Groupes by label, a page at a time; returns the page and the next page token (empty on the
    /// last page). Role: admin, system; instructeur (his groupes only).
    pub async fn groupes(
        &self,
        who: &Principal,
        page_size_req: i32,
        page_token: &str,
    ) -> Result<(Vec<GroupeView>, String), AppError> {
        let visible = self.visible_groupes(who).await?;
        let limit = page_size(page_size_req, PAGE_DEFAULT, PAGE_MAX);
        let after = decode_token(page_token)?;
        let mut rows =
            store::groupes_page(self.db(), visible.as_deref(), after.as_deref(), limit + 1).await?;
        let token = next_token(&mut rows, limit, |g| g.label.as_str());
        Ok((views(self.db(), rows).await?, token))
    }

    /// Changes the fields of `patch` if `expected_version` is current. Role: admin.
    pub async fn update_groupe(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
        patch: GroupePatch,
    ) -> Result<GroupeView, AppError> {
        require(who, Role::Admin)?;
        if patch.is_empty() {
            return Err(bad("update_mask", "Aucun champ à modifier"));
        }
        let GroupePatch {
            label,
            cpam_values,
            departement_codes,
            is_default,
        } = patch;
        // Validate what is given before reading anything (every violation at once).
        let (new_label, new_cpam, new_deps) = valid_groupe_fields(
            label.as_deref().unwrap_or("-"),
            cpam_values.as_deref().unwrap_or_default(),
            departement_codes.as_deref().unwrap_or_default(),
        )?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        store::lock_roster(&txn).await?;
        let row = store::groupe(&txn, id)
            .await?
            .ok_or_else(|| AppError::NotFound("groupe", id.to_owned()))?;
        if row.version != expected_version {
            return Err(stale(id, expected_version, row.version));
        }
        let current = one_view(&txn, row.clone()).await?;
        let label = if label.is_some() {
            new_label
        } else {
            row.label
        };
        let cpam = if cpam_values.is_some() {
            new_cpam
        } else {
            current.cpam_values
        };
        let deps = if departement_codes.is_some() {
            new_deps
        } else {
            current.departement_codes
        };
        let is_default = is_default.unwrap_or(row.is_default);
        check_unique(&txn, Some(id), &label, &cpam, &deps).await?;
        if !store::update_groupe(&txn, id, expected_version, &label, is_default).await? {
            return Err(stale(id, expected_version, row.version));
        }
        if cpam_values.is_some() {
            store::replace_routes(&txn, id, KIND_CPAM, &cpam).await?;
        }
        if departement_codes.is_some() {
            store::replace_routes(&txn, id, KIND_DEPARTEMENT, &deps).await?;
        }
        if is_default {
            store::clear_default(&txn, id).await?;
        }
        let row = store::groupe(&txn, id)
            .await?
            .ok_or_else(|| AppError::NotFound("groupe", id.to_owned()))?;
        let view = one_view(&txn, row).await?;
        txn.commit().await?;
        tracing::info!(groupe = %id, version = view.version, "groupe updated");
        Ok(view)
    }

    /// Deletes a groupe no dossier is routed to, if `expected_version` is current; its members
    /// that belong to no other groupe leave the roster. Role: admin.
    pub async fn delete_groupe(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
    ) -> Result<(), AppError> {
        require(who, Role::Admin)?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        store::lock_roster(&txn).await?;
        let row = store::groupe(&txn, id)
            .await?
            .ok_or_else(|| AppError::NotFound("groupe", id.to_owned()))?;
        if row.version != expected_version {
            return Err(stale(id, expected_version, row.version));
        }
        if store::groupe_in_use(&txn, id).await? {
            return Err(AppError::WrongState {
                reason: "GROUPE_IN_USE",
                current: "in_use".into(),
                message: format!(
                    "Le groupe « {} » ne peut pas être supprimé : des dossiers lui sont attribués",
                    row.label
                ),
            });
        }
        let members = store::member_emails(&txn, id).await?;
        if !store::delete_groupe(&txn, id, expected_version).await? {
            return Err(stale(id, expected_version, row.version));
        }
        store::delete_instructeurs_without_groupe(&txn, &members).await?;
        txn.commit().await?;
        tracing::info!(groupe = %id, "groupe deleted");
        Ok(())
    }

    /// The groupe ids a caller may read: `None` for all (admin, system), his own groupes for an
    /// instructeur; others are refused.
    async fn visible_groupes(&self, who: &Principal) -> Result<Option<Vec<String>>, AppError> {
        if reads_all(who) {
            Ok(None)
        } else if who.has(Role::Instructeur) {
            let groupes = self.groupes_of(&who.email).await?;
            if groupes.is_empty() {
                // Not on the roster: no groupe to read, and no answer that depends on ids.
                return Err(AppError::Forbidden(format!(
                    "{} n'est pas un instructeur déclaré",
                    who.email
                )));
            }
            Ok(Some(groupes))
        } else {
            Err(AppError::Forbidden(format!(
                "{} may not read the roster",
                who.email
            )))
        }
    }

    // -----------------------------------------------------------------------------------------
    // Instructeurs
    // -----------------------------------------------------------------------------------------

    /// Declares `email` in a groupe (idempotent); a non-empty `name` replaces his name. Returns
    /// him and whether he was added to the groupe. Role: admin.
    pub async fn add_instructeur(
        &self,
        who: &Principal,
        email: &str,
        groupe_id: &str,
        name: &str,
    ) -> Result<(InstructeurView, bool), AppError> {
        require(who, Role::Admin)?;
        let mut violations = Vec::new();
        let email =
            parse_email(email).map_err(|m| violations.push(("email".to_owned(), m.to_owned())));
        let name = clean_text(name, MAX_TEXT_CHARS, false)
            .map_err(|m| violations.push(("name".to_owned(), format!("Nom invalide : {m}"))));
        if groupe_id.trim().is_empty() {
            violations.push(("groupe_id".into(), "Le groupe est obligatoire".into()));
        }
        let (Ok(email), Ok(name), true) = (email, name, violations.is_empty()) else {
            return Err(AppError::BadRequest(violations));
        };
        let txn = mst_kit::db::begin_write(self.db()).await?;
        store::lock_roster(&txn).await?;
        if store::groupe(&txn, groupe_id).await?.is_none() {
            return Err(AppError::NotFound("groupe", groupe_id.to_owned()));
        }
        let at = now();
        match store::instructeur(&txn, &email).await? {
            None => {
                let row = instructeur::Model {
                    email: email.clone(),
                    name,
                    added_at: at,
                };
                store::insert_instructeurs(&txn, &[row]).await?;
            }
            Some(row) if !name.is_empty() && name != row.name => {
                store::set_instructeur_name(&txn, &email, &name).await?;
            }
            Some(_) => {}
        }
        let added = !store::groupe_ids_of(&txn, &email)
            .await?
            .iter()
            .any(|g| g == groupe_id);
        if added {
            let membership = groupe_instructeur::Model {
                groupe_id: groupe_id.to_owned(),
                email: email.clone(),
                added_at: at,
            };
            store::insert_memberships(&txn, &[membership]).await?;
        }
        let view = instructeur_view(&txn, &email).await?;
        txn.commit().await?;
        tracing::info!(groupe = %groupe_id, added, "instructeur declared");
        Ok((view, added))
    }

    /// Removes `email` from a groupe, or from every groupe when `groupe_id` is `None`; his follows
    /// on the dossiers of the groupes he leaves end. Without a groupe left he leaves the roster
    /// (the view returned then lists no groupe). Removing him from a groupe he is not in changes
    /// nothing. Role: admin. NOT_FOUND: unknown groupe, or `email` not declared.
    pub async fn remove_instructeur(
        &self,
        who: &Principal,
        email: &str,
        groupe_id: Option<&str>,
    ) -> Result<InstructeurView, AppError> {
        require(who, Role::Admin)?;
        let email = email.trim().to_lowercase();
        let txn = mst_kit::db::begin_write(self.db()).await?;
        store::lock_roster(&txn).await?;
        let row = store::instructeur(&txn, &email)
            .await?
            .ok_or_else(|| AppError::NotFound("instructeur", email.clone()))?;
        if let Some(g) = groupe_id
            && store::groupe(&txn, g).await?.is_none()
        {
            return Err(AppError::NotFound("groupe", g.to_owned()));
        }
        let at = now();
        // Ending follows can turn dossiers back into « à suivre »: resync their counters.
        let followed = super::board::followed_numbers(&txn, &email).await?;
        store::delete_memberships(&txn, &email, groupe_id).await?;
        store::end_follows(&txn, &email, groupe_id, at).await?;
        let view = if store::groupe_ids_of(&txn, &email).await?.is_empty() {
            // Not declared any more: off the roster, and no follow survives.
            store::end_follows(&txn, &email, None, at).await?;
            store::delete_instructeurs_without_groupe(&txn, std::slice::from_ref(&email)).await?;
            InstructeurView {
                email: row.email,
                name: row.name,
                groupes: Vec::new(),
                added_at: row.added_at,
            }
        } else {
            instructeur_view(&txn, &email).await?
        };
        for n in &followed {
            super::board::sync_dossier(&txn, *n).await?;
        }
        txn.commit().await?;
        tracing::info!(
            groupe = groupe_id.unwrap_or("*"),
            remaining = view.groupes.len(),
            "instructeur removed"
        );
        Ok(view)
    }

    /// Declared instructeurs by email, a page at a time: members of `groupe_id` only when given,
    /// emails starting with `email_prefix` (any case) only when not empty. Returns the page and
    /// the next page token (empty on the last page). Role: admin, system; instructeur (members of
    /// his own groupes only).
    pub async fn instructeurs(
        &self,
        who: &Principal,
        groupe_id: Option<&str>,
        email_prefix: &str,
        page_size_req: i32,
        page_token: &str,
    ) -> Result<(Vec<InstructeurView>, String), AppError> {
        let visible = self.visible_groupes(who).await?;
        let limit = page_size(page_size_req, PAGE_DEFAULT, PAGE_MAX);
        let after = decode_token(page_token)?;
        let db = self.db();
        let within: Option<Vec<String>> = match (groupe_id, visible) {
            (Some(g), visible) => {
                let seen = visible
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|v| v == g));
                if !seen || store::groupe(db, g).await?.is_none() {
                    return Err(AppError::NotFound("groupe", g.to_owned()));
                }
                Some(vec![g.to_owned()])
            }
            (None, visible) => visible,
        };
        let prefix = email_prefix.trim().to_lowercase();
        let mut rows = store::instructeurs_page(
            db,
            within.as_deref(),
            (!prefix.is_empty()).then_some(prefix.as_str()),
            after.as_deref(),
            limit + 1,
        )
        .await?;
        let token = next_token(&mut rows, limit, |i| i.email.as_str());
        Ok((instructeur_views(db, rows).await?, token))
    }

    // -----------------------------------------------------------------------------------------
    // Import
    // -----------------------------------------------------------------------------------------

    /// Imports a roster CSV (see [`read_roster`] for the file rules). Each line is applied
    /// independently and reported; nobody is removed. A dry run does everything in a transaction
    /// that is rolled back. Role: admin.
    pub async fn import_roster(
        &self,
        who: &Principal,
        options: ImportOptions,
        file: &[u8],
    ) -> Result<ImportReport, AppError> {
        require(who, Role::Admin)?;
        if file.len() > MAX_ROSTER_BYTES {
            return Err(bad(
                "chunk",
                format!("Le fichier dépasse la taille maximale de {MAX_ROSTER_BYTES} octets"),
            ));
        }
        let roster = read_roster(file)?;
        let txn = mst_kit::db::begin_write(self.db()).await?;
        store::lock_roster(&txn).await?;
        let report = apply_roster(&txn, &roster, options).await?;
        if options.dry_run {
            txn.rollback().await?;
        } else {
            txn.commit().await?;
        }
        tracing::info!(
            dry_run = options.dry_run,
            added = report.added,
            updated = report.updated,
            unchanged = report.unchanged,
            rejected = report.rejected,
            "roster imported"
        );
        Ok(report)
    }
}

// ---------------------------------------------------------------------------------------------
// Queries shared by the use cases (any connection: the pool or the caller's transaction)
// ---------------------------------------------------------------------------------------------

/// [`Instruction::route`] on a given connection, e.g. inside the deposit's transaction.
pub async fn route_on<C: ConnectionTrait>(
    db: &C,
    cpam: &str,
    departement: &str,
) -> Result<Option<(String, String)>, AppError> {
    let cpam = cpam.trim();
    if !cpam.is_empty() {
        let mut ids = store::route_exact(db, KIND_CPAM, cpam).await?;
        if ids.is_empty() {
            let key = fold(cpam);
            ids = store::routes_of_kind(db, KIND_CPAM)
                .await?
                .into_iter()
                .filter(|r| fold(&r.value) == key)
                .map(|r| r.groupe_id)
                .collect();
            ids.sort();
        }
        if let Some(found) = first_groupe(db, &ids).await? {
            return Ok(Some(found));
        }
    }
    if let Ok(code) = parse_departement(departement) {
        let ids = store::route_exact(db, KIND_DEPARTEMENT, &code).await?;
        if let Some(found) = first_groupe(db, &ids).await? {
            return Ok(Some(found));
        }
    }
    Ok(store::default_groupe(db).await?.map(|g| (g.id, g.label)))
}

/// [`Instruction::groupes_of`] on a given connection.
pub async fn groupes_of_on<C: ConnectionTrait>(
    db: &C,
    email: &str,
) -> Result<Vec<String>, AppError> {
    Ok(store::groupe_ids_of(db, &email.trim().to_lowercase()).await?)
}

async fn first_groupe<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<Option<(String, String)>, AppError> {
    for id in ids {
        if let Some(g) = store::groupe(db, id).await? {
            return Ok(Some((g.id, g.label)));
        }
    }
    Ok(None)
}

fn stale(id: &str, expected: i64, current: i64) -> AppError {
    AppError::Stale {
        resource: "groupe",
        id: id.to_owned(),
        expected,
        current,
    }
}

/// Refuses a label already used by another groupe (ALREADY_EXISTS), or routing keys already
/// routed to another groupe (INVALID_ARGUMENT naming it). `id` is the groupe being changed.
async fn check_unique<C: ConnectionTrait>(
    db: &C,
    id: Option<&str>,
    label: &str,
    cpam_values: &[String],
    departement_codes: &[String],
) -> Result<(), AppError> {
    let groupes = store::all_groupes(db).await?;
    let others: HashMap<&str, &str> = groupes
        .iter()
        .filter(|g| Some(g.id.as_str()) != id)
        .map(|g| (g.id.as_str(), g.label.as_str()))
        .collect();
    let key = fold(label);
    if others.values().any(|l| fold(l) == key) {
        return Err(AppError::AlreadyExists("groupe", label.to_owned()));
    }
    let mut violations = Vec::new();
    for (kind, values, field, what) in [
        (KIND_CPAM, cpam_values, "cpam_values", "La valeur CPAM"),
        (
            KIND_DEPARTEMENT,
            departement_codes,
            "departement_codes",
            "Le département",
        ),
    ] {
        let taken: HashMap<String, &str> = store::routes_of_kind(db, kind)
            .await?
            .iter()
            .filter_map(|r| Some((fold(&r.value), *others.get(r.groupe_id.as_str())?)))
            .collect();
        for (i, v) in values.iter().enumerate() {
            if let Some(other) = taken.get(&fold(v)) {
                violations.push((
                    format!("{field}[{i}]"),
                    format!("{what} « {v} » est déjà attribué(e) au groupe « {other} »"),
                ));
            }
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AppError::BadRequest(violations))
    }
}

async fn one_view<C: ConnectionTrait>(db: &C, row: groupe::Model) -> Result<GroupeView, AppError> {
    views(db, vec![row])
        .await?
        .pop()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("groupe view lost")))
}

async fn views<C: ConnectionTrait>(
    db: &C,
    rows: Vec<groupe::Model>,
) -> Result<Vec<GroupeView>, AppError> {
    let ids: Vec<String> = rows.iter().map(|g| g.id.clone()).collect();
    let mut routes = store::routes_of(db, &ids).await?;
    let counts = store::instructeur_counts(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|g| {
            let mut cpam_values = Vec::new();
            let mut departement_codes = Vec::new();
            for r in routes.remove(&g.id).unwrap_or_default() {
                match r.kind.as_str() {
                    KIND_CPAM => cpam_values.push(r.value),
                    _ => departement_codes.push(r.value),
                }
            }
            GroupeView {
                instructeur_count: counts.get(&g.id).copied().unwrap_or(0),
                id: g.id,
                label: g.label,
                cpam_values,
                departement_codes,
                is_default: g.is_default,
                version: g.version,
                created_at: g.created_at,
            }
        })
        .collect())
}

async fn instructeur_view<C: ConnectionTrait>(
    db: &C,
    email: &str,
) -> Result<InstructeurView, AppError> {
    let row = store::instructeur(db, email)
        .await?
        .ok_or_else(|| AppError::NotFound("instructeur", email.to_owned()))?;
    instructeur_views(db, vec![row])
        .await?
        .pop()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("instructeur view lost")))
}

async fn instructeur_views<C: ConnectionTrait>(
    db: &C,
    rows: Vec<instructeur::Model>,
) -> Result<Vec<InstructeurView>, AppError> {
    let emails: Vec<String> = rows.iter().map(|i| i.email.clone()).collect();
    let memberships = store::memberships_of(db, &emails).await?;
    let mut ids: Vec<String> = memberships.iter().map(|m| m.groupe_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let labels: HashMap<String, String> = store::groupes_by_ids(db, &ids)
        .await?
        .into_iter()
        .map(|g| (g.id, g.label))
        .collect();
    let mut by_email: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for m in memberships {
        if let Some(label) = labels.get(&m.groupe_id) {
            by_email
                .entry(m.email)
                .or_default()
                .push((m.groupe_id, label.clone()));
        }
    }
    Ok(rows
        .into_iter()
        .map(|i| {
            let mut groupes = by_email.remove(&i.email).unwrap_or_default();
            groupes.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            InstructeurView {
                email: i.email,
                name: i.name,
                groupes,
                added_at: i.added_at,
            }
        })
        .collect())
}

/// Applies a parsed roster inside `txn` and reports each line.
async fn apply_roster<C: ConnectionTrait>(
    txn: &C,
    roster: &Roster,
    options: ImportOptions,
) -> Result<ImportReport, AppError> {
    // The roster is small: load it whole, decide every line in memory, write in batches.
    let mut labels: HashMap<String, String> = HashMap::new(); // fold(label) → id
    for g in store::all_groupes(txn).await? {
        labels.insert(fold(&g.label), g.id);
    }
    let mut cpams: HashMap<String, String> = HashMap::new(); // fold(value) → id
    for r in store::routes_of_kind(txn, KIND_CPAM).await? {
        cpams.entry(fold(&r.value)).or_insert(r.groupe_id);
    }
    let mut names: HashMap<String, String> = store::all_instructeurs(txn)
        .await?
        .into_iter()
        .map(|i| (i.email, i.name))
        .collect();
    let mut members: HashSet<(String, String)> = store::all_memberships(txn)
        .await?
        .into_iter()
        .map(|m| (m.groupe_id, m.email))
        .collect();

    let at = now();
    let mut report = ImportReport {
        dry_run: options.dry_run,
        ..ImportReport::default()
    };
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    let mut new_instructeurs: Vec<instructeur::Model> = Vec::new();
    let mut renames: HashMap<String, String> = HashMap::new();
    let mut new_members: Vec<groupe_instructeur::Model> = Vec::new();

    for line in &roster.lines {
        let reject = |reason: String| LineOutcome::Rejected(reason);
        let outcome = 'line: {
            let (email, groupe_read, name) = match &line.fields {
                Err(why) => break 'line reject(why.clone()),
                Ok(f) => f,
            };
            let email = match parse_email(email) {
                Ok(e) => e,
                Err(why) => break 'line reject(why.to_owned()),
            };
            if groupe_read.is_empty() {
                break 'line reject("Groupe manquant".into());
            }
            let name = match clean_text(name, MAX_TEXT_CHARS, false) {
                Ok(n) => n,
                Err(why) => break 'line reject(format!("Nom invalide : {why}")),
            };
            let key = fold(groupe_read);
            let groupe_id = match labels.get(&key).or_else(|| cpams.get(&key)) {
                Some(id) => id.clone(),
                None if options.create_missing_groupes => {
                    let label = match clean_text(groupe_read, MAX_TEXT_CHARS, true) {
                        Ok(l) => l,
                        Err(why) => {
                            break 'line reject(format!("Groupe inconnu : {groupe_read} ({why})"));
                        }
                    };
                    let row = groupe::Model {
                        id: uuid::Uuid::now_v7().to_string(),
                        label: label.clone(),
                        is_default: false,
                        version: 1,
                        created_at: at,
                    };
                    store::insert_groupe(txn, row.clone()).await?;
                    store::replace_routes(txn, &row.id, KIND_CPAM, std::slice::from_ref(&label))
                        .await?;
                    labels.insert(key.clone(), row.id.clone());
                    cpams.insert(key, row.id.clone());
                    row.id
                }
                None => break 'line reject(format!("Groupe inconnu : {groupe_read}")),
            };
            let pair = (groupe_id.clone(), email.clone());
            if let Some(first) = seen.get(&pair) {
                break 'line reject(format!(
                    "Ligne en double : cet instructeur figure déjà dans ce groupe ligne {first}"
                ));
            }
            seen.insert(pair.clone(), line.number);
            let renamed = match names.get(&email) {
                None => {
                    new_instructeurs.push(instructeur::Model {
                        email: email.clone(),
                        name: name.clone(),
                        added_at: at,
                    });
                    names.insert(email.clone(), name);
                    false
                }
                Some(old) if !name.is_empty() && *old != name => {
                    renames.insert(email.clone(), name.clone());
                    names.insert(email.clone(), name);
                    true
                }
                Some(_) => false,
            };
            if members.insert(pair) {
                new_members.push(groupe_instructeur::Model {
                    groupe_id,
                    email,
                    added_at: at,
                });
                LineOutcome::Added
            } else if renamed {
                LineOutcome::Updated
            } else {
                LineOutcome::Unchanged
            }
        };
        report.push(line.number, &line.email_read, &line.groupe_read, outcome);
    }
    store::insert_instructeurs(txn, &new_instructeurs).await?;
    for (email, name) in &renames {
        store::set_instructeur_name(txn, email, name).await?;
    }
    store::insert_memberships(txn, &new_members).await?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Page tokens
// ---------------------------------------------------------------------------------------------

/// The key after which a page starts (`None` for the first page).
fn decode_token(token: &str) -> Result<Option<String>, AppError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || bad("page_token", "Jeton de page invalide");
    let hex = token.strip_prefix('k').ok_or_else(invalid)?;
    if hex.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

fn encode_token(key: &str) -> String {
    let mut out = String::with_capacity(1 + 2 * key.len());
    out.push('k');
    for b in key.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Cuts `rows` (fetched with `limit + 1`) to `limit`; the token of the next page, if any.
fn next_token<T>(rows: &mut Vec<T>, limit: u64, key: impl Fn(&T) -> &str) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .map(|r| encode_token(key(r)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Values: pure checks and normalisations
// ---------------------------------------------------------------------------------------------

/// A name reduced for loose comparison: lower case, no accents (precomposed or combining),
/// hyphens, apostrophes and runs of spaces as one space, trimmed.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let mapped: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ý' | 'ÿ' => "y",
            'œ' => "oe",
            'æ' => "ae",
            '\u{300}'..='\u{36f}' => continue,
            c if c == '-' || c == '\'' || c == '’' || c.is_whitespace() => " ",
            _ => {
                out.push(c);
                continue;
            }
        };
        if mapped == " " && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push_str(mapped);
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// An email address, lower-cased: one `@`, a local part of "atext" characters and single dots, a
/// domain of at least two labels (letters, digits, inner hyphens), no space or control character,
/// at most 254 characters. Surrounding spaces are ignored.
pub fn parse_email(raw: &str) -> Result<String, &'static str> {
    const INVALID: &str = "Adresse électronique invalide";
    let s = raw.trim();
    if s.is_empty() {
        return Err("Adresse électronique manquante");
    }
    if s.chars().count() > MAX_EMAIL_CHARS || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(INVALID);
    }
    let s = s.to_lowercase();
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(INVALID);
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(atext));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && !tld.chars().all(|c| c.is_ascii_digit()));
    if local_ok && domain_ok {
        Ok(s)
    } else {
        Err(INVALID)
    }
}

/// An INSEE département code (01–95 but 20, 2A, 2B, 971–976), upper-cased; surrounding spaces
/// are ignored.
pub fn parse_departement(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_uppercase();
    let ok = match code.as_bytes() {
        [b'2', b'A' | b'B'] => true,
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            let n = (a - b'0') * 10 + (b - b'0');
            (1..=95).contains(&n) && n != 20
        }
        [b'9', b'7', c] => (b'1'..=b'6').contains(c),
        _ => false,
    };
    if ok {
        Ok(code)
    } else {
        Err(format!(
            "Code de département invalide : « {} » (attendu 01 à 95, 2A, 2B ou 971 à 976)",
            raw.trim()
        ))
    }
}

/// A one-line text, trimmed: no control character, at most `max` characters, not empty when
/// `required`.
fn clean_text(raw: &str, max: usize, required: bool) -> Result<String, String> {
    let s = raw.trim();
    if required && s.is_empty() {
        return Err("valeur vide".into());
    }
    if s.chars().any(char::is_control) {
        return Err("caractère de contrôle ou retour à la ligne".into());
    }
    if s.chars().count() > max {
        return Err(format!("plus de {max} caractères"));
    }
    Ok(s.to_owned())
}

/// The label, CPAM values and département codes of a groupe, checked and normalised (values
/// trimmed, duplicates without regard to case and accents dropped); every violation at once.
fn valid_groupe_fields(
    label: &str,
    cpam_values: &[String],
    departement_codes: &[String],
) -> Result<(String, Vec<String>, Vec<String>), AppError> {
    let mut violations = Vec::new();
    let label = match clean_text(label, MAX_TEXT_CHARS, true) {
        Ok(l) => l,
        Err(why) => {
            violations.push((
                "label".into(),
                format!("Libellé du groupe invalide : {why}"),
            ));
            String::new()
        }
    };
    let mut cpam = Vec::new();
    let mut keys = HashSet::new();
    for (i, v) in cpam_values.iter().enumerate() {
        match clean_text(v, MAX_TEXT_CHARS, true) {
            Ok(v) => {
                if keys.insert(fold(&v)) {
                    cpam.push(v);
                }
            }
            Err(why) => violations.push((
                format!("cpam_values[{i}]"),
                format!("Valeur CPAM invalide : {why}"),
            )),
        }
    }
    let mut deps = Vec::new();
    for (i, d) in departement_codes.iter().enumerate() {
        match parse_departement(d) {
            Ok(code) => {
                if !deps.contains(&code) {
                    deps.push(code);
                }
            }
            Err(why) => violations.push((format!("departement_codes[{i}]"), why)),
        }
    }
    if violations.is_empty() {
        Ok((label, cpam, deps))
    } else {
        Err(AppError::BadRequest(violations))
    }
}

// ---------------------------------------------------------------------------------------------
// The roster CSV
// ---------------------------------------------------------------------------------------------

/// A parsed roster file: its data lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// Data lines, in file order, blank lines skipped.
    pub lines: Vec<RosterLine>,
}

/// One data line of a roster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterLine {
    /// Line number in the file where the record starts (the header is line 1).
    pub number: u32,
    /// The email cell, trimmed ("" if the line is malformed before it).
    pub email_read: String,
    /// The groupe cell, trimmed.
    pub groupe_read: String,
    /// (email, groupe, name) cells, trimmed, or why the line is malformed (French).
    pub fields: Result<(String, String, String), String>,
}

/// Reads a roster file: UTF-8 (a byte-order mark is skipped), a header line naming the columns
/// `email` (also "e-mail", "courriel", "adresse électronique"…), `groupe` (also "CPAM",
/// "CPAM / groupe"…) and optionally `nom` (also "name", "nom prénom"…), compared without regard
/// to case, accents and punctuation; other columns are ignored. Cells are separated by ";" or
/// "," — whichever the header uses more — and may be quoted ("…", with "" for a quote).
pub fn read_roster(file: &[u8]) -> Result<Roster, AppError> {
    let file = file.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(file);
    let text = std::str::from_utf8(file).map_err(|e| {
        let line = 1 + file[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count();
        bad(
            "chunk",
            format!("Le fichier n'est pas encodé en UTF-8 (ligne {line}) ; enregistrez-le en « CSV UTF-8 »"),
        )
    })?;
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let header_line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let sep = if header_line.matches(';').count() > header_line.matches(',').count() {
        ';'
    } else {
        ','
    };
    let mut records = csv_records(&text, sep).into_iter();
    let header = loop {
        match records.next() {
            None => return Err(bad("chunk", "Le fichier est vide")),
            Some(r) if r.is_blank() => continue,
            Some(r) => break r,
        }
    };
    if let Some(why) = &header.malformed {
        return Err(bad("chunk", format!("En-tête mal formé : {why}")));
    }
    let columns = Columns::find(&header.fields)?;
    let lines = records
        .filter(|r| !r.is_blank())
        .map(|r| columns.line(r))
        .collect();
    Ok(Roster { lines })
}

/// Positions of the roster columns in the header.
#[derive(Debug, Clone, Copy)]
struct Columns {
    email: usize,
    groupe: usize,
    name: Option<usize>,
    width: usize,
}

impl Columns {
    fn find(header: &[String]) -> Result<Self, AppError> {
        let key = |h: &str| -> String {
            fold(h)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect()
        };
        let mut email = Vec::new();
        let mut groupe = Vec::new();
        let mut name = Vec::new();
        for (i, h) in header.iter().enumerate() {
            match key(h).as_str() {
                "email"
                | "mail"
                | "courriel"
                | "adresseemail"
                | "adressemail"
                | "adressecourriel"
                | "adresseelectronique"
                | "emailinstructeur" => email.push(i),
                "groupe" | "cpam" | "cpamgroupe" | "groupecpam" | "groupeinstructeur"
                | "caisse" | "group" => groupe.push(i),
                "nom" | "name" | "nomprenom" | "prenomnom" | "nometprenom" | "nomcomplet"
                | "fullname" | "instructeur" => name.push(i),
                _ => {}
            }
        }
        let mut violations = Vec::new();
        for (found, what) in [
            (&email, "email"),
            (&groupe, "groupe (ou « CPAM / groupe »)"),
        ] {
            match found.len() {
                0 => violations.push((
                    "chunk".to_owned(),
                    format!("Colonne « {what} » absente de l'en-tête"),
                )),
                1 => {}
                _ => violations.push((
                    "chunk".to_owned(),
                    format!("Colonne « {what} » présente plusieurs fois dans l'en-tête"),
                )),
            }
        }
        if name.len() > 1 {
            violations.push((
                "chunk".into(),
                "Colonne « nom » présente plusieurs fois dans l'en-tête".into(),
            ));
        }
        match (email.first(), groupe.first(), violations.is_empty()) {
            (Some(&email), Some(&groupe), true) => Ok(Columns {
                email,
                groupe,
                name: name.first().copied(),
                width: header.len(),
            }),
            _ => Err(AppError::BadRequest(violations)),
        }
    }

    fn line(&self, r: Record) -> RosterLine {
        let cell = |i: usize| {
            r.fields
                .get(i)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let (email_read, groupe_read) = (cell(self.email), cell(self.groupe));
        let needed = self.email.max(self.groupe) + 1;
        let extra = r
            .fields
            .iter()
            .skip(self.width)
            .any(|f| !f.trim().is_empty());
        let fields = if let Some(why) = r.malformed {
            Err(format!("Ligne mal formée : {why}"))
        } else if r.fields.len() < needed || extra {
            Err(format!(
                "Ligne mal formée : {} colonne(s) au lieu de {}",
                r.fields.len(),
                self.width
            ))
        } else {
            Ok((
                email_read.clone(),
                groupe_read.clone(),
                self.name.map(cell).unwrap_or_default(),
            ))
        };
        RosterLine {
            number: r.line,
            email_read,
            groupe_read,
            fields,
        }
    }
}

/// One CSV record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    /// Line where it starts.
    line: u32,
    fields: Vec<String>,
    /// Why it cannot be read reliably.
    malformed: Option<String>,
}

impl Record {
    fn is_blank(&self) -> bool {
        self.malformed.is_none() && self.fields.iter().all(|f| f.trim().is_empty())
    }
}

/// Splits `text` (line ends already "\n") into records: cells separated by `sep`, optionally
/// quoted with `"` (`""` inside quotes is a quote; quoted cells may span lines).
fn csv_records(text: &str, sep: char) -> Vec<Record> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line: u32 = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut malformed = None;
        let mut in_quotes = false;
        let mut closed_quote = false;
        loop {
            let Some(c) = chars.next() else {
                if in_quotes {
                    malformed = Some("guillemet non fermé".to_owned());
                }
                fields.push(std::mem::take(&mut field));
                break;
            };
            if in_quotes {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => {
                        in_quotes = false;
                        closed_quote = true;
                    }
                    '\n' => {
                        line = line.saturating_add(1);
                        field.push(c);
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '\n' => {
                    line = line.saturating_add(1);
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                c if c == sep => {
                    fields.push(std::mem::take(&mut field));
                    closed_quote = false;
                }
                '"' if !closed_quote && field.trim().is_empty() => {
                    field.clear();
                    in_quotes = true;
                }
                c => {
                    if closed_quote && !c.is_whitespace() && malformed.is_none() {
                        malformed = Some("texte après un guillemet fermant".to_owned());
                    }
                    if !closed_quote {
                        field.push(c);
                    }
                }
            }
        }
        out.push(Record {
            line: start,
            fields,
            malformed,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_folded_without_case_accents_or_punctuation() {
        assert_eq!(
            fold("CPAM des Bouches-du-Rhône (13)"),
            "cpam des bouches du rhone (13)"
        );
        assert_eq!(fold("  Côte-d’Opale  "), "cote d opale");
        assert_eq!(fold("E\u{301}lise"), "elise");
        assert_eq!(fold("CPAM / Groupe"), "cpam / groupe");
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            parse_email(" Jean.Dupont@Assurance-Maladie.fr "),
            Ok("jean.dupont@assurance-maladie.fr".into())
        );
        for bad in [
            "",
            "jean",
            "jean@@x.fr",
            "jean@x",
            "jean dupont@x.fr",
            "jean@x..fr",
            ".jean@x.fr",
            "jean@-x.fr",
            "jean@x.fr\u{7}",
            "jéan@x.fr",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@{}.fr", "a".repeat(64), "b".repeat(200));
        assert!(parse_email(&long).is_err());
    }

    #[test]
    fn departement_codes_are_the_insee_ones() {
        for ok in ["01", "13", "95", "2A", "2b", " 971 ", "976"] {
            assert!(parse_departement(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse_departement("2b"), Ok("2B".into()));
        for ko in [
            "", "0", "00", "20", "96", "970", "977", "1", "2C", "13a", "975a",
        ] {
            assert!(parse_departement(ko).is_err(), "{ko}");
        }
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let t = encode_token("CPAM de l'Ain (01)");
        assert_eq!(
            decode_token(&t).unwrap(),
            Some("CPAM de l'Ain (01)".to_owned())
        );
        assert_eq!(decode_token("").unwrap(), None);
        for bad in ["x", "k1", "kzz", "kff"] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoted_cells_may_hold_separators_quotes_and_line_breaks() {
        let r = csv_records("a;\"b;c\";\"d \"\"e\"\"\"\n\"f\ng\";h\ni", ';');
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].fields, ["a", "b;c", "d \"e\""]);
        assert_eq!(
            (r[1].line, r[1].fields.clone()),
            (2, vec!["f\ng".to_owned(), "h".to_owned()])
        );
        assert_eq!((r[2].line, r[2].fields.clone()), (4, vec!["i".to_owned()]));
        let bad = csv_records("\"open;x\ny", ';');
        assert!(bad[0].malformed.is_some());
    }

    #[test]
    fn the_separator_is_taken_from_the_header_and_columns_are_found_loosely() {
        let r = read_roster("\u{feff}Adresse électronique,CPAM / Groupe,Nom Prénom\nA@B.fr,\"CPAM de l'Ain (01)\",Jean\n".as_bytes()).unwrap();
        assert_eq!(
            r.lines[0].fields,
            Ok(("A@B.fr".into(), "CPAM de l'Ain (01)".into(), "Jean".into()))
        );
        let r = read_roster(b"EMAIL;cpam\n\na@b.fr;X\n").unwrap();
        assert_eq!(r.lines.len(), 1);
        assert_eq!(r.lines[0].number, 3);
        assert_eq!(
            r.lines[0].fields,
            Ok(("a@b.fr".into(), "X".into(), String::new()))
        );
    }

    #[test]
    fn a_file_without_the_required_columns_or_not_in_utf8_is_refused() {
        assert!(matches!(
            read_roster(b"email;nom\na@b.fr;x\n"),
            Err(AppError::BadRequest(_))
        ));
        assert!(matches!(read_roster(b""), Err(AppError::BadRequest(_))));
        assert!(
            matches!(read_roster(b"email;groupe\nd\xe9j\xe0@b.fr;x\n"), Err(AppError::BadRequest(v)) if v[0].1.contains("ligne 2"))
        );
    }

    #[test]
    fn short_lines_and_extra_cells_are_malformed() {
        let r = read_roster(b"email;groupe;nom\nn'importe quoi\na@b.fr;G;N;en trop\na@b.fr;G;N;\n")
            .unwrap();
        assert!(
            r.lines[0]
                .fields
                .as_ref()
                .is_err_and(|e| e.starts_with("Ligne mal formée"))
        );
        assert!(r.lines[1].fields.is_err());
        assert!(r.lines[2].fields.is_ok());
    }

    #[test]
    fn groupe_fields_are_normalised_with_every_violation() {
        let (l, c, d) = valid_groupe_fields(
            " G ",
            &["A".into(), "a".into(), " B ".into()],
            &["13".into(), "13".into(), "2a".into()],
        )
        .unwrap();
        assert_eq!(
            (l.as_str(), c, d),
            (
                "G",
                vec!["A".to_owned(), "B".to_owned()],
                vec!["13".to_owned(), "2A".to_owned()]
            )
        );
        let Err(AppError::BadRequest(v)) = valid_groupe_fields("", &["".into()], &["99".into()])
        else {
            panic!("expected violations");
        };
        let fields: Vec<_> = v.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["label", "cpam_values[0]", "departement_codes[0]"]);
    }
}
