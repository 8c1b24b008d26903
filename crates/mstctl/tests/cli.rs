//! `mstctl` against the running services (in-process, real NATS and databases): roster import,
//! dashboard, list, transitions with errors a person can act on, the thread, show, export and
//! the live feed.

use std::time::Duration;

use mst_e2e::Stack;
use mst_e2e::support::*;

/// Runs `mstctl args` with the stack's addresses; (success, stdout, stderr).
async fn mstctl(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mstctl"))
        .args(args)
        .env("MST_FORMS_URL", stack.service("forms").url())
        .env("MST_INSTRUCTION_URL", stack.service("instruction").url())
        .env("MST_MESSAGERIE_URL", stack.service("messagerie").url())
        .env("MST_OSCARS_URL", stack.service("oscars").url())
        .env("MST_NATS_URL", stack.nats.url())
        .env("MST_NATS_STREAM", stack.prefix.to_uppercase())
        .env("MST_NATS_SUBJECT_PREFIX", &stack.prefix)
        .env_remove("MST_TOKEN")
        .env_remove("MST_AS")
        .output()
        .await
        .expect("mstctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_admin_and_an_instructeur_drive_a_dossier_from_the_command_line() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-cli").await;
    roster_cpam13(&stack).await;

    // The admin imports a roster: one new instructeur, one line rejected with its reason.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("roster.csv");
    std::fs::write(
        &csv,
        "email;groupe;nom\n\
         lea.roux@cpam13.example;CPAM des Bouches-du-Rhône;Léa Roux\n\
         pas-une-adresse;CPAM des Bouches-du-Rhône;X\n",
    )
    .unwrap();
    let (ok, out, err) = mstctl(&stack, &["roster", "import", csv.to_str().unwrap()]).await;
    assert!(
        !ok,
        "a rejected line makes the import exit non-zero: {out} {err}"
    );
    assert!(out.contains("ligne    2  added"), "{out}");
    assert!(out.contains("ligne    3  rejected"), "{out}");
    assert!(
        out.contains("1 ajouté(s)") && out.contains("1 rejeté(s)"),
        "{out}"
    );

    // A promoteur deposits a dossier; the new instructeur sees it.
    let d = create(&stack, OWNER, "test-cli").await;
    let d = update(&stack, OWNER, d.number, 1, complete_answers())
        .await
        .unwrap();
    deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    let n = d.number.to_string();
    let lea = ["--as", "lea.roux@cpam13.example"];
    let with = |args: &[&'static str]| -> Vec<String> {
        lea.iter().chain(args).map(|s| (*s).to_owned()).collect()
    };
    let run = |args: Vec<String>| {
        let stack = &stack;
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            mstctl(stack, &refs).await
        }
    };

    let (ok, out, err) = run(with(&["dossier", "dashboard", "--procedure", "test-cli"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("CPAM des Bouches-du-Rhône"), "{out}");
    let (ok, out, err) = run(with(&["dossier", "list", "--procedure", "test-cli"])).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("1 dossier(s)"), "{out}");
    assert!(out.contains(&format!("{n:>8}  en_construction")), "{out}");

    // Without a token nor --as, the command says what is missing.
    let (ok, _, err) = mstctl(&stack, &["dossier", "show", &n]).await;
    assert!(!ok);
    assert!(err.contains("--as EMAIL"), "{err}");

    let mut args = with(&["dossier", "transition"]);
    args.extend([n.clone(), "passer-en-instruction".into()]);
    let (ok, out, err) = run(args).await;
    assert!(ok, "{err}");
    assert!(out.contains("DOSSIER_STATUS_EN_INSTRUCTION"), "{out}");

    // A message with an attachment in the dossier's thread, then the thread.
    let pdf = dir.path().join("grille.pdf");
    std::fs::write(&pdf, b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n").unwrap();
    let mut args = with(&["message", "post"]);
    args.extend([
        n.clone(),
        "--body".into(),
        "Merci de joindre le calendrier.".into(),
        "--attach".into(),
        pdf.to_string_lossy().into_owned(),
    ]);
    let (ok, out, err) = run(args).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("posté sur le dossier {n}")), "{out}");
    let mut args = with(&["message", "list"]);
    args.push(n.clone());
    let (ok, out, err) = run(args).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("lea.roux@cpam13.example: Merci de joindre le calendrier.")
            && out.contains("pièces jointes : grille.pdf")
            && out.contains("Email automatique : Votre dossier n°"),
        "{out}"
    );

    // Refusing without a motivation: the field violation is printed.
    let mut args = with(&["dossier", "transition"]);
    args.extend([n.clone(), "refuser".into()]);
    let (ok, _, err) = run(args).await;
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("- motivation"),
        "{err}"
    );

    let mut args = with(&["dossier", "transition"]);
    args.extend([
        n.clone(),
        "accepter".into(),
        "--motivation".into(),
        "Projet conforme au cahier des charges".into(),
    ]);
    let (ok, out, err) = run(args).await;
    assert!(ok, "{err}");
    assert!(out.contains("DOSSIER_STATUS_ACCEPTE"), "{out}");

    let mut args = with(&["dossier", "show"]);
    args.push(n.clone());
    let (ok, out, err) = run(args).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("\"motivation\": \"Projet conforme au cahier des charges\""),
        "{out}"
    );

    let file = dir.path().join("export.csv");
    let mut args = with(&["export", "--procedure", "test-cli", "--output"]);
    args.push(file.to_string_lossy().into_owned());
    let (ok, out, err) = run(args).await;
    assert!(ok, "{err}");
    assert!(out.contains("export.csv"), "{out}");
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.lines().count() == 2 && csv.contains("Accepté"), "{csv}");

    // The feed from the start: deposit, passage en instruction, acceptance.
    let (ok, out, err) = tokio::time::timeout(
        Duration::from_secs(30),
        mstctl(
            &stack,
            &[
                "events",
                "follow",
                "--from-start",
                "--subject",
                "dossier.status_changed.v1",
                "--count",
                "3",
            ],
        ),
    )
    .await
    .expect("three events arrive");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[2].contains("\"toStatus\":\"DOSSIER_STATUS_ACCEPTE\""),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("\"subject\":\"dossier.status_changed.v1\""))
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

