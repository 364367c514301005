//! Reading history files: long lines, shares of a file split over workers, oversized records.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use atelier_lambda::source::history::HistoryFile;
use atelier_lambda::source::Record;
fn read_all(path: &Path, peers: usize, max: usize) -> Vec<Record> {
    let mut files = HistoryFile::open_all(&[path.to_owned()]).unwrap();
    files[0].min_split_bytes = 1;
    let progress = AtomicU64::new(0);
    let mut records = Vec::new();
    for worker in 0..peers {
        files[0]
            .read_share(worker, peers, max, &progress, &mut |r| {
                records.push(r);
                ControlFlow::Continue(())
            })
            .unwrap();
    }
    assert_eq!(progress.load(Ordering::Relaxed), files[0].len, "every byte is read once");
    records
}

#[test]
fn lines_longer_than_the_buffer_and_shares_that_cut_lines() {
    let dir = std::env::temp_dir().join(format!("history-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("long.jsonl");
    let huge = format!("{{\"customer\":\"Ali\",\"amount\":1,\"pad\":\"{}\"}}", "x".repeat(3 << 20));
    let text = format!("{{\"customer\":\"A\",\"amount\":1}}\n{huge}\n\n{{\"customer\":\"B\",\"amount\":2}}\r\n{{\"customer\":\"C\",\"amount\":3}}");
    std::fs::write(&path, text).unwrap();
    for peers in [1, 2, 3, 7] {
        let records = read_all(&path, peers, 1 << 20);
        let mut seen: Vec<String> = records
            .iter()
            .map(|r| match r {
                Record::Update(u) => format!("{:?}", u.identity),
                Record::Refused(d) => format!("{}@{}", d.rejection.reason, d.source),
            })
            .collect();
        seen.sort();
        let label = path.display();
        assert_eq!(
            seen,
            vec![
                format!("At(\"{label}:1\")"),
                format!("At(\"{label}:4\")"),
                format!("At(\"{label}:5\")"),
                format!("oversized@{label}:2"),
            ],
            "{peers} workers"
        );
        let oversized = records.iter().find_map(|r| if let Record::Refused(d) = r { Some(d) } else { None }).unwrap();
        assert_eq!(oversized.raw.len(), atelier_lambda::deadletter::MAX_RAW_BYTES, "the raw bytes kept are capped");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
