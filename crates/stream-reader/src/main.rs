use std::process::ExitCode;

use clap::Parser;
use stream_reader::ReaderArgs;

fn main() -> ExitCode {
    // Before any thread exists: the runtime's and librdkafka's threads share two arenas.
    pipeline_runtime::memory::limit_malloc_arenas();
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let args = ReaderArgs::parse();
    args.telemetry.init();
    match stream_reader::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stream-reader: {error:#}");
            ExitCode::FAILURE
        }
    }
}
