//! Holds whose transition never committed (invariant I1 and liveness).
//!
//! Before a dossier passes en instruction, the instruction service has forms freeze it
//! (`FreezeDossier`), commits the transition, and the status mirror then replaces the hold by the
//! status; a transition that fails releases its hold (`UnfreezeDossier`). If the instruction
//! service stops between the freeze and the commit, nobody releases the hold and the promoteur
//! could never edit again. So:
//! - instruction commits a transition only within [`FREEZE_LEASE`] of asking for the freeze
//!   (`mst_instruction::app::workflow`); past it, it rolls back and releases;
//! - forms periodically looks at holds older than `MST_FREEZE_RELEASE_AFTER_SECS` (default
//!   300 s, never less than twice the lease) and asks instruction for the dossier's current status
//!   (`CheckDossierAccess`). A newer status version means the transition (or a later one) did
//!   commit while its event is still on its way: forms mirrors it — the dossier stays frozen if
//!   the status says so. Otherwise the transition never committed and can no longer commit: the
//!   hold is released, only if it is still the same hold at the same status version.
//!   Instruction unreachable: the hold is kept and looked at again on the next run.

use std::time::Duration;

use chrono::Utc;
use mst_kit::auth::ServiceToken;
use mst_proto::events as ev;
use mst_proto::instruction::CheckDossierAccessRequest;
use mst_proto::instruction::instruction_internal_service_client::InstructionInternalServiceClient;
use tonic::transport::Channel;

use crate::app::{AppError, Forms};
use crate::deposit::Client;
use crate::grpc::convert::status_from_pb;
use crate::store;

pub use mst_kit::FREEZE_LEASE;

/// Holds looked at per run.
const BATCH: u64 = 100;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Holds released: their transition never committed.
    pub released: usize,
    /// Dossiers whose newer status was mirrored (the event had not arrived yet).
    pub mirrored: usize,
    /// Holds kept: instruction unreachable, or the dossier changed meanwhile.
    pub kept: usize,
}

/// Looks after stale holds.
#[derive(Clone, Debug)]
pub struct StaleFreezes {
    forms: Forms,
    client: Client,
}

impl StaleFreezes {
    /// Over `forms`, asking the instruction service at `channel` authenticated with `token`.
    pub fn new(forms: Forms, channel: Channel, token: ServiceToken) -> Self {
        Self {
            forms,
            client: InstructionInternalServiceClient::with_interceptor(channel, token),
        }
    }

    /// The forms use cases (tests look at the database through them).
    pub fn forms(&self) -> &Forms {
        &self.forms
    }

    /// Resolves the holds taken more than `older_than` ago.
    pub async fn resolve(&self, older_than: Duration) -> Result<Resolved, AppError> {
        let cutoff = Utc::now()
            - chrono::Duration::from_std(older_than).map_err(|e| AppError::Unexpected(e.into()))?;
        let db = self.forms.db();
        let mut out = Resolved::default();
        for row in store::stale_freezes(db, cutoff, BATCH).await? {
            let Some(operation) = row.frozen_by.clone() else {
                continue;
            };
            let number = row.number;
            let answer = self
                .client
                .clone()
                .check_dossier_access(CheckDossierAccessRequest {
                    number,
                    email: format!("{}@services.mst.local", crate::SERVICE),
                    role: ev::Role::System as i32,
                })
                .await;
            let answer = match answer {
                Ok(a) => a.into_inner(),
                Err(status) => {
                    tracing::warn!(dossier = number, %status, "stale freeze kept: instruction unreachable");
                    out.kept += 1;
                    continue;
                }
            };
            let newer = ev::DossierStatus::try_from(answer.status)
                .ok()
                .and_then(status_from_pb)
                .filter(|_| answer.status_version > row.status_version);
            match newer {
                Some(status) => {
                    let txn = mst_kit::db::begin_write(db).await?;
                    self.forms
                        .mirror_status(&txn, number, status, answer.status_version, None)
                        .await?;
                    txn.commit().await?;
                    tracing::warn!(
                        dossier = number,
                        operation,
                        status = status.as_str(),
                        "stale freeze: mirrored the status instruction committed"
                    );
                    out.mirrored += 1;
                }
                None => {
                    if store::release_freeze(db, number, &operation, row.status_version).await? {
                        tracing::warn!(
                            dossier = number,
                            operation,
                            "stale freeze released: its transition never committed"
                        );
                        out.released += 1;
                    } else {
                        out.kept += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs [`StaleFreezes::resolve`] every `every` until `shutdown`.
    pub async fn run(
        self,
        every: Duration,
        older_than: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.resolve(older_than).await {
                tracing::warn!(error = %e, "stale freeze run failed");
            }
        }
    }
}
