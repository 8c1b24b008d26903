//! Statistics of a procedure for its instructeurs: dossiers per status, deposits per week,
//! median time from deposit to decision.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use mst_kit::auth::{Principal, Role};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::{AppError, Instruction};
use crate::domain::Status;
use crate::store::dossier;

/// The statistics of a procedure (within the caller's groupes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistics {
    /// Dossiers per status (deposited ones only; never brouillons).
    pub by_status: Vec<(Status, i64)>,
    /// Deposits per ISO week (Monday), oldest first.
    pub deposits_per_week: Vec<(NaiveDate, i64)>,
    /// Median time from first deposit to decision, over decided dossiers.
    pub median_deposit_to_decision: Option<Duration>,
    /// Dossiers deposited.
    pub total_deposited: i64,
    /// Dossiers decided.
    pub total_decided: i64,
    /// When computed.
    pub computed_at: DateTime<Utc>,
}

/// Status, deposit time and decision time of one dossier.
type StatRow = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The median of durations (the lower middle for an even count).
pub fn median(mut values: Vec<Duration>) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

/// The Monday of the ISO week of `date`.
pub fn week_start(date: NaiveDate) -> NaiveDate {
    date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()))
}

impl Instruction {
    /// Statistics of `procedure_id` over the caller's groupes (all for an admin), or one groupe.
    pub async fn statistics(
        &self,
        who: &Principal,
        procedure_id: &str,
        groupe_id: Option<&str>,
    ) -> Result<Statistics, AppError> {
        let groupes: Option<Vec<String>> = if who.has(Role::Admin) {
            groupe_id.map(|g| vec![g.to_owned()])
        } else if who.has(Role::Instructeur) {
            let mine = self.groupes_of(&who.email).await?;
            if mine.is_empty() {
                return Err(AppError::Forbidden(format!(
                    "{} is not on the roster",
                    who.email
                )));
            }
            Some(match groupe_id {
                Some(g) if mine.iter().any(|m| m == g) => vec![g.to_owned()],
                Some(g) => return Err(AppError::NotFound("groupe", g.to_owned())),
                None => mine,
            })
        } else {
            return Err(AppError::Forbidden(format!(
                "{} may not read statistics",
                who.email
            )));
        };
        if crate::store::procedure(self.db(), procedure_id)
            .await?
            .is_none()
        {
            return Err(AppError::NotFound("procedure", procedure_id.to_owned()));
        }
        let mut q = dossier::Entity::find()
            .select_only()
            .column(dossier::Column::Status)
            .column(dossier::Column::DepositedAt)
            .column(dossier::Column::DecidedAt)
            .filter(dossier::Column::ProcedureId.eq(procedure_id))
            .filter(dossier::Column::Deleted.eq(false))
            .filter(dossier::Column::Status.ne(Status::Brouillon.as_str()));
        if let Some(g) = &groupes {
            q = q.filter(dossier::Column::GroupeId.is_in(g.clone()));
        }
        let rows: Vec<StatRow> = q.into_tuple().all(self.db()).await?;
        let mut by_status: BTreeMap<&'static str, (Status, i64)> = BTreeMap::new();
        let mut weeks: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        let mut durations = Vec::new();
        let (mut deposited, mut decided) = (0i64, 0i64);
        for (status, deposited_at, decided_at) in rows {
            let Ok(status) = status.parse::<Status>() else {
                continue;
            };
            by_status.entry(status.as_str()).or_insert((status, 0)).1 += 1;
            if let Some(at) = deposited_at {
                deposited += 1;
                *weeks.entry(week_start(at.date_naive())).or_default() += 1;
                if status.is_decided()
                    && let Some(decided_at) = decided_at
                {
                    decided += 1;
                    durations.push(decided_at - at);
                }
            }
        }
        let order = [
            Status::EnConstruction,
            Status::EnInstruction,
            Status::Accepte,
            Status::Refuse,
            Status::SansSuite,
        ];
        Ok(Statistics {
            by_status: order
                .iter()
                .map(|s| (*s, by_status.get(s.as_str()).map_or(0, |(_, n)| *n)))
                .collect(),
            deposits_per_week: weeks.into_iter().collect(),
            median_deposit_to_decision: median(durations),
            total_deposited: deposited,
            total_decided: decided,
            computed_at: Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_and_week_starts_are_right() {
        assert_eq!(median(vec![]), None);
        let d = |h| Duration::hours(h);
        assert_eq!(median(vec![d(5), d(1), d(3)]), Some(d(3)));
        assert_eq!(median(vec![d(4), d(1), d(3), d(2)]), Some(d(2)));
        let thursday = NaiveDate::from_ymd_opt(2024, 7, 11).unwrap();
        assert_eq!(
            week_start(thursday),
            NaiveDate::from_ymd_opt(2024, 7, 8).unwrap()
        );
        let monday = NaiveDate::from_ymd_opt(2024, 7, 8).unwrap();
        assert_eq!(week_start(monday), monday);
    }
}
