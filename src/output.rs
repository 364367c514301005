//! Writing views out: Spark-style tables on a terminal, and JSON lines and CSV files.
//!
//! Amounts are exact decimals everywhere: `400`, `50.25`, never `400.0` or `50.249999`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::ser::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::amount::{average_cents, format_cents};
use crate::dataflow::rows::CustomerRow;
use crate::dataflow::stats::Stats;
use crate::event::format_hour;
use crate::filter::Filter;
use crate::reading::Reading;

/// An exact amount that serializes as a JSON number (`400`, `50.25`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money(pub i128);

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(format_cents(self.0)).expect("a formatted amount is a JSON number").serialize(serializer)
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_cents(self.0))
    }
}

/// One customer as every output shows it.
#[derive(serde::Serialize)]
pub struct CustomerOut<'a> {
    /// Name.
    pub customer: &'a str,
    /// Sum of amounts.
    pub total: Money,
    /// Number of transactions.
    pub count: i64,
    /// Smallest amount.
    pub min: Money,
    /// Largest amount.
    pub max: Money,
    /// Average amount, rounded to cents.
    pub avg: Money,
}

impl<'a> CustomerOut<'a> {
    /// The header of a customer table or CSV file.
    pub const COLUMNS: [&'static str; 6] = ["customer", "total", "count", "min", "max", "avg"];

    /// The row's cells, in [`CustomerOut::COLUMNS`] order.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.customer.to_owned(),
            self.total.to_string(),
            self.count.to_string(),
            self.min.to_string(),
            self.max.to_string(),
            self.avg.to_string(),
        ]
    }

    /// The output form of a customer row.
    pub fn new(customer: &'a str, row: &CustomerRow) -> Self {
        CustomerOut {
            customer,
            total: Money(row.total),
            count: row.count,
            min: Money(row.min.into()),
            max: Money(row.max.into()),
            avg: Money(average_cents(row.total, row.count)),
        }
    }
}

/// A total and count as every output shows them.
#[derive(serde::Serialize)]
pub struct SumOut {
    /// Sum of amounts.
    pub total: Money,
    /// Number of transactions.
    pub count: i64,
}

impl From<Stats> for SumOut {
    fn from(s: Stats) -> Self {
        SumOut { total: Money(s.cents), count: s.count }
    }
}

/// The customers of a reading that pass the view filter.
pub fn visible_customers<'a>(
    reading: &'a Reading,
    filter: Option<&'a Filter>,
) -> impl Iterator<Item = &'a (String, CustomerRow)> {
    reading.customers.iter().filter(move |(c, r)| filter.is_none_or(|f| f.accepts_row(c, r)))
}

/// A table as Spark's `DataFrame.show()` prints it: right-aligned cells between `+---+` rules.
pub fn show_table(header: &[&str], rows: &[Vec<String>], total_rows: usize) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let rule = widths.iter().fold(String::from("+"), |mut s, w| {
        s.push_str(&"-".repeat(*w));
        s.push('+');
        s
    });
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(s, "{cell:>w$}|");
        }
        s
    };
    let mut out = String::new();
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "{}", line(&mut header.iter().copied()));
    let _ = writeln!(out, "{rule}");
    for row in rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
    let _ = writeln!(out, "{rule}");
    if total_rows > rows.len() {
        let _ = writeln!(out, "only showing top {} rows", rows.len());
    }
    out
}

/// The customer table, at most `limit` rows, in name order.
pub fn customers_table(reading: &Reading, filter: Option<&Filter>, limit: usize) -> String {
    let all: Vec<_> = visible_customers(reading, filter).collect();
    let rows: Vec<Vec<String>> = all.iter().take(limit).map(|(c, r)| CustomerOut::new(c, r).cells()).collect();
    show_table(&["customer", "total_amount", "count", "min", "max", "avg"], &rows, all.len())
}

/// Writes every view of `reading` into `dir` as `<view>.jsonl` and `<view>.csv`, and, when
/// `topic` is given, `as_of.json` beside them: every file is written under a temporary name
/// first and renamed into place only once all are written, so that the directory never mixes
/// two times (a write that fails leaves the previous one whole).
pub fn write_views(
    dir: &Path,
    reading: &Reading,
    filter: Option<&Filter>,
    topic: Option<&str>,
) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut staged = Staged::default();
    let written = stage_views(&mut staged, dir, reading, filter)?;
    if let Some(topic) = topic {
        staged.file(&dir.join("as_of.json"), |w| {
            serde_json::to_writer(&mut *w, &as_of(reading, topic))?;
            w.write_all(b"\n")
        })?;
    }
    staged.commit()?;
    remove_dropped(&dir.join("created"), &reading.created)?;
    Ok(written)
}

