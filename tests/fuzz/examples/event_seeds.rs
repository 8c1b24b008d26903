//! Writes the seed corpus of the `event_decode` target: one message per catalogued event, as the
//! relay publishes it (subject with the `mst` prefix, `Nats-Msg-Id`, `traceparent`, content
//! type and schema headers, protobuf payload), with the content a real dossier's events carry.
//!
//! `cargo run --manifest-path tests/fuzz/Cargo.toml --example event_seeds` (from the repository
//! root) rewrites `tests/fuzz/seeds/event_decode/`.

use mst_proto::Event;
use mst_proto::events as ev;

fn metadata(n: u32, producer: &str, email: &str, role: ev::Role) -> ev::EventMetadata {
    ev::EventMetadata {
        event_id: format!("0193a1b2-7c3d-7e4f-8a5b-{n:012x}"),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_727_776_800 + i64::from(n) * 3_600,
            nanos: 123_000_000,
        }),
        producer: producer.to_owned(),
        actor: Some(ev::Actor {
            email: email.to_owned(),
            role: role as i32,
        }),
        causation_id: String::new(),
    }
}

fn procedure() -> Option<ev::ProcedureRef> {
    Some(ev::ProcedureRef {
        id: "mst-2024-projet".to_owned(),
        title: "Mois sans tabac 2024 — appel à projets (Projet)".to_owned(),
        kind: ev::DossierKind::Projet as i32,
    })
}

/// The seeds written so far, numbered from 1 in the files' names.
struct Seeds<'a> {
    dir: &'a std::path::Path,
    n: u32,
}

impl Seeds<'_> {
    /// Writes the next seed: the event `make` builds for its number.
    fn add<E: Event>(&mut self, make: impl FnOnce(u32) -> E) {
        self.n += 1;
        write(self.dir, self.n, &make(self.n));
    }
}

fn write<E: Event>(dir: &std::path::Path, n: u32, event: &E) {
    let id = event
        .metadata()
        .map(|m| m.event_id.clone())
        .unwrap_or_default();
    let mut out = format!(
        "mst.{}\nNats-Msg-Id: {id}\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01\n\
         Content-Type: application/protobuf\nMst-Schema: {}\n\n",
        E::SUBJECT,
        0x00f0_67aa_0ba9_02b7_u64 + u64::from(n),
        E::SCHEMA,
    )
    .into_bytes();
    out.extend(event.encode_to_vec());
    std::fs::write(dir.join(format!("{:02}-{}", n, E::SUBJECT)), out).expect("write a seed");
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/event_decode");
    std::fs::create_dir_all(&dir).expect("seed directory");
    let owner = "marie.dupont@asso-souffle.example";
    let instructeur = "paul.martin@cpam13.example";
    let forms = |n| Some(metadata(n, "forms", owner, ev::Role::Promoteur));
    let instruction = |n| {
        Some(metadata(
            n,
            "instruction",
            instructeur,
            ev::Role::Instructeur,
        ))
    };
    let fiche = Some(ev::Fiche {
        id: "0193a1b2-0000-7000-8000-00000000f1c0".to_owned(),
        kind: ev::DossierKind::Projet as i32,
        region_code: "93".to_owned(),
        departement_code: "13".to_owned(),
        commune_code: "13055".to_owned(),
        title: "Souffle libre à Marseille".to_owned(),
        start_date: "2024-10-01".to_owned(),
        end_date: "2024-11-30".to_owned(),
        description: "Ateliers d'aide à l'arrêt du tabac, consultations avec une tabacologue."
            .to_owned(),
        publics: vec![
            "Jeunes (16-25 ans)".to_owned(),
            "Femmes enceintes".to_owned(),
        ],
        financeurs: vec!["Assurance Maladie".to_owned()],
        ..Default::default()
    });
    let mut seeds = Seeds { dir: &dir, n: 0 };
    seeds.add(|i| ev::ProcedureChanged {
        metadata: Some(metadata(
            i,
            "forms",
            "admin@cnamts.example",
            ev::Role::Admin,
        )),
        ..Default::default()
    });
    seeds.add(|i| ev::DossierCreated {
        metadata: forms(i),
        number: 1042,
        procedure: procedure(),
        ..Default::default()
    });
    seeds.add(|i| ev::DossierContentChanged {
        metadata: forms(i),
        number: 1042,
        version: 7,
        changed_field_ids: vec!["p_siret".to_owned(), "p_depenses".to_owned()],
        procedure: procedure(),
        status: ev::DossierStatus::Brouillon as i32,
    });
    seeds.add(|i| ev::DossierInvited {
        metadata: forms(i),
        number: 1042,
        invitee_email: instructeur.to_owned(),
        ..Default::default()
    });
    seeds.add(|i| ev::DossierInvitationRevoked {
        metadata: forms(i),
        number: 1042,
        invitee_email: instructeur.to_owned(),
        ..Default::default()
    });
    seeds.add(|i| ev::DossierDeleted {
        metadata: forms(i),
        number: 1043,
        ..Default::default()
    });
    seeds.add(|i| ev::DossierStatusChanged {
        metadata: instruction(i),
        number: 1042,
        procedure: procedure(),
        from_status: ev::DossierStatus::EnInstruction as i32,
        to_status: ev::DossierStatus::Accepte as i32,
        transition: ev::DossierTransition::Accepter as i32,
        motivation: "Projet conforme au cahier des charges.".to_owned(),
        owner_email: owner.to_owned(),
        invitee_emails: vec!["tresorier@asso-souffle.example".to_owned()],
        status_version: 4,
        ..Default::default()
    });
    seeds.add(|i| ev::DossierCorrectionResolved {
        metadata: forms(i),
        number: 1042,
        procedure: procedure(),
        ..Default::default()
    });
    seeds.add(|i| ev::DossierArchived {
        metadata: instruction(i),
        number: 1042,
        procedure: procedure(),
        status: ev::DossierStatus::Accepte as i32,
        status_version: 5,
    });
    seeds.add(|i| ev::DossierUnarchived {
        metadata: instruction(i),
        number: 1042,
        procedure: procedure(),
        status: ev::DossierStatus::Accepte as i32,
        status_version: 5,
    });
    seeds.add(|i| ev::AvisRequested {
        metadata: instruction(i),
        number: 1042,
        ..Default::default()
    });
    seeds.add(|i| ev::AvisGiven {
        metadata: instruction(i),
        number: 1042,
        ..Default::default()
    });
    seeds.add(|i| ev::AvisRevoked {
        metadata: instruction(i),
        number: 1042,
        ..Default::default()
    });
    seeds.add(|i| ev::MessagePosted {
        metadata: forms(i),
        number: 1042,
        ..Default::default()
    });
    seeds.add(|i| ev::MailSent {
        metadata: Some(metadata(i, "messagerie", owner, ev::Role::System)),
        ..Default::default()
    });
    let oscars = |i| Some(metadata(i, "oscars", "oscars", ev::Role::System));
    seeds.add(|i| ev::OscarsFicheImported {
        metadata: oscars(i),
        fiche: fiche.clone(),
    });
    seeds.add(|i| ev::OscarsFichePublished {
        metadata: oscars(i),
        fiche: fiche.clone(),
    });
    seeds.add(|i| ev::OscarsFicheUpdated {
        metadata: oscars(i),
        fiche: fiche.clone(),
        ..Default::default()
    });
    seeds.add(|i| ev::OscarsFicheWithdrawn {
        metadata: oscars(i),
        fiche,
        ..Default::default()
    });
    println!("{} seeds in {}", seeds.n, dir.display());
}
