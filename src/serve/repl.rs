//! The interactive prompt of `lambda run`: the same reads as the HTTP API, as tables.
//!
//! ```text
//! lambda> get Ali
//! lambda> top 3
//! lambda> hourly 2025-01-01T10 2025-01-01T12
//! lambda> stats
//! ```
//!
//! On a terminal it has line editing and history (rustyline); with `--repl` and piped
//! input it reads the same commands line by line, for scripts and tests. A command it does
//! not know, or bad arguments, get a usage line — never a crash.

use std::fmt::Write as _;
use std::time::Duration;

use crate::amount::format_cents;
use crate::config::Settings;
use crate::event::{format_hour, parse_hour_bound};
use crate::output::{as_of, show_table, CustomerOut};
use crate::reading::{ReadScope, Reading};
use crate::serve::metrics::consumer_lag;
use crate::serve::Serving;
use crate::sql::session::Session;
use crate::sql::Engine;

/// What the prompt answers to `help`.
pub const HELP: &str = "commands:
  get <customer>          one customer's total, count, min, max, avg
  top [k]                 the k customers with the largest totals (default 10)
  categories              totals by category
  hourly [from] [to]      totals by UTC hour of event time (e.g. 2025-01-01T10)
  stats                   transactions, customers, dead letters, offsets, logical time
  verify                  recompute every view from scratch over the same inputs, and compare
  help                    this list
  quit                    stop the pipeline and exit
SQL, on the same views (a final ; is optional):
  SELECT customer, sum(amount) FROM transactions WHERE amount >= 100 GROUP BY customer
  SELECT * FROM customers WHERE total > 200 ORDER BY total DESC
  SHOW TABLES   SHOW COLUMNS FROM customers   EXPLAIN SELECT ...
  SET min_offsets = 'real-time-orders/0:12'   every later read waits until it reflects those
                          input positions (what `lambda produce` printed); RESET min_offsets";

const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The words a SQL statement starts with.
const SQL_VERBS: [&str; 15] = [
    "select",
    "show",
    "explain",
    "describe",
    "with",
    "create",
    "drop",
    "insert",
    "update",
    "delete",
    "set",
    "reset",
    "values",
    "table",
    "subscribe",
];

/// What a line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum PromptCommand {
    /// `get <customer>`
    Get(String),
    /// `top [k]`
    Top(usize),
    /// `categories`
    Categories,
    /// `hourly [from] [to]`
    Hourly(Option<i64>, Option<i64>),
    /// `stats`
    Stats,
    /// `verify`
    Verify,
    /// `help`
    Help,
    /// `quit`
    Quit,
    /// A SQL statement.
    Sql(String),
    /// an empty line
    Nothing,
}

/// Parses one line, or says how to write it.
pub fn parse(line: &str) -> Result<PromptCommand, String> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else { return Ok(PromptCommand::Nothing) };
    if SQL_VERBS.contains(&verb.to_ascii_lowercase().as_str()) {
        return Ok(PromptCommand::Sql(line.trim().to_owned()));
    }
    let rest: Vec<&str> = words.collect();
    let usage = |u: &str| Err(format!("usage: {u}"));
    match (verb, rest.as_slice()) {
        ("get", []) => usage("get <customer>"),
        ("get", names) => Ok(PromptCommand::Get(names.join(" "))),
        ("top", []) => Ok(PromptCommand::Top(10)),
        ("top", [k]) => match k.parse::<usize>() {
            Ok(k) if (1..=10_000).contains(&k) => Ok(PromptCommand::Top(k)),
            _ => usage("top [k], k from 1 to 10000"),
        },
        ("categories", []) => Ok(PromptCommand::Categories),
        ("hourly", bounds) if bounds.len() <= 2 => {
            let parsed: Vec<Option<i64>> = bounds.iter().map(|b| parse_hour_bound(b)).collect();
            if parsed.iter().any(Option::is_none) {
                return usage("hourly [from] [to], times like 2025-01-01T10 or RFC 3339");
            }
            Ok(PromptCommand::Hourly(parsed.first().copied().flatten(), parsed.get(1).copied().flatten()))
        }
        ("stats", []) => Ok(PromptCommand::Stats),
        ("verify", []) => Ok(PromptCommand::Verify),
        ("help", _) => Ok(PromptCommand::Help),
        ("quit" | "exit", []) => Ok(PromptCommand::Quit),
        ("top" | "categories" | "hourly" | "stats" | "verify" | "quit" | "exit", _) => {
            Err(format!("{verb}: too many arguments; type help"))
        }
        _ => Err(format!("unknown command {verb:?}; type help")),
    }
}

