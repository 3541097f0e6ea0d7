//! The offline chart-QA generator.
//!
//! Sample `i` of a split depends only on `(seed, split, i)`: its RNG is seeded from those three
//! numbers alone, so a 100-sample set is a prefix of the 1K set, which is a prefix of the 34K
//! set, and any sample can be regenerated on its own. The test split draws from a separate
//! seed stream. Every gold answer and reasoning trace is computed from the chart's numbers.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::chart::{format_number, Chart, ChartKind, Sample, Series};

/// Which part of the synthetic distribution to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

/// Every question type the generator asks.
pub const QUESTION_TYPES: [&str; 13] = [
    "lookup",
    "max_label",
    "min_label",
    "max_value",
    "min_value",
    "difference",
    "sum",
    "average",
    "ratio",
    "share",
    "count_above",
    "trend",
    "compare_series",
];

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

/// A deterministic stream of samples for one `(split, seed)`.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    pub split: Split,
    pub seed: u64,
}

impl Generator {
    pub fn new(split: Split, seed: u64) -> Self {
        Self { split, seed }
    }

    /// Sample `i`; depends on `(seed, split, i)` only.
    pub fn sample(&self, i: usize) -> Sample {
        let split_tag = match self.split {
            Split::Train => 0x7472_6169_6e00_0000u64,
            Split::Test => 0x7465_7374_0000_0000u64,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(self.seed ^ split_tag) ^ i as u64));
        // The question type is drawn first, so types are balanced. A type may not fit a chart
        // (a trend needs a line, a ratio positive values): draw charts from the same stream
        // until one fits, falling back to a lookup, which every chart supports.
        let qtype = *QUESTION_TYPES.choose(&mut rng).unwrap_or(&"lookup");
        let make = |chart: Chart, qtype: &str, (question, answer, reasoning): Qa| Sample {
            id: format!("{}-{}-{i}", self.split.name(), self.seed),
            chart,
            question,
            answer,
            question_type: qtype.to_string(),
            reasoning,
        };
        for _ in 0..255 {
            let chart = draw_chart(&mut rng);
            if let Some(qa) = ask(&chart, qtype, &mut rng) {
                return make(chart, qtype, qa);
            }
        }
        let chart = draw_chart(&mut rng);
        let qa = lookup(&chart, &mut rng);
        make(chart, "lookup", qa)
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

fn draw_chart(rng: &mut ChaCha8Rng) -> Chart {
    let domain = DOMAINS.choose(rng).unwrap_or(&DOMAINS[0]);
    let n = rng.random_range(3..=6.min(domain.labels.len()));
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
    let n_series = match kind {
        ChartKind::GroupedBar => rng.random_range(2..=domain.series.len().min(3)),
        ChartKind::Line => rng.random_range(1..=domain.series.len().min(3)),
        _ => 1,
    };
    let mut names: Vec<&str> = domain.series.to_vec();
    names.shuffle(rng);
    let (lo, hi) = domain.range;
    let series = names[..n_series]
        .iter()
        .map(|name| Series {
            name: if n_series == 1 {
                capitalise(domain.measure)
            } else {
                name.to_string()
            },
            values: (0..n)
                .map(|_| round_to(rng.random_range(lo..hi), domain.decimals))
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
        to_percent_shares(&mut chart);
    }
    chart
}

/// A pie shows shares: rescale the single series to percentages (one decimal) summing to ~100.
fn to_percent_shares(chart: &mut Chart) {
    let s = &mut chart.series[0];
    let total: f64 = s.values.iter().sum();
    for v in &mut s.values {
        *v = round_to(*v / total * 100.0, 1).max(0.1);
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

/// The words a question uses for the measure of series `s`: "Acme revenue", "revenue".
fn measure_of(chart: &Chart, s: usize) -> String {
    let measure = chart.y_label.to_lowercase();
    if chart.series.len() > 1 {
        format!("{} {measure}", chart.series[s].name)
    } else {
        measure
    }
}

fn plural_of(chart: &Chart) -> String {
    DOMAINS
        .iter()
        .find(|d| d.x_label == chart.x_label)
        .map(|d| d.x_plural.to_string())
        .unwrap_or_else(|| format!("{}s", chart.x_label.to_lowercase()))
}

/// The index of the single largest (or smallest) value, `None` on a tie.
fn unique_extreme(values: &[f64], largest: bool) -> Option<usize> {
    let pick = |a: f64, b: f64| if largest { a > b } else { a < b };
    let best = (0..values.len()).reduce(|b, i| if pick(values[i], values[b]) { i } else { b })?;
    let ties = values.iter().filter(|&&v| v == values[best]).count();
    (ties == 1).then_some(best)
}

type Qa = (String, String, String);

/// "What is the X of L?": fits every chart.
fn lookup(chart: &Chart, rng: &mut ChaCha8Rng) -> Qa {
    let s = rng.random_range(0..chart.series.len());
    let i = rng.random_range(0..chart.labels.len());
    let v = format_number(chart.series[s].values[i]);
    let label = &chart.labels[i];
    (
        format!("What is the {} of {label}?", measure_of(chart, s)),
        v.clone(),
        format!("Step 1: The row for {label} shows {v}."),
    )
}

/// Builds a question of `qtype` about `chart`: (question, answer, reasoning), or `None` when
/// the type does not fit this chart.
fn ask(chart: &Chart, qtype: &str, rng: &mut ChaCha8Rng) -> Option<Qa> {
    let s = rng.random_range(0..chart.series.len());
    let vals = &chart.series[s].values;
    let labels = &chart.labels;
    let m = measure_of(chart, s);
    let x = chart.x_label.to_lowercase();
    let n = labels.len();
    let f = format_number;
    let listing = || {
        labels
            .iter()
            .zip(vals)
            .map(|(l, v)| format!("{l} {}", f(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let two = |rng: &mut ChaCha8Rng| {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(rng);
        (idx[0], idx[1])
    };
    match qtype {
        "lookup" => Some(lookup(chart, rng)),
        "max_label" | "min_label" => {
            let largest = qtype == "max_label";
            let i = unique_extreme(vals, largest)?;
            let word = if largest { "highest" } else { "lowest" };
            Some((
                format!("Which {x} has the {word} {m}?"),
                labels[i].clone(),
                format!(
                    "Step 1: The values are {}.\nStep 2: The {word} is {} ({}).",
                    listing(),
                    f(vals[i]),
                    labels[i]
                ),
            ))
        }
        "max_value" | "min_value" => {
            let largest = qtype == "max_value";
            let i = unique_extreme(vals, largest)?;
            let word = if largest { "highest" } else { "lowest" };
            Some((
                format!("What is the {word} {m} in the chart?"),
                f(vals[i]),
                format!(
                    "Step 1: The values are {}.\nStep 2: The {word} is {}.",
                    listing(),
                    f(vals[i])
                ),
            ))
        }
        "difference" => {
            let (i, j) = two(rng);
            let (a, b) = (vals[i], vals[j]);
            let (hi_i, lo_i) = if a >= b { (i, j) } else { (j, i) };
            let d = (a - b).abs();
            Some((
                format!(
                    "What is the difference in {m} between {} and {}?",
                    labels[i], labels[j]
                ),
                f(d),
                format!(
                    "Step 1: {} is {} and {} is {}.\nStep 2: {} - {} = {}.",
                    labels[i],
                    f(a),
                    labels[j],
                    f(b),
                    f(vals[hi_i]),
                    f(vals[lo_i]),
                    f(d)
                ),
            ))
        }
        "sum" | "average" => {
            let total: f64 = vals.iter().sum();
            let terms = vals.iter().map(|v| f(*v)).collect::<Vec<_>>().join(" + ");
            let plural = plural_of(chart);
            if qtype == "sum" {
                Some((
                    format!("What is the total {m} of all {plural}?"),
                    f(total),
                    format!("Step 1: {terms} = {}.", f(total)),
                ))
            } else {
                let avg = total / n as f64;
                Some((
                    format!("What is the average {m} across the {plural}?"),
                    f(avg),
                    format!(
                        "Step 1: {terms} = {}.\nStep 2: {} / {n} = {}.",
                        f(total),
                        f(total),
                        f(avg)
                    ),
                ))
            }
        }
        "ratio" => {
            let (i, j) = two(rng);
            let (a, b) = (vals[i], vals[j]);
            if a <= 0.0 || b <= 0.0 {
                return None;
            }
            let r = a / b;
            Some((
                format!(
                    "What is the ratio of the {m} of {} to that of {}?",
                    labels[i], labels[j]
                ),
                f(r),
                format!(
                    "Step 1: {} is {} and {} is {}.\nStep 2: {} / {} = {}.",
                    labels[i],
                    f(a),
                    labels[j],
                    f(b),
                    f(a),
                    f(b),
                    f(r)
                ),
            ))
        }
        "share" => {
            if vals.iter().any(|v| *v <= 0.0) || chart.kind == ChartKind::Pie {
                return None;
            }
            let i = rng.random_range(0..n);
            let total: f64 = vals.iter().sum();
            let p = vals[i] / total * 100.0;
            let terms = vals.iter().map(|v| f(*v)).collect::<Vec<_>>().join(" + ");
            Some((
                format!(
                    "What percentage of the total {m} does {} account for?",
                    labels[i]
                ),
                f(p),
                format!(
                    "Step 1: {terms} = {}.\nStep 2: {} / {} * 100 = {}.",
                    f(total),
                    f(vals[i]),
                    f(total),
                    f(p)
                ),
            ))
        }
        "count_above" => {
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let t = round_to(rng.random_range(lo..=hi), 0);
            if vals.iter().any(|v| (*v - t).abs() < 1e-9) {
                return None;
            }
            let above: Vec<String> = labels
                .iter()
                .zip(vals)
                .filter(|(_, v)| **v > t)
                .map(|(l, v)| format!("{l} {}", f(*v)))
                .collect();
            let listed = if above.is_empty() {
                "none".to_string()
            } else {
                above.join(", ")
            };
            Some((
                format!("How many {} have a {m} above {}?", plural_of(chart), f(t)),
                above.len().to_string(),
                format!(
                    "Step 1: Above {}: {listed}.\nStep 2: That is {}.",
                    f(t),
                    above.len()
                ),
            ))
        }
        "trend" => {
            if chart.kind != ChartKind::Line || vals[0] == vals[n - 1] {
                return None;
            }
            let up = vals[n - 1] > vals[0];
            let word = if up { "increase" } else { "decrease" };
            let cmp = if up { ">" } else { "<" };
            Some((
                format!(
                    "Did the {m} increase or decrease from {} to {}?",
                    labels[0],
                    labels[n - 1]
                ),
                word.to_string(),
                format!(
                    "Step 1: {} is {} and {} is {}.\nStep 2: {} {cmp} {}, so it is a {word}.",
                    labels[0],
                    f(vals[0]),
                    labels[n - 1],
                    f(vals[n - 1]),
                    f(vals[n - 1]),
                    f(vals[0])
                ),
            ))
        }
        "compare_series" => {
            if chart.series.len() < 2 {
                return None;
            }
            let mut idx: Vec<usize> = (0..chart.series.len()).collect();
            idx.shuffle(rng);
            let (sa, sb) = (&chart.series[idx[0]], &chart.series[idx[1]]);
            let i = rng.random_range(0..n);
            let (a, b) = (sa.values[i], sb.values[i]);
            if a == b {
                return None;
            }
            let winner = if a > b { &sa.name } else { &sb.name };
            let cmp = if a > b { ">" } else { "<" };
            Some((
                format!(
                    "In {}, which has the higher {}: {} or {}?",
                    labels[i],
                    chart.y_label.to_lowercase(),
                    sa.name,
                    sb.name
                ),
                winner.clone(),
                format!(
                    "Step 1: {} is {} and {} is {}.\nStep 2: {} {cmp} {}, so {winner}.",
                    sa.name,
                    f(a),
                    sb.name,
                    f(b),
                    f(a),
                    f(b)
                ),
            ))
        }
        _ => None,
    }
}
