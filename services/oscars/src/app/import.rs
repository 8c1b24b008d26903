//! The import: a dossier that becomes accepté becomes (or refreshes) its fiche, invisible, status
//! IMPORTE; a dossier that leaves accepté withdraws its fiche (invariant I5). One fiche per dossier
//! (unique dossier number, id derived from it), whatever the redeliveries and replays (I3).
//!
//! Replaying the stream on an empty database rebuilds the fiches: the dossier events re-import
//! them, and the service's own feed events (which carry the full fiche) restore what the
//! ambassadeurs did — an event whose `fiche.version` is above the stored one replaces the fiche.

use chrono::Utc;
use mst_bus::HandlerError;
use mst_proto::events as ev;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
};

use super::ambassadeur::{correctable_fields, get_field, set_field};
use super::{FeedEvent, Oscars, derived_id, enqueue, fiche_by_dossier, fiche_id_of, timestamp};
use crate::mapping;
use crate::store::{self, fiche, promoteur};

/// When the status change happened: the fiche's timestamps follow the event, not the clock, so a
/// replay rebuilds them identically.
fn event_time(e: &ev::DossierStatusChanged) -> chrono::DateTime<Utc> {
    e.metadata
        .as_ref()
        .and_then(|m| m.occurred_at.as_ref())
        .and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .unwrap_or_else(Utc::now)
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(anyhow::anyhow!("{e}"))
}

/// Names of the top-level fields (and details members) that differ between `a` and `b`.
pub fn changed_fields(a: &ev::Fiche, b: &ev::Fiche) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => {$(
            if a.$f != b.$f { out.push(stringify!($f).to_owned()); }
        )*};
    }
    cmp!(
        year,
        region_code,
        departement_code,
        commune_code,
        title,
        status,
        visible,
        promoteur_id,
        promoteur,
        projet,
        chained_previous,
        start_date,
        end_date,
        description,
        publics,
        partenaires,
        financeurs,
        niveau_geographique,
        internal
    );
    match (&a.details, &b.details) {
        (
            Some(ev::fiche::Details::ActionDetails(x)),
            Some(ev::fiche::Details::ActionDetails(y)),
        ) if x != y => out.push("action_details".into()),
        (
            Some(ev::fiche::Details::ProjetDetails(x)),
            Some(ev::fiche::Details::ProjetDetails(y)),
        ) if x != y => out.push("projet_details".into()),
        _ => {}
    }
    out
}

impl Oscars {
    /// Applies a `DossierStatusChanged` (event `event_id`) within the consumer's transaction.
    pub async fn on_status_changed(
        &self,
        txn: &DatabaseTransaction,
        event_id: &str,
        e: &ev::DossierStatusChanged,
    ) -> Result<(), HandlerError> {
        // Stale: a status change redelivered after newer ones of the same dossier (its handling
        // failed transiently, the newer ones went through meanwhile). Recorded per dossier, fiche
        // or not: an acceptance redelivered after the dossier was re-opened and refused must not
        // import a fiche.
        let seen = store::dossier_version::Entity::find_by_id(e.number)
            .one(txn)
            .await?;
        let existing = fiche_by_dossier(txn, e.number).await?;
        let newest_seen = seen
            .as_ref()
            .map(|s| s.status_version)
            .max(existing.as_ref().map(|f| f.dossier_status_version));
        if newest_seen.is_some_and(|v| v >= e.status_version) {
            tracing::info!(dossier = e.number, "stale status change ignored");
            return Ok(());
        }
        let version = store::dossier_version::ActiveModel {
            dossier_number: sea_orm::Set(e.number),
            status_version: sea_orm::Set(e.status_version),
        };
        if seen.is_some() {
            version.update(txn).await?;
        } else {
            version.insert(txn).await?;
        }
        let to = e.to_status();
        if to == ev::DossierStatus::Accepte {
            let kind = e
                .procedure
                .as_ref()
                .map(|p| p.kind())
                .unwrap_or(ev::DossierKind::Unspecified);
            let procedure_id = e
                .procedure
                .as_ref()
                .map(|p| p.id.as_str())
                .unwrap_or_default();
            let dossier = self.read_dossier(procedure_id, e.number).await?;
            let kind = if kind == ev::DossierKind::Unspecified {
                dossier
                    .procedure
                    .as_ref()
                    .map(|p| p.kind())
                    .unwrap_or(ev::DossierKind::Projet)
            } else {
                kind
            };
            let imported = mapping::map_dossier(&dossier, kind);
            self.import(txn, event_id, e, existing, imported).await
        } else if let Some(row) = existing {
            // The dossier is no longer accepté, whatever it left from: events can arrive out of
            // order (the one leaving accepté redelivered after a newer one, then stale), so the
            // status reached decides, not the transition. Withdrawing a withdrawn fiche only
            // records the version.
            self.withdraw(txn, event_id, e, row).await
        } else {
            Ok(())
        }
    }

