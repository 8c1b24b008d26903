//! Other platforms: the Python example client (grpcio, stubs generated from the published protos
//! only) deposits a dossier as a promoteur and accepts it as an instructeur; the nats-py example
//! subscriber consumes the OSCARS feed with its own durable consumer.

use std::time::Duration;

use mst_e2e::Stack;
use mst_kit::auth::{Principal, Role};

use crate::support::*;

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn the_python_client_deposits_and_accepts_a_dossier_with_only_the_protos() {
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-python").await;
    roster_cpam13(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers.json");
    let patches: Vec<String> = complete_answers()
        .iter()
        .map(|p| mst_proto::json::encode("mst.forms.v1.ChampPatch", p).unwrap())
        .collect();
    std::fs::write(&answers, format!("[{}]", patches.join(","))).unwrap();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/python/deposit_and_accept.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--forms", &host_port(&stack.service("forms").url())])
        .args([
            "--instruction",
            &host_port(&stack.service("instruction").url()),
        ])
        .args(["--procedure", "test-python"])
        .arg("--answers")
        .arg(&answers)
        .args(["--promoteur-token", &token(OWNER, &[Role::Promoteur])])
        .args([
            "--instructeur-token",
            &token(INSTRUCTEUR, &[Role::Instructeur]),
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed (pip install grpcio grpcio-tools?):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<&str> = stdout.lines().collect();
    assert_eq!(steps.len(), 6, "{stdout}");
    assert!(steps[0].contains("\"step\": \"created\"") && steps[0].contains("BROUILLON"));
    assert!(
        steps[2].contains("\"code\": \"ABORTED\""),
        "stale save: {}",
        steps[2]
    );
    assert!(
        steps[3].contains("DOSSIER_STATUS_EN_CONSTRUCTION"),
        "{}",
        steps[3]
    );
    assert!(
        steps[4].contains("DOSSIER_STATUS_EN_INSTRUCTION"),
        "{}",
        steps[4]
    );
    assert!(
        steps[5].contains("DOSSIER_STATUS_ACCEPTE")
            && steps[5].contains("DOSSIER_TRANSITION_DEPOSER")
            && steps[5].contains("DOSSIER_TRANSITION_ACCEPTER"),
        "{}",
        steps[5]
    );

    // The services agree, seen from Rust.
    let number: i64 = steps[0]
        .split("\"number\": ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("number");
    let me = Principal {
        email: INSTRUCTEUR.into(),
        name: None,
        roles: [Role::Instructeur].into(),
    };
    let d = stack.instruction.dossier(&me, number).await.unwrap();
    assert_eq!(d.row.status, "accepte");

    // A nats-py subscriber with its own durable consumer receives the OSCARS import of the
    // accepted dossier once; started again, it resumes after what it acknowledged.
    let feed = |count: &'static str, idle: &'static str| {
        let stack = &stack;
        async move {
            let out = tokio::process::Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/clients/python/oscars_feed.py"
                ))
                .args(["--nats", &stack.nats.url()])
                .args(["--stream", &stack.prefix.to_uppercase()])
                .args(["--prefix", &stack.prefix])
                .args(["--durable", "ingestion-externe", "--idle", idle])
                .args(["--count", count])
                .output()
                .await
                .expect("python3 runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let first = feed("1", "30").await;
    let events: Vec<&str> = first.lines().collect();
    assert_eq!(events.len(), 1, "{first}");
    assert!(
        events[0].contains("\"subject\": \"oscars.fiche.imported.v1\"")
            && events[0].contains(&format!("\"dossierNumber\": \"{number}\"")),
        "{first}"
    );
    assert_eq!(
        feed("5", "1").await,
        "",
        "nothing twice for the same durable"
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