/// Answers one command with text (an error is text too). Every read first waits for the
/// session's read-your-writes bound (`SET min_offsets = '...'`).
pub fn answer(engine: &Engine, settings: &Settings, session: &mut Session, command: &PromptCommand) -> String {
    let topic = settings.kafka.topic.as_str();
    let serving = engine.serving();
    if let PromptCommand::Sql(statement) = command {
        return sql_answer(engine, settings, session, statement);
    }
    if let Some(bound) = &session.min_offsets {
        if !matches!(command, PromptCommand::Help | PromptCommand::Quit | PromptCommand::Nothing) {
            if let Err(error) = serving.wait_for(bound, session.wait()) {
                return format!("{error}\n");
            }
        }
    }
    let read = |scope| serving.read(scope, READ_TIMEOUT).map_err(|e| e.to_string());
    let reading = match command {
        PromptCommand::Verify => engine.read_all_blocking(10).map_err(|e| e.to_string()),
        PromptCommand::Get(name) => read(ReadScope::Customer(name.clone())),
        PromptCommand::Top(k) => read(ReadScope::Top { k: *k }),
        PromptCommand::Categories | PromptCommand::Hourly(..) | PromptCommand::Stats => read(ReadScope::Totals),
        PromptCommand::Help => return format!("{HELP}\n"),
        PromptCommand::Quit | PromptCommand::Nothing | PromptCommand::Sql(_) => return String::new(),
    };
    let reading = match reading {
        Ok(reading) => reading,
        Err(error) => return format!("cannot read the views: {error}\n"),
    };
    let mut out = match command {
        PromptCommand::Get(name) => match reading.customers.first() {
            None => format!("no customer {name:?}\n"),
            Some((c, row)) => show_table(&CustomerOut::COLUMNS, &[CustomerOut::new(c, row).cells()], 1),
        },
        PromptCommand::Top(_) => {
            let rows: Vec<Vec<String>> = reading
                .top
                .iter()
                .enumerate()
                .map(|(i, (c, total))| vec![(i + 1).to_string(), c.clone(), format_cents(*total)])
                .collect();
            show_table(&["rank", "customer", "total"], &rows, rows.len())
        }
        PromptCommand::Categories => {
            let rows: Vec<Vec<String>> = reading
                .categories
                .iter()
                .map(|(c, s)| {
                    vec![c.clone().unwrap_or_else(|| "(none)".into()), format_cents(s.cents), s.count.to_string()]
                })
                .collect();
            show_table(&["category", "total", "count"], &rows, rows.len())
        }
        PromptCommand::Hourly(from, to) => {
            let rows: Vec<Vec<String>> = reading
                .hourly_between(*from, *to)
                .map(|(h, s)| vec![format_hour(*h), format_cents(s.cents), s.count.to_string()])
                .collect();
            show_table(&["hour", "total", "count"], &rows, rows.len())
        }
        PromptCommand::Stats => stats(&reading, serving),
        PromptCommand::Verify => match crate::verify::verify(settings, &reading, 10) {
            Err(error) => format!("verify: cannot recompute: {error:#}\n"),
            Ok(v) => v.report(),
        },
        PromptCommand::Help | PromptCommand::Quit | PromptCommand::Nothing | PromptCommand::Sql(_) => {
            unreachable!("answered above")
        }
    };
    let _ = writeln!(out, "as of {}", as_of(&reading, topic));
    out
}

/// A SQL statement's answer as a table, its row count and what it reflects; or its error.
fn sql_answer(engine: &Engine, settings: &Settings, session: &mut Session, statement: &str) -> String {
    match engine.execute_blocking(session, statement) {
        Err(error) => format!("ERROR {}: {}\n", error.code(), error),
        // A statement that answers no rows says what it did, as psql does.
        Ok(answer) if answer.tag.is_some() => format!("{}\n", answer.tag.as_deref().unwrap_or_default()),
        Ok(answer) => {
            let mut out = answer.table();
            let rows = answer.len();
            let _ = write!(out, "({rows} row{})", if rows == 1 { "" } else { "s" });
            match &answer.as_of {
                Some(reading) => {
                    let _ = writeln!(out, " as of {}", as_of(reading, &settings.kafka.topic));
                }
                None => out.push('\n'),
            }
            out
        }
    }
}

