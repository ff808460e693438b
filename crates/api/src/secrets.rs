//! What the API never prints without a token: the values of a command's
//! environment (`env`), wherever a runner appears (task submissions and
//! deployments in the event stream and in State). They are replaced by
//! `HIDDEN` unless the request carries the API token and asks for them
//! (`?reveal=env`).

use serde_json::Value;

/// What an environment value reads as when hidden.
pub(crate) const HIDDEN: &str = "(hidden)";

/// Hides the values of every command runner's `env` in `v`.
pub(crate) fn hide_env(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(exec)) = map.get_mut("Exec") {
                if let Some(Value::Object(env)) = exec.get_mut("env") {
                    for value in env.values_mut() {
                        *value = Value::String(HIDDEN.to_owned());
                    }
                }
            }
            map.values_mut().for_each(hide_env);
        }
        Value::Array(items) => items.iter_mut().for_each(hide_env),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{Event, Op, Resources, Runner, TaskSpec};
    use std::collections::BTreeMap;

    #[test]
    fn a_submitted_commands_env_values_are_hidden_and_nothing_else() {
        let spec = TaskSpec {
            runner: Runner::Exec {
                cmd: "deploy".into(),
                args: vec!["--to".into(), "prod".into()],
                env: BTreeMap::from([("SECRET".to_owned(), "hunter2".to_owned())]),
                cwd: None,
            },
            timeout_ms: None,
            node: None,
            labels: BTreeMap::from([("team".to_owned(), "web".to_owned())]),
            resources: Resources::default(),
            max_attempts: 1,
        };
        let event = Event::Command {
            cmd: shoal_model::Command {
                id: shoal_model::CommandId("c".into()),
                op: Op::TaskSubmit { spec },
            },
            at_ms: 0,
        };
        let mut v = serde_json::to_value(&event).unwrap();
        let before = v.to_string();
        assert!(before.contains("hunter2"));
        hide_env(&mut v);
        let after = v.to_string();
        assert!(!after.contains("hunter2"), "{after}");
        assert!(after.contains("SECRET") && after.contains(HIDDEN));
        assert!(
            after.contains("prod") && after.contains("web"),
            "the rest stays"
        );
    }
}
