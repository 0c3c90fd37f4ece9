//! The `casesync` binary: parse arguments, install logging, run the command.

use clap::Parser;

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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    small_pages_only();
    let cli = casesync_node::cli::args::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match casesync_node::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
