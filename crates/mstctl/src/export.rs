//! `mstctl export`: the dossiers of a procedure as CSV or XLSX, streamed to a file.

use clap::ValueEnum;
use futures::StreamExt as _;
use mst_kit::auth::Role;
use mst_proto::instruction as pb;
use tokio::io::AsyncWriteExt as _;

use crate::client::{Caller, explain};
use crate::dossier::{Filter, InstructionAddr, TabArg};

/// File format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Csv,
    Xlsx,
}

/// What to export.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Procedure id.
    #[arg(long)]
    pub procedure: String,
    /// Format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: FormatArg,
    /// Tab.
    #[arg(long, value_enum, default_value = "tous")]
    pub tab: TabArg,
    #[command(flatten)]
    pub filter: Filter,
    /// Append the annotations privées.
    #[arg(long)]
    pub annotations: bool,
    /// CSV only: the rows of this repetition field instead of the main table.
    #[arg(long, default_value = "")]
    pub repetition: String,
    /// Output file (default: the name the server proposes, in the current directory).
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
}

pub async fn run(
    args: ExportArgs,
    addr: &InstructionAddr,
    caller: &Caller,
) -> anyhow::Result<bool> {
    let mut stream = addr
        .client()
        .await?
        .export_dossiers(caller.request(
            Role::Instructeur,
            pb::ExportDossiersRequest {
                procedure_id: args.procedure.clone(),
                format: match args.format {
                    FormatArg::Csv => pb::ExportFormat::Csv,
                    FormatArg::Xlsx => pb::ExportFormat::Xlsx,
                } as i32,
                tab: args.tab.pb() as i32,
                filter: Some(args.filter.pb()),
                repetition_field_id: args.repetition.clone(),
                include_annotations: args.annotations,
            },
        )?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    let mut file: Option<(std::path::PathBuf, tokio::fs::File)> = None;
    let mut bytes = 0usize;
    while let Some(message) = stream.next().await {
        match message.map_err(|s| explain(&s))?.payload {
            Some(pb::export_dossiers_response::Payload::Header(h)) => {
                let path = args
                    .output
                    .clone()
                    .unwrap_or_else(|| std::path::PathBuf::from(&h.file_name));
                let f = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                file = Some((path, f));
            }
            Some(pb::export_dossiers_response::Payload::Chunk(c)) => {
                let Some((_, f)) = file.as_mut() else {
                    anyhow::bail!("the server sent data before the file header");
                };
                f.write_all(&c).await?;
                bytes += c.len();
            }
            None => {}
        }
    }
    let Some((path, mut f)) = file else {
        anyhow::bail!("the server sent no file");
    };
    f.flush().await?;
    println!("{} ({bytes} octets)", path.display());
    Ok(true)
}
