//! The offline chart-QA generator.
//!
//! Sample `i` of a split depends only on `(seed, split, i)`: its RNG is seeded from those three
//! numbers alone, so a 100-sample set is a prefix of the 1K set, which is a prefix of the 34K
//! set, and any sample can be regenerated on its own.
//!
//! The three splits never share a (chart, question) pair, whatever their seeds: every pair
//! belongs to exactly one split by a hash of its content, and a split redraws any pair that
//! is not its own. So the warm start's data (`warmup`), the RL data (`train`) and the held-out
//! questions (`test`) are disjoint by construction, not by luck. Every gold answer and
//! reasoning trace is computed from the chart's numbers.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::chart::{Chart, ChartKind, Sample, Series};
use super::difficulty::{Difficulty, Shape};
use super::qtype::QuestionType;
use super::questions::{ask, Qa};

/// The size of the full RL training set (the 34K of the sweep); a script's
/// `chart_data()` defaults to it.
pub const FULL_TRAIN_SIZE: usize = 34_000;

/// Which part of the synthetic distribution to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The RL data: the nested 100 / 1K / 10K / 34K subsets.
    Train,
    /// Held-out questions for evaluation.
    Test,
    /// The supervised warm start's data, never used for RL or evaluation.
    Warmup,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Test, Split::Warmup];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Warmup => "warmup",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Mixed into the seed, so each split has its own random stream.
    fn tag(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6e00_0000,
            Split::Test => 0x7465_7374_0000_0000,
            Split::Warmup => 0x7761_726d_7570_0000,
        }
    }

    /// The content class (see [`partition`]) whose pairs this split keeps.
    fn class(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Test => 1,
            Split::Warmup => 2,
        }
    }
}

/// The split a (chart, question) pair belongs to, as a class `0..3`: FNV-1a over the chart's
/// JSON and the question, so it depends on the content alone, never on a seed or index.
pub fn partition(chart: &Chart, question: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let json = serde_json::to_vec(chart).unwrap_or_default();
    for b in json.iter().chain([0u8].iter()).chain(question.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 3
}

/// How many charts a question type may try before the sample falls back to a lookup.
const TRIES: usize = 1000;

struct Domain {
    title: &'static str,
    x_label: &'static str,
    /// Plural noun for the labels, used in questions ("countries").
    x_plural: &'static str,
    measure: &'static str,
    unit: &'static str,
    labels: &'static [&'static str],
    /// Labels have a natural order (years, months): keep it, and allow line charts.
    ordered: bool,
    series: &'static [&'static str],
    range: (f64, f64),
    decimals: i32,
}

