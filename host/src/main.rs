//! The `fedotp` binary: `fedotp train`, `eval` and `plot` (see `fedotp --help` and
//! `fedotp::cli`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match fedotp::cli::run(fedotp::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