/// The demo a newcomer runs on the embedded stack: three promoteurs' Projets and Actions
/// deposited, accepted and published, with the emails and the public fiches printed.
#[tokio::test]
async fn the_demo_plays_the_guide_and_prints_its_timeline_emails_and_fiches() {
    let stack = Stack::start().await.unwrap();
    let (ok, out, err) = mstctl(&stack, &["demo", "--open-procedures"]).await;
    assert!(ok, "{out}\n{err}");
    println!("{out}");
    for needle in [
        "dossier n° 1",
        "Fiches OSCARS visibles sur la carte (6)",
        "a bien été déposé",
        "a été accepté",
        "rattachée au projet « Mois sans tabac 2024 dans les quartiers Nord de Marseille »",
    ] {
        assert!(out.contains(needle), "« {needle} » missing:\n{out}");
    }
    assert!(
        !out.contains("[queued]") && !out.contains("[failed]"),
        "{out}"
    );
    let sent = out
        .lines()
        .filter(|l| l.trim_start().starts_with("[sent]"))
        .count();
    // Per dossier: brouillon, déposé, examiné, accepté to the owner: 4 × 6.
    assert!(sent >= 24, "{sent} emails:\n{out}");
    // A second run on the same deployment works too (groupes and ambassadeurs already there), and
    // needs no flag: the procedures are open and are not reloaded (which would close them again).
    let (ok, out, err) = mstctl(&stack, &["demo"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("Fiches OSCARS visibles sur la carte (12)"),
        "{out}"
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