const YEARS: &[&str] = &[
    "2012", "2013", "2014", "2015", "2016", "2017", "2018", "2019", "2020", "2021", "2022", "2023",
];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const DOMAINS: &[Domain] = &[
    Domain {
        title: "Annual revenue",
        x_label: "Year",
        x_plural: "years",
        measure: "revenue",
        unit: "million USD",
        labels: YEARS,
        ordered: true,
        series: &["Acme", "Globex", "Initech", "Umbrella"],
        range: (10.0, 500.0),
        decimals: 1,
    },
    Domain {
        title: "Population by country",
        x_label: "Country",
        x_plural: "countries",
        measure: "population",
        unit: "million",
        labels: &[
            "Brazil", "Canada", "Egypt", "France", "Germany", "India", "Japan", "Kenya", "Mexico",
            "Peru", "Spain", "Vietnam",
        ],
        ordered: false,
        series: &["2000", "2010", "2020"],
        range: (2.0, 300.0),
        decimals: 1,
    },
    Domain {
        title: "Units sold by product",
        x_label: "Product",
        x_plural: "products",
        measure: "units sold",
        unit: "thousand",
        labels: &[
            "Laptops",
            "Tablets",
            "Phones",
            "Monitors",
            "Printers",
            "Cameras",
            "Speakers",
            "Routers",
            "Keyboards",
        ],
        ordered: false,
        series: &["Online", "In store"],
        range: (5.0, 900.0),
        decimals: 0,
    },
    Domain {
        title: "Average monthly temperature",
        x_label: "Month",
        x_plural: "months",
        measure: "temperature",
        unit: "°C",
        labels: MONTHS,
        ordered: true,
        series: &["Oslo", "Madrid", "Cairo"],
        range: (-12.0, 35.0),
        decimals: 1,
    },
    Domain {
        title: "Share of respondents by age group",
        x_label: "Age group",
        x_plural: "age groups",
        measure: "share of respondents",
        unit: "%",
        labels: &["18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
        ordered: true,
        series: &["Men", "Women"],
        range: (2.0, 60.0),
        decimals: 1,
    },
    Domain {
        title: "Budget by department",
        x_label: "Department",
        x_plural: "departments",
        measure: "budget",
        unit: "thousand USD",
        labels: &[
            "Sales",
            "Marketing",
            "Research",
            "Support",
            "Legal",
            "Finance",
            "Operations",
            "Design",
        ],
        ordered: false,
        series: &["Planned", "Actual"],
        range: (50.0, 2000.0),
        decimals: 0,
    },
    Domain {
        title: "Annual rainfall by city",
        x_label: "City",
        x_plural: "cities",
        measure: "rainfall",
        unit: "mm",
        labels: &[
            "Lima", "Dublin", "Mumbai", "Sydney", "Toronto", "Nairobi", "Seoul", "Lisbon", "Denver",
        ],
        ordered: false,
        series: &["Last year", "This year"],
        range: (10.0, 300.0),
        decimals: 0,
    },
    Domain {
        title: "Quarterly profit",
        x_label: "Quarter",
        x_plural: "quarters",
        measure: "profit",
        unit: "million USD",
        labels: &[
            "Q1 2021", "Q2 2021", "Q3 2021", "Q4 2021", "Q1 2022", "Q2 2022", "Q3 2022", "Q4 2022",
        ],
        ordered: true,
        series: &["North", "South", "West"],
        range: (-40.0, 200.0),
        decimals: 1,
    },
    Domain {
        title: "Wins per season",
        x_label: "Team",
        x_plural: "teams",
        measure: "wins",
        unit: "",
        labels: &[
            "Lions", "Tigers", "Bears", "Eagles", "Sharks", "Wolves", "Hawks", "Falcons",
        ],
        ordered: false,
        series: &["Home", "Away"],
        range: (0.0, 60.0),
        decimals: 0,
    },
    Domain {
        title: "Electricity generation by source",
        x_label: "Source",
        x_plural: "sources",
        measure: "generation",
        unit: "TWh",
        labels: &[
            "Coal", "Gas", "Nuclear", "Hydro", "Wind", "Solar", "Biomass",
        ],
        ordered: false,
        series: &["2015", "2025"],
        range: (5.0, 900.0),
        decimals: 0,
    },
    Domain {
        title: "Employment by sector",
        x_label: "Sector",
        x_plural: "sectors",
        measure: "share of employment",
        unit: "%",
        labels: &[
            "Agriculture",
            "Industry",
            "Construction",
            "Retail",
            "Transport",
            "Education",
            "Health",
        ],
        ordered: false,
        series: &["Urban", "Rural"],
        range: (1.0, 40.0),
        decimals: 1,
    },
    Domain {
        title: "Monthly active users by platform",
        x_label: "Platform",
        x_plural: "platforms",
        measure: "users",
        unit: "million",
        labels: &[
            "Chirp", "Pixgram", "Vidtube", "Linkup", "Snapbox", "Talkr", "Forumly",
        ],
        ordered: false,
        series: &["Mobile", "Desktop"],
        range: (10.0, 3000.0),
        decimals: 0,
    },
];

/// A deterministic stream of samples for one `(split, seed, difficulty)`.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    pub split: Split,
    pub seed: u64,
    pub difficulty: Difficulty,
}

impl Generator {
    /// The default difficulty's stream (see [`Difficulty`]).
    pub fn new(split: Split, seed: u64) -> Self {
        Self::with_difficulty(split, seed, Difficulty::default())
    }

    pub fn with_difficulty(split: Split, seed: u64, difficulty: Difficulty) -> Self {
        Self {
            split,
            seed,
            difficulty,
        }
    }

