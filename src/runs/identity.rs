//! A run's identity: the sha256 of its fully resolved configuration together with the
//! identity of its input model (the hash of the model's files) and of its data (the file's
//! hash, or the generator's split and seed). Asking for the same identity again finds the
//! same run, so re-running a command resumes it or returns its results.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::RunError;

/// Version of the built-in synthetic generator; bump when its output changes.
pub const SYNTHETIC_VERSION: u32 = 5;

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 and size of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64), RunError> {
    let io = |e| RunError::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex(&h.finalize()), size))
}

/// sha256 over the files of a directory (name and content hash of each, by name) and their
/// total size. Only plain files at the top level count.
pub fn sha256_dir(dir: &Path, include: impl Fn(&str) -> bool) -> Result<(String, u64), RunError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| RunError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| include(n))
        .collect();
    names.sort();
    let mut h = Sha256::new();
    let mut total = 0;
    for name in &names {
        let (digest, size) = sha256_file(&dir.join(name))?;
        total += size;
        h.update(name.as_bytes());
        h.update([0]);
        h.update(digest.as_bytes());
        h.update([0]);
    }
    Ok((hex(&h.finalize()), total))
}

/// The identity of a model directory: its configuration, tokenizer, chat template and
/// weights.
pub fn model_identity(dir: &Path) -> Result<String, RunError> {
    let (digest, _) = sha256_dir(dir, |n| {
        n == "config.json"
            || n == "tokenizer.json"
            || n == "tokenizer_config.json"
            || n == "chat_template.jinja"
            || n.ends_with(".safetensors")
            || n == "model.safetensors.index.json"
    })?;
    Ok(digest)
}

/// sha256 of the canonical JSON of `value` (serde_json sorts object keys).
pub fn identity_of(value: &serde_json::Value) -> String {
    sha256_bytes(value.to_string().as_bytes())
}

/// A run name is a directory name under the runs root: letters, digits, `.`, `_`, `-`, not
/// starting with `.`.
pub fn check_name(name: &str) -> Result<(), RunError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RunError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_published_test_vector() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn identity_ignores_key_order_and_sees_every_value() {
        let a = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#).unwrap();
        let c = serde_json::json!({"a": 1, "b": {"c": 2, "d": 4}});
        assert_eq!(identity_of(&a), identity_of(&b));
        assert_ne!(identity_of(&a), identity_of(&c));
    }

    #[test]
    fn names_are_safe_directory_names() {
        assert!(check_name("nsr-n100-s2025").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "..", "x\\y"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
