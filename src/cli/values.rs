//! The core's enums as clap values (`--mode nsr`, `--loss-type dr_grpo`, `--lr-scheduler
//! cosine`), with their names as the option files spell them. Here, so the core never knows
//! clap.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::train::{LossType, Mode, Schedule};

impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &Mode::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for LossType {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            LossType::TokenMean,
            LossType::SequenceMean,
            LossType::DrGrpo,
        ]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            LossType::TokenMean => "token_mean",
            LossType::SequenceMean => "sequence_mean",
            LossType::DrGrpo => "dr_grpo",
        }))
    }
}

impl ValueEnum for Schedule {
    fn value_variants<'a>() -> &'a [Self] {
        &[Schedule::Constant, Schedule::Linear, Schedule::Cosine]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clap name is the name the option files use (what serde writes).
    #[test]
    fn clap_names_are_the_serde_names() {
        fn check<T: ValueEnum + serde::Serialize>() {
            for v in T::value_variants() {
                let clap = v.to_possible_value().unwrap().get_name().to_string();
                assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(clap));
            }
        }
        check::<Mode>();
        check::<LossType>();
        check::<Schedule>();
    }
}
