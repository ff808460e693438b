//! The command line as a whole: well formed, every argument described.

use crate::Cli;
use clap::CommandFactory;

/// Every argument of every command, with no help text.
fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let builtin = matches!(a.get_id().as_str(), "help" | "version");
        if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
            out.push(format!("{path} {}", a.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        undescribed(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn the_command_line_is_well_formed_and_every_argument_described() {
    Cli::command().debug_assert();
    let mut missing = Vec::new();
    undescribed(&Cli::command(), "shoal", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:#?}");
}
