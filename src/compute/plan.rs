//! What a worker builds a view's dataflow from: a plan over rows, serializable, so that the
//! SQL side (process 0) plans once and every worker of every process builds the same
//! operators ([`crate::dataflow::render`]). The SQL side compiles DataFusion's optimized
//! logical plan into it ([`crate::sql::compile`]); each node says what rows it makes from its
//! inputs' rows, each column by index:
//!
//! ```text
//! CREATE VIEW spend_by_city AS SELECT i.city, sum(t.amount) AS total, count(*) AS n
//!   FROM transactions t JOIN customer_info i ON t.customer = i.customer GROUP BY i.city
//!
//! Reduce { keys: [#3], aggregates: [sum(#1), count(*)] }       rows: city, total, n
//!   Join { left keys: [#0], right keys: [#0], inner }           rows: customer, amount, customer, city
//!     Transactions { columns: [customer, amount] }
//!     Table { id: 4, columns: [customer, city] }                (imported: arranged by its key)
//! ```
//!
//! Values are the relations' own ([`Owned`]); a predicate is true, false or unknown (NULL),
//! as SQL's three-valued logic has it, and only a true one keeps a row.

use serde::{Deserialize, Serialize};

use super::columns::Owned;
pub use super::scalar::{Arith, Comparison, Scalar};

/// A relation a view's dataflow computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowPlan {
    /// The live transactions, as rows of these columns of `transactions` (by index into
    /// `id, customer, amount, category, ts`; `id` is not among them).
    Transactions {
        /// The columns.
        columns: Vec<usize>,
    },
    /// A table's rows, as these of its columns.
    Table {
        /// The table's id.
        id: u64,
        /// The columns, by index into the table's.
        columns: Vec<usize>,
    },
    /// A compiled view's rows, as these of its columns.
    View {
        /// The view's id.
        id: u64,
        /// The columns, by index into the view's.
        columns: Vec<usize>,
    },
    /// The rows for which `predicate` is true.
    Filter {
        /// The rows.
        input: Box<RowPlan>,
        /// The predicate.
        predicate: Scalar,
    },
    /// Each row made into `exprs`' values.
    Map {
        /// The rows.
        input: Box<RowPlan>,
        /// One expression per output column.
        exprs: Vec<Scalar>,
    },
    /// An equi-join: each pair whose keys are equal (and not NULL), the left row's columns
    /// then the right's; a left join keeps a left row without a match, the right's columns NULL.
    Join {
        /// The left rows.
        left: Box<RowPlan>,
        /// The right rows.
        right: Box<RowPlan>,
        /// The left row's key.
        left_keys: Vec<Scalar>,
        /// The right row's key.
        right_keys: Vec<Scalar>,
        /// Whether a left row without a match is kept.
        left_outer: bool,
        /// How many columns a right row has.
        right_width: usize,
    },
    /// One row per group: its key's values, then each aggregate's.
    Reduce {
        /// The rows.
        input: Box<RowPlan>,
        /// The group's key.
        keys: Vec<Scalar>,
        /// The aggregates.
        aggregates: Vec<Aggregate>,
    },
    /// Every input's rows (`UNION ALL`).
    Union(Vec<RowPlan>),
    /// Each row once.
    Distinct(Box<RowPlan>),
    /// The first rows of each group in an order (`ORDER BY … LIMIT k`, or `row_number()` over
    /// a partition bounded by a filter), each followed by its position when `rank` is set.
    TopK {
        /// The rows.
        input: Box<RowPlan>,
        /// The group's key (none: one group of every row).
        keys: Vec<Scalar>,
        /// The order: each key, first to last.
        order: Vec<SortKey>,
        /// Rows skipped first.
        offset: usize,
        /// Rows kept after them.
        limit: usize,
        /// Whether each row is followed by its position in its group, from 1 (`row_number()`).
        rank: bool,
    },
}

/// One key of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// The value ordered by.
    pub expr: Scalar,
    /// Largest first.
    pub descending: bool,
    /// NULL before every value.
    pub nulls_first: bool,
}

impl SortKey {
    /// How two rows compare by this key.
    pub fn compare(&self, a: &[Owned], b: &[Owned]) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self.expr.eval(a), self.expr.eval(b)) {
            (Owned::Null, Owned::Null) => Ordering::Equal,
            (Owned::Null, _) => {
                if self.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (_, Owned::Null) => {
                if self.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (x, y) if self.descending => y.cmp(&x),
            (x, y) => x.cmp(&y),
        }
    }
}

