//! `EXPLAIN`: what a plan reads on every worker and what the reader does with the shares,
//! in words.

use super::expr::Expr;
use super::plan::{Seek, Select};
use super::relation::Relation;

/// What `EXPLAIN` says: the reads a plan does, in words.
pub fn explain(select: &Select, workers: usize) -> Vec<String> {
    let scan = &select.scan;
    let name = scan.relation.name();
    let mut lines = vec![match &scan.seek {
        Seek::Key(key) => format!(
            "seek {name} for {} = {key:?} in the one worker (of {workers}) that holds it",
            scan.relation.columns()[0].0
        ),
        Seek::Range(l, u) => format!(
            "seek {name} from {} to {} in each of the {workers} workers (a cursor over its arrangement), then step in key order",
            l.as_ref().map_or("the first key".into(), |(v, inclusive)| format!("{v}{}", if *inclusive { " (included)" } else { "" })),
            u.as_ref().map_or("the last key".into(), |(v, inclusive)| format!("{v}{}", if *inclusive { " (included)" } else { "" })),
        ),
        Seek::Scan if scan.relation == Relation::Transactions => {
            format!("scan the live transactions of each of the {workers} workers (its share of the version table) at one time")
        }
        Seek::Scan => format!("scan {name} in each of the {workers} workers (its share of the arrangement) at one time"),
    }];
    if let Some(filter) = &scan.filter {
        lines.push(format!("  each worker keeps the rows where {}", show(filter, scan.relation)));
    }
    if let Some((keys, aggs)) = &scan.group {
        lines.push(format!(
            "  each worker aggregates its rows into {} group(s) by {} computing {}",
            if keys.is_empty() { "one" } else { "its" },
            if keys.is_empty() {
                "nothing".to_owned()
            } else {
                keys.iter().map(|k| show(k, scan.relation)).collect::<Vec<_>>().join(", ")
            },
            aggs.iter().map(|a| format!("{:?}", a.func).to_lowercase()).collect::<Vec<_>>().join(", ")
        ));
        lines.push("then the reader merges the workers' partial aggregates".into());
    } else {
        lines.push("then the reader gathers the workers' rows".into());
    }
    if select.having.is_some() {
        lines.push("  keeps the groups that pass HAVING".into());
    }
    if !select.order.is_empty() {
        lines.push("  sorts them".into());
    }
    if select.limit.is_some() || select.offset > 0 {
        lines.push(format!(
            "  keeps {} from the {}th",
            select.limit.map_or("all".into(), |l| l.to_string()),
            select.offset + 1
        ));
    }
    if let Some(keep) = scan.keep {
        lines.push(format!("  (no worker sends more than {keep} rows)"));
    }
    lines
}

fn show(e: &Expr, relation: Relation) -> String {
    let names: Vec<&str> = relation.columns().iter().map(|(n, _)| *n).collect();
    e.to_sql(&names)
}
