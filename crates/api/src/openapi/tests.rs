//! The generated description against what the API does and what OpenAPI
//! asks of a description.

use super::json;
use serde_json::Value;
use shoal_model::Limits;
use std::collections::BTreeSet;

fn doc() -> Value {
    serde_json::from_str(json()).expect("the description is JSON")
}

/// Every operation, as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn every_operation_has_a_unique_id_a_summary_and_described_answers() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(
            ids.insert(id.clone()),
            "{method} {path}: operationId {id} twice"
        );
        let summary = op["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty(), "{method} {path} has no summary");
        for (status, answer) in op["responses"].as_object().unwrap() {
            let described = answer["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
                || answer["$ref"].is_string();
            assert!(described, "{method} {path} {status}: no description");
        }
        assert!(op["responses"]["default"].is_object(), "{method} {path}");
        assert!(op["responses"]["421"].is_object(), "{method} {path}");
    }
    assert!(ids.len() >= 40, "{}", ids.len());
}

#[test]
fn writes_and_private_reads_need_the_token_and_other_reads_do_not() {
    let doc = doc();
    for (method, path, op) in operations(&doc) {
        let needs = op["security"][0]["token"].is_array();
        let should = method != "get" || crate::auth::private(&path);
        assert_eq!(needs, should, "{method} {path}");
        assert_eq!(
            op["responses"]["401"].is_object(),
            should || path == "/v1/events"
        );
        if method != "get" {
            for status in ["400", "409", "413", "504", "507"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    let scheme = &doc["components"]["securitySchemes"]["token"];
    assert_eq!(scheme["scheme"], "bearer");
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let text = json();
    let mut refs = BTreeSet::new();
    for part in text.split("\"$ref\":\"#/").skip(1) {
        refs.insert(part.split('"').next().unwrap().to_owned());
    }
    assert!(refs.len() > 20, "{refs:?}");
    for r in refs {
        let mut at = &doc;
        for step in r.split('/') {
            at = &at[step];
        }
        assert!(at.is_object(), "#/{r} refers to nothing");
    }
}

/// The bounds written as literals in the schemas (`#[schema(max_length =
/// 512)]`: the derive takes literals only) are the model's limits.
#[test]
fn the_bounds_in_the_schemas_are_the_limits_the_model_checks() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let key = |v: &Value| v["maxLength"].as_u64().map(|n| n as usize);
    let txn = &schemas["TxnBody"]["properties"];
    assert_eq!(
        txn["ops"]["maxItems"].as_u64(),
        Some(Limits::MAX_TXN_OPS as u64)
    );
    assert_eq!(
        txn["guards"]["maxItems"].as_u64(),
        Some(Limits::MAX_TXN_GUARDS as u64)
    );
    for op in schemas["TxnOp"]["oneOf"].as_array().unwrap() {
        let p = &op["properties"];
        assert_eq!(key(&p["key"]), Some(Limits::MAX_KEY_LEN), "{op}");
        for v in ["value", "member"] {
            if p[v].is_object() {
                assert_eq!(key(&p[v]), Some(Limits::MAX_VALUE_LEN), "{op}");
            }
        }
    }
    for op in schemas["TxnOp"]["oneOf"].as_array().unwrap() {
        assert_eq!(op["additionalProperties"], false, "{op}");
    }
    assert_eq!(schemas["TxnBody"]["additionalProperties"], false);
    let guards = schemas["TxnGuard"]["oneOf"].as_array().unwrap();
    assert_eq!(guards.len(), 3, "one branch per check");
    for guard in guards {
        assert_eq!(guard["additionalProperties"], false, "{guard}");
        assert_eq!(key(&guard["properties"]["key"]), Some(Limits::MAX_KEY_LEN));
    }
    let by_value = guards
        .iter()
        .find(|g| g["properties"]["value"]["type"] == "string");
    assert_eq!(
        key(&by_value.unwrap()["properties"]["value"]),
        Some(Limits::MAX_VALUE_LEN)
    );
    let cas = &schemas["CasBody"]["properties"];
    assert_eq!(key(&cas["value"]), Some(Limits::MAX_VALUE_LEN));
    let deploy = &schemas["Deployment"]["allOf"];
    let own = deploy
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["properties"]["replicas"].is_object())
        .unwrap();
    assert_eq!(
        own["properties"]["replicas"]["maximum"].as_u64(),
        Some(u64::from(Limits::MAX_REPLICAS))
    );
    assert_eq!(key(&own["properties"]["name"]), Some(Limits::MAX_KEY_LEN));
    let synthetic = &schemas["Synthetic"]["properties"];
    assert_eq!(
        synthetic["chunks"]["maximum"].as_u64(),
        Some(u64::from(shoal_request::MAX_SYNTHETIC_CHUNKS))
    );
    assert_eq!(
        synthetic["interval_ms"]["maximum"].as_u64(),
        Some(shoal_request::MAX_SYNTHETIC_INTERVAL_MS)
    );
    let task = schemas["Task"]["allOf"].as_array().unwrap();
    let own = task
        .iter()
        .find(|s| s["properties"]["max_attempts"].is_object())
        .unwrap();
    assert_eq!(
        own["properties"]["max_attempts"]["maximum"].as_u64(),
        Some(u64::from(shoal_request::MAX_ATTEMPTS))
    );
    let key_param = &doc["paths"]["/v1/kv/{key}"]["get"]["parameters"][0];
    assert_eq!(key_param["name"], "key");
    assert_eq!(key(&key_param["schema"]), Some(Limits::MAX_KEY_LEN));
}
