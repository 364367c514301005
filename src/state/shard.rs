//! The byte format of one worker's shard of a snapshot: its versions, as they are in its
//! version table ([`crate::dataflow::versions`]), tombstones included.
//!
//! Little-endian:
//!
//! ```text
//! u32 names, then each: u32 length, UTF-8 bytes        customer and category names
//! u64 versions, then each:
//!   u8 identity kind (0 id, 1 place), u32 length, bytes
//!   u64 time, u32 source, u64 seq                      when and where it was admitted
//!   u8 live (0 tombstone, 1 transaction), and if live:
//!   i64 cents, u8 has ts, i64 ts (seconds), u32 customer, u32 category (u32::MAX: none)
//! ```

use std::io::Write;
use std::sync::Arc;

use thiserror::Error;

use crate::dataflow::versions::{Catalog, CompactTxn, FrozenVersions, Stored};
use crate::dataflow::Time;
use crate::event::{IdRef, Position, Txn, Update};

/// Writes the encoding of `frozen` to `out`; returns how many versions it holds.
pub fn encode(frozen: &FrozenVersions, out: &mut (impl Write + ?Sized)) -> std::io::Result<u64> {
    out.write_all(&(frozen.names().len() as u32).to_le_bytes())?;
    for name in frozen.names() {
        put_text(out, name)?;
    }
    out.write_all(&(frozen.len() as u64).to_le_bytes())?;
    // One version at a time into a small buffer: fewer calls through the writer.
    let mut record = Vec::with_capacity(128);
    for (identity, stored) in frozen.iter() {
        record.clear();
        let (kind, text) = match identity {
            IdRef::Id(text) => (0u8, text),
            IdRef::At(text) => (1u8, text),
        };
        record.push(kind);
        record.extend_from_slice(&(text.len() as u32).to_le_bytes());
        record.extend_from_slice(text.as_bytes());
        record.extend_from_slice(&stored.time.to_le_bytes());
        record.extend_from_slice(&stored.position.source.to_le_bytes());
        record.extend_from_slice(&stored.position.seq.to_le_bytes());
        match &stored.txn {
            None => record.push(0),
            Some(txn) => {
                record.push(1);
                record.extend_from_slice(&txn.cents.to_le_bytes());
                record.push(u8::from(txn.ts.is_some()));
                record.extend_from_slice(&txn.ts.unwrap_or(0).to_le_bytes());
                record.extend_from_slice(&txn.customer.to_le_bytes());
                record.extend_from_slice(&txn.category.to_le_bytes());
            }
        }
        out.write_all(&record)?;
    }
    Ok(frozen.len() as u64)
}

fn put_text(out: &mut (impl Write + ?Sized), text: &str) -> std::io::Result<()> {
    out.write_all(&(text.len() as u32).to_le_bytes())?;
    out.write_all(text.as_bytes())
}

/// A shard that does not decode (its checksum matched, so this is a bug or a foreign file).
#[derive(Debug, Error)]
#[error("snapshot shard is malformed at byte {at}: {what}")]
pub struct DecodeError {
    /// Where.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(DecodeError { at: self.at, what: "ends early" })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    fn text(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError { at, what: "text is not UTF-8" })
    }
}

/// Reads a shard as it was written: hands `names` its name catalog, then `each` every
/// version with its identity, its names as numbers into that catalog (checked to be in it).
pub fn read(
    bytes: &[u8],
    names: &mut dyn FnMut(Vec<Arc<str>>),
    each: &mut dyn FnMut(IdRef<'_>, Stored),
) -> Result<u64, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let catalog: Vec<Arc<str>> = (0..r.u32()?).map(|_| r.text().map(Arc::from)).collect::<Result<_, _>>()?;
    let known = catalog.len() as u64;
    names(catalog);
    let name = |n: u32, at: usize| {
        (u64::from(n) < known).then_some(n).ok_or(DecodeError { at, what: "a name number is out of the catalog" })
    };
    let versions = r.u64()?;
    for _ in 0..versions {
        let identity = match (r.u8()?, r.text()?) {
            (0, text) => IdRef::Id(text),
            (1, text) => IdRef::At(text),
            _ => return Err(DecodeError { at: r.at, what: "unknown identity kind" }),
        };
        let time = r.u64()?;
        let position = Position { source: r.u32()?, seq: r.u64()? };
        let txn = match r.u8()? {
            0 => None,
            1 => {
                let cents = r.i64()?;
                let has_ts = r.u8()? == 1;
                let ts = r.i64()?;
                let at = r.at;
                let customer = name(r.u32()?, at)?;
                let category = r.u32()?;
                let category = if category == Catalog::NONE { category } else { name(category, at)? };
                Some(CompactTxn { cents, ts: has_ts.then_some(ts), customer, category })
            }
            _ => return Err(DecodeError { at: r.at, what: "unknown version kind" }),
        };
        each(identity, Stored { time, position, txn });
    }
    if r.at != bytes.len() {
        return Err(DecodeError { at: r.at, what: "bytes left after the last version" });
    }
    Ok(versions)
}

