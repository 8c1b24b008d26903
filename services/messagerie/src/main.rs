//! `mst-messagerie`: the messagerie service as a process (settings from the environment; see deploy/README.md).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mst_kit::service::main(
        mst_messagerie::Settings::from_env,
        mst_messagerie::App::build,
    )
    .await
}