fn stats(reading: &Reading, serving: &Serving) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "transactions  {}", reading.overall.count);
    let _ = writeln!(out, "total         {}", format_cents(reading.overall.cents));
    let _ = writeln!(out, "customers     {}", reading.customer_count);
    let refused: i64 = reading.dead_letters.iter().map(|(_, n)| n).sum();
    let reasons: Vec<String> = reading.dead_letters.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(out, "dead letters  {refused} ({})", reasons.join(", "));
    let (history, kafka) = reading.records_read();
    let _ = writeln!(out, "records read  {history} history, {kafka} Kafka");
    let offsets: Vec<String> = reading.offsets.iter().map(|(p, o)| format!("{p}: {o}")).collect();
    let _ = writeln!(out, "next offsets  {}", offsets.join(", "));
    let lag = consumer_lag(&reading.offsets, &reading.high_watermarks());
    let lag: Vec<String> =
        lag.iter().map(|(p, _, lag)| format!("{p}: {}", lag.map_or("?".to_owned(), |l| l.to_string()))).collect();
    let _ = writeln!(out, "consumer lag  {}", lag.join(", "));
    let _ = writeln!(out, "logical time  {}", reading.time);
    for w in &reading.workers {
        let partitions: Vec<String> = w.partitions.iter().map(|(p, _)| p.to_string()).collect();
        let _ = writeln!(out, "worker {:<6} process {}, partitions [{}]", w.worker, w.process, partitions.join(", "));
    }
    let _ = writeln!(out, "workers       {}", serving.workers());
    out
}

/// The words a prompt command starts with.
const COMMANDS: [&str; 9] = ["get", "top", "categories", "hourly", "stats", "verify", "help", "quit", "exit"];

/// Whether `line` starts a SQL statement.
fn starts_sql(line: &str) -> bool {
    line.split_whitespace().next().is_some_and(|verb| SQL_VERBS.contains(&verb.to_ascii_lowercase().as_str()))
}

/// Whether `line` starts a statement or a prompt command.
fn starts_command(line: &str) -> bool {
    starts_sql(line) || line.split_whitespace().next().is_some_and(|word| COMMANDS.contains(&word))
}

/// Whether `text` ends with a `;` outside quotes and comments.
fn ends_statement(text: &str) -> bool {
    let mut quote = None::<char>;
    let mut last = None::<char>;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '-') if chars.peek() == Some(&'-') => {
                // A comment to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                continue;
            }
            (None, c) if c.is_whitespace() => continue,
            _ => {}
        }
        last = Some(c);
    }
    quote.is_none() && last == Some(';')
}

/// Whether `text` is SQL cut short: it does not parse, and the parser wanted more at its end
/// (`SELECT (1 +`, `... UNION`), so that the next line may go on with it. Whole statements,
/// and those wrong before their end, are not.
fn needs_more(text: &str) -> bool {
    use datafusion::sql::sqlparser;
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let parsed = sqlparser::parser::Parser::new(&dialect)
        .with_recursion_limit(64)
        .try_with_sql(text)
        .and_then(|mut parser| parser.parse_statements());
    match parsed {
        Ok(_) => false,
        Err(error) => error.to_string().contains("EOF"),
    }
}

/// Gathers input lines into commands, as psql does: a prompt command is one line; a SQL
/// statement goes on over lines until one ends with `;` — or, its final `;` being optional,
/// until a line that starts another command while what came before wants no more, a blank
/// line, or the end of the input.
///
/// ```text
/// SELECT customer, total          ─┐
///   FROM customers                 ├─ one statement
///  WHERE total > 200;             ─┘
/// top 3                           ── a command
/// SELECT 1                        ── a statement (the next line starts another, and this parses)
/// SELECT 2
/// ```
#[derive(Default)]
pub struct Gather {
    pending: String,
}

impl Gather {
    /// Takes the next line; returns the commands it completes, in order.
    pub fn line(&mut self, line: &str) -> Vec<String> {
        let mut done = Vec::new();
        if !self.pending.is_empty() {
            if line.trim().is_empty() || (starts_command(line) && !needs_more(&self.pending)) {
                done.push(std::mem::take(&mut self.pending));
            } else {
                self.pending.push('\n');
                self.pending.push_str(line);
                if ends_statement(&self.pending) {
                    done.push(std::mem::take(&mut self.pending));
                }
                return done;
            }
        }
        if starts_sql(line) && !ends_statement(line) {
            self.pending = line.to_owned();
        } else {
            done.push(line.to_owned());
        }
        done
    }

    /// What is left at the end of the input.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    /// On a terminal a statement runs as soon as it wants no more, `;` or not: what is
    /// pending, if it does not.
    pub fn whole(&mut self) -> Option<String> {
        (!self.pending.is_empty() && !needs_more(&self.pending)).then(|| std::mem::take(&mut self.pending))
    }

