//! `mstctl demo`: the seed's guide played on a running deployment (the embedded stack by
//! default) with realistic French data — three promoteurs in three régions, each with a Projet and
//! an Action — and a printed timeline: each step, the emails the messagerie sent (subject,
//! recipient) and the OSCARS fiches on the public map. Every call goes through the public gRPC
//! APIs with locally minted tokens (shared-secret deployments only).

use std::time::{Duration, Instant};

use mst_kit::auth::{AuthSettings, Role};
use mst_kit::config::Env;
use mst_proto::events as ev;
use mst_proto::forms as fpb;
use mst_proto::forms::champ_value::Value as V;
use mst_proto::forms::forms_service_client::FormsServiceClient;
use mst_proto::forms::procedure_admin_service_client::ProcedureAdminServiceClient;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::instruction::roster_service_client::RosterServiceClient;
use mst_proto::messagerie as mpb;
use mst_proto::messagerie::messagerie_service_client::MessagerieServiceClient;
use mst_proto::oscars as opb;
use mst_proto::oscars::oscars_public_service_client::OscarsPublicServiceClient;
use mst_proto::oscars::oscars_service_client::OscarsServiceClient;
use tonic::transport::Channel;

use crate::client::{channel, explain};

const ADMIN: &str = "admin@mst.local";
const PROJET: &str = "mst-2024-projet";
const ACTION: &str = "mst-2024-action";

/// Where the four services listen.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Forms service.
    #[arg(long, env = "MST_FORMS_URL", default_value = "http://127.0.0.1:50051")]
    forms_url: String,
    /// Instruction service.
    #[arg(
        long,
        env = "MST_INSTRUCTION_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    instruction_url: String,
    /// Messagerie service.
    #[arg(
        long,
        env = "MST_MESSAGERIE_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    messagerie_url: String,
    /// OSCARS service.
    #[arg(long, env = "MST_OSCARS_URL", default_value = "http://127.0.0.1:50054")]
    oscars_url: String,
    /// Clear the procedures' closing date first (a demo deployment whose procedures are
    /// closed; never on a real one).
    #[arg(long)]
    open_procedures: bool,
}

/// One promoteur of the demo, its territory and its two dossiers.
struct Promoteur {
    email: &'static str,
    contact: &'static str,
    structure: &'static str,
    siret: &'static str,
    street: &'static str,
    postal_code: &'static str,
    city: &'static str,
    commune: &'static str,
    departement: &'static str,
    region: &'static str,
    latitude: f64,
    longitude: f64,
    cpam: &'static str,
    groupe: &'static str,
    instructeur: &'static str,
    ambassadeur: &'static str,
    ambassadeur_structure: &'static str,
    projet: &'static str,
    action: &'static str,
    lieu: &'static str,
}

