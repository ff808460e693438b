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

/// Every `Example: shoal …` line of every command's help, with its path.
fn examples(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let texts = [cmd.get_long_about(), cmd.get_about()]
        .into_iter()
        .flatten()
        .chain(cmd.get_arguments().filter_map(|a| a.get_long_help()))
        .map(|t| t.to_string());
    for text in texts {
        for line in text.lines() {
            if let Some(e) = line.trim().strip_prefix("Example: ") {
                out.push((path.to_owned(), e.to_owned()));
            }
        }
    }
    for sub in cmd.get_subcommands() {
        examples(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_example_in_the_help_is_a_command_line_that_parses() {
    let mut found = Vec::new();
    examples(&Cli::command(), "shoal", &mut found);
    assert!(found.len() >= 20, "{found:?}");
    for (path, example) in found {
        // What a shell would pass: the words before a redirection.
        let words: Vec<&str> = example
            .split(" > ")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // The command the words name (aliases too) is the one whose help
        // shows them.
        let mut cmd = Cli::command();
        let mut named = "shoal".to_owned();
        for w in &words[1..] {
            let Some(sub) = cmd.find_subcommand(w).cloned() else {
                break;
            };
            named = format!("{named} {}", sub.get_name());
            cmd = sub;
        }
        assert_eq!(named, path, "an example of another command: {example}");
        if let Err(e) = <Cli as clap::Parser>::try_parse_from(&words) {
            panic!("`{example}` (in {path} --help) does not parse: {e}");
        }
    }
}
