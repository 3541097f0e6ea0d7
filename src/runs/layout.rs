//! Where a store keeps its files, beside the SQLite file: run `NAME`'s final model in
//! `ROOT/NAME/model`, its checkpoints in `ROOT/NAME/checkpoints/checkpoint-STEP`, and the
//! preset models a script asks for in `ROOT/models/`. Every path into that tree is built here.

use std::path::{Path, PathBuf};

use super::RunError;
use crate::model::{Policy, Preset};

/// The directory of run `name`'s final model.
pub fn final_model(root: &Path, name: &str) -> PathBuf {
    root.join(name).join("model")
}

/// The directory that holds run `name`'s checkpoints.
pub fn checkpoints(root: &Path, name: &str) -> PathBuf {
    root.join(name).join("checkpoints")
}

/// The directory (relative to the root) of run `name`'s checkpoint after `step` steps.
pub fn checkpoint(name: &str, step: usize) -> String {
    format!("{name}/checkpoints/checkpoint-{step}")
}

/// Where the preset model `spec` (`tiny`, or a preset file such as `configs/models/x.yaml`)
/// is created: `ROOT/models/` and the file stem.
pub fn preset_model(root: &Path, spec: &str) -> PathBuf {
    let stem = Path::new(spec)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.to_string());
    root.join("models").join(stem)
}

/// Creates `preset`'s model in `dir` (its tokenizer trained on the shipped corpus size,
/// seed 0), unless one is there already; says whether it created it.
pub fn ensure_preset_model(dir: &Path, preset: &Preset) -> Result<bool, RunError> {
    if dir.join("config.json").is_file() {
        return Ok(false);
    }
    let policy = Policy::from_preset(
        preset,
        crate::model::TOKENIZER_CORPUS,
        0,
        &candle_core::Device::Cpu,
    )?;
    policy.save_replacing(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let root = Path::new("runs");
        assert_eq!(
            final_model(root, "nsr-n100-1"),
            Path::new("runs/nsr-n100-1/model")
        );
        assert_eq!(
            root.join(checkpoint("nsr-n100-1", 20)),
            checkpoints(root, "nsr-n100-1").join("checkpoint-20")
        );
        assert_eq!(preset_model(root, "tiny"), Path::new("runs/models/tiny"));
        assert_eq!(
            preset_model(root, "configs/models/wide.yaml"),
            Path::new("runs/models/wide")
        );
    }
}
