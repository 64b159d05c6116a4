//! The bench's load generator in its own process: see `herald_tests::bench::load`.
#![allow(clippy::print_stdout)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match herald_tests::bench::load::generator(&args).await {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
