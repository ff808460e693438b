//! The precedence of the config file: flag over file over default, a list
//! replaced whole, a bad file named in the error, and `--print-config`
//! read back as a file giving the same settings. (Variables over the file:
//! `tests/config.rs`, which can set a process's environment.)

use super::*;
use crate::{up_command, Cli};
use clap::{CommandFactory, FromArgMatches};
use std::time::Duration;

/// `shoal up --config FILE FLAGS…`, FILE holding `text`.
fn up_with(text: &str, flags: &[&str]) -> (Result<Parsed, clap::Error>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.toml");
    std::fs::write(&path, text).unwrap();
    let mut argv = vec!["shoal", "up", "--config", path.to_str().unwrap()];
    argv.extend(flags);
    let parsed = parse(
        Cli::command(),
        argv.into_iter().map(OsString::from).collect(),
    );
    (parsed, dir)
}

fn up(p: &Parsed) -> &ArgMatches {
    p.matches.subcommand_matches("up").unwrap()
}

#[test]
fn a_flag_beats_the_file_and_the_file_beats_the_default() {
    let file = r#"
        voters = 7
        node-timeout = "3s"
        peer = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"]
        no_mdns = true
        no-snapshot = false
    "#;
    let (p, _dir) = up_with(file, &["--voters", "5"]);
    let p = p.unwrap();
    let m = up(&p);
    assert_eq!(m.get_one::<u64>("voters"), Some(&5), "the flag wins");
    assert_eq!(
        m.get_one::<Duration>("node_timeout"),
        Some(&Duration::from_secs(3))
    );
    assert_eq!(m.get_many::<String>("peer").unwrap().count(), 2);
    assert_eq!(m.get_one::<bool>("no_mdns"), Some(&true));
    assert_eq!(m.get_one::<bool>("no_snapshot"), Some(&false));
    assert_eq!(m.get_one::<u64>("log_retain"), Some(&50_000), "the default");
    assert_eq!(
        p.from_file.iter().map(String::as_str).collect::<Vec<_>>(),
        ["no_mdns", "no_snapshot", "node_timeout", "peer"],
        "voters came from the flag"
    );
}

#[test]
fn a_list_on_the_command_line_replaces_the_files() {
    let (p, _dir) = up_with(
        r#"peer = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"]"#,
        &["--peer", "/ip4/127.0.0.1/tcp/9"],
    );
    let p = p.unwrap();
    let peers: Vec<&String> = up(&p).get_many("peer").unwrap().collect();
    assert_eq!(peers, ["/ip4/127.0.0.1/tcp/9"]);
}

#[test]
fn a_bad_file_is_a_usage_error_that_names_the_file_and_the_setting() {
    for (text, says) in [
        ("votres = 3", "`votres` is not a setting of shoal up"),
        ("voters = 12", "12 is not in 1..=9"),
        ("voters = 3.5", "`voters` takes a string or a whole number"),
        ("no-mdns = \"yes\"", "`no-mdns` is true or false"),
        ("node-timeout = \"soon\"", "soon"),
        ("voters = ", "expected"),
        ("config = \"other.toml\"", "`config` is not a setting"),
        ("print-config = true", "`print-config` is not a setting"),
    ] {
        let (p, dir) = up_with(text, &[]);
        let e = p.err().unwrap_or_else(|| panic!("{text} was accepted"));
        assert_eq!(e.exit_code(), 2, "{text}");
        let shown = e.render().to_string();
        assert!(shown.contains("config file"), "{text}: {shown}");
        assert!(
            shown.contains(&dir.path().display().to_string()),
            "{text}: {shown}"
        );
        assert!(shown.contains(says), "{text}: {shown}");
    }
    let missing = parse(
        Cli::command(),
        ["shoal", "up", "--config", "/nonexistent/shoal.toml"]
            .into_iter()
            .map(OsString::from)
            .collect(),
    );
    let shown = missing.err().unwrap().render().to_string();
    assert!(shown.contains("/nonexistent/shoal.toml"), "{shown}");
}

#[test]
fn printed_settings_read_back_as_a_file_give_the_same_settings() {
    let (p, dir) = up_with(
        "voters = 5\nlabel = [\"zone=a\", \"disk=ssd\"]\napi-cors-origin = \"https://ops.example\"",
        &[
            "--node-timeout",
            "4s",
            "--no-mdns",
            "--api-token",
            "0123456789abcdefXYZ",
        ],
    );
    let p = p.unwrap();
    let cmd = Cli::command();
    let printed = print(up_command(&cmd), &p);
    assert!(printed.contains("voters = 5  # config file"), "{printed}");
    assert!(
        printed.contains("node-timeout = \"4s\"  # flag"),
        "{printed}"
    );
    assert!(
        printed.contains("log-retain = 50000  # default"),
        "{printed}"
    );
    assert!(
        printed.contains("label = [\"zone=a\", \"disk=ssd\"]"),
        "{printed}"
    );
    assert!(
        !printed.contains("0123456789abcdef"),
        "a secret printed: {printed}"
    );
    assert!(
        printed.contains("# api-token = (set, not shown)"),
        "{printed}"
    );

    // The token is not in the printed file, so give it again.
    let (again, _dir2) = up_with(&printed, &["--api-token", "0123456789abcdefXYZ"]);
    let again = again.unwrap();
    let settings = |p: &Parsed| {
        let cli = Cli::from_arg_matches(&p.matches).unwrap();
        // Everything but the file's own path.
        format!("{cli:?}").replace(&dir.path().display().to_string(), "")
    };
    let first = settings(&p);
    let second = settings(&again).replace(&_dir2.path().display().to_string(), "");
    assert_eq!(first, second);
}

#[test]
fn without_a_file_the_command_line_is_parsed_as_it_is() {
    let argv = ["shoal", "up", "--voters", "1"]
        .map(OsString::from)
        .to_vec();
    let p = parse(Cli::command(), argv.clone()).unwrap();
    assert!(p.from_file.is_empty());
    let plain = Cli::command().try_get_matches_from(argv).unwrap();
    assert_eq!(
        format!("{:?}", Cli::from_arg_matches(&p.matches).unwrap()),
        format!("{:?}", Cli::from_arg_matches(&plain).unwrap())
    );
}