const PROMOTEURS: [Promoteur; 3] = [
    Promoteur {
        email: "marie.dupont@asso-souffle.fr",
        contact: "Marie Dupont",
        structure: "Association Souffle – Prévention santé Marseille",
        siret: "78452316900018",
        street: "12 rue d'Italie",
        postal_code: "13006",
        city: "Marseille",
        commune: "13055",
        departement: "13",
        region: "93",
        latitude: 43.2886,
        longitude: 5.3822,
        cpam: "CPAM des Bouches-du-Rhône (13)",
        groupe: "CPAM des Bouches-du-Rhône",
        instructeur: "claire.roussel@assurance-maladie.fr",
        ambassadeur: "lea.garcia@cres-paca.org",
        ambassadeur_structure: "CRES Provence-Alpes-Côte d'Azur",
        projet: "Mois sans tabac 2024 dans les quartiers Nord de Marseille",
        action: "Stand d'information au centre social Saint-Louis",
        lieu: "Centre social Saint-Louis",
    },
    Promoteur {
        email: "karim.benali@csapa-rhone.fr",
        contact: "Karim Benali",
        structure: "CSAPA du Rhône",
        siret: "52341987700023",
        street: "10 cours Gambetta",
        postal_code: "69003",
        city: "Lyon",
        commune: "69123",
        departement: "69",
        region: "84",
        latitude: 45.7538,
        longitude: 4.8437,
        cpam: "CPAM du Rhône (69)",
        groupe: "CPAM du Rhône",
        instructeur: "julien.morel@assurance-maladie.fr",
        ambassadeur: "hugo.bernard@ireps-ara.org",
        ambassadeur_structure: "IREPS Auvergne-Rhône-Alpes",
        projet: "Arrêter de fumer à la Guillotière",
        action: "Consultations d'aide à l'arrêt à la maison de santé de la Guillotière",
        lieu: "Maison de santé de la Guillotière",
    },
    Promoteur {
        email: "sophie.martin@cs-capucins.fr",
        contact: "Sophie Martin",
        structure: "Centre social des Capucins",
        siret: "41235678400030",
        street: "5 place de la Victoire",
        postal_code: "33000",
        city: "Bordeaux",
        commune: "33063",
        departement: "33",
        region: "75",
        latitude: 44.8306,
        longitude: -0.5728,
        cpam: "CPAM de la Gironde (33)",
        groupe: "CPAM de la Gironde",
        instructeur: "nadia.lefevre@assurance-maladie.fr",
        ambassadeur: "paul.durand@ireps-na.org",
        ambassadeur_structure: "IREPS Nouvelle-Aquitaine",
        projet: "Un mois sans tabac au marché des Capucins",
        action: "Atelier collectif d'aide à l'arrêt au marché des Capucins",
        lieu: "Marché des Capucins",
    },
];

struct Demo {
    auth: AuthSettings,
    started: Instant,
    forms: FormsServiceClient<Channel>,
    admin_forms: ProcedureAdminServiceClient<Channel>,
    roster: RosterServiceClient<Channel>,
    instruction: InstructionServiceClient<Channel>,
    messagerie: MessagerieServiceClient<Channel>,
    oscars: OscarsServiceClient<Channel>,
    public: OscarsPublicServiceClient<Channel>,
}

fn set(field: &str, value: V) -> fpb::ChampPatch {
    fpb::ChampPatch {
        field_id: field.into(),
        row: None,
        operation: Some(fpb::champ_patch::Operation::Set(fpb::ChampValue {
            value: Some(value),
        })),
    }
}

fn add_row(field: &str, row: &str) -> fpb::ChampPatch {
    fpb::ChampPatch {
        field_id: field.into(),
        row: None,
        operation: Some(fpb::champ_patch::Operation::AddRow(row.into())),
    }
}

fn set_in_row(repetition: &str, row: &str, field: &str, value: V) -> fpb::ChampPatch {
    fpb::ChampPatch {
        field_id: field.into(),
        row: Some(fpb::RowRef {
            repetition_field_id: repetition.into(),
            row_id: row.into(),
        }),
        operation: Some(fpb::champ_patch::Operation::Set(fpb::ChampValue {
            value: Some(value),
        })),
    }
}

fn text(s: &str) -> V {
    V::Text(s.into())
}

fn choice(s: &str) -> V {
    V::DropDown(fpb::Choice {
        choice: Some(fpb::choice::Choice::Value(s.into())),
    })
}

fn multi(values: &[&str], other: Option<&str>) -> V {
    V::MultiDropDown(fpb::MultiChoice {
        values: values.iter().map(|v| (*v).to_owned()).collect(),
        other: other.map(str::to_owned),
    })
}

fn address(p: &Promoteur, street: &str, latitude: f64, longitude: f64) -> V {
    V::Address(fpb::Address {
        label: format!("{street} {} {}", p.postal_code, p.city),
        street: street.into(),
        postal_code: p.postal_code.into(),
        city: p.city.into(),
        commune_code: p.commune.into(),
        departement_code: p.departement.into(),
        region_code: p.region.into(),
        latitude: Some(latitude),
        longitude: Some(longitude),
    })
}

/// A small, well-formed one-page PDF.
fn pdf(line: &str) -> Vec<u8> {
    let content = format!("BT /F1 14 Tf 72 770 Td ({line}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).into_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").into_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    out
}

