//! The `fedotp` binary: `fedotp train`, `eval` and `plot` (see `fedotp --help` and
//! `fedotp_cli`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match fedotp_cli::run(fedotp_cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
