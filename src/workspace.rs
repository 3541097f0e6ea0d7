//! The files of the project a command or a script runs in: `configs/trainer.yaml`,
//! `configs/warm_start.yaml`, `configs/prompt.txt` and `configs/models/NAME.yaml`, each
//! winning over the copy compiled into the binary. Only the command line and the script host
//! read them, through here; everything else takes the values they resolve to, so the library
//! never depends on the directory it runs in, and what a run used is in its request (and its
//! identity) rather than in a file that may change.

use std::path::{Path, PathBuf};

use crate::data::{DataError, PromptTemplate};
use crate::model::{ModelError, Preset};
use crate::train::{TrainConfig, TrainError, WarmStartConfig};

/// A project directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The working directory.
    pub fn current() -> Self {
        Self::at(Path::new("."))
    }

    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn file(&self, rel: &str) -> Option<PathBuf> {
        let p = self.root.join(rel);
        p.is_file().then_some(p)
    }

    /// The trainer's defaults: `configs/trainer.yaml` here, else the built-in one.
    pub fn trainer_defaults(&self) -> Result<TrainConfig, TrainError> {
        match self.file("configs/trainer.yaml") {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Config {
                    origin: path.display().to_string(),
                    msg: e.to_string(),
                })?;
                TrainConfig::from_yaml(&text, &path.display().to_string())
            }
            None => TrainConfig::builtin(),
        }
    }

    /// The warm start's defaults: `configs/warm_start.yaml` here, else the built-in one.
    pub fn warm_start_defaults(&self) -> Result<WarmStartConfig, TrainError> {
        match self.file("configs/warm_start.yaml") {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Config {
                    origin: path.display().to_string(),
                    msg: e.to_string(),
                })?;
                WarmStartConfig::from_yaml(&text, &path.display().to_string())
            }
            None => WarmStartConfig::builtin(),
        }
    }

    /// The prompt template: `configs/prompt.txt` here, else the built-in one.
    pub fn prompt_template(&self) -> Result<PromptTemplate, DataError> {
        match self.file("configs/prompt.txt") {
            Some(path) => PromptTemplate::from_file(&path),
            None => Ok(PromptTemplate::default()),
        }
    }

    /// A model preset by name (`configs/models/NAME.yaml` here wins over the built-in one)
    /// or a path to a preset YAML file.
    pub fn preset(&self, name_or_path: &str) -> Result<Preset, ModelError> {
        if name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml") {
            return Preset::from_yaml_file(&self.root.join(name_or_path));
        }
        match self.file(&format!("configs/models/{name_or_path}.yaml")) {
            Some(path) => Preset::from_yaml_file(&path),
            None => Preset::builtin(name_or_path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_files_win_over_the_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::at(dir.path());
        assert_eq!(ws.prompt_template().unwrap(), PromptTemplate::default());
        assert_eq!(
            ws.trainer_defaults().unwrap(),
            TrainConfig::builtin().unwrap()
        );
        std::fs::create_dir_all(dir.path().join("configs/models")).unwrap();
        std::fs::write(dir.path().join("configs/prompt.txt"), "Q: {question}").unwrap();
        std::fs::write(
            dir.path().join("configs/trainer.yaml"),
            "mode: nsr\nsubset_size: 8\nnum_epochs: 1\nnum_generations: 2\nbatch_size: 2\nlearning_rate: 1.0e-5\nlr_scheduler: constant\nwarmup_steps: 0\nweight_decay: 0.0\nmax_grad_norm: 1.0\nreward_threshold: 0.5\nlambda_psr: 0.1\nbeta: 0.0\nepsilon: 0.2\nloss_type: token_mean\ntemperature: 1.0\ntop_p: 1.0\nmax_completion_length: 16\nseed: 1\nsave_steps: 5\nsave_total_limit: 1\nrewards: [{name: accuracy}]\n",
        )
        .unwrap();
        assert_eq!(ws.prompt_template().unwrap().text(), "Q: {question}");
        assert_eq!(ws.trainer_defaults().unwrap().subset_size, 8);
        let tiny = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/models/tiny.yaml"
        ))
        .unwrap();
        std::fs::write(
            dir.path().join("configs/models/tiny.yaml"),
            tiny.replace("num_hidden_layers: 4", "num_hidden_layers: 2"),
        )
        .unwrap();
        assert_eq!(ws.preset("tiny").unwrap().num_hidden_layers, 2);
        assert_eq!(Preset::builtin("tiny").unwrap().num_hidden_layers, 4);
    }
}
