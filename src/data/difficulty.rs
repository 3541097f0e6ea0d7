//! The generator's difficulty knob: how many rows and series a chart has and how large its
//! numbers are. RL helps most on data at the edge of the model's competence (Zhang, Neubig &
//! Yue 2025), so the same question types come in three sizes of arithmetic.

use serde::{Deserialize, Serialize};

/// How hard the synthetic charts are. Every level asks the same question types; only the
/// arithmetic grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// 3–4 rows, at most 2 series, whole numbers below 100. The default: the tiny model's
    /// edge of competence after its warm start.
    #[default]
    Easy,
    /// 3–5 rows, at most 2 series, numbers below 1,000 with the domain's decimals.
    Medium,
    /// 3–6 rows, at most 3 series, the domain's full range (up to thousands) and decimals.
    Hard,
}

/// What a level means for one chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Shape {
    pub max_rows: usize,
    pub max_series: usize,
    /// Values are scaled into `(-limit, limit)`; `None` keeps the domain's range.
    pub limit: Option<f64>,
    /// Round every value to a whole number.
    pub whole: bool,
}

impl Difficulty {
    pub const ALL: [Difficulty; 3] = [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard];

    pub fn name(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    pub(super) fn shape(self) -> Shape {
        match self {
            Difficulty::Easy => Shape {
                max_rows: 4,
                max_series: 2,
                limit: Some(100.0),
                whole: true,
            },
            Difficulty::Medium => Shape {
                max_rows: 5,
                max_series: 2,
                limit: Some(1000.0),
                whole: false,
            },
            Difficulty::Hard => Shape {
                max_rows: 6,
                max_series: 3,
                limit: None,
                whole: false,
            },
        }
    }
}

impl std::fmt::Display for Difficulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Difficulty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| format!("unknown difficulty `{s}` (use easy, medium or hard)"))
    }
}

impl Shape {
    /// The domain's value range `(lo, hi)` scaled so no value reaches the level's limit.
    pub fn range(&self, (lo, hi): (f64, f64)) -> (f64, f64) {
        let Some(limit) = self.limit else {
            return (lo, hi);
        };
        let largest = lo.abs().max(hi.abs());
        let scale = if largest >= limit {
            (limit - 1.0) / largest
        } else {
            1.0
        };
        (lo * scale, hi * scale)
    }

    pub fn decimals(&self, domain: i32) -> i32 {
        if self.whole {
            0
        } else {
            domain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_scale_ranges_under_their_limit() {
        for d in Difficulty::ALL {
            assert_eq!(d.name().parse::<Difficulty>(), Ok(d));
        }
        assert!("extreme".parse::<Difficulty>().is_err());
        let easy = Difficulty::Easy.shape();
        let (lo, hi) = easy.range((50.0, 2000.0));
        assert!(hi < 100.0 && lo > 0.0 && (hi / lo - 40.0).abs() < 1e-9);
        assert_eq!(easy.range((0.0, 60.0)), (0.0, 60.0));
        assert_eq!(Difficulty::Hard.shape().range((5.0, 3000.0)), (5.0, 3000.0));
        assert_eq!(easy.decimals(1), 0);
        assert_eq!(Difficulty::Medium.shape().decimals(1), 1);
    }
}