    /// Sample `i`; depends on `(seed, split, i)` only.
    pub fn sample(&self, i: usize) -> Sample {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(self.seed ^ self.split.tag()) ^ i as u64));
        // The question type is drawn first, so types are balanced. A type may not fit a chart
        // (a trend needs a line, a ratio positive values), and a pair may belong to another
        // split: draw charts from the same stream until one fits, falling back to a lookup,
        // which every chart supports, after `TRIES`.
        let wanted = *QuestionType::ALL
            .choose(&mut rng)
            .unwrap_or(&QuestionType::Lookup);
        let mut tries = 0;
        loop {
            let chart = draw_chart(&mut rng, self.difficulty.shape());
            let t = if tries < TRIES {
                wanted
            } else {
                QuestionType::Lookup
            };
            tries += 1;
            if let Some(qa) = ask(&chart, t, &mut rng) {
                if partition(&chart, &qa.0) == self.split.class() {
                    return self.make(i, chart, t, qa);
                }
            }
        }
    }

    fn make(
        &self,
        i: usize,
        chart: Chart,
        t: QuestionType,
        (question, answer, reasoning): Qa,
    ) -> Sample {
        Sample {
            id: format!("{}-{}-{i}", self.split.name(), self.seed),
            chart,
            question,
            answer,
            question_type: t.name().to_string(),
            answer_kind: Some(t.answer_kind()),
            reasoning,
        }
    }

    /// Samples `0..n`.
    pub fn take(&self, n: usize) -> impl Iterator<Item = Sample> + '_ {
        (0..n).map(move |i| self.sample(i))
    }
}

/// SplitMix64 finaliser: spreads `(seed, split, index)` over the RNG's seed space.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

fn draw_chart(rng: &mut ChaCha8Rng, shape: Shape) -> Chart {
    let domain = DOMAINS.choose(rng).unwrap_or(&DOMAINS[0]);
    let n = rng.random_range(3..=shape.max_rows.min(domain.labels.len()));
    let labels: Vec<String> = if domain.ordered {
        let start = rng.random_range(0..=domain.labels.len() - n);
        domain.labels[start..start + n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        let mut pool: Vec<&str> = domain.labels.to_vec();
        pool.shuffle(rng);
        pool[..n].iter().map(|s| s.to_string()).collect()
    };
    let all_positive = domain.range.0 > 0.0;
    let kind = match rng.random_range(0..10) {
        0..=3 => ChartKind::Bar,
        4..=5 => ChartKind::GroupedBar,
        6..=7 if domain.ordered => ChartKind::Line,
        8..=9 if all_positive => ChartKind::Pie,
        _ => ChartKind::Bar,
    };
    let most = domain.series.len().min(shape.max_series);
    let n_series = match kind {
        ChartKind::GroupedBar => rng.random_range(2..=most),
        ChartKind::Line => rng.random_range(1..=most),
        _ => 1,
    };
    let mut names: Vec<&str> = domain.series.to_vec();
    names.shuffle(rng);
    let (lo, hi) = shape.range(domain.range);
    let decimals = shape.decimals(domain.decimals);
    let series = names[..n_series]
        .iter()
        .map(|name| Series {
            name: if n_series == 1 {
                capitalise(domain.measure)
            } else {
                name.to_string()
            },
            values: (0..n)
                .map(|_| round_to(rng.random_range(lo..hi), decimals))
                .collect(),
        })
        .collect();
    let mut chart = Chart {
        title: domain.title.to_string(),
        kind,
        x_label: domain.x_label.to_string(),
        y_label: capitalise(domain.measure),
        unit: domain.unit.to_string(),
        labels,
        series,
    };
    if kind == ChartKind::Pie {
        to_percent_shares(&mut chart, if shape.whole { 0 } else { 1 });
    }
    chart
}

/// A pie shows shares: rescale the single series to percentages (`decimals` places) summing
/// to ~100.
fn to_percent_shares(chart: &mut Chart, decimals: i32) {
    let s = &mut chart.series[0];
    let total: f64 = s.values.iter().sum();
    let least = 10f64.powi(-decimals);
    for v in &mut s.values {
        *v = round_to(*v / total * 100.0, decimals).max(least);
    }
    chart.title = format!("{} (share of total)", chart.title);
    chart.unit = "%".to_string();
    chart.series[0].name = "Share".to_string();
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The plural noun for a label column (`Country` → "countries").
pub(super) fn plural_of(x_label: &str) -> String {
    DOMAINS
        .iter()
        .find(|d| d.x_label == x_label)
        .map(|d| d.x_plural.to_string())
        .unwrap_or_else(|| format!("{}s", x_label.to_lowercase()))
}