fn stage_views(
    staged: &mut Staged,
    dir: &Path,
    reading: &Reading,
    filter: Option<&Filter>,
) -> std::io::Result<Vec<String>> {
    let mut written = Vec::new();
    let customers: Vec<_> = visible_customers(reading, filter).map(|(c, r)| CustomerOut::new(c, r)).collect();
    written.extend(staged.pair(dir, "customers", &CustomerOut::COLUMNS, &customers, CustomerOut::cells)?);

    #[derive(serde::Serialize)]
    struct TopOut<'a> {
        rank: usize,
        customer: &'a str,
        total: Money,
    }
    let top: Vec<_> = reading
        .top
        .iter()
        .filter(|(c, _)| filter.is_none() || customers.iter().any(|o| o.customer == c))
        .enumerate()
        .map(|(i, (customer, total))| TopOut { rank: i + 1, customer, total: Money(*total) })
        .collect();
    written.extend(staged.pair(dir, "top", &["rank", "customer", "total"], &top, |o| {
        vec![o.rank.to_string(), o.customer.to_owned(), o.total.to_string()]
    })?);

    #[derive(serde::Serialize)]
    struct CategoryOut<'a> {
        category: Option<&'a str>,
        #[serde(flatten)]
        sum: SumOut,
    }
    let categories: Vec<_> =
        reading.categories.iter().map(|(c, s)| CategoryOut { category: c.as_deref(), sum: (*s).into() }).collect();
    written.extend(staged.pair(dir, "categories", &["category", "total", "count"], &categories, |o| {
        vec![o.category.unwrap_or("").to_owned(), o.sum.total.to_string(), o.sum.count.to_string()]
    })?);

    #[derive(serde::Serialize)]
    struct HourOut {
        hour: String,
        #[serde(flatten)]
        sum: SumOut,
    }
    let hourly: Vec<_> =
        reading.hourly.iter().map(|(h, s)| HourOut { hour: format_hour(*h), sum: (*s).into() }).collect();
    written.extend(staged.pair(dir, "hourly", &["hour", "total", "count"], &hourly, |o| {
        vec![o.hour.clone(), o.sum.total.to_string(), o.sum.count.to_string()]
    })?);

    written.extend(stage_created(staged, &dir.join("created"), &reading.created)?);

    let overall = [OverallOut::new(reading)];
    written.extend(staged.pair(dir, "overall", &["total", "count", "customers", "dead_letters"], &overall, |o| {
        vec![
            o.sum.total.to_string(),
            o.sum.count.to_string(),
            o.customers.to_string(),
            o.dead_letters.values().sum::<i64>().to_string(),
        ]
    })?);
    Ok(written)
}

/// Stages each created view into `dir` as `<name>.jsonl` (one object per row) and
/// `<name>.csv`.
fn stage_created(
    staged: &mut Staged,
    dir: &Path,
    views: &[crate::reading::CreatedRows],
) -> std::io::Result<Vec<String>> {
    if views.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for view in views {
        let objects: Vec<serde_json::Map<String, serde_json::Value>> =
            view.rows.iter().map(|row| view.columns.iter().cloned().zip(row.iter().cloned()).collect()).collect();
        let header: Vec<&str> = view.columns.iter().map(String::as_str).collect();
        written.extend(staged.pair(dir, &view.name, &header, &objects, |row| {
            view.columns
                .iter()
                .map(|c| match row.get(c) {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                })
                .collect()
        })?);
    }
    Ok(written)
}

