//! Transactions (`POST /v1/txn`, `shoal kv txn`) end to end: real
//! `shoal up` processes on 127.0.0.1, a transaction sent through a
//! follower over HTTP and through the CLI.

mod cluster;

use cluster::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A transaction sent through a follower: (status, body).
fn txn(p: &Proc, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    p.write(Method::POST, "/v1/txn", Some(&body.to_string()), &headers)
}

#[test]
fn a_transaction_applies_every_op_or_none_through_any_node_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let procs = agreed_cluster(tmp.path(), 3);
    let master = procs
        .iter()
        .find(|p| p.status().is_some_and(|s| s["role"] == "master"))
        .expect("a master");
    let follower = procs
        .iter()
        .find(|p| p.status().is_some_and(|s| s["role"] != "master"))
        .expect("a follower");
    let consistent = |key: &str| master.get(&format!("/v1/kv/{key}?consistent=true"));

    // Every op applies, in order, through a follower; once per key.
    let body = json!({"ops": [
        {"op": "set", "key": "a", "value": "1"},
        {"op": "incr", "key": "n", "by": 2},
        {"op": "push", "key": "l", "value": "x"},
        {"op": "set-if-absent", "key": "a", "value": "2"},
    ]});
    let (code, v) = txn(follower, &body, Some("txn-1"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["applied"], true);
    assert_eq!(
        v["results"],
        json!([{}, {"value": 2}, {"value": 1}, {"applied": false}])
    );
    let (_, again) = txn(follower, &body, Some("txn-1"));
    assert_eq!(again["index"], v["index"], "a retry gets the first answer");
    assert_eq!(field(&consistent("n"), "value"), 2, "applied once");
    assert!(
        wait_for(std::time::Duration::from_secs(5), || master
            .metric("read_rounds_total")
            >= 1.0),
        "consistent reads took a ReadIndex round on the master: {}",
        master.metric("read_rounds_total")
    );

    // A guard that does not hold writes nothing; one that does, all.
    let version = field(&consistent("a"), "version");
    let guarded = |version: &Value| {
        json!({"guards": [{"key": "a", "version": version}, {"key": "b", "exists": false}],
               "ops": [{"op": "set", "key": "a", "value": "3"}, {"op": "set", "key": "b", "value": "3"}]})
    };
    let (code, v) = txn(follower, &guarded(&json!(1)), None);
    assert_eq!(
        (code, &v["applied"], &v["failed_guard"]),
        (200, &json!(false), &json!(0))
    );
    assert_eq!(field(&consistent("a"), "value"), "1");
    let (code, v) = txn(follower, &guarded(&version), None);
    assert_eq!((code, &v["applied"]), (200, &json!(true)), "{v}");
    assert_eq!(field(&consistent("b"), "value"), "3");

    // An op refused undoes the ops before it, and the error names it.
    let body = json!({"ops": [
        {"op": "set", "key": "c", "value": "1"},
        {"op": "incr", "key": "l"},
    ]});
    let (code, v) = txn(follower, &body, None);
    assert_eq!(
        (code, &v["error"]["code"]),
        (409, &json!("wrong_type")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("op 1"),
        "{v}"
    );
    assert_eq!(
        field(&consistent("c"), "error")["code"],
        "not_found",
        "nothing of it applied"
    );

    // A thousand writes in one command; a bad body is a 400.
    let ops: Vec<Value> = (0..1000)
        .map(|i| json!({"op": "set", "key": format!("bulk/{i:04}"), "value": "v".repeat(100)}))
        .collect();
    let (code, v) = txn(follower, &json!({ "ops": ops }), None);
    assert_eq!(code, 200, "{v}");
    let listed = master.get("/v1/kv?prefix=bulk/&limit=2000&consistent=true");
    assert_eq!(field(&listed, "keys").as_array().unwrap().len(), 1000);
    let (code, v) = txn(
        follower,
        &json!({"ops": [{"op": "lock", "key": "x"}]}),
        None,
    );
    assert_eq!((code, &v["error"]["code"]), (400, &json!("invalid")), "{v}");

    // The CLI reads the transaction from a file or standard input, and
    // exits 3 when a guard does not hold.
    let file = tmp.path().join("txn.json");
    let write = |body: Value| std::fs::write(&file, body.to_string()).unwrap();
    write(json!({"guards": [{"key": "a", "value": "3"}], "ops": [{"op": "delete", "key": "a"}]}));
    let o = follower.cli(&["kv", "txn", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["results"], json!([{"applied": true}]));
    let o = follower.cli(&["kv", "txn", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "a is gone, so the guard fails");
    std::fs::write(&file, "not json").unwrap();
    let o = follower.cli(&["kv", "txn", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not JSON"));
}
