//! `make bench`: see `herald_tests::bench`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match herald_tests::bench::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
