//! How a worker's share of a scan reaches its reader: through a bounded channel per (scan,
//! worker) in this process ([`Outlets`]), or — from a worker of another process — to worker 0
//! over the control plane as Arrow IPC bytes ([`Wire`]), which it hands on.
//!
//! ```text
//! worker 1 (this process)  ── ScanPart::Batch ──► outlet (scan 12, worker 1) ──► the reader
//! worker 3 (other process) ── Wire::Batch(ipc) ──► worker 0 ── ScanPart::Batch ──► the reader
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::reading::ReadError;

/// Batches waiting in a scan's channel before the scan waits for the reader.
pub const OUTLET_BATCHES: usize = 4;

/// What a reader receives of one worker's share: batches, then the end (the channel
/// closes) or an error.
#[derive(Debug)]
pub enum ScanPart {
    /// Rows.
    Batch(RecordBatch),
    /// The share cannot be read.
    Failed(ReadError),
}

/// A worker's share as it crosses from another process: a batch as Arrow IPC bytes, the end,
/// or an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Wire {
    /// A batch, in Arrow's IPC stream format.
    Batch(Vec<u8>),
    /// The end of the share.
    End,
    /// The share cannot be read.
    Failed(ReadError),
}

/// A batch as Arrow IPC bytes.
pub fn to_ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())
        .expect("a schema encodes into memory");
    writer.write(batch).expect("a batch encodes into memory");
    writer.finish().expect("a stream ends in memory");
    drop(writer);
    bytes
}

/// The batch of IPC bytes [`to_ipc`] made.
pub fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| e.to_string())?;
    match reader.next() {
        Some(batch) => batch.map_err(|e| e.to_string()),
        None => Err("no batch in the bytes".into()),
    }
}

/// Where the workers of this process send their shares of each scan: one bounded channel per
/// (scan, worker), made by the reader before it asks for the scan.
#[derive(Default)]
pub struct Outlets(Mutex<HashMap<(u64, usize), tokio::sync::mpsc::Sender<ScanPart>>>);

impl Outlets {
    /// Channels for scan `id` from each of `workers`; the receivers, in worker order.
    pub fn open(&self, id: u64, workers: &[usize]) -> Vec<tokio::sync::mpsc::Receiver<ScanPart>> {
        let mut outlets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        workers
            .iter()
            .map(|w| {
                let (sender, receiver) = tokio::sync::mpsc::channel(OUTLET_BATCHES);
                outlets.insert((id, *w), sender);
                receiver
            })
            .collect()
    }

    /// The channel of scan `id` from `worker`, taken out (a worker of this process takes its
    /// own when the scan opens; worker 0 those of the other processes' workers).
    pub fn take(&self, id: u64, worker: usize) -> Option<tokio::sync::mpsc::Sender<ScanPart>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&(id, worker))
    }

    /// Drops every channel of scan `id` still here (its reader has gone).
    pub fn close(&self, id: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|(scan, _), _| *scan != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::columns::{schema, Cell, ColumnType, Columns};

    #[test]
    fn batches_cross_processes_as_ipc_bytes() {
        let schema = schema(&[("customer", ColumnType::Text), ("total", ColumnType::Money)]);
        let mut columns = Columns::new(&[ColumnType::Text, ColumnType::Money]);
        columns.push(&[Cell::Text("Ali"), Cell::Cents(40_000)]);
        let batch = columns.finish(schema);
        assert_eq!(from_ipc(&to_ipc(&batch)).unwrap(), batch);
        assert!(from_ipc(b"not arrow").is_err());
    }
}
