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
