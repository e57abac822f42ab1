//! pod-rebalancer: evicts the hottest and the coldest pod of a Deployment when its
//! CPU load is spread too unevenly.
//!
//! `main` reads the command line and the environment (`cli`), validates them into a
//! configuration (`config`), hands that to the command (`cycle::run` for one live
//! cycle, `plan_command::run` for `plan`) and exits with the code it returns: 0 done,
//! 1 failed, 2 invalid configuration. It prints the help, the version and the
//! configuration problems itself; nothing else happens here.

use pod_rebalancer::outcome::{EXIT_OK, EXIT_USAGE};
use pod_rebalancer::{cli, config, cycle, logging, plan_command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = cli::parse(std::env::args_os().skip(1), |k| std::env::var(k).ok());
    let code = match command {
        Ok(cli::Command::Help) => {
            print!("{}", cli::help());
            EXIT_OK
        }
        Ok(cli::Command::Version) => {
            println!("pod-rebalancer {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Ok(cli::Command::Run(raw)) => match config::live(&raw) {
            Ok((config, cluster)) => {
                logging::init(config.log_level, config.log_format);
                cycle::run(&config, &cluster)
            }
            Err(problems) => usage(&problems, raw.json_logs()),
        },
        Ok(cli::Command::Plan(raw, args)) => match config::plan(&raw, &args) {
            Ok(request) => plan_command::run(&request),
            Err(problems) => usage(&problems, raw.json_logs()),
        },
        Err(cli::Usage { problems, json }) => usage(&problems, json),
    };
    ExitCode::from(code)
}

const HINT: &str = "pod-rebalancer --help lists every setting";

/// Prints configuration problems, one a line (a JSON object each when the logs are
/// JSON, so a log pipeline reads them too); exit 2.
fn usage(problems: &[String], json: bool) -> u8 {
    if json {
        logging::init(log::LevelFilter::Error, logging::Format::Json);
        for p in problems {
            log::error!(hint = HINT; "configuration: {p}");
        }
    } else {
        for p in problems {
            eprintln!("configuration: {p}");
        }
        eprintln!("({HINT})");
    }
    EXIT_USAGE
}