    /// Reads dossier `number` of `procedure_id` with its answers, through
    /// `FormsInternalService/StreamDossiers` (the service-to-service read). Every failure is
    /// transient.
    async fn read_dossier(
        &self,
        procedure_id: &str,
        number: i64,
    ) -> Result<mst_proto::forms::Dossier, HandlerError> {
        use futures::StreamExt as _;
        let mut forms = self.forms.clone();
        let mut stream = forms
            .stream_dossiers(mst_proto::forms::StreamDossiersRequest {
                procedure_id: procedure_id.to_owned(),
                numbers: vec![number],
                statuses: Vec::new(),
            })
            .await
            .map_err(|s| transient(format!("reading dossier {number}: {s}")))?
            .into_inner();
        while let Some(item) = stream.next().await {
            let item = item.map_err(|s| transient(format!("reading dossier {number}: {s}")))?;
            if let Some(d) = item.dossier.filter(|d| d.number == number) {
                return Ok(d);
            }
        }
        // Forms lists deposited dossiers only, from its own mirror of the status events. An
        // acceptance can arrive before that mirror has caught up — forms killed after instruction
        // committed the deposit but before its own commit, then replaying the events — so this
        // is retried (with the consumer's backoff), not dead-lettered: a dead-lettered
        // acceptance never became a fiche (found by the chaos suite).
        Err(transient(format!(
            "dossier {number} not (yet) deposited in forms: its status mirror lags behind"
        )))
    }

    async fn import(
        &self,
        txn: &DatabaseTransaction,
        event_id: &str,
        e: &ev::DossierStatusChanged,
        existing: Option<fiche::Model>,
        imported: mapping::Imported,
    ) -> Result<(), HandlerError> {
        let now = event_time(e);
        let mut f = imported.fiche;
        f.status = ev::FicheStatus::Importe as i32;
        f.visible = false;
        match existing {
            None => {
                f.id = fiche_id_of(e.number);
                f.version = 1;
                f.imported_at = Some(timestamp(now));
                f.updated_at = Some(timestamp(now));
                let mut row = fiche::Model {
                    id: f.id.clone(),
                    dossier_number: e.number,
                    kind: String::new(),
                    year: 0,
                    region_code: String::new(),
                    departement_code: String::new(),
                    commune_code: String::new(),
                    status: String::new(),
                    visible: false,
                    promoteur_id: None,
                    projet_fiche_id: None,
                    previous_fiche_id: None,
                    linked_projet_dossier: imported.linked_projet_dossier,
                    type_action: String::new(),
                    publics_key: String::new(),
                    search_text: String::new(),
                    siret: String::new(),
                    version: 1,
                    dossier_status_version: e.status_version,
                    content: Vec::new(),
                    original: Vec::new(),
                    imported_at: now,
                    updated_at: now,
                    published_at: None,
                };
                fiche::columns(&mut row, &f);
                row.original = row.content.clone();
                fiche::ActiveModel::from(row).insert(txn).await?;
                let id = derived_id(&[event_id, "imported"]);
                enqueue(txn, id, None, event_id, &f, FeedEvent::Imported).await?;
            }
            Some(row) => {
                // Accepted again: refresh the content from the dossier, keep what the
                // ambassadeurs decided (promoteur, chaining), stay invisible.
                let old = store::decode(&row.content).map_err(transient)?;
                f.id = old.id.clone();
                f.imported_at = old.imported_at;
                f.published_at = old.published_at;
                f.projet = old.projet.clone();
                f.chained_previous = old.chained_previous.clone();
                if !old.promoteur_id.is_empty() {
                    f.promoteur_id = old.promoteur_id.clone();
                    f.promoteur = old.promoteur.clone();
                }
                f.version = old.version + 1;
                f.updated_at = Some(timestamp(now));
                // The ambassadeurs' corrections survive where the dossier did not change the
                // field since the previous import.
                let original = f.clone();
                let previous_original = store::decode(&row.original).map_err(transient)?;
                for path in correctable_fields() {
                    let now_imported = get_field(&f, path);
                    let kept = get_field(&old, path);
                    if now_imported == get_field(&previous_original, path) && now_imported != kept {
                        set_field(&mut f, path, kept).map_err(|e| {
                            HandlerError::Permanent(anyhow::anyhow!("re-applying {path}: {e}"))
                        })?;
                    }
                }
                let changed = changed_fields(&old, &f);
                let mut row = row;
                fiche::columns(&mut row, &f);
                row.original = prost::Message::encode_to_vec(&original);
                row.linked_projet_dossier = imported.linked_projet_dossier;
                row.dossier_status_version = e.status_version;
                row.updated_at = now;
                save(txn, row).await?;
                let id = derived_id(&[event_id, "updated"]);
                enqueue(txn, id, None, event_id, &f, FeedEvent::Updated(changed)).await?;
            }
        }
        self.relay.wake();
        Ok(())
    }

