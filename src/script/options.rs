//! Script values to the core's types: object maps to option structs (an unknown option is an
//! error that lists the valid ones; a wrong type names its option), `--set` values to the type
//! of `param`'s default, and paths kept inside the working directory.

use std::path::{Component, Path, PathBuf};

use rhai::{Dynamic, Map};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A script value as JSON.
pub(crate) fn to_json(value: &Dynamic) -> Result<serde_json::Value, String> {
    rhai::serde::from_dynamic::<serde_json::Value>(value).map_err(|e| e.to_string())
}

/// `base` with the options of `map` applied (see `options::apply`); `what` names the thing
/// configured.
pub(crate) fn apply<T: Serialize + DeserializeOwned>(
    base: &T,
    map: &serde_json::Map<String, serde_json::Value>,
    what: &str,
) -> Result<T, String> {
    crate::options::apply(base, map, what).map_err(|e| e.to_string())
}

/// Takes `key` out of a script map.
pub(crate) fn take(map: &mut Map, key: &str) -> Option<Dynamic> {
    map.remove(key)
}

/// A map's remaining entries as JSON.
pub(crate) fn json_map(map: &Map) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        out.insert(
            k.to_string(),
            to_json(v).map_err(|e| format!("option `{k}`: {e}"))?,
        );
    }
    Ok(out)
}

/// `--set name=text` as a value of the same type as `default`.
pub(crate) fn parse_param(name: &str, text: &str, default: &Dynamic) -> Result<Dynamic, String> {
    let bad =
        |kind: &str| format!("--set {name}={text}: expected {kind}, like the default {default}");
    if default.is_int() {
        text.parse::<rhai::INT>()
            .map(Dynamic::from)
            .map_err(|_| bad("an integer"))
    } else if default.is_float() {
        text.parse::<rhai::FLOAT>()
            .map(Dynamic::from)
            .map_err(|_| bad("a number"))
    } else if default.is_bool() {
        text.parse::<bool>()
            .map(Dynamic::from)
            .map_err(|_| bad("true or false"))
    } else {
        Ok(Dynamic::from(text.to_string()))
    }
}

/// `path` if it stays inside `root` (checked on the path's components, `..` resolved); the
/// result is relative to `root` when `path` was.
pub(crate) fn inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let mut norm = PathBuf::new();
    for c in full.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other),
        }
    }
    if !norm.starts_with(root) {
        return Err(format!(
            "path `{path}` is outside the working directory {}; scripts may only use files under it",
            root.display()
        ));
    }
    Ok(if p.is_absolute() {
        norm
    } else {
        norm.strip_prefix(root)
            .map(Path::to_path_buf)
            .unwrap_or(norm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_working_directory() {
        let root = Path::new("/work/project");
        assert_eq!(
            inside(root, "data/x.jsonl").unwrap(),
            PathBuf::from("data/x.jsonl")
        );
        assert_eq!(inside(root, "a/../b").unwrap(), PathBuf::from("b"));
        assert!(inside(root, "../secret").is_err());
        assert!(inside(root, "/etc/passwd").is_err());
        assert!(inside(root, "/work/project/models/m").is_ok());
    }

    #[test]
    fn params_take_the_type_of_their_default() {
        assert_eq!(
            parse_param("n", "7", &Dynamic::from(1 as rhai::INT))
                .unwrap()
                .as_int(),
            Ok(7)
        );
        assert!(parse_param("n", "x", &Dynamic::from(1 as rhai::INT)).is_err());
        assert_eq!(
            parse_param("s", "10k", &Dynamic::from("poc".to_string()))
                .unwrap()
                .to_string(),
            "10k"
        );
        assert_eq!(
            parse_param("b", "true", &Dynamic::from(false))
                .unwrap()
                .as_bool(),
            Ok(true)
        );
    }

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        epochs: usize,
        lr: f64,
    }

    #[test]
    fn options_name_unknown_keys_and_wrong_types() {
        let base = Opts { epochs: 1, lr: 0.1 };
        let mut m = serde_json::Map::new();
        m.insert("epochs".into(), 3.into());
        assert_eq!(apply(&base, &m, "x").unwrap(), Opts { epochs: 3, lr: 0.1 });
        m.insert("epoch".into(), 3.into());
        let e = apply(&base, &m, "warm start").unwrap_err();
        assert!(e.contains("`epoch`") && e.contains("epochs, lr"), "{e}");
        let mut m = serde_json::Map::new();
        m.insert("lr".into(), "fast".into());
        let e = apply(&base, &m, "warm start").unwrap_err();
        assert!(e.contains("`lr`") && e.contains("invalid type"), "{e}");
    }
}
