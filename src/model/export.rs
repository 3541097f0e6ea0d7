//! Copying a model directory's own files elsewhere: how a trained base is shipped
//! (`save_model` in scripts). Only the model's files move; anything else in the target
//! (a README beside the weights) stays.

use std::path::{Path, PathBuf};

use super::{ModelError, Result, KEPT_FILES};

/// Whether `name` is one of a Hugging Face model directory's own files.
fn is_model_file(name: &str) -> bool {
    name == "config.json"
        || name == "tokenizer.json"
        || name.ends_with(".safetensors")
        || name == "model.safetensors.index.json"
        || KEPT_FILES.contains(&name)
}

/// The model files in `dir`, sorted.
fn model_files(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && is_model_file(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Copies the model files of `from` into `to` (created if needed), each written to a
/// temporary name and renamed, so a reader sees an old file or a new one, never half of one;
/// then removes model files `to` had that `from` has not (a single weights file replacing
/// shards). Returns the files copied, sorted.
pub fn copy_model_files(from: &Path, to: &Path) -> Result<Vec<PathBuf>> {
    if !from.join("config.json").is_file() {
        return Err(ModelError::NotAModelDir(from.to_path_buf()));
    }
    crate::fsx::create_dir_all(to).map_err(|e| ModelError::io(&e.path, e.source))?;
    let names = model_files(from)?;
    let mut copied = Vec::with_capacity(names.len());
    for name in &names {
        let (src, dst) = (from.join(name), to.join(name));
        let tmp = crate::fsx::temp_path(&dst);
        let moved = std::fs::copy(&src, &tmp).and_then(|_| std::fs::rename(&tmp, &dst));
        if let Err(e) = moved {
            let _ = std::fs::remove_file(&tmp);
            return Err(ModelError::io(&dst, e));
        }
        copied.push(dst);
    }
    for stale in model_files(to)?.iter().filter(|n| !names.contains(n)) {
        let path = to.join(stale);
        std::fs::remove_file(&path).map_err(|e| ModelError::io(&path, e))?;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_model_files_only_and_leaves_others_in_place() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&from).unwrap();
        for (n, t) in [
            ("config.json", "{}"),
            ("model.safetensors", "w"),
            ("tokenizer.json", "t"),
            ("notes.txt", "n"),
        ] {
            std::fs::write(from.join(n), t).unwrap();
        }
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(to.join("README.md"), "kept").unwrap();
        std::fs::write(to.join("model-00001-of-00002.safetensors"), "old shard").unwrap();
        let copied = copy_model_files(&from, &to).unwrap();
        assert_eq!(copied.len(), 3);
        assert_eq!(
            std::fs::read_to_string(to.join("model.safetensors")).unwrap(),
            "w"
        );
        assert_eq!(
            std::fs::read_to_string(to.join("README.md")).unwrap(),
            "kept"
        );
        assert!(!to.join("notes.txt").exists());
        assert!(!to.join("model-00001-of-00002.safetensors").exists());
        assert!(matches!(
            copy_model_files(&to.join("nowhere"), &from),
            Err(ModelError::NotAModelDir(_))
        ));
    }
}
