//! `mst-oscars`: the oscars service as a process (settings from the environment; see deploy/README.md).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mst_kit::service::main(mst_oscars::Settings::from_env, mst_oscars::App::build).await
}