/// Removes the files in `dir` of created views dropped since (and leftovers of writes cut
/// short).
fn remove_dropped(dir: &Path, views: &[crate::reading::CreatedRows]) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let kept = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "csv"))
            && views.iter().any(|v| v.name == stem);
        if !kept {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The overall view as every output shows it.
#[derive(serde::Serialize)]
pub struct OverallOut {
    /// Total and count of all transactions.
    #[serde(flatten)]
    pub sum: SumOut,
    /// Customers with at least one transaction.
    pub customers: i64,
    /// Refused records by reason.
    pub dead_letters: std::collections::BTreeMap<String, i64>,
}

impl OverallOut {
    /// The overall view of a reading.
    pub fn new(reading: &Reading) -> Self {
        OverallOut {
            sum: reading.overall.into(),
            customers: reading.customer_count,
            dead_letters: reading.dead_letters.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        }
    }
}

/// What a reading reflects: its logical time and next offsets, by `topic/partition`.
pub fn as_of(reading: &Reading, topic: &str) -> serde_json::Value {
    let offsets: serde_json::Map<String, serde_json::Value> =
        reading.offsets.iter().map(|(p, o)| (format!("{topic}/{p}"), (*o).into())).collect();
    serde_json::json!({ "time": reading.time, "offsets": offsets })
}

/// Files written under temporary names, renamed into place together by [`Staged::commit`];
/// dropped without it, they are removed.
#[derive(Default)]
struct Staged {
    /// (temporary, final) paths.
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Writes `path`'s future contents under a temporary name beside it.
    fn file(&mut self, path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        self.files.push((tmp.clone(), path.to_owned()));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        w.flush()
    }

    /// Stages `<name>.jsonl` and `<name>.csv`.
    fn pair<T: Serialize>(
        &mut self,
        dir: &Path,
        name: &str,
        header: &[&str],
        rows: &[T],
        cells: impl Fn(&T) -> Vec<String>,
    ) -> std::io::Result<[String; 2]> {
        let jsonl = dir.join(format!("{name}.jsonl"));
        self.file(&jsonl, |w| {
            for row in rows {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        let csv_path = dir.join(format!("{name}.csv"));
        self.file(&csv_path, |w| {
            let mut csv = csv::Writer::from_writer(w);
            csv.write_record(header)?;
            for row in rows {
                csv.write_record(cells(row).iter().map(|cell| spreadsheet_safe(cell).into_owned()))?;
            }
            csv.flush()
        })?;
        Ok([jsonl.display().to_string(), csv_path.display().to_string()])
    }

    /// Renames every file into place.
    fn commit(mut self) -> std::io::Result<()> {
        for (tmp, path) in std::mem::take(&mut self.files) {
            std::fs::rename(tmp, path)?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A CSV cell a spreadsheet will not run: text that starts with `=`, `+`, `-`, `@`, a tab or
/// a carriage return (a formula to Excel, LibreOffice and Google Sheets) gets a leading `'`,
/// as OWASP advises; numbers (`-12.5`) are left as they are.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_look_like_spark_show() {
        let t = show_table(&["customer", "total_amount"], &[vec!["Ali".into(), "320".into()]], 1);
        assert_eq!(t, "+--------+------------+\n|customer|total_amount|\n+--------+------------+\n|     Ali|         320|\n+--------+------------+\n");
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_quoted() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        for risky in ["+1+1", "-cmd|x", "@SUM(A1)", "\tx", "\r=1"] {
            assert!(spreadsheet_safe(risky).starts_with('\''), "{risky:?}");
        }
        for plain in ["Ali", "-12.50", "400", "a=b", ""] {
            assert_eq!(spreadsheet_safe(plain), plain);
        }
    }

    #[test]
    fn a_write_that_fails_leaves_the_previous_one_whole() {
        let dir = std::env::temp_dir().join(format!("staged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut first = Staged::default();
        first.file(&dir.join("a.txt"), |w| w.write_all(b"1")).unwrap();
        first.file(&dir.join("b.txt"), |w| w.write_all(b"1")).unwrap();
        first.commit().unwrap();
        let mut second = Staged::default();
        second.file(&dir.join("a.txt"), |w| w.write_all(b"2")).unwrap();
        let long = "x".repeat(300);
        assert!(second.file(&dir.join(format!("{long}.txt")), |w| w.write_all(b"2")).is_err());
        drop(second);
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("b.txt")).unwrap(), "1");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn money_is_an_exact_json_number() {
        assert_eq!(serde_json::to_string(&Money(5025)).unwrap(), "50.25");
        assert_eq!(serde_json::to_string(&Money(40000)).unwrap(), "400");
    }
}
