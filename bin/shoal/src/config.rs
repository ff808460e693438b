//! `shoal up --config FILE`: every setting of `shoal up` from a TOML file,
//! named as its flag (`data-dir = "/var/lib/shoal"`, `voters = 5`,
//! `peer = ["/ip4/…", …]`). One precedence, as etcd and Nomad have it: a
//! flag beats its `SHOAL_*` variable, the variable beats the file, the file
//! beats the default.
//!
//! The file is folded in as flags: each setting the command line and the
//! environment left unset becomes `--name=value`, and the whole is parsed
//! again, so a value from the file is checked exactly as the flag is.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

/// Arguments of `shoal up` that are not settings.
const NOT_SETTINGS: [&str; 4] = ["config", "print_config", "help", "version"];

/// Settings whose values are never printed.
const SECRETS: [&str; 1] = ["api_token"];

/// The parsed command line, and which of `shoal up`'s settings came from
/// its config file.
pub struct Parsed {
    pub matches: ArgMatches,
    pub from_file: BTreeSet<String>,
}

/// Parses `argv` against `cmd`, folding in `shoal up`'s config file when
/// one is named. A bad file is a usage error that names it.
pub fn parse(cmd: Command, argv: Vec<OsString>) -> Result<Parsed, clap::Error> {
    let matches = cmd.clone().try_get_matches_from(&argv)?;
    let file = match matches.subcommand() {
        Some(("up", up)) => up.get_one::<PathBuf>("config").cloned(),
        _ => None,
    };
    let Some(path) = file else {
        return Ok(Parsed {
            matches,
            from_file: BTreeSet::new(),
        });
    };
    let usage = cmd.clone();
    let in_file = |msg: String| {
        clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!("config file {}: {msg}", path.display()),
        )
        .format(&mut usage.clone())
    };
    let text = std::fs::read_to_string(&path).map_err(|e| in_file(e.to_string()))?;
    let up_cmd = crate::up_command(&cmd);
    let up = matches.subcommand_matches("up").expect("parsed as up");
    let (extra, from_file) = file_args(up_cmd, up, &text).map_err(in_file)?;
    let mut argv = argv;
    argv.extend(extra);
    let matches = cmd.try_get_matches_from(argv).map_err(|e| {
        // The command line parsed alone, so what fails now is the file's.
        let said = e.render().to_string();
        let first = said.lines().next().unwrap_or_default();
        in_file(first.trim_start_matches("error: ").to_owned())
    })?;
    Ok(Parsed { matches, from_file })
}

/// The flags a config file adds to `shoal up` (settings the command line
/// and the environment left unset), and the ids of those settings.
fn file_args(
    up_cmd: &Command,
    given: &ArgMatches,
    text: &str,
) -> Result<(Vec<OsString>, BTreeSet<String>), String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.to_string().trim_end().to_owned())?;
    let mut args = Vec::new();
    let mut ids = BTreeSet::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = up_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(&long) && !NOT_SETTINGS.contains(&a.get_id().as_str()))
            .ok_or_else(|| format!("`{key}` is not a setting of shoal up (see shoal up --help)"))?;
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let switch = !arg.get_action().takes_values();
        let values = match value {
            toml::Value::Array(a) if !switch => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match (v, switch) {
                (toml::Value::Boolean(true), true) => args.push(format!("--{long}")),
                (toml::Value::Boolean(false), true) => {}
                (_, true) => return Err(format!("`{key}` is true or false")),
                (toml::Value::String(s), false) => args.push(format!("--{long}={s}")),
                (toml::Value::Integer(i), false) => args.push(format!("--{long}={i}")),
                (_, false) => {
                    return Err(format!(
                        "`{key}` takes a string or a whole number (or a list of them)"
                    ))
                }
            }
        }
        ids.insert(id.to_owned());
    }
    Ok((args.into_iter().map(OsString::from).collect(), ids))
}

/// `shoal up --print-config`: the settings in effect as a config file, each
/// with where it came from. Secrets are named, never shown.
pub fn print(up_cmd: &Command, parsed: &Parsed) -> String {
    let up = parsed.matches.subcommand_matches("up").expect("shoal up");
    let mut out = String::from(
        "# shoal up: the settings in effect (a flag beats its SHOAL_* variable,\n\
         # the variable the config file, the file the default)\n",
    );
    for arg in up_cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&id) || arg.is_hide_set() {
            continue;
        }
        let long = arg.get_long().unwrap_or(id);
        let source = match up.value_source(id) {
            _ if parsed.from_file.contains(id) => "config file".to_owned(),
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => arg
                .get_env()
                .map_or("environment".into(), |e| e.to_string_lossy().into_owned()),
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => {
                out.push_str(&format!("# {long} (unset)\n"));
                continue;
            }
        };
        if SECRETS.contains(&id) {
            out.push_str(&format!("# {long} = (set, not shown)  # {source}\n"));
            continue;
        }
        let raw: Vec<String> = up
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let value = if !arg.get_action().takes_values() {
            raw.first().map_or("false".to_owned(), |v| v.clone())
        } else if arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), clap::ArgAction::Append)
        {
            let items: Vec<String> = raw.iter().map(|v| toml_value(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            raw.first().map_or(String::new(), |v| toml_value(v))
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}

/// A value as TOML writes it: a whole number bare, anything else quoted.
fn toml_value(v: &str) -> String {
    match v.parse::<i64>() {
        Ok(i) => i.to_string(),
        Err(_) => toml::Value::String(v.to_owned()).to_string(),
    }
}

#[cfg(test)]
mod tests;
