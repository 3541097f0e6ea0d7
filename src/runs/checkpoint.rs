//! Checkpoints: everything an exact resume needs, in a directory that is also a Hugging Face
//! model directory. `config.json`, `tokenizer.json` and `model.safetensors` hold the policy;
//! `optimizer.safetensors` the AdamW moments (`m.NAME`, `v.NAME`); `trainer_state.json` the
//! step, optimizer step, learning rate, data cursor, RNG seeds and the resolved configuration.
//!
//! Writing is crash-safe: files go to a temporary directory beside the final one, are
//! fsynced, the directory is renamed into place and its parent fsynced. Only then does the
//! caller commit the store row with the checkpoint's sha256, so a row always names a complete
//! checkpoint, and a checkpoint whose files no longer match its row is detected and skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::identity::sha256_dir;
use super::RunError;
use crate::store::CheckpointRow;
use crate::train::Trainer;
use crate::train::{AdamW, AdamWConfig, Cursor};

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FORMAT: u32 = 1;

/// `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    pub chartrl_version: String,
    pub total_steps: usize,
    pub optimizer_step: u64,
    pub adamw: AdamWConfig,
    /// Data cursor, RNG seeds and learning rate of the next step.
    pub cursor: Cursor,
    /// The trainer's resolved options.
    pub config: serde_json::Value,
}

/// A fault to inject for crash tests: `CHARTRL_FAULT=checkpoint-STAGE:STEP` kills the process
/// (SIGKILL) at that stage of writing checkpoint STEP. Stages: `files` (half the files
/// written), `rename` (all written, before the rename), `commit` (renamed, before the store
/// row).
pub fn fault_point(stage: &str, step: usize) {
    if let Ok(spec) = std::env::var("CHARTRL_FAULT") {
        if spec == format!("checkpoint-{stage}:{step}") {
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
        }
    }
}

fn fsync(path: &Path) -> Result<(), RunError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| RunError::io(path, e))
}

/// Writes the trainer's checkpoint under `root/rel` and returns its store row. On failure (a
/// full disk) the temporary directory is removed and nothing is left behind.
pub fn write(root: &Path, rel: &str, trainer: &dyn Trainer) -> Result<CheckpointRow, RunError> {
    let dir = root.join(rel);
    let parent = dir.parent().unwrap_or(root).to_path_buf();
    let leaf = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".tmp-{leaf}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| RunError::io(&tmp, e))?;
    }
    let step = trainer.step();
    let written = write_files(&tmp, trainer).and_then(|()| sha256_dir(&tmp, |_| true));
    let (sha256, size) = match written {
        Ok(hash) => hash,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    fault_point("rename", step);
    if dir.exists() {
        // Left by a crash between the rename and the store row: not recorded, so not trusted.
        std::fs::remove_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| RunError::io(&dir, e))?;
    fsync(&parent)?;
    fault_point("commit", step);
    Ok(CheckpointRow {
        step,
        path: rel.to_string(),
        sha256,
        size,
        created_at: crate::store::now(),
    })
}

/// The checkpoint's files in `tmp`, each fsynced, and the directory too.
fn write_files(tmp: &Path, trainer: &dyn Trainer) -> Result<(), RunError> {
    std::fs::create_dir_all(tmp).map_err(|e| RunError::io(tmp, e))?;
    trainer.policy().save(tmp)?;
    fault_point("files", trainer.step());
    save_optimizer(&tmp.join(OPTIMIZER_FILE), trainer.optimizer())?;
    let state = TrainerState {
        format: FORMAT,
        chartrl_version: env!("CARGO_PKG_VERSION").into(),
        total_steps: trainer.total_steps(),
        optimizer_step: trainer.optimizer().step,
        adamw: trainer.optimizer().config,
        cursor: trainer.cursor(),
        config: trainer.config_value(),
    };
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(&state).map_err(|e| RunError::Checkpoint {
        path: state_path.clone(),
        msg: e.to_string(),
    })?;
    std::fs::write(&state_path, json).map_err(|e| RunError::io(&state_path, e))?;
    for entry in std::fs::read_dir(tmp).map_err(|e| RunError::io(tmp, e))? {
        fsync(&entry.map_err(|e| RunError::io(tmp, e))?.path())?;
    }
    fsync(tmp)
}

