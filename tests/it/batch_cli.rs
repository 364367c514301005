//! `lambda batch` and `lambda gen` driven as a user would: the real binary, as a process.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::temp_dir;

fn lambda(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lambda")).args(args).current_dir(cwd).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn the_workshop_batch_view() {
    let out = temp_dir("golden");
    for workers in ["1", "2", "3"] {
        let o = lambda(&["batch", "--out", out.to_str().unwrap(), "--workers", workers], repo());
        assert!(o.status.success(), "{}", stderr(&o));
        let table = stdout(&o);
        assert!(table.contains("|customer|total_amount|count|min|max|avg|"), "{table}");
        assert!(table.contains("|     Ali|         320|    2|120|200|160|"), "{table}");
        assert!(table.contains("|    Sara|         140|    2| 50| 90| 70|"), "{table}");
        assert!(table.contains("|  Mounir|         150|    1|150|150|150|"), "{table}");
        assert_eq!(
            lines(&out.join("customers.jsonl")),
            [
                r#"{"customer":"Ali","total":320,"count":2,"min":120,"max":200,"avg":160}"#,
                r#"{"customer":"Mounir","total":150,"count":1,"min":150,"max":150,"avg":150}"#,
                r#"{"customer":"Sara","total":140,"count":2,"min":50,"max":90,"avg":70}"#,
            ]
        );
        assert_eq!(
            lines(&out.join("customers.csv")),
            [
                "customer,total,count,min,max,avg",
                "Ali,320,2,120,200,160",
                "Mounir,150,1,150,150,150",
                "Sara,140,2,50,90,70"
            ]
        );
        assert_eq!(
            lines(&out.join("top.jsonl")),
            [
                r#"{"rank":1,"customer":"Ali","total":320}"#,
                r#"{"rank":2,"customer":"Mounir","total":150}"#,
                r#"{"rank":3,"customer":"Sara","total":140}"#,
            ]
        );
        assert_eq!(lines(&out.join("overall.jsonl")), [r#"{"total":610,"count":5,"customers":3,"dead_letters":{}}"#]);
        assert_eq!(lines(&out.join("categories.jsonl")), [r#"{"category":null,"total":610,"count":5}"#]);
        assert!(lines(&out.join("hourly.jsonl")).is_empty());
    }
}

#[test]
fn the_workshop_exercises_need_no_code() {
    let out = temp_dir("exercises");
    let o = lambda(
        &["batch", "--out", out.to_str().unwrap(), "--event-filter", "amount >= 100", "--view-filter", "total > 200"],
        repo(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // amount >= 100 keeps Ali 120+200, Mounir 150, nothing of Sara; total > 200 keeps Ali.
    assert_eq!(lines(&out.join("customers.csv")), ["customer,total,count,min,max,avg", "Ali,320,2,120,200,160"]);
    assert_eq!(lines(&out.join("overall.jsonl")), [r#"{"total":470,"count":3,"customers":2,"dead_letters":{}}"#]);

    // The same through a config file.
    let config = out.join("exercise.toml");
    std::fs::write(&config, "[filters]\nevent = \"amount >= 100\"\nview = \"total > 200\"\n").unwrap();
    let o = lambda(&["batch", "--out", out.to_str().unwrap(), "--config", config.to_str().unwrap()], repo());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&out.join("customers.csv")), ["customer,total,count,min,max,avg", "Ali,320,2,120,200,160"]);

    let o = lambda(&["batch", "--out", out.to_str().unwrap(), "--event-filter", "price > 3"], repo());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown field \"price\""), "{}", stderr(&o));
}

/// One bad line per reason, between good lines: the good ones count, each bad one is a dead
/// letter with its reason, raw bytes and line, and the counts are in the overall view.
#[test]
fn bad_records_become_dead_letters() {
    let dir = temp_dir("dead");
    let bad: &[(&[u8], &str)] = &[
        (b"{\"customer\":\"\xff\",\"amount\":1}", "invalid_utf8"),
        (br#"{"customer":"Ali","amount":"#, "invalid_json"),
        (br#"["customer","Ali"]"#, "not_an_object"),
        (br#"{"customer":null,"amount":5}"#, "missing_customer"),
        (br#"{"customer":"","amount":5}"#, "empty_customer"),
        (br#"{"customer":7,"amount":5}"#, "bad_customer"),
        (br#"{"customer":"Ali"}"#, "missing_amount"),
        (br#"{"customer":"Ali","amount":"5"}"#, "bad_amount"),
        (br#"{"customer":"Ali","amount":5.001}"#, "amount_too_precise"),
        (br#"{"customer":"Ali","amount":1e300}"#, "amount_overflow"),
        (br#"{"customer":"Ali","amount":5,"ts":"tomorrow"}"#, "bad_ts"),
        (br#"{"customer":"Ali","amount":5,"op":"merge"}"#, "bad_op"),
        (br#"{"customer":"Ali","amount":5,"id":[1]}"#, "bad_id"),
        (br#"{"customer":"Ali","amount":5,"category":false}"#, "bad_category"),
        (br#"{"op":"delete"}"#, "delete_without_id"),
    ];
    let mut file = Vec::new();
    file.extend_from_slice(b"{\"customer\":\"Ali\",\"amount\":120}\n");
    for (line, _) in bad {
        file.extend_from_slice(line);
        file.push(b'\n');
    }
    let long = format!("{{\"customer\":\"{}\",\"amount\":1}}\n", "x".repeat(300));
    file.extend_from_slice(long.as_bytes()); // customer_too_long
    file.extend_from_slice(
        format!("{{\"customer\":\"Sara\",\"amount\":1,\"pad\":\"{}\"}}\n", "p".repeat(2000)).as_bytes(),
    );
    file.extend_from_slice(b"{\"customer\":\"Sara\",\"amount\":90.5}");
    let input = dir.join("bad.jsonl");
    std::fs::write(&input, &file).unwrap();
    let out = dir.join("out");
    let o = lambda(
        &["batch", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--max-record-bytes", "1000"],
        repo(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        lines(&out.join("customers.csv")),
        ["customer,total,count,min,max,avg", "Ali,120,1,120,120,120", "Sara,90.5,1,90.5,90.5,90.5"]
    );

    let letters: Vec<serde_json::Value> =
        lines(&out.join("dead_letters.jsonl")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut expected: Vec<&str> = bad.iter().map(|(_, r)| *r).collect();
    expected.extend(["customer_too_long", "oversized"]);
    let mut reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    reasons.sort();
    expected.sort();
    assert_eq!(reasons, expected);
    for (i, (raw, reason)) in bad.iter().enumerate() {
        let letter = letters.iter().find(|l| l["reason"] == *reason).unwrap();
        assert_eq!(letter["source"], format!("{}:{}", input.display(), i + 2), "{reason}");
        match std::str::from_utf8(raw) {
            Ok(text) => assert_eq!(letter["raw"], text, "{reason}"),
            Err(_) => assert_eq!(letter["raw_base64"], "eyJjdXN0b21lciI6Iv8iLCJhbW91bnQiOjF9"),
        }
    }
    let overall: serde_json::Value = serde_json::from_str(&lines(&out.join("overall.jsonl"))[0]).unwrap();
    assert_eq!(overall["count"], 2);
    assert_eq!(overall["dead_letters"]["bad_amount"], 1);
    assert_eq!(overall["dead_letters"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum::<i64>(), 17);
}

#[test]
fn strict_mode_names_the_first_bad_line() {
    let dir = temp_dir("strict");
    let input = dir.join("h.jsonl");
    let mut text = String::new();
    // Over 4 MiB, so that the two workers each read half and each stops at a bad line.
    for i in 0..100_000 {
        text.push_str(&format!("{{\"customer\":\"c{}\",\"amount\":{i}}}\n", i % 10));
    }
    text.push_str("{\"customer\":\"Ali\",\"amount\":\"oops\"}\n"); // line 100001
    for _ in 0..100_000 {
        text.push_str("{\"customer\":\"x\",\"amount\":1}\n");
    }
    text.push_str("not json\n");
    std::fs::write(&input, text).unwrap();
    let out = dir.join("out");
    let o = lambda(
        &["batch", "--strict", "-w", "2", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()],
        repo(),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:100001", input.display())), "{err}");
    assert!(err.contains("bad_amount"), "{err}");
    assert!(!out.join("customers.jsonl").exists(), "strict mode writes no view");
}

#[test]
fn csv_and_json_array_histories() {
    let dir = temp_dir("formats");
    let csv = dir.join("h.csv");
    std::fs::write(
        &csv,
        "customer,amount,id,op\nAli,120,a,\nSara,90,,\nAli,200,b,\n\"Mou,nir\",150,,\nAli,,a,delete\nBad,x,,\n",
    )
    .unwrap();
    let array = dir.join("h.json");
    std::fs::write(&array, "[\n  {\"customer\": \"Sara\", \"amount\": 50},\n  {\"customer\": \"Ali\", \"amount\": 80, \"id\": \"b\"},\n  {\"customer\": 3}\n]\n").unwrap();
    let out = dir.join("out");
    let o = lambda(
        &["batch", "--input", csv.to_str().unwrap(), array.to_str().unwrap(), "--out", out.to_str().unwrap()],
        repo(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // id a deleted; id b corrected by the later file (80); Sara 90 + 50.
    assert_eq!(
        lines(&out.join("customers.csv")),
        [
            "customer,total,count,min,max,avg",
            "Ali,80,1,80,80,80",
            "\"Mou,nir\",150,1,150,150,150",
            "Sara,140,2,50,90,70"
        ]
    );
    let letters = lines(&out.join("dead_letters.jsonl"));
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().any(|l| l.contains("bad_amount") && l.contains("h.csv:7")), "{letters:?}");
    assert!(letters.iter().any(|l| l.contains("bad_customer") && l.contains("h.json:4")), "{letters:?}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let o = lambda(&["batch", "--input", "/nonexistent/history.json", "--out", "/tmp/never"], repo());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot read history file /nonexistent/history.json"), "{}", stderr(&o));
}

#[test]
fn gen_is_deterministic_and_loads() {
    let dir = temp_dir("gen");
    let a = dir.join("a.jsonl");
    let b = dir.join("b.jsonl");
    for path in [&a, &b] {
        let o = lambda(
            &[
                "gen",
                "--rows",
                "5000",
                "--customers",
                "100",
                "--corrections",
                "0.1",
                "--bad",
                "0.01",
                "--seed",
                "7",
                "--out",
                path.to_str().unwrap(),
            ],
            repo(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let out = dir.join("out");
    let o = lambda(&["batch", "--input", a.to_str().unwrap(), "--out", out.to_str().unwrap()], repo());
    assert!(o.status.success(), "{}", stderr(&o));
    let overall: serde_json::Value = serde_json::from_str(&lines(&out.join("overall.jsonl"))[0]).unwrap();
    assert!(overall["count"].as_i64().unwrap() > 4000, "{overall}");
    assert!(overall["dead_letters"].as_object().unwrap().len() >= 3, "{overall}");
}
