use std::process::ExitCode;

use cassandra_writer::{Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Migrate(args)) => {
            args.telemetry.init();
            cassandra_writer::migrate(&args).await.map(|_| ())
        }
        None => {
            cli.writer.telemetry.init();
            cassandra_writer::run(cli.writer).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cassandra-writer: {error:#}");
            ExitCode::FAILURE
        }
    }
}
