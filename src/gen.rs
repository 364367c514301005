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
            csv: false,
        }
    }
}

const CATEGORIES: [&str; 8] = ["books", "food", "games", "tools", "music", "garden", "sport", "health"];
/// 2025-01-01T00:00:00Z.
const START: i64 = 1_735_689_600;

/// SplitMix64: small, fast, and stable across versions (unlike a library's default RNG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes the synthetic history to `out`.
pub fn generate(options: &GenOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let mut rng = Rng(options.seed);
    let customers = options.customers.max(1);
    let cumulative: Vec<f64> = (1..=customers)
        .scan(0.0, |acc, k| {
            *acc += if options.skew > 0.0 { 1.0 / (k as f64).powf(options.skew) } else { 1.0 };
            Some(*acc)
        })
        .collect();
    let total_weight = *cumulative.last().expect("at least one customer");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    if options.csv {
        writeln!(out, "id,customer,amount,ts,category,op")?;
    }
    let mut issued: u64 = 0;
    for _ in 0..options.rows {
        if options.bad > 0.0 && rng.unit() < options.bad {
            write_bad(&mut out, &mut rng, options.csv)?;
            continue;
        }
        let id = if issued > 0 && rng.unit() < options.corrections {
            let id = rng.below(issued);
            if rng.unit() < options.deletes {
                if options.csv {
                    writeln!(out, "{}{id},,,,,delete", options.id_prefix)?;
                } else {
                    writeln!(out, r#"{{"id":"{}{id}","op":"delete"}}"#, options.id_prefix)?;
                }
                continue;
            }
            id
        } else {
            issued += 1;
            issued - 1
        };
        let target = rng.unit() * total_weight;
        let customer = cumulative.partition_point(|w| *w < target).min(customers as usize - 1);
        let cents = 100 + rng.below(49_901) as i64;
        let ts = chrono::DateTime::from_timestamp(START + rng.below(365 * 86_400) as i64, 0)
            .expect("a 2025 time is representable")
            .format("%Y-%m-%dT%H:%M:%SZ");
        let category = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
        let amount = format_cents(cents);
        if options.csv {
            writeln!(out, "{}{id},customer-{customer:06},{amount},{ts},{category},", options.id_prefix)?;
        } else {
            writeln!(
                out,
                r#"{{"id":"{}{id}","customer":"customer-{customer:06}","amount":{amount},"ts":"{ts}","category":"{category}"}}"#,
                options.id_prefix
            )?;
        }
    }
    out.flush()
}

fn write_bad(out: &mut dyn Write, rng: &mut Rng, csv: bool) -> std::io::Result<()> {
    let kind = rng.below(5);
    if csv {
        return match kind {
            0 => writeln!(out, ",customer-x,,,,"),
            1 => writeln!(out, ",customer-x,twelve,,,"),
            2 => writeln!(out, ",customer-x,1.005,,,"),
            3 => writeln!(out, ",customer-x,1,yesterday,,"),
            _ => writeln!(out, ",,5,,,"),
        };
    }
    match kind {
        0 => writeln!(out, r#"{{"customer":"customer-x","amount":"#),
        1 => writeln!(out, r#"{{"customer":"customer-x","amount":"twelve"}}"#),
        2 => writeln!(out, r#"{{"customer":"customer-x","amount":1.005}}"#),
        3 => writeln!(out, r#"{{"customer":"customer-x","amount":1,"ts":"yesterday"}}"#),
        _ => writeln!(out, r#"{{"customer":"","amount":5}}"#),
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
}
