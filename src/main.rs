//! pod-rebalancer: evicts the hottest and the coldest pod of a Deployment when its
//! CPU load is spread too unevenly. `main` only maps the command line to a run and
//! the run to an exit code (0 done, 1 failed, 2 invalid configuration).

use pod_rebalancer::{cli, config, cycle, logging};
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = cli::parse(std::env::args_os().skip(1), |k| std::env::var(k).ok());
    let code = match command {
        Ok(cli::Command::Help) => {
            print!("{}", cli::help());
            cycle::EXIT_OK
        }
        Ok(cli::Command::Version) => {
            println!("pod-rebalancer {}", env!("CARGO_PKG_VERSION"));
            cycle::EXIT_OK
        }
        Ok(cli::Command::Run(raw)) => match config::live(&raw) {
            Ok((config, cluster)) => {
                logging::init(config.log_level, config.log_format);
                cycle::run(&config, &cluster)
            }
            Err(problems) => cycle::usage(&problems),
        },
        Ok(cli::Command::Plan(raw, args)) => cycle::plan_command(&raw, &args),
        Err(problems) => cycle::usage(&problems),
    };
    ExitCode::from(code)
}
