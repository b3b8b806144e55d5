use std::process::ExitCode;

use clap::Parser;
use stream_reader::ReaderArgs;

/// mimalloc instead of glibc's malloc: the reader allocates and frees several buffers per record
/// on one thread (malloc and free were ~15 % of its CPU in `perf`; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
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
