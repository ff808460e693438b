//! The `Host` a request names must be this node's: an IP address (what
//! `--api` listens on, or any other of the host's), `localhost`, or a name
//! the operator gave (`shoal up --api-host NAME`, and the host's own name).
//! A page a browser loaded from some other name that resolves here (DNS
//! rebinding) names that other name, and is refused before any handler
//! runs. The API sends no CORS headers unless `--api-cors-origin` is given,
//! so other origins cannot read its answers either.

use crate::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The names requests may give in `Host`, besides IP addresses and
/// `localhost`.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Hosts {
            names: names
                .into_iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// Whether a `Host` header value names this node.
    pub fn allows(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            // `[v6]` or `[v6]:port`
            Some(rest) => {
                return rest
                    .split_once(']')
                    .is_some_and(|(ip, port)| ip.parse::<IpAddr>().is_ok() && valid_port(port))
            }
            None => match host.rsplit_once(':') {
                Some((name, port)) if valid_port(&format!(":{port}")) => name,
                Some(_) => return false,
                None => host,
            },
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<Ipv4Addr>().is_ok() || name == "localhost" || self.names.contains(&name)
    }
}

/// An origin as `--api-cors-origin` takes it: `http[s]://host[:port]`.
pub fn parse_origin(o: &str) -> Result<axum::http::HeaderValue, String> {
    let host = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or("an origin starts with http:// or https://")?;
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '*']) {
        return Err("an origin is a scheme and a host (and port), nothing else".into());
    }
    o.parse().map_err(|_| "not a valid header value".into())
}

/// Empty, or `:` and a port number.
fn valid_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok())
}

pub(crate) async fn check(State(hosts): State<Arc<Hosts>>, req: Request, next: Next) -> Response {
    // A request without `Host` (HTTP/1.0) comes from no browser.
    let Some(host) = req.headers().get(header::HOST) else {
        return next.run(req).await;
    };
    match host.to_str() {
        Ok(h) if hosts.allows(h) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::WrongHost,
            format!(
                "Host {:?} is not a name of this node; use its IP address, or start it \
                 with --api-host NAME",
                String::from_utf8_lossy(host.as_bytes())
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_origin, Hosts};

    #[test]
    fn origins_are_a_scheme_and_a_host() {
        assert!(parse_origin("https://ops.example").is_ok());
        assert!(parse_origin("http://10.0.0.5:8080").is_ok());
        for bad in [
            "ops.example",
            "https://",
            "https://a/b",
            "*",
            "https://*.example",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_addresses_localhost_and_given_names_are_this_node() {
        let hosts = Hosts::new(["Box1".to_owned(), "box1.local".to_owned()]);
        for ok in [
            "127.0.0.1:7000",
            "127.0.0.1",
            "192.168.1.20:80",
            "[::1]:7000",
            "[::1]",
            "localhost:7000",
            "LOCALHOST",
            "box1:7000",
            "box1.local.",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:7000",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "box2",
            "[::1",
            "[evil]:80",
            "127.0.0.1:port",
            "127.0.0.1:99999",
            "",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }
}
