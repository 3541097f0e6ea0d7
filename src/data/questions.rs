//! The generator's questions: one function per question type builds the question, its gold
//! answer and a step-by-step trace from a chart, or declines when the type does not fit the
//! chart (a trend needs a line, a ratio positive values, a maximum a unique one).
//!
//! Every step of a trace does one operation (Nye et al. 2021; Lee et al. 2023): a total is a
//! running sum, two numbers at a time, a percentage multiplies before it divides, and a
//! difference takes the smaller number away one place value at a time ("72 - 30 = 42.", then
//! "42 - 8 = 34."), so each step borrows at most once. A value
//! found by its label is read by copying its table row first ("Row | July | 2 |: July is 2."):
//! the copy is what an induction head does, where "The row for July shows 2" asks a small
//! model to jump from a label to a value it never learnt to find (the tiny base answered such
//! lookups at chance).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::chart::{format_number as f, Chart, ChartKind};
use super::qtype::QuestionType;

/// `(question, answer, reasoning)`.
pub(super) type Qa = (String, String, String);

/// What every question about one series of a chart refers to.
struct Asked<'a> {
    chart: &'a Chart,
    /// The series asked about, and its values.
    s: usize,
    vals: &'a [f64],
    labels: &'a [String],
    /// The measure's words: "Acme revenue", "revenue".
    measure: String,
    /// The label column's name in lower case: "year".
    x: String,
    n: usize,
}