    /// Whether a statement is being gathered.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Reads commands until `quit` or the end of input: with line editing on a terminal, else
/// line by line from standard input. Returns when the user is done.
pub fn prompt(engine: &Engine, settings: &Settings, stop: impl Fn() -> bool) {
    use std::io::{BufRead, IsTerminal, Write};
    let mut session = Session::default();
    let mut gather = Gather::default();
    let mut run = |command: &str| -> bool {
        let reply = match parse(command) {
            Ok(PromptCommand::Quit) => return false,
            Ok(command) => answer(engine, settings, &mut session, &command),
            Err(usage) => format!("{usage}\n"),
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(reply.as_bytes()).and_then(|()| stdout.flush()).is_ok()
    };
    if std::io::stdin().is_terminal() {
        if let Ok(mut editor) = rustyline::DefaultEditor::new() {
            println!("atelier-lambda: type help for the commands");
            while !stop() {
                let prompt = if gather.is_pending() { "     -> " } else { "lambda> " };
                match editor.readline(prompt) {
                    Ok(input) => {
                        let _ = editor.add_history_entry(input.as_str());
                        // A paste of several lines reaches the editor as one input.
                        for line in input.lines() {
                            let mut commands = gather.line(line);
                            commands.extend(gather.whole());
                            for command in commands {
                                if !run(&command) {
                                    return;
                                }
                            }
                        }
                    }
                    Err(_) => break, // Ctrl-C, Ctrl-D
                }
            }
            return;
        }
    }
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    let mut number = 0;
    loop {
        bytes.clear();
        match stdin.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        number += 1;
        if stop() {
            return;
        }
        let commands = match std::str::from_utf8(&bytes) {
            Ok(line) => gather.line(line.trim_end_matches(['\n', '\r'])),
            Err(_) => {
                // Said, and the next lines answered: never the silent end of the input.
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "line {number} is not UTF-8; it was skipped");
                Vec::new()
            }
        };
        for command in commands {
            if !run(&command) {
                return;
            }
        }
    }
    if let Some(command) = gather.finish() {
        run(&command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_their_usage() {
        assert_eq!(parse("get Ali"), Ok(PromptCommand::Get("Ali".into())));
        assert_eq!(parse("get Abd el Kader"), Ok(PromptCommand::Get("Abd el Kader".into())));
        assert_eq!(parse("  top  "), Ok(PromptCommand::Top(10)));
        assert_eq!(parse("top 3"), Ok(PromptCommand::Top(3)));
        assert_eq!(parse(""), Ok(PromptCommand::Nothing));
        assert_eq!(parse("quit"), Ok(PromptCommand::Quit));
        assert!(parse("get").unwrap_err().starts_with("usage: get"));
        assert!(parse("top lots").unwrap_err().starts_with("usage: top"));
        assert!(parse("top 0").is_err());
        assert!(parse("hourly yesterday").unwrap_err().starts_with("usage: hourly"));
        assert!(parse("stats now").unwrap_err().contains("too many arguments"));
        assert!(parse("frobnicate now").unwrap_err().contains("unknown command"));
        assert_eq!(parse("SELECT 1;"), Ok(PromptCommand::Sql("SELECT 1;".into())));
        let Ok(PromptCommand::Hourly(Some(from), None)) = parse("hourly 2025-01-01T10") else { panic!("a bound") };
        assert_eq!(format_hour(from), "2025-01-01T10:00:00Z");
    }

    fn gathered(input: &str) -> Vec<String> {
        let mut gather = Gather::default();
        let mut out: Vec<String> = input.lines().flat_map(|line| gather.line(line)).collect();
        out.extend(gather.finish());
        out
    }

    #[test]
    fn a_statement_pasted_over_lines_is_one_statement() {
        assert_eq!(
            gathered("SELECT customer, total\n  FROM customers\n WHERE total > 200;\ntop 3"),
            ["SELECT customer, total\n  FROM customers\n WHERE total > 200;", "top 3"]
        );
        assert_eq!(gathered("SELECT 1\nSELECT 2\nstats"), ["SELECT 1", "SELECT 2", "stats"]);
        assert_eq!(gathered("SELECT 'a;\nb'\n;"), ["SELECT 'a;\nb'\n;"], "a ; in a string does not end it");
        assert_eq!(gathered("SELECT *\nFROM customers"), ["SELECT *\nFROM customers"]);
        assert_eq!(
            gathered("SELECT customer FROM customers\nUNION\nSELECT category FROM categories;"),
            ["SELECT customer FROM customers\nUNION\nSELECT category FROM categories;"],
            "a line that starts with SELECT continues what does not parse yet"
        );
        assert_eq!(gathered("SELECT (1 +\n\nget Ali"), ["SELECT (1 +", "", "get Ali"], "a blank line ends it");
        assert_eq!(gathered("help\nget Ali"), ["help", "get Ali"]);
    }
}