    async fn withdraw(
        &self,
        txn: &DatabaseTransaction,
        event_id: &str,
        e: &ev::DossierStatusChanged,
        mut row: fiche::Model,
    ) -> Result<(), HandlerError> {
        let mut f = store::decode(&row.content).map_err(transient)?;
        row.dossier_status_version = e.status_version;
        if f.status() == ev::FicheStatus::Retiree {
            save(txn, row).await?;
            return Ok(());
        }
        let now = event_time(e);
        f.status = ev::FicheStatus::Retiree as i32;
        f.visible = false;
        f.version += 1;
        f.updated_at = Some(timestamp(now));
        fiche::columns(&mut row, &f);
        row.updated_at = now;
        save(txn, row).await?;
        let id = derived_id(&[event_id, "withdrawn"]);
        enqueue(
            txn,
            id,
            None,
            event_id,
            &f,
            FeedEvent::Withdrawn(ev::FicheWithdrawalReason::DossierLeftAccepte),
        )
        .await?;
        self.relay.wake();
        Ok(())
    }

    /// Applies one of this service's own feed events: a no-op when the stored fiche is at that
    /// version or beyond (the normal case: the change committed before its event), else the fiche
    /// is restored from the event (a replay on an empty database). A promoteur the fiche points to
    /// and that is not known yet is restored from the fiche's porteur.
    pub async fn on_feed_event(
        &self,
        txn: &DatabaseTransaction,
        f: &ev::Fiche,
    ) -> Result<(), HandlerError> {
        if f.id.is_empty() || f.dossier_number <= 0 {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "feed event without a fiche"
            )));
        }
        let existing = fiche::Entity::find_by_id(f.id.clone()).one(txn).await?;
        if let Some(row) = &existing
            && row.version >= f.version
        {
            return Ok(());
        }
        if !f.promoteur_id.is_empty()
            && promoteur::Entity::find_by_id(f.promoteur_id.clone())
                .one(txn)
                .await?
                .is_none()
        {
            let p = f.promoteur.clone().unwrap_or_default();
            let now = Utc::now();
            promoteur::ActiveModel::from(promoteur::Model {
                id: f.promoteur_id.clone(),
                siret: Some(p.siret.clone()).filter(|s| !s.is_empty()),
                siren: p.siret.chars().take(9).collect(),
                raison_sociale: p.raison_sociale,
                type_structure: p.type_structure,
                adresse: p.adresse,
                commune_code: p.commune_code,
                telephone: p.telephone,
                email: p.email,
                site_web: p.site_web,
                aliases: "[]".into(),
                merged_into_id: None,
                request_id: None,
                version: 1,
                created_at: now,
                updated_at: now,
            })
            .insert(txn)
            .await?;
        }
        let now = Utc::now();
        match existing {
            Some(mut row) => {
                fiche::columns(&mut row, f);
                row.updated_at = now;
                save(txn, row).await?;
            }
            None => {
                let mut row = fiche::Model {
                    id: f.id.clone(),
                    dossier_number: f.dossier_number,
                    kind: String::new(),
                    year: 0,
                    region_code: String::new(),
                    departement_code: String::new(),
                    commune_code: String::new(),
                    status: String::new(),
                    visible: false,
                    promoteur_id: None,
                    projet_fiche_id: None,
                    previous_fiche_id: None,
                    linked_projet_dossier: None,
                    type_action: String::new(),
                    publics_key: String::new(),
                    search_text: String::new(),
                    siret: String::new(),
                    version: 0,
                    dossier_status_version: 0,
                    content: Vec::new(),
                    original: Vec::new(),
                    imported_at: now,
                    updated_at: now,
                    published_at: None,
                };
                fiche::columns(&mut row, f);
                row.original = row.content.clone();
                fiche::ActiveModel::from(row).insert(txn).await?;
            }
        }
        Ok(())
    }
}

/// Writes every column of `row`.
pub async fn save<C: ConnectionTrait>(db: &C, row: fiche::Model) -> Result<(), sea_orm::DbErr> {
    row.into_active_model().reset_all().update(db).await?;
    Ok(())
}
