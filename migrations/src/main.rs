//! `mst-migrate`: applies the migrations of one service, or of all four, as a job.
//!
//! ```text
//! mst-migrate forms up          # MST_DATABASE_URL
//! mst-migrate all up            # MST_{FORMS,INSTRUCTION,MESSAGERIE,OSCARS}_DATABASE_URL
//! mst-migrate oscars status
//! ```

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use mst_migrations::{Command, SERVICES};
use sea_orm_migration::sea_orm::Database;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Cmd {
    /// Apply every pending migration.
    Up,
    /// Roll back the last applied migration.
    Down,
    /// List applied and pending migrations.
    Status,
}

/// Runs the database migrations of mst-dossiers services.
#[derive(Debug, Parser)]
#[command(name = "mst-migrate", version)]
struct Args {
    /// Service whose migrations run: forms, instruction, messagerie, oscars, or all.
    service: String,
    /// What to do.
    #[arg(value_enum, default_value = "up")]
    command: Cmd,
    /// Database URL (single service). Defaults to MST_DATABASE_URL.
    #[arg(long, env = "MST_DATABASE_URL")]
    database_url: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cmd = match args.command {
        Cmd::Up => Command::Up,
        Cmd::Down => Command::Down,
        Cmd::Status => Command::Status,
    };
    let targets: Vec<(String, String)> = if args.service == "all" {
        SERVICES
            .iter()
            .map(|s| {
                let var = format!("MST_{}_DATABASE_URL", s.to_uppercase());
                std::env::var(&var)
                    .map(|url| ((*s).to_owned(), url))
                    .with_context(|| format!("{var} is required for `mst-migrate all`"))
            })
            .collect::<anyhow::Result<_>>()?
    } else if SERVICES.contains(&args.service.as_str()) {
        let url = args
            .database_url
            .context("MST_DATABASE_URL (or --database-url) is required")?;
        vec![(args.service.clone(), url)]
    } else {
        anyhow::bail!(
            "unknown service {:?}; expected one of {} or all",
            args.service,
            SERVICES.join(", ")
        );
    };
    for (service, url) in targets {
        let db = Database::connect(&url)
            .await
            .with_context(|| format!("cannot connect to the {service} database"))?;
        mst_migrations::run(&service, &db, cmd)
            .await
            .with_context(|| format!("{service} migrations failed"))?;
        println!("{service}: {:?} done", args.command);
    }
    Ok(())
}
