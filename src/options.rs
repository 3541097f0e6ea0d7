//! Options structs changed by name. `--set key=value`, a YAML file of options and a script's
//! option map all go through [`apply`], for any serde options struct (the trainer's, the warm
//! start's, an evaluation's), so an unknown option is always an error that lists the valid
//! ones and a wrong type always names its option.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    #[error("unknown {what} option `{key}` (valid: {valid})")]
    Unknown {
        what: String,
        key: String,
        valid: String,
    },
    #[error("{what} option `{key}`: {msg}")]
    Invalid {
        what: String,
        key: String,
        msg: String,
    },
    #[error("{what}: {msg}")]
    Other { what: String, msg: String },
}

/// `base` with `overrides` (option name to value) applied, in order. Each option is checked
/// as it is applied, so a wrong type names the option that has it; `what` names the options
/// in messages (`trainer`, `warm_start`, `evaluate`).
pub fn apply<T: Serialize + DeserializeOwned>(
    base: &T,
    overrides: &Map<String, Value>,
    what: &str,
) -> Result<T, OptionsError> {
    let other = |msg: String| OptionsError::Other {
        what: what.to_string(),
        msg,
    };
    let mut value = serde_json::to_value(base).map_err(|e| other(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| other("options are not a map".into()))?;
    for (k, v) in overrides {
        if !obj.contains_key(k) {
            return Err(OptionsError::Unknown {
                what: what.to_string(),
                key: k.clone(),
                valid: obj.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        obj.insert(k.clone(), v.clone());
        if let Err(e) = serde_json::from_value::<T>(Value::Object(obj.clone())) {
            return Err(OptionsError::Invalid {
                what: what.to_string(),
                key: k.clone(),
                msg: e.to_string(),
            });
        }
    }
    serde_json::from_value(value).map_err(|e| other(e.to_string()))
}

/// `KEY=VALUE` items (`--set`) as option values: JSON where the value parses as JSON
/// (`8`, `1e-4`, `true`, `[...]`), a string otherwise (`nsr`).
pub fn parse_sets(items: &[String]) -> Result<Map<String, Value>, OptionsError> {
    let mut out = Map::new();
    for kv in items {
        let (k, v) = kv.split_once('=').ok_or_else(|| OptionsError::Other {
            what: format!("--set {kv}"),
            msg: "expected KEY=VALUE".into(),
        })?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// A YAML document of options (`--config FILE`) as a map; `origin` names it in errors.
pub fn from_yaml(text: &str, origin: &str) -> Result<Map<String, Value>, OptionsError> {
    let other = |msg: String| OptionsError::Other {
        what: origin.to_string(),
        msg,
    };
    let value: Value = serde_yaml::from_str(text).map_err(|e| other(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(other("expected a mapping of options".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        n: usize,
        name: String,
    }

    #[test]
    fn options_apply_by_name_and_errors_name_the_option() {
        let base = Opts {
            n: 1,
            name: "a".into(),
        };
        let sets = parse_sets(&["n=3".into(), "name=nsr".into()]).unwrap();
        assert_eq!(
            apply(&base, &sets, "test").unwrap(),
            Opts {
                n: 3,
                name: "nsr".into()
            }
        );
        let e = apply(&base, &parse_sets(&["m=3".into()]).unwrap(), "test").unwrap_err();
        assert_eq!(e.to_string(), "unknown test option `m` (valid: n, name)");
        let e = apply(&base, &parse_sets(&["n=x".into()]).unwrap(), "test").unwrap_err();
        assert!(
            e.to_string().starts_with("test option `n`: invalid type"),
            "{e}"
        );
        assert!(parse_sets(&["n".into()]).is_err());
        let yaml = from_yaml("n: 5\nname: b\n", "f.yaml").unwrap();
        assert_eq!(apply(&base, &yaml, "test").unwrap().n, 5);
        assert!(from_yaml("- 1\n", "f.yaml")
            .unwrap_err()
            .to_string()
            .contains("f.yaml"));
    }
}
