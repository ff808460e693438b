//! The CLI's side of the HTTP API: where the node is, the token, and
//! writes that are retried under one idempotency key.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::Method;
use serde_json::Value;
use shoal_api::ErrorCode;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct ApiArg {
    /// The node's API, e.g. http://127.0.0.1:4101.
    #[arg(
        long,
        env = "SHOAL_API",
        default_value = "http://127.0.0.1:4101",
        global = true
    )]
    pub api: String,
    /// The API token for writes (default: the one in the node's data
    /// directory, when this host can read it).
    #[arg(long, env = "SHOAL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The node's data directory, whose API token to use (`shoal up
    /// --data-dir`; default: the embedded one).
    #[arg(
        long = "data-dir",
        visible_alias = "token-dir",
        env = "SHOAL_DATA_DIR",
        global = true
    )]
    pub token_dir: Option<PathBuf>,
}

/// An error the API answered with: its code and message.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

fn error_of(resp: reqwest::blocking::Response) -> ApiError {
    let body: Value = resp.json().unwrap_or(Value::Null);
    ApiError {
        code: serde_json::from_value(body["error"]["code"].clone()).unwrap_or(ErrorCode::Error),
        message: body["error"]["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned(),
    }
}

const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    pub base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(arg: &ApiArg) -> Result<Client> {
        let api = arg.api.trim_end_matches('/');
        let base = if api.starts_with("http://") || api.starts_with("https://") {
            api.to_owned()
        } else {
            format!("http://{api}")
        };
        let token = arg.token.clone().or_else(|| {
            let dir = arg
                .token_dir
                .clone()
                .unwrap_or_else(shoal_node::default_data_dir);
            shoal_node::read_api_token(&dir)
        });
        Ok(Client {
            http: Http::builder().timeout(Duration::from_secs(30)).build()?,
            base,
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn send(&self, req: RequestBuilder) -> Result<Value> {
        let resp = req
            .send()
            .map_err(|e| anyhow!("cannot reach the node at {}: {e}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp.json().unwrap_or(Value::Null));
        }
        let mut e = error_of(resp);
        if e.code == ErrorCode::Unauthorized && self.token.is_none() {
            e.message.push_str(
                " (no API token found: pass --data-dir DIR of the node, whose DIR/api-token \
                 holds it, or --token / SHOAL_TOKEN)",
            );
        }
        Err(e.into())
    }

    /// A long-lived response to read as it comes (server-sent events).
    pub fn stream(&self, path: &str) -> Result<reqwest::blocking::Response> {
        let resp = self
            .request(Method::GET, path)
            .timeout(Duration::from_secs(30 * 24 * 3600))
            .send()
            .map_err(|e| anyhow!("cannot reach the node at {}: {e}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_of(resp).into())
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::GET, path))
    }

    /// A write, retried a few times under one idempotency key while the
    /// answer leaves it unknown whether it was committed. `fence` is
    /// `LOCK:TOKEN`: the write applies only while that lock has that token.
    pub fn write(
        &self,
        method: Method,
        path: &str,
        body: Body,
        fence: Option<&str>,
    ) -> Result<Value> {
        if fence.is_some_and(|f| f.rsplit_once(':').is_none()) {
            bail!("--fence must be LOCK:TOKEN");
        }
        let key = format!("cli-{:032x}", rand::random::<u128>());
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            let mut req = self
                .request(method.clone(), path)
                .header("Idempotency-Key", &key);
            if let Some(f) = fence {
                req = req.header("Shoal-Fence", f);
            }
            req = match &body {
                Body::None => req,
                Body::Text(t) => req.body(t.clone()),
                Body::Json(v) => req.json(v),
            };
            match self.send(req) {
                Err(e)
                    if e.downcast_ref::<ApiError>()
                        .is_some_and(|a| a.code.retryable()) =>
                {
                    last = Some(e)
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Text(String),
    Json(Value),
}

/// Percent-encodes a key for a URL path segment.
pub fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
