//! `Stats`: a count and an exact sum, used as a differential *diff*.
//!
//! Sums are maintained by differential itself: instead of reducing over the values of a
//! group, every transaction becomes the update `(key, Stats { count: 1, cents })` and the
//! arrangement adds diffs together as it consolidates. Retracting a transaction adds its
//! negation, so a correction costs two updates whatever the size of the group.
//!
//! ```
//! use atelier_lambda::dataflow::stats::Stats;
//! use differential_dataflow::difference::{Semigroup, IsZero};
//! let mut s = Stats::one(12000);
//! s.plus_equals(&Stats::one(8000));
//! s.plus_equals(&Stats::one(12000).negated());
//! assert_eq!(s, Stats { count: 1, cents: 8000 });
//! assert!(!s.is_zero());
//! ```

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use serde::{Deserialize, Serialize};

/// A count of transactions and the exact sum of their amounts, in cents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stats {
    /// How many transactions.
    pub count: i64,
    /// Their total, in cents (128 bits: no realistic history overflows it).
    pub cents: i128,
}

impl Stats {
    /// One transaction of `cents`.
    pub fn one(cents: i64) -> Self {
        Stats { count: 1, cents: i128::from(cents) }
    }

    /// The retraction of `self`.
    pub fn negated(mut self) -> Self {
        self.negate();
        self
    }

    /// `self` counted `times` times (a negative multiplicity retracts).
    pub fn times(self, times: i64) -> Self {
        Stats { count: self.count * times, cents: self.cents * i128::from(times) }
    }
}

impl IsZero for Stats {
    fn is_zero(&self) -> bool {
        self.count == 0 && self.cents == 0
    }
}

impl Semigroup for Stats {
    fn plus_equals(&mut self, rhs: &Self) {
        self.count += rhs.count;
        self.cents += rhs.cents;
    }
}

impl Monoid for Stats {
    fn zero() -> Self {
        Stats::default()
    }
}

impl Abelian for Stats {
    fn negate(&mut self) {
        self.count = -self.count;
        self.cents = -self.cents;
    }
}