impl Asked<'_> {
    /// "Brazil 12.5, Canada 40".
    fn listing(&self) -> String {
        self.labels
            .iter()
            .zip(self.vals)
            .map(|(l, v)| format!("{l} {}", f(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Two different label positions.
    fn two(&self, rng: &mut ChaCha8Rng) -> (usize, usize) {
        let mut idx: Vec<usize> = (0..self.n).collect();
        idx.shuffle(rng);
        (idx[0], idx[1])
    }
}

/// A trace of numbered steps, one operation each.
#[derive(Default)]
struct Steps(Vec<String>);

impl Steps {
    fn push(&mut self, step: String) {
        self.0.push(step);
    }

    /// Adds `vals` one at a time ("12 + 40 = 52.", then "52 + 3 = 55.") and returns the total
    /// as written, so later steps continue from the number the trace shows.
    fn running_sum(&mut self, vals: &[f64]) -> f64 {
        let mut acc = vals.first().copied().unwrap_or(0.0);
        for v in vals.get(1..).unwrap_or_default() {
            let next = written(acc + v);
            self.push(format!("{} + {} = {}.", f(acc), f(*v), f(next)));
            acc = next;
        }
        acc
    }

    /// Takes `lo` away from `hi` one place value of `lo` at a time, largest first ("72 - 30 =
    /// 42.", then "42 - 8 = 34."), and returns the difference as written. Learning `72 - 38`
    /// in one step asks a small model for a table of every pair of numbers; a round number
    /// changes one digit, and a single digit borrows at most once.
    fn subtract(&mut self, hi: f64, lo: f64) -> f64 {
        let mut acc = hi;
        for part in place_values(lo) {
            let next = written(acc - part);
            self.push(format!("{} - {} = {}.", f(acc), f(part), f(next)));
            acc = next;
        }
        acc
    }

    /// Copies row `i` of the table, then names series `s`'s value in it, and returns the value.
    fn read(&mut self, chart: &Chart, i: usize, s: usize) -> f64 {
        let v = chart.series[s].values[i];
        let label = &chart.labels[i];
        let what = if chart.series.len() > 1 {
            format!("{label} {}", chart.series[s].name)
        } else {
            label.clone()
        };
        self.push(format!("Row {}: {what} is {}.", chart.row(i), f(v)));
        v
    }

    fn text(&self) -> String {
        self.0
            .iter()
            .enumerate()
            .map(|(i, s)| format!("Step {}: {s}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The non-zero place values of `v` as [`f`] writes it, largest first: 345.2 is 300, 40, 5
/// and 0.2. A negative number or zero is itself.
fn place_values(v: f64) -> Vec<f64> {
    let text = f(v);
    if v <= 0.0 {
        return vec![written(v)];
    }
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digit = |c: char| c.to_digit(10).map_or(0.0, f64::from);
    let wholes = whole.chars().enumerate().map(|(k, c)| {
        let power = (whole.len() - 1 - k) as i32;
        digit(c) * 10f64.powi(power)
    });
    let fractions = frac
        .chars()
        .enumerate()
        .map(|(k, c)| digit(c) / 10f64.powi(k as i32 + 1));
    wholes.chain(fractions).filter(|p| *p != 0.0).collect()
}

/// `v` as [`f`] writes it (two decimals at most), read back.
fn written(v: f64) -> f64 {
    f(v).parse().unwrap_or(v)
}

/// Builds a question of type `t` about `chart`, or `None` when the type does not fit it.
pub(super) fn ask(chart: &Chart, t: QuestionType, rng: &mut ChaCha8Rng) -> Option<Qa> {
    let s = rng.random_range(0..chart.series.len());
    let q = Asked {
        chart,
        s,
        vals: &chart.series[s].values,
        labels: &chart.labels,
        measure: measure_of(chart, s),
        x: chart.x_label.to_lowercase(),
        n: chart.labels.len(),
    };
    use QuestionType::*;
    match t {
        Lookup => Some(lookup(chart, rng)),
        MaxLabel => extreme_label(&q, true),
        MinLabel => extreme_label(&q, false),
        MaxValue => extreme_value(&q, true),
        MinValue => extreme_value(&q, false),
        Difference => difference(&q, rng),
        Sum => sum(&q),
        Average => average(&q),
        Ratio => ratio(&q, rng),
        Share => share(&q, rng),
        CountAbove => count_above(&q, rng),
        Trend => trend(&q),
        CompareSeries => compare_series(chart, rng),
    }
}

/// "What is the X of L?": fits every chart.
fn lookup(chart: &Chart, rng: &mut ChaCha8Rng) -> Qa {
    let s = rng.random_range(0..chart.series.len());
    let i = rng.random_range(0..chart.labels.len());
    let mut steps = Steps::default();
    let v = steps.read(chart, i, s);
    (
        format!(
            "What is the {} of {}?",
            measure_of(chart, s),
            chart.labels[i]
        ),
        f(v),
        steps.text(),
    )
}

fn extreme_label(q: &Asked, largest: bool) -> Option<Qa> {
    let i = unique_extreme(q.vals, largest)?;
    let word = if largest { "highest" } else { "lowest" };
    Some((
        format!("Which {} has the {word} {}?", q.x, q.measure),
        q.labels[i].clone(),
        format!(
            "Step 1: The values are {}.\nStep 2: The {word} is {} ({}).",
            q.listing(),
            f(q.vals[i]),
            q.labels[i]
        ),
    ))
}

fn extreme_value(q: &Asked, largest: bool) -> Option<Qa> {
    let i = unique_extreme(q.vals, largest)?;
    let word = if largest { "highest" } else { "lowest" };
    Some((
        format!("What is the {word} {} in the chart?", q.measure),
        f(q.vals[i]),
        format!(
            "Step 1: The values are {}.\nStep 2: The {word} is {}.",
            q.listing(),
            f(q.vals[i])
        ),
    ))
}

fn difference(q: &Asked, rng: &mut ChaCha8Rng) -> Option<Qa> {
    let (i, j) = q.two(rng);
    let mut steps = Steps::default();
    let (a, b) = (steps.read(q.chart, i, q.s), steps.read(q.chart, j, q.s));
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    let d = steps.subtract(hi, lo);
    Some((
        format!(
            "What is the difference in {} between {} and {}?",
            q.measure, q.labels[i], q.labels[j]
        ),
        f(d),
        steps.text(),
    ))
}

fn sum(q: &Asked) -> Option<Qa> {
    let mut steps = Steps::default();
    let total = steps.running_sum(q.vals);
    Some((
        format!(
            "What is the total {} of all {}?",
            q.measure,
            plural_of(q.chart)
        ),
        f(total),
        steps.text(),
    ))
}

fn average(q: &Asked) -> Option<Qa> {
    let mut steps = Steps::default();
    let total = steps.running_sum(q.vals);
    let avg = total / q.n as f64;
    steps.push(format!("{} / {} = {}.", f(total), q.n, f(avg)));
    Some((
        format!(
            "What is the average {} across the {}?",
            q.measure,
            plural_of(q.chart)
        ),
        f(avg),
        steps.text(),
    ))
}

fn ratio(q: &Asked, rng: &mut ChaCha8Rng) -> Option<Qa> {
    let (i, j) = q.two(rng);
    let (a, b) = (q.vals[i], q.vals[j]);
    if a <= 0.0 || b <= 0.0 {
        return None;
    }
    let r = a / b;
    let mut steps = Steps::default();
    steps.read(q.chart, i, q.s);
    steps.read(q.chart, j, q.s);
    steps.push(format!("{} / {} = {}.", f(a), f(b), f(r)));
    Some((
        format!(
            "What is the ratio of the {} of {} to that of {}?",
            q.measure, q.labels[i], q.labels[j]
        ),
        f(r),
        steps.text(),
    ))
}

fn share(q: &Asked, rng: &mut ChaCha8Rng) -> Option<Qa> {
    if q.vals.iter().any(|v| *v <= 0.0) || q.chart.kind == ChartKind::Pie {
        return None;
    }
    let i = rng.random_range(0..q.n);
    let mut steps = Steps::default();
    let total = steps.running_sum(q.vals);
    let v = steps.read(q.chart, i, q.s);
    let hundred = written(v * 100.0);
    let p = hundred / total;
    steps.push(format!("{} * 100 = {}.", f(v), f(hundred)));
    steps.push(format!("{} / {} = {}.", f(hundred), f(total), f(p)));
    Some((
        format!(
            "What percentage of the total {} does {} account for?",
            q.measure, q.labels[i]
        ),
        f(p),
        steps.text(),
    ))
}

fn count_above(q: &Asked, rng: &mut ChaCha8Rng) -> Option<Qa> {
    let lo = q.vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = q.vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let t = rng.random_range(lo..=hi).round();
    if q.vals.iter().any(|v| (*v - t).abs() < 1e-9) {
        return None;
    }
    let above: Vec<String> = q
        .labels
        .iter()
        .zip(q.vals)
        .filter(|(_, v)| **v > t)
        .map(|(l, v)| format!("{l} {}", f(*v)))
        .collect();
    let listed = if above.is_empty() {
        "none".to_string()
    } else {
        above.join(", ")
    };
    Some((
        format!(
            "How many {} have a {} above {}?",
            plural_of(q.chart),
            q.measure,
            f(t)
        ),
        above.len().to_string(),
        format!(
            "Step 1: Above {}: {listed}.\nStep 2: That is {}.",
            f(t),
            above.len()
        ),
    ))
}

fn trend(q: &Asked) -> Option<Qa> {
    let (first, last) = (q.vals[0], q.vals[q.n - 1]);
    if q.chart.kind != ChartKind::Line || first == last {
        return None;
    }
    let up = last > first;
    let word = if up { "increase" } else { "decrease" };
    let article = if up { "an" } else { "a" };
    let cmp = if up { ">" } else { "<" };
    let mut steps = Steps::default();
    steps.read(q.chart, 0, q.s);
    steps.read(q.chart, q.n - 1, q.s);
    steps.push(format!(
        "{} {cmp} {}, so it is {article} {word}.",
        f(last),
        f(first)
    ));
    Some((
        format!(
            "Did the {} increase or decrease from {} to {}?",
            q.measure,
            q.labels[0],
            q.labels[q.n - 1]
        ),
        word.to_string(),
        steps.text(),
    ))
}

fn compare_series(chart: &Chart, rng: &mut ChaCha8Rng) -> Option<Qa> {
    if chart.series.len() < 2 {
        return None;
    }
    let mut idx: Vec<usize> = (0..chart.series.len()).collect();
    idx.shuffle(rng);
    let (sa, sb) = (&chart.series[idx[0]], &chart.series[idx[1]]);
    let i = rng.random_range(0..chart.labels.len());
    let (a, b) = (sa.values[i], sb.values[i]);
    if a == b {
        return None;
    }
    let winner = if a > b { &sa.name } else { &sb.name };
    let cmp = if a > b { ">" } else { "<" };
    Some((
        format!(
            "In {}, which has the higher {}: {} or {}?",
            chart.labels[i],
            chart.y_label.to_lowercase(),
            sa.name,
            sb.name
        ),
        winner.clone(),
        format!(
            "Step 1: Row {}: {} is {} and {} is {}.\nStep 2: {} {cmp} {}, so {winner}.",
            chart.row(i),
            sa.name,
            f(a),
            sb.name,
            f(b),
            f(a),
            f(b)
        ),
    ))
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
    super::synthetic::plural_of(&chart.x_label)
}

/// The index of the single largest (or smallest) value, `None` on a tie.
fn unique_extreme(values: &[f64], largest: bool) -> Option<usize> {
    let pick = |a: f64, b: f64| if largest { a > b } else { a < b };
    let best = (0..values.len()).reduce(|b, i| if pick(values[i], values[b]) { i } else { b })?;
    let ties = values.iter().filter(|&&v| v == values[best]).count();
    (ties == 1).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_values_split_a_number_largest_first() {
        assert_eq!(place_values(61.0), [60.0, 1.0]);
        assert_eq!(place_values(60.0), [60.0]);
        assert_eq!(place_values(345.25), [300.0, 40.0, 5.0, 0.2, 0.05]);
        assert_eq!(place_values(0.0), [0.0]);
        assert_eq!(place_values(-4.5), [-4.5]);
    }

    #[test]
    fn a_difference_takes_one_place_value_away_per_step() {
        let mut steps = Steps::default();
        assert_eq!(steps.subtract(72.0, 38.0), 34.0);
        assert_eq!(steps.0, ["72 - 30 = 42.", "42 - 8 = 34."]);
        let mut steps = Steps::default();
        assert_eq!(steps.subtract(100.5, 0.75), 99.75);
        assert_eq!(steps.0, ["100.5 - 0.7 = 99.8.", "99.8 - 0.05 = 99.75."]);
    }
}