/// Decodes a shard into the versions it holds, each as the [`Update`] that restores it
/// (`txn: None` for a tombstone), handing each to `emit` with the time it was admitted at.
pub fn decode(bytes: &[u8], emit: &mut dyn FnMut(Time, Update)) -> Result<u64, DecodeError> {
    let catalog = std::cell::OnceCell::new();
    read(bytes, &mut |names| drop(catalog.set(names)), &mut |identity, stored| {
        let catalog = catalog.get().expect("the catalog comes first");
        let name = |n: u32| Arc::clone(&catalog[n as usize]);
        let txn = stored.txn.map(|t| Txn {
            customer: name(t.customer),
            cents: t.cents,
            ts: t.ts,
            category: (t.category != Catalog::NONE).then(|| name(t.category)),
        });
        emit(stored.time, Update { identity: identity.to_identity(), position: stored.position, txn });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::versions::{Version, VersionStore};
    use crate::event::Identity;

    fn versions(store: &VersionStore) -> Vec<(Identity, Version)> {
        let mut all: Vec<_> = store.iter().map(|(i, v)| (i.to_identity(), v)).collect();
        all.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        all
    }

    /// A version of `id`, admitted at position `seq` of one source.
    fn version(id: &str, seq: u64) -> Update {
        Update {
            identity: Identity::Id(id.into()),
            position: Position { source: 0, seq },
            txn: Some(Txn { customer: "Ali".into(), cents: 100, ts: None, category: None }),
        }
    }

    /// Runs `feed` on a one-worker pipeline with a snapshot requested at time 2, lets the
    /// dataflow complete time 3, and returns the identities the capture holds.
    fn captured_at_2(feed: fn(&mut timely::worker::Worker, &mut crate::dataflow::Dataflow)) -> Vec<Identity> {
        timely::execute_directly(move |worker| {
            let mut pipeline = crate::dataflow::Dataflow::build(worker, None);
            feed(worker, &mut pipeline);
            pipeline.advance_to(4);
            let probe = pipeline.probe.clone();
            worker.step_while(|| probe.less_than(&4));
            let shard = pipeline.snapshots.take().expect("captured once the frontier passed 2");
            assert_eq!(shard.time, 2);
            let (mut bytes, mut identities) = (Vec::new(), Vec::new());
            encode(&shard.versions, &mut bytes).unwrap();
            decode(&bytes, &mut |_, update| identities.push(update.identity)).unwrap();
            identities.sort_by_key(|i| format!("{i:?}"));
            identities
        })
    }

    /// The capture holds exactly the versions admitted at times `<= T`: none later, even
    /// when later ones arrive before the frontier passes `T`.
    #[test]
    fn captures_exactly_the_versions_up_to_the_requested_time() {
        let identities = captured_at_2(|worker, pipeline| {
            pipeline.advance_to(1);
            pipeline.updates.send(version("t1", 1));
            worker.step();
            pipeline.snapshots.request(2);
            pipeline.advance_to(2);
            pipeline.updates.send(version("t2", 2));
            worker.step();
            pipeline.advance_to(3);
            pipeline.updates.send(version("t3", 3));
        });
        assert_eq!(identities, vec![Identity::Id("t1".into()), Identity::Id("t2".into())]);
    }

    /// The same when the frontier jumps over several times at once, so that the versions of
    /// times up to `T` and after it come out of the stash in one invocation.
    #[test]
    fn captures_exactly_the_versions_up_to_the_requested_time_when_the_frontier_jumps() {
        let identities = captured_at_2(|_, pipeline| {
            pipeline.snapshots.request(2);
            // No step in between: the upsert sees times 1, 2, 3 and a frontier at 4 together.
            for (time, id) in [(1, "t1"), (2, "t2"), (3, "t3")] {
                pipeline.advance_to(time);
                pipeline.updates.send(version(id, time));
            }
        });
        assert_eq!(identities, vec![Identity::Id("t1".into()), Identity::Id("t2".into())]);
    }

    #[test]
    fn a_store_survives_encoding_tombstones_and_all() {
        let mut store = VersionStore::default();
        let txn = |customer: &str, cents, hour, category: Option<&str>| Txn {
            customer: customer.into(),
            cents,
            ts: hour,
            category: category.map(Into::into),
        };
        let updates = [
            (0, Identity::Id("t1".into()), 0, Some(txn("Ali", 12_000, Some(483_000), Some("books")))),
            (0, Identity::At("history.jsonl:3".into()), 1, Some(txn("Zoé", -50, None, None))),
            (7, Identity::Id("t2".into()), 2, Some(txn("Sara", 9_050, None, Some("food")))),
            (9, Identity::Id("t2".into()), 3, None),
        ];
        for (time, identity, seq, txn) in updates {
            let update = Update { identity, position: Position { source: 1 << 31, seq }, txn };
            crate::dataflow::upsert::apply_for_tests(&mut store, time, update);
        }
        let mut bytes = Vec::new();
        assert_eq!(encode(&store.freeze(), &mut bytes).unwrap(), 3);

        let mut restored = VersionStore::default();
        let count = decode(&bytes, &mut |time, update| {
            crate::dataflow::upsert::apply_for_tests(&mut restored, time, update);
        })
        .unwrap();
        assert_eq!(count, 3);
        assert_eq!(versions(&restored), versions(&store));
        // Truncated or trailing bytes are errors, never a panic or a silent partial load.
        for bad in [&bytes[..bytes.len() - 1], &[bytes.as_slice(), &[0]].concat()[..]] {
            assert!(decode(bad, &mut |_, _| {}).is_err());
        }
    }
}