fn projet_answers(p: &Promoteur) -> Vec<fpb::ChampPatch> {
    vec![
        set("p_siret", V::Siret(p.siret.into())),
        set("p_raison_sociale", text(p.structure)),
        set("p_type_structure", choice("Association")),
        set("p_adresse", address(p, p.street, p.latitude, p.longitude)),
        set("p_contact_nom", text(p.contact)),
        set("p_contact_email", V::Email(p.email.into())),
        set("p_contact_tel", V::Phone("04 91 55 20 13".into())),
        set("p_aucun_lien_tabac", V::Checkbox(true)),
        set("p_region", V::Region(p.region.into())),
        set("p_departement", V::Departement(p.departement.into())),
        set("p_cpam", choice(p.cpam)),
        set("p_titre", text(p.projet)),
        set("p_edition", V::Integer(2024)),
        set("p_renouvellement", V::YesNo(false)),
        set(
            "p_contexte",
            text(&format!(
                "À {}, le tabagisme reste fréquent chez les habitants que nous accompagnons.",
                p.city
            )),
        ),
        set(
            "p_objectif_general",
            text("Aider les fumeurs à relever le défi de novembre."),
        ),
        set(
            "p_objectifs_operationnels",
            text("Informer 1 500 habitants ; inscrire 200 fumeurs au défi."),
        ),
        set(
            "p_publics",
            multi(
                &["Jeunes, notamment en formation professionnelle et en insertion"],
                Some("Habitants des quartiers prioritaires"),
            ),
        ),
        set("p_niveau_geo", choice("Intercommunal")),
        add_row("p_communes", "c1"),
        set_in_row(
            "p_communes",
            "c1",
            "p_communes_commune",
            V::Commune(p.commune.into()),
        ),
        set("p_date_debut", V::Date("2024-10-07".into())),
        set("p_date_fin", V::Date("2024-11-29".into())),
        set("p_nb_actions", V::Integer(1)),
        set("p_nb_personnes_prevues", V::Integer(450)),
        set("p_avec_partenaires", V::YesNo(true)),
        add_row("p_partenaires", "pa1"),
        set_in_row(
            "p_partenaires",
            "pa1",
            "p_partenaire_nom",
            text("Tabac info service"),
        ),
        set_in_row(
            "p_partenaires",
            "pa1",
            "p_partenaire_role",
            text("Orientation (39 89)"),
        ),
        set(
            "p_relais",
            text("Orientation vers Tabac info service (39 89)."),
        ),
        set("p_indicateurs", text("Nombre d'inscrits au défi.")),
        set("p_budget_total", V::Decimal("5000.00".into())),
        set("p_montant_demande", V::Decimal("3000.00".into())),
        add_row("p_depenses", "d1"),
        set_in_row(
            "p_depenses",
            "d1",
            "p_dep_poste",
            choice("Supports de communication / impression"),
        ),
        set_in_row(
            "p_depenses",
            "d1",
            "p_dep_montant",
            V::Decimal("5000.00".into()),
        ),
        set_in_row(
            "p_depenses",
            "d1",
            "p_dep_detail",
            text("Affiches et flyers"),
        ),
        set("p_avec_cofinancements", V::YesNo(true)),
        add_row("p_cofinancements", "f1"),
        set_in_row("p_cofinancements", "f1", "p_cof_financeur", choice("ARS")),
        set_in_row(
            "p_cofinancements",
            "f1",
            "p_cof_montant",
            V::Decimal("2000.00".into()),
        ),
        set_in_row("p_cofinancements", "f1", "p_cof_statut", choice("Acquis")),
        set("p_engagement_bilan", V::Checkbox(true)),
    ]
}

