//! `mst-instruction`: the instruction service as a process (settings from the environment; see deploy/README.md).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mst_kit::service::main(
        mst_instruction::Settings::from_env,
        mst_instruction::App::build,
    )
    .await
}
