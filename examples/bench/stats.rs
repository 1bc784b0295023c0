//! Statistics: latency distributions kept in HDR histograms (`hdrhistogram`), the median of a
//! handful of repeat runs, and how the tables print times and counts.

use hdrhistogram::Histogram;

/// A distribution of non-negative values in one unit (µs, ms), kept to 1/1000 of that unit
/// with 3 significant digits; a negative value counts as 0.
pub struct Dist(Histogram<u64>);

/// Recorded values are whole thousandths of the caller's unit.
const SCALE: f64 = 1000.0;

impl Dist {
    pub fn new() -> Dist {
        Dist(Histogram::new(3).expect("3 significant digits"))
    }

    pub fn record(&mut self, x: f64) {
        let v = (x.max(0.0) * SCALE).round() as u64;
        self.0.record(v).expect("the histogram grows as needed");
    }

    /// Every sample of `other` too.
    pub fn add(&mut self, other: &Dist) {
        self.0.add(&other.0).expect("the histogram grows as needed");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0.5: the median); NaN when empty.
    pub fn q(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / SCALE
    }

    pub fn max(&self) -> f64 {
        self.q(1.0)
    }

    /// `steps + 1` points (value, fraction of samples at or below it) of the cumulative
    /// distribution, at evenly spaced quantiles; none when empty.
    pub fn cdf(&self, steps: usize) -> Vec<(f64, f64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        (0..=steps)
            .map(|k| {
                let q = k as f64 / steps as f64;
                (self.q(q), q)
            })
            .collect()
    }
}

impl FromIterator<f64> for Dist {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Dist {
        let mut d = Dist::new();
        for x in iter {
            d.record(x);
        }
        d
    }
}

/// The median of a few figures (repeat runs of one measurement); the upper one of an even count.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * 0.5).round() as usize]
}

pub fn fmt_us(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

pub fn fmt_count(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}
