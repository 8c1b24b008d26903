//! The consumer of the oscars service: `DossierStatusChanged` (import on → accepté, withdrawal
//! on leaving it) and its own feed (`oscars.fiche.*`, which restores fiches on a replay and is a
//! no-op otherwise).

use mst_bus::{ConsumerSpec, Delivery, Handler, HandlerError};
use mst_proto::Event as _;
use mst_proto::events as ev;
use sea_orm::DatabaseTransaction;

use crate::app::Oscars;

/// The durable consumer `durable` (one per deployment; a new name replays from the start).
pub fn spec(durable: &str) -> ConsumerSpec {
    ConsumerSpec::new(
        durable,
        &[
            ev::DossierStatusChanged::SUBJECT,
            ev::OscarsFicheImported::SUBJECT,
            ev::OscarsFichePublished::SUBJECT,
            ev::OscarsFicheUpdated::SUBJECT,
            ev::OscarsFicheWithdrawn::SUBJECT,
        ],
    )
}

/// Applies the consumed events.
#[derive(Clone, Debug)]
pub struct OscarsEvents {
    oscars: Oscars,
}

impl OscarsEvents {
    /// Handlers over `oscars`.
    pub fn new(oscars: Oscars) -> Self {
        Self { oscars }
    }
}

fn fiche_of(f: Option<ev::Fiche>) -> Result<ev::Fiche, HandlerError> {
    f.ok_or_else(|| HandlerError::Permanent(anyhow::anyhow!("feed event without a fiche")))
}

impl Handler for OscarsEvents {
    async fn handle(&self, txn: &DatabaseTransaction, d: &Delivery) -> Result<(), HandlerError> {
        let o = &self.oscars;
        match d.subject.as_str() {
            s if s == ev::DossierStatusChanged::SUBJECT => {
                let e = d.decode::<ev::DossierStatusChanged>()?;
                o.on_status_changed(txn, &d.event_id, &e).await
            }
            s if s == ev::OscarsFicheImported::SUBJECT => {
                let f = fiche_of(d.decode::<ev::OscarsFicheImported>()?.fiche)?;
                o.on_feed_event(txn, &f).await
            }
            s if s == ev::OscarsFichePublished::SUBJECT => {
                let f = fiche_of(d.decode::<ev::OscarsFichePublished>()?.fiche)?;
                o.on_feed_event(txn, &f).await
            }
            s if s == ev::OscarsFicheUpdated::SUBJECT => {
                let f = fiche_of(d.decode::<ev::OscarsFicheUpdated>()?.fiche)?;
                o.on_feed_event(txn, &f).await
            }
            s if s == ev::OscarsFicheWithdrawn::SUBJECT => {
                let f = fiche_of(d.decode::<ev::OscarsFicheWithdrawn>()?.fiche)?;
                o.on_feed_event(txn, &f).await
            }
            other => Err(HandlerError::Permanent(anyhow::anyhow!(
                "unexpected subject {other}"
            ))),
        }
    }

    /// The feed events the handled events queued are committed: publish them now.
    fn committed(&self) {
        self.oscars.wake_relay();
    }
}