fn save_optimizer(path: &Path, opt: &AdamW) -> Result<(), RunError> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (prefix, map) in [("m", &opt.m), ("v", &opt.v)] {
        for (name, t) in map {
            tensors.insert(format!("{prefix}.{name}"), t.clone());
        }
    }
    if tensors.is_empty() {
        // safetensors cannot hold zero tensors; an optimizer that never stepped has none.
        let marker = Tensor::zeros(1, DType::F32, &candle_core::Device::Cpu)?;
        tensors.insert("empty".into(), marker);
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| RunError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("cannot write: {e}"),
    })?;
    crate::fsx::default_mode(path).map_err(|e| RunError::io(&e.path, e.source))
}

/// Whether the checkpoint at `root/row.path` still matches its row (`Err` text says why not).
pub fn verify(root: &Path, row: &CheckpointRow) -> Result<(), String> {
    let dir = root.join(&row.path);
    if !dir.is_dir() {
        return Err(format!("{} is missing", dir.display()));
    }
    match sha256_dir(&dir, |_| true) {
        Ok((sha, size)) if sha == row.sha256 && size == row.size => Ok(()),
        Ok((sha, size)) => Err(format!(
            "{}: content hash {}… ({size} bytes) does not match the recorded {}… ({} bytes)",
            dir.display(),
            &sha[..12],
            &row.sha256[..12.min(row.sha256.len())],
            row.size
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Restores a verified checkpoint into `trainer` (built from the run's input model and
/// configuration): weights, optimizer state and step. Refuses a checkpoint whose recorded
/// configuration or derived cursor differs from what this trainer derives.
pub fn restore(dir: &Path, trainer: &mut dyn Trainer) -> Result<(), RunError> {
    let bad = |msg: String| RunError::Checkpoint {
        path: dir.to_path_buf(),
        msg,
    };
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| RunError::io(&state_path, e))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
    if state.format != FORMAT {
        return Err(bad(format!(
            "checkpoint format {} (this chartrl reads {FORMAT})",
            state.format
        )));
    }
    if super::results_options(&state.config) != super::results_options(&trainer.config_value()) {
        return Err(bad("its configuration differs from the run's".into()));
    }
    let device = trainer.policy().device().clone();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device)?;
    for (name, var) in trainer.policy().params.iter() {
        let t = weights
            .get(name)
            .ok_or_else(|| bad(format!("model.safetensors lacks `{name}`")))?;
        if t.dims() != var.dims() {
            return Err(bad(format!(
                "`{name}` has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    let moments = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), &device)?;
    let mut optimizer = AdamW::new(state.adamw);
    optimizer.step = state.optimizer_step;
    let (mut m, mut v) = (BTreeMap::new(), BTreeMap::new());
    for (key, t) in moments {
        match key.split_once('.') {
            Some(("m", name)) => m.insert(name.to_string(), t),
            Some(("v", name)) => v.insert(name.to_string(), t),
            _ => None,
        };
    }
    optimizer.m = m;
    optimizer.v = v;
    trainer.restore(state.cursor.step, optimizer);
    if trainer.cursor() != state.cursor {
        return Err(bad(format!(
            "its data cursor / RNG state {:?} differs from what this chartrl derives {:?}",
            state.cursor,
            trainer.cursor()
        )));
    }
    Ok(())
}

/// Removes temporary directories left by interrupted checkpoint writes, and checkpoint
/// directories the store does not list (written but never committed). `recorded` holds the
/// directory names the store lists.
pub fn sweep(dir: &Path, recorded: &[String]) -> Result<(), RunError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let stray = name.starts_with(".tmp-")
            || (name.starts_with("checkpoint-") && !recorded.contains(&name));
        if stray && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| RunError::io(&path, e))?;
        }
    }
    Ok(())
}
