//! `shoal nodes`: the members, draining one, and removing a dead or
//! departed one.

use crate::client::{encode, Body, Client};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum NodesCmd {
    /// Remove a dead or departed member, so that it is no longer listed
    /// and a voter's seat goes to a live node (etcd's member remove). A
    /// live node is refused: stop it, or run shoal leave on it, first.
    ///
    /// Example: shoal nodes remove 12D3KooWQ…
    Remove {
        /// The node's id, as shoal nodes lists it.
        node: String,
    },
    /// Drain a member: no new tasks or replicas go to it, and its replicas
    /// are placed on other nodes; tasks under way there finish. It stays a
    /// member (a voter keeps its seat) until taken back with --undo
    /// (Nomad's node drain). Exit status 3 if it was drained already.
    ///
    /// Example: shoal nodes drain 12D3KooWQ…
    Drain {
        /// The node's id, as shoal nodes lists it.
        node: String,
        /// Take the node back: work may be placed on it again.
        #[arg(long)]
        undo: bool,
    },
}

pub fn run(c: &Client, op: Option<NodesCmd>, json: bool) -> Result<i32> {
    match op {
        None => list(c, json).map(|_| 0),
        Some(NodesCmd::Drain { node, undo }) => {
            let path = format!("/v1/nodes/{}/drain", encode(&node));
            let method = if undo {
                reqwest::Method::DELETE
            } else {
                reqwest::Method::PUT
            };
            let v = c.write(method, &path, Body::None, None)?;
            let what = if undo { "taken back" } else { "drained" };
            if v["changed"].as_bool() == Some(true) {
                println!("{node} {what}");
                Ok(0)
            } else {
                println!("{node} was {what} already");
                Ok(crate::kv::NOT_APPLIED)
            }
        }
        Some(NodesCmd::Remove { node }) => {
            let path = format!("/v1/nodes/{}", encode(&node));
            let v = c.write(reqwest::Method::DELETE, &path, Body::None, None)?;
            if v["removed"].as_bool() == Some(true) {
                println!("removed {node}");
                Ok(0)
            } else {
                println!(
                    "{node} is marked left, but its voter seat has not moved yet (no live \
                     node to take it?); it is forgotten once it has"
                );
                Ok(crate::kv::NOT_APPLIED)
            }
        }
    }
}

fn list(c: &Client, json: bool) -> Result<()> {
    let v = c.get("/v1/nodes")?;
    if json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<54} {:<9} {:<15} {:>9} {:>8}  OPTED OUT",
        "NODE", "ROLE", "STATE", "APPLIED", "HEARD"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let role = if n["master"].as_bool() == Some(true) {
            "master"
        } else {
            n["role"].as_str().unwrap_or("?")
        };
        let heard = n["last_heard_ms"]
            .as_u64()
            .map_or("-".to_owned(), |ms| format!("{ms}ms"));
        let mut state = n["liveness"].as_str().unwrap_or("?").to_owned();
        if n["drained"].as_bool() == Some(true) {
            state.push_str(",drained");
        }
        println!(
            "{:<54} {:<9} {:<15} {:>9} {:>8}  {}",
            n["node_id"].as_str().unwrap_or("?"),
            role,
            state,
            n["applied_index"]
                .as_u64()
                .map_or("-".to_owned(), |i| i.to_string()),
            heard,
            opted_out(n)
        );
    }
    Ok(())
}

/// The roles a node runs without (`--no-worker`, `--no-api`, `--no-voter`),
/// as it last reported them; "-" for none, "?" before its first report.
fn opted_out(n: &serde_json::Value) -> String {
    if n["worker"].is_null() {
        return "?".into();
    }
    let out: Vec<&str> = [
        (n["worker"] == false, "no-worker"),
        (n["api_url"] == "", "no-api"),
        (n["may_vote"] == false, "no-voter"),
    ]
    .into_iter()
    .filter_map(|(off, name)| off.then_some(name))
    .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}
