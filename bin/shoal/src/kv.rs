//! `shoal kv …`: the coordination primitives from the command line.

use crate::client::{encode, Body, Client};
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use shoal_request::TXN_SHAPE;
use std::time::Duration;

/// Keys asked for in one request when listing (the most a node answers).
const PAGE: usize = 10_000;

/// Exit status of a write that did not apply (a guard or condition did
/// not hold, nothing to delete, a member already there): apart from 1
/// (an error) and 2 (a usage error, as clap reports it).
pub const NOT_APPLIED: i32 = 3;

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// A key's value (read locally; --consistent goes through the master).
    ///
    /// Example: shoal kv get config/db --consistent
    Get {
        /// The key.
        key: String,
        /// Read at an index the master confirmed (sees every write committed before).
        #[arg(long)]
        consistent: bool,
        /// Print the whole answer (value, version, TTL, index) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a key.
    ///
    /// Example: shoal kv set config/db postgres://db1 --fence deploy:17
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Apply only while lock LOCK holds fencing token TOKEN.
        #[arg(long, value_name = "LOCK:TOKEN")]
        fence: Option<String>,
    },
    /// Set a key only if it is absent; exits 3 if it exists.
    ///
    /// Example: shoal kv setnx leader me --ttl 30s
    #[command(alias = "setnx")]
    SetIfAbsent {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The key disappears this long after it was set.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Apply only while lock LOCK holds fencing token TOKEN.
        #[arg(long, value_name = "LOCK:TOKEN")]
        fence: Option<String>,
    },
    /// Compare-and-set; exits 3 if the current value differs.
    ///
    /// Example: shoal kv cas config v2 --expected v1
    Cas {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The value the key must hold now.
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expected: Option<String>,
        /// The key must be absent now.
        #[arg(long)]
        absent: bool,
        /// Apply only while lock LOCK holds fencing token TOKEN.
        #[arg(long, value_name = "LOCK:TOKEN")]
        fence: Option<String>,
    },
    /// Add BY (default 1) to an integer key and print the new value.
    ///
    /// Example: shoal kv incr jobs-done 5
    Incr {
        /// The key.
        key: String,
        /// What to add (default 1; may be negative).
        #[arg(allow_negative_numbers = true)]
        by: Option<i64>,
        /// Apply only while lock LOCK holds fencing token TOKEN.
        #[arg(long, value_name = "LOCK:TOKEN")]
        fence: Option<String>,
    },
    /// Delete a key.
    #[command(alias = "del")]
    Delete {
        /// The key.
        key: String,
        /// Apply only while lock LOCK holds fencing token TOKEN.
        #[arg(long, value_name = "LOCK:TOKEN")]
        fence: Option<String>,
    },
    /// Keys under a prefix, in order (fetched a page at a time).
    ///
    /// Example: shoal kv list app/ --limit 50000
    #[command(alias = "ls")]
    List {
        /// Keys that start with this (default: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Keys to print at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Read at an index the master confirmed (sees every write committed before).
        #[arg(long)]
        consistent: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a member to a set.
    Sadd {
        /// The key.
        key: String,
        /// The member.
        member: String,
    },
    /// Remove a member from a set.
    Srem {
        /// The key.
        key: String,
        /// The member.
        member: String,
    },
    /// A set's members.
    Smembers {
        /// The key.
        key: String,
        /// Read at an index the master confirmed (sees every write committed before).
        #[arg(long)]
        consistent: bool,
    },
    /// Append to a list and print its new length.
    ///
    /// Example: shoal kv push queue job-1
    Push {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// List elements START..=STOP (negative: from the end).
    ///
    /// Example: shoal kv range queue 0 -1
    Range {
        /// The key.
        key: String,
        /// The first position (negative: from the end).
        #[arg(default_value_t = 0, allow_negative_numbers = true)]
        start: i64,
        /// The last position, included (negative: from the end).
        #[arg(default_value_t = -1, allow_negative_numbers = true)]
        stop: i64,
        /// Read at an index the master confirmed (sees every write committed before).
        #[arg(long)]
        consistent: bool,
    },
    /// Take a lock for HOLDER and print its fencing token (see also `shoal lock`).
    Lock {
        /// The lock's name (a key).
        name: String,
        /// Who takes it (shown to others who read the lock).
        #[arg(long)]
        holder: String,
        /// The lease: the lock frees itself this long after its last renewal.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Renew a lock's lease, given the fencing token `kv lock` printed.
    Keepalive {
        /// The lock's name (a key).
        name: String,
        /// The lock's fencing token (not the API token: that is `--token`).
        #[arg(id = "fencing_token", value_name = "TOKEN")]
        fencing_token: u64,
    },
    /// Release a lock, given the fencing token `kv lock` printed.
    Unlock {
        /// The lock's name (a key).
        name: String,
        /// The lock's fencing token (not the API token: that is `--token`).
        #[arg(id = "fencing_token", value_name = "TOKEN")]
        fencing_token: u64,
    },
    /// Apply several writes at once, all or none, if every guard holds.
    /// Prints the answer as JSON; exits 3 if a guard did not hold.
    ///
    /// The transaction is JSON, read from FILE (default: standard input):
    ///
    ///   {"guards": [{"key": "config", "version": 41}],
    ///    "ops": [{"op": "set", "key": "config", "value": "v2"},
    ///            {"op": "incr", "key": "config-changes"}]}
    ///
    /// A guard names a key and one of "exists" (true/false), "version" (the
    /// index of its last change) or "value". Ops: set, delete, incr ("by"),
    /// cas ("expected", null for absent), set-if-absent ("ttl_ms"), add and
    /// remove ("member"), push ("value").
    #[command(verbatim_doc_comment)]
    Txn {
        /// The transaction as JSON: a file, or - for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Apply only while lock LOCK holds fencing token TOKEN.
        #[arg(long, value_name = "LOCK:TOKEN")]
        fence: Option<String>,
    },
}

/// Text as a terminal may show it: control characters (escape sequences,
/// carriage returns, tabs and newlines that would break a listing's lines)
/// written as escapes, so another client's keys cannot drive this terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// One item of a listing (a set member, a list element), on one line.
fn print_item(v: &Value) {
    match v {
        Value::String(s) => println!("{}", printable(s)),
        other => println!("{other}"),
    }
}

fn print_value(v: &Value) {
    match v {
        Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
}

/// Prints a conditional write's result; its exit status says if it applied.
fn applied(v: &Value) -> i32 {
    let ok = v["applied"].as_bool() == Some(true);
    println!("{ok}");
    if ok {
        0
    } else {
        NOT_APPLIED
    }
}

fn q(consistent: bool) -> &'static str {
    if consistent {
        "?consistent=true"
    } else {
        ""
    }
}

/// Runs one command; returns the process's exit status.
pub fn run(c: &Client, cmd: KvCmd) -> Result<i32> {
    let k = |key: &str, rest: &str| format!("/v1/kv/{}{rest}", encode(key));
    match cmd {
        KvCmd::Get {
            key,
            consistent,
            json,
        } => {
            let v = c.get(&k(&key, q(consistent)))?;
            if json {
                println!("{v}");
            } else {
                print_value(&v["value"]);
            }
        }
        KvCmd::Set { key, value, fence } => {
            let v = c.write(
                Method::PUT,
                &k(&key, ""),
                Body::Text(value),
                fence.as_deref(),
            )?;
            println!("ok (index {})", v["index"]);
        }
        KvCmd::SetIfAbsent {
            key,
            value,
            ttl,
            fence,
        } => {
            let rest = match ttl {
                Some(t) => format!("/set-if-absent?ttl_ms={}", t.as_millis().max(1)),
                None => "/set-if-absent".to_owned(),
            };
            let v = c.write(
                Method::POST,
                &k(&key, &rest),
                Body::Text(value),
                fence.as_deref(),
            )?;
            return Ok(applied(&v));
        }
        KvCmd::Cas {
            key,
            value,
            expected,
            absent,
            fence,
        } => {
            let expected = if absent { None } else { expected };
            let body = Body::Json(json!({"expected": expected, "value": value}));
            let v = c.write(Method::POST, &k(&key, "/cas"), body, fence.as_deref())?;
            return Ok(applied(&v));
        }
        KvCmd::Incr { key, by, fence } => {
            let rest = format!("/incr?by={}", by.unwrap_or(1));
            let v = c.write(Method::POST, &k(&key, &rest), Body::None, fence.as_deref())?;
            println!("{}", v["value"]);
        }
        KvCmd::Delete { key, fence } => {
            let v = c.write(Method::DELETE, &k(&key, ""), Body::None, fence.as_deref())?;
            return Ok(applied(&v));
        }
        KvCmd::List {
            prefix,
            limit,
            consistent,
            json,
        } => {
            // Pages of at most what the node answers at once, each from
            // after the last key of the one before.
            let mut keys = Vec::new();
            let mut after: Option<String> = None;
            let mut more = false;
            while keys.len() < limit {
                let page = (limit - keys.len()).min(PAGE);
                let mut path = format!("/v1/kv?prefix={}&limit={page}", encode(&prefix));
                if let Some(a) = &after {
                    path.push_str(&format!("&after={}", encode(a)));
                }
                if consistent {
                    path.push_str("&consistent=true");
                }
                let v = c.get(&path)?;
                let page = v["keys"].as_array().cloned().unwrap_or_default();
                let empty = page.is_empty();
                keys.extend(page);
                after = v["next"].as_str().map(str::to_owned);
                more = after.is_some();
                // A page with nothing in it cannot move `after` on.
                if !more || empty {
                    break;
                }
            }
            if json {
                println!(
                    "{}",
                    json!({"keys": keys, "truncated": more, "next": after})
                );
            } else {
                for e in &keys {
                    let value = match &e["value"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let key = e["key"].as_str().unwrap_or("?");
                    println!("{}\t{}", printable(key), printable(&value));
                }
                if more {
                    eprintln!("(more keys past --limit {limit})");
                }
            }
        }
        KvCmd::Sadd { key, member } => {
            let v = c.write(Method::POST, &k(&key, "/add"), Body::Text(member), None)?;
            return Ok(applied(&v));
        }
        KvCmd::Srem { key, member } => {
            let v = c.write(Method::POST, &k(&key, "/remove"), Body::Text(member), None)?;
            return Ok(applied(&v));
        }
        KvCmd::Smembers { key, consistent } => {
            let v = c.get(&k(&key, q(consistent)))?;
            for m in v["value"]["set"].as_array().into_iter().flatten() {
                print_item(m);
            }
        }
        KvCmd::Push { key, value } => {
            let v = c.write(Method::POST, &k(&key, "/push"), Body::Text(value), None)?;
            println!("{}", v["value"]);
        }
        KvCmd::Range {
            key,
            start,
            stop,
            consistent,
        } => {
            let mut path = k(&key, &format!("/range?start={start}&stop={stop}"));
            if consistent {
                path.push_str("&consistent=true");
            }
            let v = c.get(&path)?;
            for item in v["items"].as_array().into_iter().flatten() {
                print_item(item);
            }
        }
        KvCmd::Lock { name, holder, ttl } => {
            let body = Body::Json(json!({"holder": holder, "ttl_ms": ttl.as_millis() as u64}));
            let v = c.write(Method::POST, &k(&name, "/lock"), body, None)?;
            println!("{}", v["token"]);
        }
        KvCmd::Keepalive {
            name,
            fencing_token,
        } => {
            let body = Body::Json(json!({ "token": fencing_token }));
            c.write(Method::POST, &k(&name, "/keepalive"), body, None)?;
            println!("ok");
        }
        KvCmd::Unlock {
            name,
            fencing_token,
        } => {
            let body = Body::Json(json!({ "token": fencing_token }));
            c.write(Method::POST, &k(&name, "/unlock"), body, None)?;
            println!("ok");
        }
        KvCmd::Txn { file, fence } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{file} is not JSON; it must be {TXN_SHAPE}"))?;
            let v = c.write(Method::POST, "/v1/txn", Body::Json(body), fence.as_deref())?;
            println!("{v}");
            if v["applied"].as_bool() != Some(true) {
                return Ok(NOT_APPLIED);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_as_escapes() {
        assert_eq!(printable("plain key/é"), "plain key/é");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("line\nbreak\ttab\r"), "line\\nbreak\\ttab\\r");
    }
}
