//! `lambda gen`: a deterministic synthetic history.
//!
//! The same options and seed always give the same file, byte for byte. Customers follow a
//! Zipf-like skew (a few customers have most transactions, as in real shops); a fraction of
//! rows correct an earlier transaction by reusing its `id`, and a fraction of those delete
//! it instead; a fraction of rows can be malformed on purpose, to exercise dead letters.
//!
//! ```
//! use atelier_lambda::gen::{GenOptions, generate};
//! let mut out = Vec::new();
//! generate(&GenOptions { rows: 3, ..GenOptions::default() }, &mut out).unwrap();
//! assert_eq!(String::from_utf8(out).unwrap().lines().count(), 3);
//! ```

use std::io::Write;

use crate::amount::format_cents;
use crate::rng::Rng;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Number of rows.
    pub rows: u64,
    /// Number of distinct customers.
    pub customers: u64,
    /// Zipf exponent of the customer distribution (0 = uniform).
    pub skew: f64,
    /// Fraction of rows that reuse an earlier id (corrections and deletes).
    pub corrections: f64,
    /// Fraction of corrections that are deletes.
    pub deletes: f64,
    /// Fraction of rows that are malformed on purpose.
    pub bad: f64,
    /// Random seed.
    pub seed: u64,
    /// Prefix of the generated ids.
    pub id_prefix: String,
    /// At most this many distinct ids: once they are all issued, every row corrects or
    /// deletes one of them (a bounded key set, as a long soak needs). None: no bound.
    pub ids: Option<u64>,
    /// Write CSV instead of JSON lines.
    pub csv: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            rows: 100_000,
            customers: 10_000,
            skew: 1.1,
            corrections: 0.0,
            deletes: 0.1,
            bad: 0.0,
            seed: 1,
            id_prefix: "t".into(),
            ids: None,
            csv: false,
        }
    }
}

const CATEGORIES: [&str; 8] = ["books", "food", "games", "tools", "music", "garden", "sport", "health"];
/// 2025-01-01T00:00:00Z.
const START: i64 = 1_735_689_600;

/// The synthetic rows, one JSON line (or CSV row) at a time, without the newline.
pub struct Generator {
    options: GenOptions,
    rng: Rng,
    cumulative: Vec<f64>,
    issued: u64,
    produced: u64,
    header: bool,
}

impl Generator {
    /// A generator for `options`.
    pub fn new(options: &GenOptions) -> Self {
        let customers = options.customers.max(1);
        let cumulative = (1..=customers)
            .scan(0.0, |acc, k| {
                *acc += if options.skew > 0.0 { 1.0 / (k as f64).powf(options.skew) } else { 1.0 };
                Some(*acc)
            })
            .collect();
        Generator {
            options: options.clone(),
            rng: Rng(options.seed),
            cumulative,
            issued: 0,
            produced: 0,
            header: options.csv,
        }
    }

    fn row(&mut self) -> String {
        let (o, rng) = (&self.options, &mut self.rng);
        if o.bad > 0.0 && rng.unit() < o.bad {
            return bad_row(rng, o.csv).to_owned();
        }
        let all_issued = o.ids.is_some_and(|n| self.issued >= n.max(1));
        let id = if self.issued > 0 && (all_issued || rng.unit() < o.corrections) {
            let id = rng.below(self.issued);
            if rng.unit() < o.deletes {
                return if o.csv {
                    format!("{}{id},,,,,delete", o.id_prefix)
                } else {
                    format!(r#"{{"id":"{}{id}","op":"delete"}}"#, o.id_prefix)
                };
            }
            id
        } else {
            self.issued += 1;
            self.issued - 1
        };
        let total_weight = *self.cumulative.last().expect("at least one customer");
        let target = rng.unit() * total_weight;
        let customer = self.cumulative.partition_point(|w| *w < target).min(self.cumulative.len() - 1);
        let cents = 100 + rng.below(49_901) as i64;
        let ts = chrono::DateTime::from_timestamp(START + rng.below(365 * 86_400) as i64, 0)
            .expect("a 2025 time is representable")
            .format("%Y-%m-%dT%H:%M:%SZ");
        let category = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
        let amount = format_cents(cents);
        if o.csv {
            format!("{}{id},customer-{customer:06},{amount},{ts},{category},", o.id_prefix)
        } else {
            format!(
                r#"{{"id":"{}{id}","customer":"customer-{customer:06}","amount":{amount},"ts":"{ts}","category":"{category}"}}"#,
                o.id_prefix
            )
        }
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if std::mem::take(&mut self.header) {
            return Some("id,customer,amount,ts,category,op".to_owned());
        }
        if self.produced == self.options.rows {
            return None;
        }
        self.produced += 1;
        Some(self.row())
    }
}

/// Writes the synthetic history to `out`.
pub fn generate(options: &GenOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    for line in Generator::new(options) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `lambda gen`: writes the synthetic history the options describe.
pub fn command(args: &crate::cli::GenArgs) -> anyhow::Result<()> {
    let options = GenOptions {
        rows: args.rows,
        customers: args.customers,
        skew: args.skew,
        corrections: args.corrections,
        deletes: args.deletes,
        bad: args.bad,
        seed: args.seed,
        id_prefix: args.id_prefix.clone(),
        ids: None,
        csv: args.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    if args.out.as_os_str() == "-" {
        generate(&options, &mut std::io::stdout().lock())?;
    } else {
        let mut file = std::fs::File::create(&args.out)?;
        generate(&options, &mut file)?;
    }
    Ok(())
}

fn bad_row(rng: &mut Rng, csv: bool) -> &'static str {
    let kind = rng.below(5);
    if csv {
        return match kind {
            0 => ",customer-x,,,,",
            1 => ",customer-x,twelve,,,",
            2 => ",customer-x,1.005,,,",
            3 => ",customer-x,1,yesterday,,",
            _ => ",,5,,,",
        };
    }
    match kind {
        0 => r#"{"customer":"customer-x","amount":"#,
        1 => r#"{"customer":"customer-x","amount":"twelve"}"#,
        2 => r#"{"customer":"customer-x","amount":1.005}"#,
        3 => r#"{"customer":"customer-x","amount":1,"ts":"yesterday"}"#,
        _ => r#"{"customer":"","amount":5}"#,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(options: &GenOptions) -> String {
        let mut out = Vec::new();
        generate(options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn deterministic_and_valid() {
        let options = GenOptions { rows: 2000, customers: 50, corrections: 0.2, bad: 0.05, ..GenOptions::default() };
        let a = text(&options);
        assert_eq!(a, text(&options));
        let mut good = 0;
        let mut deletes = 0;
        for line in a.lines() {
            match crate::event::parse_json(line.as_bytes()) {
                Ok(e) if e.change == crate::event::Change::Delete => deletes += 1,
                Ok(_) => good += 1,
                Err(_) => {}
            }
        }
        assert!(good > 1700 && deletes > 0, "good {good}, deletes {deletes}");
        assert_ne!(a, text(&GenOptions { seed: 2, ..options }));
    }

    #[test]
    fn a_bounded_key_set_reuses_its_ids() {
        let options = GenOptions { rows: 5000, ids: Some(100), ..GenOptions::default() };
        let ids: std::collections::BTreeSet<String> =
            text(&options).lines().filter_map(crate::produce::key_of).collect();
        assert_eq!(ids.len(), 100);
    }
}
