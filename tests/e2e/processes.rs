//! The services as separate processes: they find each other, and a service killed with SIGKILL
//! comes back with everything it acknowledged (I2).

use std::time::Duration;

use mst_e2e::processes::ProcessStack;

use crate::support::*;

#[tokio::test]
async fn a_service_killed_mid_flight_restarts_with_every_acknowledged_save() {
    let mut stack = ProcessStack::start(env!("CARGO_BIN_EXE_mst-service"), &[])
        .await
        .unwrap();
    publish_test_procedure(&stack, "test-processes").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-processes").await;
    let saved = update(&stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();

    stack.kill("forms").await.unwrap();
    assert!(forms_reachable(&stack).await.is_none(), "forms is down");
    stack.restart("forms").await.unwrap();

    // The acknowledged save is there, and the dossier goes on to its deposit through
    // instruction, which never stopped.
    let deposited = deposit(&stack, OWNER, d.number, saved.version)
        .await
        .unwrap();
    assert_eq!(
        deposited.status,
        mst_proto::events::DossierStatus::EnConstruction as i32
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

async fn forms_reachable(stack: &ProcessStack) -> Option<()> {
    tonic::transport::Endpoint::from_shared(stack.service("forms").url())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()
        .map(|_| ())
}

/// Spans exported over OTLP by two processes: a deposit (forms → instruction's RecordDeposit →
/// the status event → forms' status mirror) is one trace across both services.
#[tokio::test]
async fn a_deposit_is_one_trace_across_the_forms_and_instruction_processes() {
    let collector = mst_testkit::Collector::start().await.unwrap();
    let endpoint = collector.endpoint();
    let mut stack = ProcessStack::start(
        env!("CARGO_BIN_EXE_mst-service"),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await
    .unwrap();
    publish_test_procedure(&stack, "test-trace").await;
    roster_cpam13(&stack).await;
    let d = create(&stack, OWNER, "test-trace").await;
    let d = update(&stack, OWNER, d.number, d.version, complete_answers())
        .await
        .unwrap();
    deposit(&stack, OWNER, d.number, d.version).await.unwrap();
    // The RPC forms makes to instruction, and the consumers of instruction's event, continue the
    // promoteur's call.
    let joined = mst_testkit::wait_until(Duration::from_secs(20), || async {
        let spans = collector.spans();
        let deposit = spans
            .iter()
            .find(|s| s.service == "mst-forms" && s.name.contains("DepositDossier"))?;
        let same = |service: &str, name: &str| {
            spans.iter().any(|s| {
                s.trace_id == deposit.trace_id && s.service == service && s.name.contains(name)
            })
        };
        (same("mst-instruction", "RecordDeposit")
            && same("mst-forms", "dossier.status_changed.v1 process"))
        .then_some(())
    })
    .await;
    assert!(joined.is_ok(), "{:#?}", collector.spans());
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
