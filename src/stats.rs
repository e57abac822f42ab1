//! Population statistics of the eligible pods' CPU, pure and numerically stable.
//!
//! The spread is the coefficient of variation, `stddev / mean`, with population
//! variance (we look at the whole fleet, not a sample of it). Variance uses Welford's
//! online algorithm (Welford 1962; Knuth, TAOCP vol. 2, 4.2.2), which does not lose
//! precision when the values are large and close together the way `E[x²] − E[x]²` does.

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    /// Cores.
    pub mean: f64,
    /// Cores².
    pub variance: f64,
    /// Cores.
    pub stddev: f64,
    /// `stddev / mean`; 0 when the mean is 0 (an idle fleet is not unbalanced).
    pub spread: f64,
}

/// Statistics of `values`; `None` for an empty slice. The caller passes finite values
/// only; a non-finite value would be a bug upstream, and is skipped rather than allowed
/// to turn every number into NaN.
pub fn describe(values: &[f64]) -> Option<Stats> {
    let mut n = 0usize;
    let mut mean = 0.0f64;
    let mut m2 = 0.0f64;
    for &x in values.iter().filter(|x| x.is_finite()) {
        n += 1;
        let delta = x - mean;
        mean += delta / n as f64;
        m2 += delta * (x - mean);
    }
    if n == 0 {
        return None;
    }
    let variance = (m2 / n as f64).max(0.0);
    let stddev = variance.sqrt();
    let spread = if mean > 0.0 { stddev / mean } else { 0.0 };
    // Overflow to infinity is the one way left to a non-finite number (values near
    // f64::MAX); report such a fleet as degenerate rather than pass NaN on.
    if !(mean.is_finite() && variance.is_finite() && spread.is_finite()) {
        return Some(Stats {
            n,
            mean: if mean.is_finite() { mean } else { 0.0 },
            variance: 0.0,
            stddev: 0.0,
            spread: 0.0,
        });
    }
    Some(Stats {
        n,
        mean,
        variance,
        stddev,
        spread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
    }

    #[test]
    fn empty_has_no_statistics() {
        assert_eq!(describe(&[]), None);
    }

    #[test]
    fn one_value_has_no_spread() {
        assert_eq!(
            describe(&[1.5]),
            Some(Stats {
                n: 1,
                mean: 1.5,
                variance: 0.0,
                stddev: 0.0,
                spread: 0.0
            })
        );
    }

    #[test]
    fn equal_values_have_no_spread() {
        let s = describe(&[0.7; 12]).unwrap();
        assert!(close(s.mean, 0.7, 1e-15));
        assert!(s.variance.abs() < 1e-30 && s.spread.abs() < 1e-15, "{s:?}");
    }

    #[test]
    fn a_textbook_example() {
        // Population variance of 2,4,4,4,5,5,7,9 is 4 (stddev 2, mean 5).
        let s = describe(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!((s.n, s.mean, s.variance, s.stddev), (8, 5.0, 4.0, 2.0));
        assert!(close(s.spread, 0.4, 1e-15));
    }

    #[test]
    fn huge_magnitudes_keep_their_precision() {
        // The naive E[x²]−E[x]² gives 0 or garbage here; the true variance is 2/3.
        let s = describe(&[1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0]).unwrap();
        assert!(close(s.variance, 2.0 / 3.0, 1e-6), "{s:?}");
    }

    #[test]
    fn tiny_magnitudes_keep_their_precision() {
        let s = describe(&[1e-12, 2e-12, 3e-12]).unwrap();
        assert!(close(s.mean, 2e-12, 1e-12));
        assert!(close(s.spread, (2.0f64 / 3.0).sqrt() / 2.0, 1e-9), "{s:?}");
    }

    #[test]
    fn an_idle_fleet_has_zero_spread_not_nan() {
        assert_eq!(describe(&[0.0, 0.0, 0.0]).unwrap().spread, 0.0);
    }

    #[test]
    fn no_nan_leaves_even_at_the_edges_of_f64() {
        for values in [vec![f64::MAX, f64::MAX], vec![f64::MAX, 0.0], vec![f64::NAN, 1.0]] {
            let s = describe(&values).expect("a finite value is there");
            for x in [s.mean, s.variance, s.stddev, s.spread] {
                assert!(x.is_finite(), "{values:?} gave {s:?}");
            }
        }
        // Non-finite values are skipped: nothing is left to describe.
        assert_eq!(describe(&[f64::INFINITY, f64::NAN]), None);
        assert_eq!(describe(&[f64::NAN, 1.0]).map(|s| (s.n, s.mean)), Some((1, 1.0)));
    }
}