fn action_answers(p: &Promoteur, projet: i64) -> Vec<fpb::ChampPatch> {
    vec![
        set("a_projet_dossier", V::DossierLink(projet)),
        set("a_siret", V::Siret(p.siret.into())),
        set("a_raison_sociale", text(p.structure)),
        set("a_cpam", choice(p.cpam)),
        set("a_renouvellement", V::YesNo(false)),
        set("a_titre", text(p.action)),
        set("a_date_debut", V::Date("2024-10-15".into())),
        set("a_date_fin", V::Date("2024-11-26".into())),
        set("a_type_action", choice("Stand / journée d'information")),
        set(
            "a_objectifs",
            multi(
                &[
                    "Accompagner l'arrêt (consultation, atelier collectif, substituts nicotiniques…)",
                ],
                None,
            ),
        ),
        set(
            "a_description",
            text("Une tabacologue accueille le public chaque mardi matin."),
        ),
        set(
            "a_public",
            multi(&["Habitants / tout public", "Fumeurs"], None),
        ),
        set("a_nb_personnes_prevues", V::Integer(120)),
        set("a_nom_lieu", text(p.lieu)),
        set("a_type_lieu", choice("Structure sociale / hébergement")),
        set("a_adresse", address(p, p.street, p.latitude, p.longitude)),
        set("a_commune", V::Commune(p.commune.into())),
        set("a_departement", V::Departement(p.departement.into())),
        set("a_niveau_geo", choice("Communal")),
        set(
            "a_financeurs",
            multi(&["Assurance Maladie - Régime général", "ARS"], None),
        ),
        set("a_contact_public_email", V::Email(p.email.into())),
    ]
}

impl Demo {
    fn step(&self, text: &str) {
        let t = self.started.elapsed().as_secs_f64();
        println!("[{t:6.1} s] {text}");
    }

    fn as_<T>(&self, email: &str, role: Role, message: T) -> anyhow::Result<tonic::Request<T>> {
        let token = mst_kit::auth::mint_for(&self.auth, email, &[role], Duration::from_secs(600))?;
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        Ok(request)
    }

