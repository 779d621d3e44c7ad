//! The `orchestrator` command-line tool; see `orchestrator_client::cli`.

use std::process::ExitCode;

use clap::Parser;
use orchestrator_client::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(run(cli, &mut std::io::stdout(), &mut std::io::stderr()))
}