/// The first `offset + limit` rows of a group in `order` (ties by the whole row, so the choice
/// is the same on every worker and every run), less the first `offset`, each as often as it is
/// there, with its position when `rank` is set.
pub fn top_k(
    rows: &[(&crate::table::Row, isize)],
    order: &[SortKey],
    offset: usize,
    limit: usize,
    rank: bool,
) -> Vec<(crate::table::Row, isize)> {
    let mut sorted: Vec<(&crate::table::Row, isize)> = rows.iter().filter(|(_, n)| *n > 0).copied().collect();
    let compare = |a: &(&crate::table::Row, isize), b: &(&crate::table::Row, isize)| {
        order.iter().map(|k| k.compare(a.0, b.0)).find(|o| o.is_ne()).unwrap_or_else(|| a.0.cmp(b.0))
    };
    let wanted = offset.saturating_add(limit);
    if wanted < sorted.len() {
        sorted.select_nth_unstable_by(wanted, compare);
        sorted.truncate(wanted);
    }
    sorted.sort_by(compare);
    let mut out: Vec<(crate::table::Row, isize)> = Vec::new();
    let mut position = 0usize;
    for (row, n) in sorted {
        let n = n as usize;
        // The copies of this row at positions offset+1 ..= offset+limit.
        let (first, last) = (position.max(offset), (position + n).min(wanted));
        position += n;
        if first >= last {
            continue;
        }
        if rank {
            for p in first..last {
                let mut ranked = row.clone();
                ranked.push(Owned::Int(p as i64 - offset as i64 + 1));
                out.push((ranked, 1));
            }
        } else {
            out.push((row.clone(), (last - first) as isize));
        }
    }
    out
}

impl RowPlan {
    /// Whether it reads the live transactions.
    pub fn reads_transactions(&self) -> bool {
        let mut reads = false;
        self.visit(&mut |p| reads |= matches!(p, RowPlan::Transactions { .. }));
        reads
    }

    /// How many columns its rows have.
    pub fn width(&self) -> usize {
        match self {
            RowPlan::Transactions { columns } | RowPlan::Table { columns, .. } | RowPlan::View { columns, .. } => {
                columns.len()
            }
            RowPlan::Filter { input, .. } | RowPlan::Distinct(input) => input.width(),
            RowPlan::Map { exprs, .. } => exprs.len(),
            RowPlan::Join { left, right_width, .. } => left.width() + right_width,
            RowPlan::Reduce { keys, aggregates, .. } => keys.len() + aggregates.len(),
            RowPlan::Union(inputs) => inputs.first().map_or(0, RowPlan::width),
            RowPlan::TopK { input, rank, .. } => input.width() + usize::from(*rank),
        }
    }

    /// The tables and the views it reads, by id: (tables, views).
    pub fn inputs(&self) -> (Vec<u64>, Vec<u64>) {
        let (mut tables, mut views) = (Vec::new(), Vec::new());
        self.visit(&mut |p| match p {
            RowPlan::Table { id, .. } => tables.push(*id),
            RowPlan::View { id, .. } => views.push(*id),
            _ => {}
        });
        (tables, views)
    }

    fn visit(&self, each: &mut impl FnMut(&RowPlan)) {
        each(self);
        match self {
            RowPlan::Transactions { .. } | RowPlan::Table { .. } | RowPlan::View { .. } => {}
            RowPlan::Filter { input, .. }
            | RowPlan::Map { input, .. }
            | RowPlan::Reduce { input, .. }
            | RowPlan::TopK { input, .. } => input.visit(each),
            RowPlan::Distinct(input) => input.visit(each),
            RowPlan::Join { left, right, .. } => {
                left.visit(each);
                right.visit(each);
            }
            RowPlan::Union(inputs) => inputs.iter().for_each(|i| i.visit(each)),
        }
    }
}

/// An aggregate of a group's rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Which.
    pub func: AggregateFunc,
    /// Of what (none: `count(*)`).
    pub arg: Option<Scalar>,
}

/// An aggregate function, exact under retractions (the group's rows are kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateFunc {
    /// `count(*)`, or `count(x)`: the rows where `x` is not NULL.
    Count,
    /// `count(DISTINCT x)`
    CountDistinct,
    /// `sum(x)` of integers or amounts (NULL when none is not NULL).
    Sum,
    /// The sum of partial counts (a `count` computed in parts below a join): 0 over none.
    SumOfCounts,
    /// `min(x)`
    Min,
    /// `max(x)`
    Max,
}