    /// The two procedures, published and open: loaded from the shipped definitions only when
    /// missing (reloading a shipped definition would restore its 2024 closing date).
    async fn open(&mut self, open_procedures: bool) -> anyhow::Result<()> {
        for id in [PROJET, ACTION] {
            let existing = self
                .forms
                .get_procedure(self.as_(
                    ADMIN,
                    Role::Admin,
                    fpb::GetProcedureRequest {
                        procedure_id: id.into(),
                        include_published_revision: false,
                    },
                )?)
                .await;
            let procedure = match existing {
                Ok(r) => r.into_inner().procedure.unwrap_or_default(),
                Err(s) if s.code() == tonic::Code::NotFound => self
                    .admin_forms
                    .load_procedure(self.as_(
                        ADMIN,
                        Role::Admin,
                        fpb::LoadProcedureRequest {
                            source: Some(fpb::load_procedure_request::Source::BuiltinId(id.into())),
                            publish: true,
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner()
                    .procedure
                    .unwrap_or_default(),
                Err(s) => return Err(explain(&s)),
            };
            let closed = procedure.closing_at.as_ref().is_some_and(|at| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                at.seconds <= now
            });
            if closed {
                anyhow::ensure!(
                    open_procedures,
                    "the procedure {id} is closed: on a demo deployment, run `mstctl demo --open-procedures`"
                );
                self.admin_forms
                    .update_procedure(self.as_(
                        ADMIN,
                        Role::Admin,
                        fpb::UpdateProcedureRequest {
                            procedure_id: id.into(),
                            expected_version: procedure.version,
                            procedure: Some(fpb::Procedure::default()),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["closing_at".into()],
                            }),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?;
            }
            self.step(&format!("démarche « {} » publiée ({id})", procedure.title));
        }
        Ok(())
    }

    async fn roster(&mut self, p: &Promoteur) -> anyhow::Result<()> {
        let created = self
            .roster
            .create_groupe(self.as_(
                ADMIN,
                Role::Admin,
                ipb::CreateGroupeRequest {
                    label: p.groupe.into(),
                    cpam_values: vec![p.cpam.into()],
                    departement_codes: vec![p.departement.into()],
                    is_default: false,
                },
            )?)
            .await;
        let groupe_id = match created {
            Ok(r) => r.into_inner().groupe.unwrap_or_default().id,
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let groupes = self
                    .roster
                    .list_groupes(self.as_(
                        ADMIN,
                        Role::Admin,
                        ipb::ListGroupesRequest {
                            page_size: 500,
                            page_token: String::new(),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner()
                    .groupes;
                groupes
                    .into_iter()
                    .find(|g| g.label == p.groupe)
                    .map(|g| g.id)
                    .ok_or_else(|| {
                        anyhow::anyhow!("groupe {} exists but is not listed", p.groupe)
                    })?
            }
            Err(s) => return Err(explain(&s)),
        };
        self.roster
            .add_instructeur(self.as_(
                ADMIN,
                Role::Admin,
                ipb::AddInstructeurRequest {
                    email: p.instructeur.into(),
                    groupe_id,
                    name: String::new(),
                },
            )?)
            .await
            .map_err(|s| explain(&s))?;
        let current = self
            .oscars
            .list_ambassadeurs(self.as_(
                ADMIN,
                Role::Admin,
                opb::ListAmbassadeursRequest {
                    region_code: p.region.into(),
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .regions
            .into_iter()
            .next();
        if !current
            .as_ref()
            .is_some_and(|r| r.ambassadeurs.iter().any(|a| a.email == p.ambassadeur))
        {
            self.oscars
                .set_ambassadeurs(self.as_(
                    ADMIN,
                    Role::Admin,
                    opb::SetAmbassadeursRequest {
                        region_code: p.region.into(),
                        expected_version: current.map_or(0, |r| r.version),
                        ambassadeurs: vec![opb::Ambassadeur {
                            email: p.ambassadeur.into(),
                            structure: p.ambassadeur_structure.into(),
                        }],
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?;
        }
        self.step(&format!(
            "groupe « {} » : instructeur {} ; ambassadeur de la région {} : {} ({})",
            p.groupe, p.instructeur, p.region, p.ambassadeur, p.ambassadeur_structure
        ));
        Ok(())
    }

    async fn upload(
        &mut self,
        p: &Promoteur,
        number: i64,
        field: &str,
        name: &str,
    ) -> anyhow::Result<i64> {
        use fpb::upload_champ_file_request::Payload;
        let content = pdf(name);
        let messages = vec![
            fpb::UploadChampFileRequest {
                payload: Some(Payload::Metadata(fpb::UploadChampFileMetadata {
                    number,
                    field_id: field.into(),
                    row: None,
                    file_name: name.into(),
                    content_type: "application/pdf".into(),
                    size_bytes: i64::try_from(content.len())?,
                    expected_version: None,
                })),
            },
            fpb::UploadChampFileRequest {
                payload: Some(Payload::Chunk(content)),
            },
        ];
        Ok(self
            .forms
            .upload_champ_file(self.as_(
                p.email,
                Role::Promoteur,
                futures::stream::iter(messages),
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .version)
    }

    /// Creates, fills over several autosaves and deposits a dossier; its number.
    async fn deposit(
        &mut self,
        p: &Promoteur,
        procedure: &str,
        answers: Vec<fpb::ChampPatch>,
        files: &[(&str, &str)],
    ) -> anyhow::Result<i64> {
        let d = self
            .forms
            .create_dossier(self.as_(
                p.email,
                Role::Promoteur,
                fpb::CreateDossierRequest {
                    procedure_id: procedure.into(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .dossier
            .unwrap_or_default();
        let number = d.number;
        let mut version = d.version;
        let chunk = answers.len().div_ceil(3).max(1);
        for patches in answers.chunks(chunk) {
            version = self
                .forms
                .update_dossier(self.as_(
                    p.email,
                    Role::Promoteur,
                    fpb::UpdateDossierRequest {
                        number,
                        expected_version: version,
                        patches: patches.to_vec(),
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .dossier
                .unwrap_or_default()
                .version;
        }
        for (field, name) in files {
            version = self.upload(p, number, field, name).await?;
        }
        self.forms
            .deposit_dossier(self.as_(
                p.email,
                Role::Promoteur,
                fpb::DepositDossierRequest {
                    number,
                    expected_version: version,
                },
            )?)
            .await
            .map_err(|s| explain(&s))?;
        Ok(number)
    }

    async fn accept(&mut self, p: &Promoteur, number: i64) -> anyhow::Result<()> {
        let i = p.instructeur;
        self.instruction
            .follow_dossier(self.as_(i, Role::Instructeur, ipb::FollowDossierRequest { number })?)
            .await
            .map_err(|s| explain(&s))?;
        let d = self
            .instruction
            .get_dossier(self.as_(i, Role::Instructeur, ipb::GetDossierRequest { number })?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .dossier
            .unwrap_or_default();
        let d = self
            .instruction
            .passer_en_instruction(self.as_(
                i,
                Role::Instructeur,
                ipb::PasserEnInstructionRequest {
                    number,
                    expected_version: d.version,
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .dossier
            .unwrap_or_default();
        self.instruction
            .accepter(self.as_(
                i,
                Role::Instructeur,
                ipb::AccepterRequest {
                    number,
                    expected_version: d.version,
                    motivation: "Projet conforme au cahier des charges, budget cohérent.".into(),
                    justificatif_upload_id: String::new(),
                },
            )?)
            .await
            .map_err(|s| explain(&s))?;
        self.step(&format!(
            "  {i} suit le dossier n° {number}, le passe en instruction et l'accepte"
        ));
        Ok(())
    }

    /// The fiche of dossier `number` once OSCARS imported it (30 s at most).
    async fn fiche(&mut self, p: &Promoteur, number: i64) -> anyhow::Result<ev::Fiche> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let queue = self
                .oscars
                .list_work_queue(self.as_(
                    p.ambassadeur,
                    Role::Ambassadeur,
                    opb::ListWorkQueueRequest {
                        filter: None,
                        page_size: 500,
                        page_token: String::new(),
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            if let Some(f) = queue
                .fiches
                .into_iter()
                .find(|f| f.dossier_number == number)
            {
                return Ok(f);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no OSCARS fiche for dossier {number}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn publish(&mut self, p: &Promoteur, projet: i64, action: i64) -> anyhow::Result<()> {
        let a = p.ambassadeur;
        let projet_fiche = self.fiche(p, projet).await?;
        let action_fiche = self.fiche(p, action).await?;
        self.step(&format!(
            "  OSCARS : fiches invisibles importées pour les dossiers n° {projet} et n° {action}"
        ));
        let chained = self
            .oscars
            .chain_to_projet(self.as_(
                a,
                Role::Ambassadeur,
                opb::ChainToProjetRequest {
                    fiche_id: action_fiche.id.clone(),
                    expected_version: action_fiche.version,
                    projet_fiche_id: projet_fiche.id.clone(),
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .fiche
            .unwrap_or_default();
        let found = self
            .oscars
            .find_promoteurs(self.as_(
                a,
                Role::Ambassadeur,
                opb::FindPromoteursRequest {
                    siret: p.siret.into(),
                    ..Default::default()
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner();
        let promoteur_id = match found.matches.into_iter().next().and_then(|m| m.promoteur) {
            Some(existing) => existing.id,
            None => {
                self.oscars
                    .create_promoteur(self.as_(
                        a,
                        Role::Ambassadeur,
                        opb::CreatePromoteurRequest {
                            promoteur: Some(opb::Promoteur {
                                siret: p.siret.into(),
                                raison_sociale: p.structure.into(),
                                type_structure: "Association".into(),
                                adresse: format!("{} {} {}", p.street, p.postal_code, p.city),
                                commune_code: p.commune.into(),
                                ..Default::default()
                            }),
                            request_id: uuid::Uuid::new_v4().to_string(),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner()
                    .promoteur
                    .unwrap_or_default()
                    .id
            }
        };
        for (id, version) in [
            (projet_fiche.id.clone(), projet_fiche.version),
            (chained.id.clone(), chained.version),
        ] {
            let attached = self
                .oscars
                .attach_promoteur(self.as_(
                    a,
                    Role::Ambassadeur,
                    opb::AttachPromoteurRequest {
                        fiche_id: id.clone(),
                        expected_version: version,
                        promoteur_id: promoteur_id.clone(),
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .fiche
                .unwrap_or_default();
            self.oscars
                .publish_fiche(self.as_(
                    a,
                    Role::Ambassadeur,
                    opb::PublishFicheRequest {
                        fiche_id: id,
                        expected_version: attached.version,
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?;
        }
        self.step(&format!(
            "  {a} chaîne l'action au projet, rattache « {} » et publie les deux fiches",
            p.structure
        ));
        Ok(())
    }

    /// The emails of the demo's dossiers once none is queued any more (30 s at most).
    async fn emails(&mut self, numbers: &[i64]) -> anyhow::Result<Vec<mpb::Delivery>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = Vec::new();
            for &number in numbers {
                all.extend(
                    self.messagerie
                        .list_deliveries(self.as_(
                            ADMIN,
                            Role::Admin,
                            mpb::ListDeliveriesRequest {
                                number,
                                page_size: 500,
                                ..Default::default()
                            },
                        )?)
                        .await
                        .map_err(|s| explain(&s))?
                        .into_inner()
                        .deliveries,
                );
            }
            let queued = all
                .iter()
                .any(|d| d.status == mpb::DeliveryStatus::Queued as i32);
            if !queued || Instant::now() > deadline {
                all.sort_by_key(|d| d.queued_at.as_ref().map(|t| (t.seconds, t.nanos)));
                return Ok(all);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<bool> {
    let mut env = Env::from_process();
    let auth = AuthSettings::from_env(&mut env);
    env.finish()?;
    let forms = channel(&args.forms_url).await?;
    let instruction = channel(&args.instruction_url).await?;
    let mut demo = Demo {
        auth,
        started: Instant::now(),
        forms: FormsServiceClient::new(forms.clone()),
        admin_forms: ProcedureAdminServiceClient::new(forms),
        roster: RosterServiceClient::new(instruction.clone()),
        instruction: InstructionServiceClient::new(instruction),
        messagerie: MessagerieServiceClient::new(channel(&args.messagerie_url).await?),
        oscars: OscarsServiceClient::new(channel(&args.oscars_url).await?),
        public: OscarsPublicServiceClient::new(channel(&args.oscars_url).await?),
    };
    println!("Mois sans tabac — la démarche de bout en bout\n");
    demo.open(args.open_procedures).await?;
    for p in &PROMOTEURS {
        demo.roster(p).await?;
    }
    let mut numbers = Vec::new();
    for p in &PROMOTEURS {
        let projet = demo
            .deposit(
                p,
                PROJET,
                projet_answers(p),
                &[("p_pj_budget", "budget.pdf"), ("p_pj_rib", "rib.pdf")],
            )
            .await?;
        demo.step(&format!(
            "{} ({}) remplit son Projet en trois enregistrements et le dépose : dossier n° {projet}",
            p.contact, p.structure
        ));
        let action = demo
            .deposit(p, ACTION, action_answers(p, projet), &[])
            .await?;
        demo.step(&format!(
            "{} dépose l'Action liée « {} » : dossier n° {action}",
            p.contact, p.action
        ));
        demo.accept(p, projet).await?;
        demo.accept(p, action).await?;
        demo.publish(p, projet, action).await?;
        numbers.extend([projet, action]);
    }
    let emails = demo.emails(&numbers).await?;
    println!("\nEmails envoyés ({}) :", emails.len());
    for d in &emails {
        let status = mpb::DeliveryStatus::try_from(d.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("DELIVERY_STATUS_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        println!("  [{status}] {} → {}", d.subject, d.recipient);
    }
    let listed = demo
        .public
        .list_public_fiches(opb::ListPublicFichesRequest {
            filter: None,
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    println!(
        "\nFiches OSCARS visibles sur la carte ({}) :",
        listed.total_count
    );
    for f in &listed.fiches {
        let kind = ev::DossierKind::try_from(f.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("DOSSIER_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        let chained = f
            .projet
            .as_ref()
            .map(|l| format!(" — rattachée au projet « {} »", l.title))
            .unwrap_or_default();
        println!(
            "  {kind:<6} « {} » ({}, région {}, dossier n° {}){chained}",
            f.title, f.commune_code, f.region_code, f.dossier_number
        );
    }
    println!(
        "\nTerminé en {:.1} s.",
        demo.started.elapsed().as_secs_f64()
    );
    Ok(true)
}
