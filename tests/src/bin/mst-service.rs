//! `mst-service <forms|instruction|messagerie|oscars>`: any of the four services as a process,
//! exactly as its own binary runs it (settings from the environment). The end-to-end scenario
//! and the chaos suite start, kill and restart the services through it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("forms") => {
            mst_kit::service::main(mst_forms::Settings::from_env, mst_forms::App::build).await
        }
        Some("instruction") => {
            mst_kit::service::main(
                mst_instruction::Settings::from_env,
                mst_instruction::App::build,
            )
            .await
        }
        Some("messagerie") => {
            mst_kit::service::main(
                mst_messagerie::Settings::from_env,
                mst_messagerie::App::build,
            )
            .await
        }
        Some("oscars") => {
            mst_kit::service::main(mst_oscars::Settings::from_env, mst_oscars::App::build).await
        }
        other => anyhow::bail!(
            "usage: mst-service <forms|instruction|messagerie|oscars> (got {other:?})"
        ),
    }
}
