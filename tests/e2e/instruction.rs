//! The instructeur's side over gRPC: dashboard counters, follow, passer en instruction (the
//! promoteur's next save is refused), justificatif, decision, and who may do what.

use std::time::Duration;

use futures::StreamExt as _;
use mst_e2e::Stack;
use mst_kit::auth::Role;
use mst_proto::instruction as pb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

async fn instruction(stack: &Stack) -> InstructionServiceClient<Channel> {
    InstructionServiceClient::new(
        tonic::transport::Endpoint::from_shared(stack.service("instruction").url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

fn instructeur<T>(message: T) -> tonic::Request<T> {
    as_(INSTRUCTEUR, &[Role::Instructeur], message)
}

async fn counters(stack: &Stack) -> pb::Counters {
    let board = instruction(stack)
        .await
        .get_dashboard(instructeur(pb::GetDashboardRequest {
            procedure_id: "test-instruction".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    board
        .entries
        .into_iter()
        .find_map(|e| e.counters)
        .unwrap_or_default()
}

#[tokio::test]
async fn an_instructeur_follows_instructs_and_accepts_a_dossier_with_a_justificatif() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-instruction").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-instruction").await;
    let d = update(&stack, OWNER, d.number, 1, complete_answers())
        .await
        .unwrap();
    deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    let number = d.number;
    let c = counters(&stack).await;
    assert_eq!((c.a_suivre, c.suivis, c.tous), (1, 0, 1));

    let mut client = instruction(&stack).await;
    client
        .follow_dossier(instructeur(pb::FollowDossierRequest { number }))
        .await
        .unwrap();
    let c = counters(&stack).await;
    assert_eq!((c.a_suivre, c.suivis), (0, 1));

    // A promoteur cannot instruct; an undeclared instructeur neither.
    let version = client
        .get_dossier(instructeur(pb::GetDossierRequest { number }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap()
        .version;
    let err = client
        .passer_en_instruction(promoteur(
            OWNER,
            pb::PasserEnInstructionRequest {
                number,
                expected_version: version,
            },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::PermissionDenied | Code::NotFound),
        "{err:?}"
    );
    let err = client
        .passer_en_instruction(as_(
            "inconnu@cpam13.example",
            &[Role::Instructeur],
            pb::PasserEnInstructionRequest {
                number,
                expected_version: version,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let dossier = client
        .passer_en_instruction(instructeur(pb::PasserEnInstructionRequest {
            number,
            expected_version: version,
        }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    assert_eq!(
        dossier.status,
        mst_proto::events::DossierStatus::EnInstruction as i32
    );
    let forms_view = forms(&stack)
        .await
        .get_dossier(promoteur(
            OWNER,
            mst_proto::forms::GetDossierRequest { number },
        ))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    let err = update(
        &stack,
        OWNER,
        number,
        forms_view.version,
        vec![set("titre", text("Trop tard"))],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A refusal needs a motivation.
    let err = client
        .refuser(instructeur(pb::RefuserRequest {
            number,
            expected_version: dossier.version,
            motivation: "   ".into(),
            justificatif_upload_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Justificatif, then acceptance.
    use pb::upload_justificatif_request::Payload;
    let pdf = b"%PDF-1.4\n% courrier de notification\n".to_vec();
    let upload = client
        .upload_justificatif(instructeur(tokio_stream::iter(vec![
            pb::UploadJustificatifRequest {
                payload: Some(Payload::Metadata(pb::UploadJustificatifMetadata {
                    number,
                    file_name: "notification.pdf".into(),
                    content_type: "application/pdf".into(),
                    size_bytes: pdf.len() as i64,
                })),
            },
            pb::UploadJustificatifRequest {
                payload: Some(Payload::Chunk(pdf.clone())),
            },
        ])))
        .await
        .unwrap()
        .into_inner();
    let accepted = client
        .accepter(instructeur(pb::AccepterRequest {
            number,
            expected_version: dossier.version,
            motivation: "Projet conforme au cahier des charges.".into(),
            justificatif_upload_id: upload.upload_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    assert_eq!(
        accepted.status,
        mst_proto::events::DossierStatus::Accepte as i32
    );
    let c = counters(&stack).await;
    assert_eq!((c.traites, c.suivis, c.a_suivre), (1, 0, 0));
    // The owner downloads the justificatif the decision email links to.
    let file_id = upload.file.unwrap().id;
    let mut stream = client
        .download_justificatif(promoteur(
            OWNER,
            pb::DownloadJustificatifRequest { number, file_id },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.next().await {
        if let Some(pb::download_justificatif_response::Payload::Chunk(c)) = m.unwrap().payload {
            bytes.extend(c);
        }
    }
    assert_eq!(bytes, pdf);

    // An annotation privée, defined by the admin and filled by the instructeur.
    client
        .update_annotation_definitions(admin(pb::UpdateAnnotationDefinitionsRequest {
            procedure_id: "test-instruction".into(),
            expected_version: 0,
            definitions: vec![pb::AnnotationDefinition {
                id: "montant_accorde".into(),
                label: "Montant accordé".into(),
                r#type: pb::AnnotationType::Decimal as i32,
                ..Default::default()
            }],
        }))
        .await
        .unwrap();
    client
        .update_annotations(instructeur(pb::UpdateAnnotationsRequest {
            number,
            expected_version: 0,
            patches: vec![pb::AnnotationPatch {
                annotation_id: "montant_accorde".into(),
                operation: Some(pb::annotation_patch::Operation::Set(pb::AnnotationValue {
                    value: Some(pb::annotation_value::Value::Decimal("1500.50".into())),
                })),
            }],
        }))
        .await
        .unwrap();

    // The export carries the answers under their labels, the status in French, and the
    // annotations privées only when asked.
    let export_csv = |include_annotations: bool| {
        let mut client = client.clone();
        async move {
            let mut export = client
                .export_dossiers(instructeur(pb::ExportDossiersRequest {
                    procedure_id: "test-instruction".into(),
                    format: pb::ExportFormat::Csv as i32,
                    tab: pb::DossierTab::Tous as i32,
                    filter: None,
                    repetition_field_id: String::new(),
                    include_annotations,
                }))
                .await
                .unwrap()
                .into_inner();
            let mut csv = Vec::new();
            while let Some(m) = export.next().await {
                if let Some(pb::export_dossiers_response::Payload::Chunk(c)) = m.unwrap().payload {
                    csv.extend(c);
                }
            }
            String::from_utf8(csv).unwrap()
        }
    };
    let csv = export_csv(false).await;
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("Titre du projet") && header.contains("SIRET"),
        "{header}"
    );
    assert!(!header.contains("Montant accordé"), "{header}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(
        rows[0].contains("Mois sans tabac au quartier Nord") && rows[0].contains("Accepté"),
        "{}",
        rows[0]
    );
    let csv = export_csv(true).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].ends_with(";Montant accordé (annotation privée)"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(";1500,50"), "{}", lines[1]);

    // Re-opened, the dossier cannot reuse the spent upload id.
    let reopened = client
        .repasser_en_instruction(instructeur(pb::RepasserEnInstructionRequest {
            number,
            expected_version: accepted.version,
            message: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .dossier
        .unwrap();
    let err = client
        .accepter(instructeur(pb::AccepterRequest {
            number,
            expected_version: reopened.version,
            motivation: String::new(),
            justificatif_upload_id: upload.upload_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
