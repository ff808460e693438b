//! The node's log: `SHOAL_LOG` picks what is logged (an invalid filter is
//! an error, not a silent default), `--log-format` how; colours only when
//! standard error is a terminal.

use anyhow::{anyhow, Result};
use clap::ValueEnum;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logging when `SHOAL_LOG` is unset. gossipsub warns once per message
/// it drops for a slow peer, printing the message: shoal counts those
/// (`shoal_net_gossip_send_dropped_total`) and warns now and then instead.
pub const DEFAULT_LOG: &str = "info,libp2p=warn,libp2p_gossipsub=error";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter `SHOAL_LOG` names (`value`), or the default when unset.
pub fn filter(value: Option<&str>) -> Result<EnvFilter> {
    match value {
        None => Ok(EnvFilter::new(DEFAULT_LOG)),
        Some(v) => EnvFilter::try_new(v).map_err(|e| {
            anyhow!(
                "SHOAL_LOG={v:?} is not a log filter ({e}); e.g. SHOAL_LOG=info,shoal_proto=debug"
            )
        }),
    }
}

pub fn init(format: LogFormat) -> Result<()> {
    let var = std::env::var("SHOAL_LOG").ok();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter(var.as_deref())?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn an_invalid_filter_is_an_error_and_unset_is_the_default() {
        assert!(filter(None).is_ok());
        assert!(filter(Some("debug,shoal_proto=trace")).is_ok());
        let e = filter(Some("info,=x=y")).unwrap_err().to_string();
        assert!(e.contains("SHOAL_LOG"), "{e}");
    }
}
