//! The bad-input catalogue (I6): huge strings, NUL bytes, invalid UTF-8 and path traversal in file
//! names, unknown field ids, wrong value types, too many rows or patches, oversize and over-long
//! streams, stale versions — sent to forms (autosave, create, deposit, uploads), instruction
//! (transitions and their motivation, justificatifs), the messagerie (posts and attachment names)
//! and oscars (corrections). Each entry names the exact status and, for INVALID_ARGUMENT, the field
//! of the `BadRequest` violation; after each one nothing changed: the dossiers' content, versions,
//! history and files, the thread, the fiche, and the events on the stream.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use mst_e2e::{Services, Stack};
use mst_kit::auth::Role;
use mst_proto::forms as fpb;
use mst_proto::instruction as ipb;
use mst_proto::messagerie as mpb;
use prost::Message as _;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::authz::{St, fixture, status_version};
use crate::mst_procedures::{INSTRUCTEUR_13, PROJET, PROMOTEUR, try_create};
use crate::oscars::AMBASSADEUR_PACA;
use crate::rawgrpc::{Body, RawClient};
use crate::support::*;

const MB: usize = 1024 * 1024;

/// One entry of the catalogue.
struct Case {
    name: &'static str,
    rpc: &'static str,
    who: (&'static str, Role),
    body: Body,
    code: Code,
    /// The field of the BadRequest violation (INVALID_ARGUMENT only).
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    rpc: &'static str,
    who: (&'static str, Role),
    body: Body,
    code: Code,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        rpc,
        who,
        body,
        code,
        field,
    }
}

fn json(s: String) -> Body {
    Body::Json(s)
}

fn encoded<M: prost::Message>(messages: Vec<M>) -> Body {
    Body::Encoded(messages.iter().map(|m| m.encode_to_vec()).collect())
}

/// `message` encoded with the bytes of `marker` (same length) replaced by invalid UTF-8.
fn with_invalid_utf8<M: prost::Message>(message: &M, marker: &str) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("marker in the message");
    let bad = [0xC3u8, 0x28, 0xFF, 0xFE];
    bytes[at..at + 4].copy_from_slice(&bad);
    bytes
}

const OWNER: (&str, Role) = (PROMOTEUR, Role::Promoteur);
const INSTR: (&str, Role) = (INSTRUCTEUR_13, Role::Instructeur);
const AMB: (&str, Role) = (AMBASSADEUR_PACA, Role::Ambassadeur);

fn upload_meta(
    number: i64,
    name: &str,
    content_type: &str,
    size: i64,
) -> fpb::UploadChampFileRequest {
    fpb::UploadChampFileRequest {
        payload: Some(fpb::upload_champ_file_request::Payload::Metadata(
            fpb::UploadChampFileMetadata {
                number,
                field_id: "p_pj_statuts".into(),
                row: None,
                file_name: name.into(),
                content_type: content_type.into(),
                size_bytes: size,
                expected_version: None,
            },
        )),
    }
}

fn upload_chunk(bytes: Vec<u8>) -> fpb::UploadChampFileRequest {
    fpb::UploadChampFileRequest {
        payload: Some(fpb::upload_champ_file_request::Payload::Chunk(bytes)),
    }
}

fn post_meta(number: i64, body: &str, attachments: i32) -> mpb::PostMessageRequest {
    mpb::PostMessageRequest {
        payload: Some(mpb::post_message_request::Payload::Metadata(
            mpb::PostMessageMetadata {
                number,
                body: body.into(),
                attachment_count: attachments,
                request_id: uuid::Uuid::now_v7().to_string(),
            },
        )),
    }
}

fn post_attachment(name: &str, content_type: &str, size: i64) -> mpb::PostMessageRequest {
    mpb::PostMessageRequest {
        payload: Some(mpb::post_message_request::Payload::Attachment(
            mpb::AttachmentHeader {
                file_name: name.into(),
                content_type: content_type.into(),
                size_bytes: size,
            },
        )),
    }
}

fn post_chunk(bytes: Vec<u8>) -> mpb::PostMessageRequest {
    mpb::PostMessageRequest {
        payload: Some(mpb::post_message_request::Payload::Chunk(bytes)),
    }
}

