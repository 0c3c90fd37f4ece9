//! `replay-tool`: the operators' tool for a casesync data dir. Verify the log and projections,
//! rebuild projections, export and import portable backups, audit who changed what, look at the
//! cases as they were, and salvage a damaged store. Built on the engine's public API only.

mod cmd;
mod data_dir;
mod outcome;
mod progress;
mod source;
mod time_arg;
mod unlock;
mod vector_arg;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use outcome::{Damage, Outcome, EXIT_CODES_HELP, EXIT_DAMAGED, EXIT_ERROR, EXIT_OK, EXIT_USAGE};

/// mimalloc, not glibc malloc: a fold frees its case states several times faster (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process (Linux, inherited by children): with THP
/// "always", mimalloc's arenas were backed by 2 MiB pages and the relay peaked at 247 MiB, not 210.
fn small_pages_only() {
    // A kernel without the flag keeps its default: nothing to report.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[derive(Parser)]
#[command(name = "replay-tool", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every hash link, the range signatures (all with --full), the heads, and that the
    /// stored projections equal a fresh replay. Exit 3 names the first bad event per chain.
    Verify {
        /// The node's data dir.
        #[arg(long)]
        data: PathBuf,
        /// Check every signature, not only the last of each chain.
        #[arg(long)]
        full: bool,
    },
    /// Drop and rebuild the projections from the log; print the state hash.
    Rebuild {
        /// The node's data dir.
        #[arg(long)]
        data: PathBuf,
    },
    /// Write a portable backup file (see docs/backup-format.md).
    Export {
        /// The node's data dir.
        #[arg(long)]
        data: PathBuf,
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// Only events beyond this vector: `<author hex>:<seq>,...` or the JSON `vector` printed
        /// by export/import/verify (for incremental backups).
        #[arg(long)]
        since: Option<String>,
    },
    /// Verify a whole backup file, then store its events (creating the store if needed).
    Import {
        /// The node's data dir (created when missing).
        #[arg(long)]
        data: PathBuf,
        /// The backup file.
        file: PathBuf,
        /// How to bring the projections up to date: `fold` folds each batch as it is stored;
        /// `bulk` folds in memory while storing and writes the case views once per many events;
        /// `rebuild` stores the events first and rebuilds the projections once; `auto` is `bulk`
        /// into a new data dir and for 10,000+ new events at least as many as those held, else
        /// `fold`.
        #[arg(long, value_enum, default_value_t = cmd::import::Projections::Auto)]
        projections: cmd::import::Projections,
    },
    /// Who changed what and when, in order; each line names the event id.
    Audit {
        /// The node's data dir.
        #[arg(long)]
        data: PathBuf,
        /// Only this case (id or unique prefix of 4+ hex digits).
        #[arg(long)]
        case: Option<String>,
        /// Only this device (d-... id, key prefix, or device name).
        #[arg(long)]
        device: Option<String>,
        /// From this time on: 2026-11-23T12:00:00Z, 2026-11-23, or ms since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Up to this time (a bare date includes the whole day).
        #[arg(long)]
        until: Option<String>,
    },
    /// The case views as they were at a time or version vector (computed aside, in memory).
    At {
        /// The node's data dir.
        #[arg(long)]
        data: PathBuf,
        /// Events with hlc time at or before this (a bare date includes the whole day).
        #[arg(long, conflicts_with = "vector", required_unless_present = "vector")]
        time: Option<String>,
        /// Events within this version vector.
        #[arg(long)]
        vector: Option<String>,
    },
    /// Recover every event that still verifies from a damaged data dir into a new one, and
    /// report exactly what was lost.
    Salvage {
        /// The damaged data dir (never written).
        #[arg(long)]
        data: PathBuf,
        /// The new data dir (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
}

fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Verify { data, full } => cmd::verify::run(&data, full),
        Command::Rebuild { data } => cmd::rebuild::run(&data),
        Command::Export { data, out, since } => {
            let since = since.as_deref().map(vector_arg::parse_vector).transpose()?.unwrap_or_default();
            cmd::export::run(&data, &out, since)
        }
        Command::Import { data, file, projections } => cmd::import::run(&data, &file, projections),
        Command::Audit { data, case, device, since, until } => {
            let filter = cmd::audit::AuditFilter {
                case,
                device,
                since: since.as_deref().map(time_arg::parse_time).transpose()?,
                until: until.as_deref().map(time_arg::parse_time).transpose()?,
            };
            cmd::audit::run(&data, &filter)
        }
        Command::At { data, time, vector } => {
            let point = match (time, vector) {
                (Some(time), _) => cmd::at::Point::Time(time_arg::parse_time(&time)?),
                (None, Some(vector)) => cmd::at::Point::Vector(vector_arg::parse_vector(&vector)?),
                (None, None) => anyhow::bail!("give --time or --vector"),
            };
            cmd::at::run(&data, &point)
        }
        Command::Salvage { data, out } => cmd::salvage::run(&data, &out),
    }
}

fn main() -> ExitCode {
    small_pages_only();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version come this way too, on stdout.
            let code = if error.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            // Nothing more to report if the terminal is gone.
            let _ = error.print();
            return ExitCode::from(code as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let json = cli.json;
    match run(cli.command) {
        Ok(outcome) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome.json).unwrap_or_default());
            } else {
                println!("{}", outcome.text);
            }
            ExitCode::from(outcome.code as u8)
        }
        Err(error) => {
            let damaged = error.chain().any(|e| {
                e.is::<Damage>()
                    || e.downcast_ref::<data_dir::OpenFailure>().is_some_and(data_dir::OpenFailure::is_damage)
            });
            let code = if damaged { EXIT_DAMAGED } else { EXIT_ERROR };
            if json {
                let report = serde_json::json!({ "ok": false, "damaged": damaged, "error": format!("{error:#}") });
                println!("{report}");
            }
            eprintln!("error: {error:#}");
            ExitCode::from(code as u8)
        }
    }
}