impl Aggregate {
    /// Its value over a group's rows, each with its multiplicity (positive).
    pub fn over(&self, rows: &[(&crate::table::Row, isize)]) -> Owned {
        let values = rows.iter().map(|(row, n)| (self.arg.as_ref().map_or(Owned::Int(1), |a| a.eval(row)), *n));
        let present = values.filter(|(v, _)| *v != Owned::Null);
        match self.func {
            AggregateFunc::Count => Owned::Int(present.map(|(_, n)| n as i64).sum()),
            AggregateFunc::CountDistinct => {
                let mut distinct: Vec<Owned> = present.map(|(v, _)| v).collect();
                distinct.sort();
                distinct.dedup();
                Owned::Int(distinct.len() as i64)
            }
            AggregateFunc::Sum | AggregateFunc::SumOfCounts => {
                // One type per column: amounts sum exactly in 128 bits; integers in 64, or NULL
                // past them (a view cannot fail a row).
                let (mut sum, mut money, mut any) = (Some(0i128), false, false);
                for (value, n) in present {
                    any = true;
                    let term = match value {
                        Owned::Cents(c) => {
                            money = true;
                            c.checked_mul(n as i128)
                        }
                        Owned::Int(i) => i128::from(i).checked_mul(n as i128),
                        _ => Some(0),
                    };
                    sum = sum.zip(term).and_then(|(s, t)| s.checked_add(t));
                }
                match (any, money, sum) {
                    (false, _, _) if self.func == AggregateFunc::SumOfCounts => Owned::Int(0),
                    (false, _, _) | (true, _, None) => Owned::Null,
                    (true, true, Some(sum)) => Owned::Cents(sum),
                    (true, false, Some(sum)) => i64::try_from(sum).map_or(Owned::Null, Owned::Int),
                }
            }
            AggregateFunc::Min => present.map(|(v, _)| v).min().unwrap_or(Owned::Null),
            AggregateFunc::Max => present.map(|(v, _)| v).max().unwrap_or(Owned::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_first_rows_of_an_order_each_as_often_as_it_is_there() {
        let rows: Vec<crate::table::Row> =
            [300, 100, 200, 200].iter().map(|c| vec![Owned::Cents(*c)]).chain([vec![Owned::Null]]).collect();
        let counted: Vec<(&crate::table::Row, isize)> =
            vec![(&rows[0], 1), (&rows[1], 1), (&rows[2], 2), (&rows[4], 1)];
        let desc = [SortKey { expr: Scalar::Column(0), descending: true, nulls_first: true }];
        let cents = |out: Vec<(crate::table::Row, isize)>| -> Vec<(Vec<Owned>, isize)> { out };
        // NULL first, then 300, then 200 twice: the limit cuts between the two copies.
        assert_eq!(
            cents(top_k(&counted, &desc, 0, 3, false)),
            vec![(vec![Owned::Null], 1), (vec![Owned::Cents(300)], 1), (vec![Owned::Cents(200)], 1)]
        );
        assert_eq!(
            top_k(&counted, &desc, 2, 10, true),
            vec![
                (vec![Owned::Cents(200), Owned::Int(1)], 1),
                (vec![Owned::Cents(200), Owned::Int(2)], 1),
                (vec![Owned::Cents(100), Owned::Int(3)], 1)
            ]
        );
        let asc_nulls_last = [SortKey { expr: Scalar::Column(0), descending: false, nulls_first: false }];
        assert_eq!(top_k(&counted, &asc_nulls_last, 0, 1, true), vec![(vec![Owned::Cents(100), Owned::Int(1)], 1)]);
        assert!(top_k(&counted, &asc_nulls_last, 5, 3, false).is_empty());
    }

    #[test]
    fn aggregates_count_each_row_as_often_as_it_is_there() {
        let (a, b, n) = (vec![Owned::Cents(150)], vec![Owned::Cents(50)], vec![Owned::Null]);
        let rows = [(&a, 2), (&b, 1), (&n, 1)];
        let agg = |func, arg: Option<Scalar>| Aggregate { func, arg }.over(&rows);
        assert_eq!(agg(AggregateFunc::Count, None), Owned::Int(4));
        assert_eq!(agg(AggregateFunc::Count, Some(Scalar::Column(0))), Owned::Int(3));
        assert_eq!(agg(AggregateFunc::CountDistinct, Some(Scalar::Column(0))), Owned::Int(2));
        assert_eq!(agg(AggregateFunc::Sum, Some(Scalar::Column(0))), Owned::Cents(350));
        assert_eq!(agg(AggregateFunc::Min, Some(Scalar::Column(0))), Owned::Cents(50));
        assert_eq!(agg(AggregateFunc::Max, Some(Scalar::Column(0))), Owned::Cents(150));
        let nulls = [(&n, 3)];
        assert_eq!(Aggregate { func: AggregateFunc::Sum, arg: Some(Scalar::Column(0)) }.over(&nulls), Owned::Null);
        assert_eq!(
            Aggregate { func: AggregateFunc::SumOfCounts, arg: Some(Scalar::Column(0)) }.over(&[]),
            Owned::Int(0)
        );
        // Past 128 bits of cents: no sum, rather than a wrong one.
        let huge = vec![Owned::Cents(i128::MAX / 2 + 1)];
        let twice = [(&huge, 2)];
        assert_eq!(Aggregate { func: AggregateFunc::Sum, arg: Some(Scalar::Column(0)) }.over(&twice), Owned::Null);
    }
}
