//! `shoal completions SHELL` and `shoal man`: made from the same
//! definition of the commands as `--help`, so they cannot drift.

use anyhow::Result;
use std::io::Write;

/// The version and the commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SHOAL_COMMIT"), ")");

/// What `--help` ends with.
pub const EXIT_STATUS: &str = "Exit status: 0 done (or true); 1 an error (the node \
could not be reached, or answered with an error); 2 a usage error; 3 not applied \
(a condition or guard did not hold, nothing to delete, already a member: the \
command printed false).";

/// Writes a completion script for `shell` to standard output.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) -> Result<i32> {
    // Into a buffer first: a closed pipe is an error to report, not a
    // panic inside the generator.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "shoal", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(0)
}

/// Writes the manual page (roff) to standard output.
pub fn man(cmd: clap::Command) -> Result<i32> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    std::io::stdout().write_all(&page)?;
    Ok(0)
}