fn justificatif_meta(number: i64, name: &str, size: i64) -> ipb::UploadJustificatifRequest {
    ipb::UploadJustificatifRequest {
        payload: Some(ipb::upload_justificatif_request::Payload::Metadata(
            ipb::UploadJustificatifMetadata {
                number,
                file_name: name.into(),
                content_type: "application/pdf".into(),
                size_bytes: size,
            },
        )),
    }
}

/// Everything a bad input must leave as it was.
async fn snapshot(
    client: &RawClient,
    stack: &Stack,
    numbers: &[i64],
    brouillon: i64,
    fiche: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let read =
        |out: &mut BTreeMap<String, String>, key: String, v: Result<Vec<Value>, tonic::Status>| {
            out.insert(key, format!("{:?}", v.map(|v| v.to_vec())));
        };
    let owner = token(PROMOTEUR, &[Role::Promoteur]);
    let instr = token(INSTRUCTEUR_13, &[Role::Instructeur]);
    let admin = token(ADMIN, &[Role::Admin]);
    for &n in numbers {
        for (rpc, tok) in [
            ("mst.forms.v1.FormsService/GetDossier", &owner),
            ("mst.forms.v1.FormsService/GetDossierHistory", &owner),
            ("mst.instruction.v1.InstructionService/GetDossier", &instr),
        ] {
            let v = client
                .call(rpc, Some(tok), Body::Json(format!(r#"{{"number":"{n}"}}"#)))
                .await;
            read(&mut out, format!("{rpc} {n}"), v);
        }
        // The thread's messages (automatic emails arrive on their own schedule: not compared).
        let thread = client
            .call(
                "mst.messagerie.v1.MessagerieService/ListMessages",
                Some(&owner),
                Body::Json(format!(r#"{{"number":"{n}","pageSize":500}}"#)),
            )
            .await
            .map(|v| {
                v[0]["entries"]
                    .as_array()
                    .map(|e| {
                        e.iter()
                            .filter(|e| e.get("message").is_some())
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            });
        out.insert(format!("thread {n}"), format!("{thread:?}"));
    }
    for rpc in [
        "mst.forms.v1.FormsService/GetDossier",
        "mst.forms.v1.FormsService/GetDossierHistory",
    ] {
        let v = client
            .call(
                rpc,
                Some(&owner),
                Body::Json(format!(r#"{{"number":"{brouillon}"}}"#)),
            )
            .await;
        read(&mut out, format!("{rpc} {brouillon}"), v);
    }
    let v = client
        .call(
            "mst.forms.v1.FormsService/ListDossiers",
            Some(&owner),
            Body::Json(r#"{"pageSize":500}"#.into()),
        )
        .await;
    read(&mut out, "owner's dossiers".into(), v);
    let v = client
        .call(
            "mst.oscars.v1.OscarsService/GetFiche",
            Some(&admin),
            Body::Json(format!(r#"{{"ficheId":"{fiche}"}}"#)),
        )
        .await;
    read(&mut out, "fiche".into(), v);
    let v = client
        .call(
            "mst.oscars.v1.OscarsService/ListCorrections",
            Some(&admin),
            Body::Json(format!(r#"{{"ficheId":"{fiche}"}}"#)),
        )
        .await;
    read(&mut out, "corrections".into(), v);
    // Events a bad input could have caused (mail.sent and the like follow earlier events).
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats_url()).await.unwrap());
    let stream = js.get_stream(stack.prefix().to_uppercase()).await.unwrap();
    let counts: BTreeMap<String, usize> = stream
        .info_with_subjects(format!("{}.>", stack.prefix()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    for (subject, count) in counts {
        if [
            "dossier.content_changed",
            "dossier.created",
            "dossier.status_changed",
            "dossier.correction_resolved",
            "message.posted",
            "oscars.fiche.",
            "avis.",
        ]
        .iter()
        .any(|s| subject.contains(s))
        {
            out.insert(subject, count.to_string());
        }
    }
    out
}

#[tokio::test]
async fn each_bad_input_gets_its_precise_status_and_field_and_changes_nothing() {
    let stack = Stack::start().await.unwrap();
    let urls: Vec<(&str, String)> = ["forms", "instruction", "messagerie", "oscars"]
        .into_iter()
        .map(|s| (s, stack.url(s)))
        .collect();
    let client = RawClient::connect(&urls).await;
    let f = fixture(&stack, &client).await;
    let nc: i64 = f.per_state[&St::EnConstruction]["{n}"].parse().unwrap();
    let ni: i64 = f.per_state[&St::EnInstruction]["{n}"].parse().unwrap();
    let fiche = f.values["{fiche}"].clone();
    let empty = try_create(&stack, PROMOTEUR, PROJET).await.unwrap().number;
    let numbers = [nc, ni];

    let vc = client
        .call(
            "mst.forms.v1.FormsService/GetDossier",
            Some(&token(PROMOTEUR, &[Role::Promoteur])),
            Body::Json(format!(r#"{{"number":"{nc}"}}"#)),
        )
        .await
        .unwrap()[0]["dossier"]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let vi = status_version(&client, ni).await;
    let fiche_version = {
        let v = client
            .call(
                "mst.oscars.v1.OscarsService/GetFiche",
                Some(&token(ADMIN, &[Role::Admin])),
                Body::Json(format!(r#"{{"ficheId":"{fiche}"}}"#)),
            )
            .await
            .unwrap();
        v[0]["fiche"]["version"].as_str().unwrap().to_owned()
    };
    let huge = "x".repeat(MB + 1);
    let update = |patches: &str, version: &str| {
        json(format!(
            r#"{{"number":"{nc}","expectedVersion":"{version}","patches":[{patches}]}}"#
        ))
    };
    let many_patches = vec![r#"{"fieldId":"p_titre","set":{"text":"Titre"}}"#; 501].join(",");
    let bad_name = fpb::UploadChampFileRequest {
        ..upload_meta(nc, "AAAA.pdf", "application/pdf", 10)
    };
    let bad_attachment = post_attachment("AAAA.pdf", "application/pdf", 10);
    let mut big = b"%PDF-1.4\n".to_vec();
    big.resize(21 * MB, b' ');

    use Code::{Aborted, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted};
    let cases = vec![
        // ---- forms: autosave
        case(
            "autosave: a 1 MB text",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(
                &format!(r#"{{"fieldId":"p_titre","set":{{"text":"{huge}"}}}}"#),
                &vc,
            ),
            InvalidArgument,
            Some("p_titre"),
        ),
        case(
            "autosave: a NUL byte in a text",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(
                r#"{"fieldId":"p_titre","set":{"text":"Titre\u0000nul"}}"#,
                &vc,
            ),
            InvalidArgument,
            Some("p_titre"),
        ),
        case(
            "autosave: an unknown field id",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(r#"{"fieldId":"champ_inconnu","set":{"text":"x"}}"#, &vc),
            InvalidArgument,
            Some("champ_inconnu"),
        ),
        case(
            "autosave: a number in a text field",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(r#"{"fieldId":"p_titre","set":{"integer":"42"}}"#, &vc),
            InvalidArgument,
            Some("p_titre"),
        ),
        case(
            "autosave: a malformed SIRET",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(
                r#"{"fieldId":"p_siret","set":{"siret":"12345678901234"}}"#,
                &vc,
            ),
            InvalidArgument,
            Some("p_siret"),
        ),
        case(
            "autosave: 501 patches in one save",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(&many_patches, &vc),
            InvalidArgument,
            Some("patches"),
        ),
        case(
            "autosave: a row added to a field that is no repetition",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(r#"{"fieldId":"p_titre","addRow":"r1"}"#, &vc),
            InvalidArgument,
            Some("p_titre"),
        ),
        case(
            "autosave: an answer in a row that does not exist",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(
                r#"{"fieldId":"p_dep_detail","row":{"repetitionFieldId":"p_depenses","rowId":"absente"},"set":{"text":"x"}}"#,
                &vc,
            ),
            InvalidArgument,
            Some("p_depenses[absente].p_dep_detail"),
        ),
        case(
            "autosave: a stale version",
            "mst.forms.v1.FormsService/UpdateDossier",
            OWNER,
            update(r#"{"fieldId":"p_titre","set":{"text":"Titre"}}"#, "1"),
            Aborted,
            None,
        ),
        // ---- forms: create and deposit
        case(
            "create: a 1 MB procedure id",
            "mst.forms.v1.FormsService/CreateDossier",
            OWNER,
            json(format!(r#"{{"procedureId":"{huge}"}}"#)),
            NotFound,
            None,
        ),
        case(
            "deposit: required fields missing",
            "mst.forms.v1.FormsService/DepositDossier",
            OWNER,
            json(format!(r#"{{"number":"{empty}","expectedVersion":"1"}}"#)),
            InvalidArgument,
            Some("p_siret"),
        ),
        case(
            "deposit: a stale version",
            "mst.forms.v1.FormsService/DepositDossier",
            OWNER,
            json(format!(r#"{{"number":"{nc}","expectedVersion":"1"}}"#)),
            Aborted,
            None,
        ),
        // ---- forms: uploads
        case(
            "upload: a chunk before the metadata",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            encoded(vec![upload_chunk(b"%PDF".to_vec())]),
            InvalidArgument,
            Some("metadata"),
        ),
        case(
            "upload: 21 MB declared",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            encoded(vec![upload_meta(
                nc,
                "gros.pdf",
                "application/pdf",
                21 * MB as i64,
            )]),
            ResourceExhausted,
            None,
        ),
        case(
            "upload: a 21 MB stream declared as 1 KB",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            encoded(
                std::iter::once(upload_meta(nc, "menteur.pdf", "application/pdf", 1024))
                    .chain(big.chunks(MB).map(|c| upload_chunk(c.to_vec())))
                    .collect(),
            ),
            ResourceExhausted,
            None,
        ),
        case(
            "upload: a 5 MB chunk",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            encoded(vec![
                upload_meta(nc, "bloc.pdf", "application/pdf", 5 * MB as i64),
                upload_chunk(vec![b'%'; 5 * MB]),
            ]),
            InvalidArgument,
            Some("chunk"),
        ),
        case(
            "upload: a name of control characters only",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            encoded(vec![
                upload_meta(nc, "\u{1}\u{7}\u{1b}", "application/pdf", 4),
                upload_chunk(b"%PDF".to_vec()),
            ]),
            InvalidArgument,
            Some("p_pj_statuts"),
        ),
        case(
            "upload: a name with invalid UTF-8",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            Body::Encoded(vec![with_invalid_utf8(&bad_name, "AAAA")]),
            InvalidArgument,
            Some("file_name"),
        ),
        case(
            "upload: a type the champ does not accept",
            "mst.forms.v1.FormsService/UploadChampFile",
            OWNER,
            encoded(vec![
                upload_meta(nc, "virus.exe", "application/x-msdownload", 4),
                upload_chunk(b"MZ\0\0".to_vec()),
            ]),
            InvalidArgument,
            Some("p_pj_statuts"),
        ),
        // ---- instruction: transitions and justificatifs
        case(
            "refuser: no motivation",
            "mst.instruction.v1.InstructionService/Refuser",
            INSTR,
            json(format!(r#"{{"number":"{ni}","expectedVersion":"{vi}"}}"#)),
            InvalidArgument,
            Some("motivation"),
        ),
        case(
            "refuser: a 1 MB motivation",
            "mst.instruction.v1.InstructionService/Refuser",
            INSTR,
            json(format!(
                r#"{{"number":"{ni}","expectedVersion":"{vi}","motivation":"{huge}"}}"#
            )),
            InvalidArgument,
            Some("motivation"),
        ),
        case(
            "refuser: a NUL byte in the motivation",
            "mst.instruction.v1.InstructionService/Refuser",
            INSTR,
            json(format!(
                r#"{{"number":"{ni}","expectedVersion":"{vi}","motivation":"non\u0000"}}"#
            )),
            InvalidArgument,
            Some("motivation"),
        ),
        case(
            "accepter: an unknown justificatif",
            "mst.instruction.v1.InstructionService/Accepter",
            INSTR,
            json(format!(
                r#"{{"number":"{ni}","expectedVersion":"{vi}","justificatifUploadId":"0190e0f0-0000-7000-8000-000000000000"}}"#
            )),
            InvalidArgument,
            Some("justificatif_upload_id"),
        ),
        case(
            "demander correction: no reason",
            "mst.instruction.v1.InstructionService/DemanderCorrection",
            INSTR,
            json(format!(
                r#"{{"number":"{ni}","expectedVersion":"{vi}","message":"Corrigez."}}"#
            )),
            InvalidArgument,
            Some("reason"),
        ),
        case(
            "passer en instruction: already en instruction",
            "mst.instruction.v1.InstructionService/PasserEnInstruction",
            INSTR,
            json(format!(r#"{{"number":"{ni}","expectedVersion":"{vi}"}}"#)),
            FailedPrecondition,
            None,
        ),
        case(
            "refuser: a stale version",
            "mst.instruction.v1.InstructionService/Refuser",
            INSTR,
            json(format!(
                r#"{{"number":"{ni}","expectedVersion":"1","motivation":"Non."}}"#
            )),
            Aborted,
            None,
        ),
        case(
            "justificatif: 21 MB declared",
            "mst.instruction.v1.InstructionService/UploadJustificatif",
            INSTR,
            encoded(vec![justificatif_meta(ni, "decision.pdf", 21 * MB as i64)]),
            ResourceExhausted,
            None,
        ),
        // ---- messagerie: posts and attachment names
        case(
            "post: a 1 MB body",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![post_meta(nc, &huge, 0)]),
            InvalidArgument,
            Some("metadata.body"),
        ),
        case(
            "post: a NUL byte in the body",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![post_meta(nc, "Bonjour\0", 0)]),
            InvalidArgument,
            Some("metadata.body"),
        ),
        case(
            "post: an empty body and no attachment",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![post_meta(nc, "", 0)]),
            InvalidArgument,
            Some("metadata.body"),
        ),
        case(
            "post: 11 attachments",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![post_meta(nc, "Pièces", 11)]),
            ResourceExhausted,
            None,
        ),
        case(
            "post: a 21 MB attachment declared",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![
                post_meta(nc, "Pièce", 1),
                post_attachment("gros.pdf", "application/pdf", 21 * MB as i64),
            ]),
            ResourceExhausted,
            None,
        ),
        case(
            "post: one attachment announced, none sent",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![post_meta(nc, "Pièce", 1)]),
            InvalidArgument,
            Some("metadata.attachment_count"),
        ),
        case(
            "post: an attachment name with invalid UTF-8",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            Body::Encoded(vec![
                post_meta(nc, "Pièce", 1).encode_to_vec(),
                with_invalid_utf8(&bad_attachment, "AAAA"),
                post_chunk(vec![b'%'; 10]).encode_to_vec(),
            ]),
            InvalidArgument,
            Some("file_name"),
        ),
        case(
            "post: an attachment name of control characters only",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(vec![
                post_meta(nc, "Pièce", 1),
                post_attachment("\u{0}\u{1}", "application/pdf", 4),
                post_chunk(b"%PDF".to_vec()),
            ]),
            InvalidArgument,
            Some("attachments[0]"),
        ),
        case(
            "post: a 21 MB attachment declared as 10 bytes",
            "mst.messagerie.v1.MessagerieService/PostMessage",
            OWNER,
            encoded(
                std::iter::once(post_meta(nc, "Pièce", 1))
                    .chain(std::iter::once(post_attachment(
                        "menteur.pdf",
                        "application/pdf",
                        10,
                    )))
                    .chain(big.chunks(MB).map(|c| post_chunk(c.to_vec())))
                    .collect(),
            ),
            ResourceExhausted,
            None,
        ),
        // ---- oscars: corrections
        case(
            "correct: an unknown path",
            "mst.oscars.v1.OscarsService/CorrectFiche",
            AMB,
            json(format!(
                r#"{{"ficheId":"{fiche}","expectedVersion":"{fiche_version}","corrections":[{{"field":"champ_inconnu","value":{{"text":"x"}}}}]}}"#
            )),
            InvalidArgument,
            Some("corrections[0]"),
        ),
        case(
            "correct: a number for the title",
            "mst.oscars.v1.OscarsService/CorrectFiche",
            AMB,
            json(format!(
                r#"{{"ficheId":"{fiche}","expectedVersion":"{fiche_version}","corrections":[{{"field":"title","value":{{"number":3}}}}]}}"#
            )),
            InvalidArgument,
            Some("corrections[0]"),
        ),
        case(
            "correct: a 1 MB title",
            "mst.oscars.v1.OscarsService/CorrectFiche",
            AMB,
            json(format!(
                r#"{{"ficheId":"{fiche}","expectedVersion":"{fiche_version}","corrections":[{{"field":"title","value":{{"text":"{huge}"}}}}]}}"#
            )),
            InvalidArgument,
            Some("corrections[0]"),
        ),
        case(
            "correct: a NUL byte in the title",
            "mst.oscars.v1.OscarsService/CorrectFiche",
            AMB,
            json(format!(
                r#"{{"ficheId":"{fiche}","expectedVersion":"{fiche_version}","corrections":[{{"field":"title","value":{{"text":"Titre\u0000"}}}}]}}"#
            )),
            InvalidArgument,
            Some("corrections[0]"),
        ),
        case(
            "correct: a stale version",
            "mst.oscars.v1.OscarsService/CorrectFiche",
            AMB,
            json(format!(
                r#"{{"ficheId":"{fiche}","expectedVersion":"999","corrections":[{{"field":"title","value":{{"text":"Titre"}}}}]}}"#
            )),
            Aborted,
            None,
        ),
    ];

    let mut wrong = Vec::new();
    println!("bad-input catalogue ({} entries):", cases.len());
    for c in cases {
        let before = snapshot(&client, &stack, &numbers, empty, &fiche).await;
        let result = client
            .call(c.rpc, Some(&token(c.who.0, &[c.who.1])), c.body)
            .await;
        let (code, fields, message) = match &result {
            Ok(_) => (Code::Ok, Vec::new(), String::new()),
            Err(s) => (
                s.code(),
                s.get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default(),
                s.message().chars().take(120).collect(),
            ),
        };
        let field_ok = c.field.is_none_or(|f| fields.iter().any(|g| g == f));
        let after = snapshot(&client, &stack, &numbers, empty, &fiche).await;
        let changed: Vec<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        let verdict = if code != c.code || !field_ok {
            "WRONG"
        } else if !changed.is_empty() {
            "CHANGED"
        } else {
            "ok"
        };
        println!(
            "  {verdict:7} {:55} {:?} {:?} {}",
            c.name, code, fields, message
        );
        if verdict != "ok" {
            wrong.push(format!(
                "{}: expected {:?} {:?}, got {code:?} {fields:?} {message}; changed: {changed:?}",
                c.name, c.code, c.field
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Accepted but sanitized: directories and control characters of a file name never reach
    // storage or the name shown to others.
    let pdf = crate::mst_procedures::pdf("Statuts");
    let owner = token(PROMOTEUR, &[Role::Promoteur]);
    let stored = client
        .call(
            "mst.forms.v1.FormsService/UploadChampFile",
            Some(&owner),
            encoded(vec![
                upload_meta(
                    nc,
                    "../../etc/statuts\u{7}.pdf",
                    "application/pdf",
                    pdf.len() as i64,
                ),
                upload_chunk(pdf.clone()),
            ]),
        )
        .await
        .unwrap();
    let name = stored[0]["file"]["fileName"].as_str().unwrap().to_owned();
    println!("  sanitized upload \"../../etc/statuts\\u{{7}}.pdf\" stored as {name:?}");
    assert_eq!(name, "statuts.pdf");
    let posted = client
        .call(
            "mst.messagerie.v1.MessagerieService/PostMessage",
            Some(&owner),
            encoded(vec![
                post_meta(nc, "Les statuts", 1),
                post_attachment(
                    "..\\..\\statuts\u{1b}.pdf",
                    "application/pdf",
                    pdf.len() as i64,
                ),
                post_chunk(pdf),
            ]),
        )
        .await
        .unwrap();
    let name = posted[0]["entry"]["message"]["attachments"][0]["fileName"]
        .as_str()
        .unwrap()
        .to_owned();
    println!("  sanitized attachment \"..\\\\..\\\\statuts\\u{{1b}}.pdf\" stored as {name:?}");
    assert_eq!(name, "statuts.pdf");
    stack
        .stop(std::time::Duration::from_secs(10))
        .await
        .unwrap();
}
