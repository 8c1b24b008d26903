//! `mst-forms`: the forms service as a process (settings from the environment; see deploy/README.md).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mst_kit::service::main(mst_forms::Settings::from_env, mst_forms::App::build).await
}
