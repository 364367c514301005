//! `SUBSCRIBE view` over the Postgres protocol (or `COPY (SUBSCRIBE view) TO STDOUT`), as
//! Materialize streams it: a COPY in text format that never ends by itself, one line per row
//! change — `time, diff, the row's columns` — first the view's rows (diff 1), then every
//! change, from the view's changefeed (see [`crate::serve::feed`]):
//!
//! ```text
//! $ psql -c "COPY (SUBSCRIBE customers) TO STDOUT"
//! 1796568634114   1   Ali     320.00  2   ...
//! 1796568634981   -1  Ali     320.00  2   ...
//! 1796568634981   1   Ali     400.00  3   ...
//! ```
//!
//! A `CancelRequest` (psql's Ctrl-C) ends it with an `ErrorResponse` 57014, as Postgres ends
//! a COPY it cancels; the connection goes on.

use std::fmt::Debug;

use futures::{stream, Sink};
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::PgWireBackendMessage;

use super::{user_error, Backend};
use crate::serve::feed::{Event, Row, SubscribeError};
use crate::sql::SqlError;

impl Backend {
    /// `SUBSCRIBE view` (or `COPY (SUBSCRIBE view) TO STDOUT`), as Materialize streams it: a
    /// COPY in text format that never ends by itself, one line per row change —
    /// `time, diff, the row's columns` — first the view's rows (diff 1), then every change.
    /// A `CancelRequest` (`cancelled` resolving) ends it with 57014.
    pub(super) async fn subscribe(
        &self,
        view: &str,
        mut cancelled: tokio::sync::watch::Receiver<()>,
    ) -> PgWireResult<Response> {
        let view = view.trim_matches('"');
        let (_, columns) = self.engine.describe(&format!("SELECT * FROM \"{view}\"")).await.map_err(user_error)?;
        let names: Vec<String> =
            columns.map(|schema| schema.fields().iter().map(|f| f.name().clone()).collect()).unwrap_or_default();
        let subscription = match self.feeds.subscribe(view, None, None).await {
            Ok(subscription) => subscription,
            Err(SubscribeError::View(error)) => return Err(user_error(error)),
            Err(other) => return Err(user_error(SqlError::Unavailable(other.to_string()))),
        };
        let width = names.len() + 2;
        let lines = futures::StreamExt::flat_map(
            stream::unfold(subscription, move |mut subscription| {
                let names = names.clone();
                async move {
                    loop {
                        let event = subscription.next().await?;
                        // One message per line: pgwire hands them to the socket once 8 KiB are
                        // waiting (it feeds copy data without flushing), so lines, not whole
                        // snapshots, are what make that happen.
                        let line = |time: u64, diff: i64, row: &Row| {
                            Ok(CopyData::new(copy_line(time, diff, &row.values, &names).into()))
                        };
                        let lines: Vec<PgWireResult<CopyData>> = match &*event {
                            Event::Snapshot { time, rows, .. } => rows.iter().map(|row| line(*time, 1, row)).collect(),
                            Event::Changes { time, changes, .. } => {
                                changes.iter().map(|c| line(*time, c.diff, &c.row)).collect()
                            }
                            Event::Progress { .. } => continue,
                            Event::End { reason } => vec![Err(user_error(SqlError::Canceled(reason.clone())))],
                        };
                        if !lines.is_empty() {
                            return Some((lines, subscription));
                        }
                    }
                }
            }),
            stream::iter,
        );
        // A cancel ends the stream with an error after what was sent.
        let cancel = async move {
            // A closed channel (the server stopping) is no cancel: the stream ends otherwise.
            if cancelled.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
            Err(user_error(SqlError::Canceled("due to user request".into())))
        };
        Ok(Response::CopyOut(CopyResponse::new(0, width, until_cancelled(lines, cancel))))
    }
}

/// A COPY OUT: its header, each line as it comes (flushed as soon as no more are ready), and
/// `CopyDone` with the tag at its end; an error ends it at once, for the caller to answer.
pub(super) async fn send_copy_out<C>(client: &mut C, copy: CopyResponse) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use futures::{SinkExt, StreamExt};
    let header = CopyOutResponse::new(copy.format, copy.columns as i16, copy.column_formats());
    client.send(PgWireBackendMessage::CopyOutResponse(header)).await?;
    let mut lines = copy.data_stream.ready_chunks(1024);
    let mut rows = 0;
    while let Some(ready) = lines.next().await {
        for line in ready {
            client.feed(PgWireBackendMessage::CopyData(line?)).await?;
            rows += 1;
        }
        client.flush().await?;
    }
    client.send(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
    client.send(PgWireBackendMessage::CommandComplete(Tag::new("COPY").with_rows(rows).into())).await?;
    Ok(())
}

/// `lines` until `cancel` resolves, then what it resolves to, and nothing after.
fn until_cancelled<T: Send + 'static>(
    lines: impl futures::Stream<Item = T> + Send + 'static,
    cancel: impl std::future::Future<Output = T> + Send + 'static,
) -> impl futures::Stream<Item = T> + Send + 'static {
    use futures::future::Either;
    use futures::{FutureExt, StreamExt};
    stream::unfold((lines.boxed(), Some(cancel.boxed())), |(mut lines, cancel)| async move {
        let mut cancel = cancel?;
        match futures::future::select(lines.next(), &mut cancel).await {
            Either::Left((Some(line), _)) => Some((line, (lines, Some(cancel)))),
            Either::Left((None, _)) => None,
            Either::Right((last, _)) => Some((last, (lines, None))),
        }
    })
}

/// The view a `SUBSCRIBE [TO] view` or `COPY (SUBSCRIBE [TO] view) TO STDOUT` names, if the
/// statement is one.
pub(super) fn subscribe_target(statement: &str) -> Option<&str> {
    let mut text = statement.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    let copy = lower.starts_with("copy");
    if copy {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let tail = text[close + 1..].trim().to_ascii_lowercase();
        if tail.split_whitespace().collect::<Vec<_>>() != ["to", "stdout"] {
            return None;
        }
        text = text[open + 1..close].trim();
    }
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("subscribe") {
        return None;
    }
    let mut view = words.next()?;
    if view.eq_ignore_ascii_case("to") {
        view = words.next()?;
    }
    words.next().is_none().then_some(view)
}

/// One row change as a line of COPY's text format: time, diff, then the columns.
fn copy_line(time: u64, diff: i64, row: &serde_json::Map<String, serde_json::Value>, names: &[String]) -> String {
    let mut line = format!("{time}\t{diff}");
    for name in names {
        line.push('\t');
        match row.get(name) {
            None | Some(serde_json::Value::Null) => line.push_str("\\N"),
            Some(serde_json::Value::String(text)) => {
                for c in text.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\t' => line.push_str("\\t"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        c => line.push(c),
                    }
                }
            }
            Some(other) => line.push_str(&other.to_string()),
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_statements_name_their_view() {
        assert_eq!(subscribe_target("SUBSCRIBE customers"), Some("customers"));
        assert_eq!(subscribe_target("subscribe to big;"), Some("big"));
        assert_eq!(subscribe_target("COPY (SUBSCRIBE customers) TO STDOUT"), Some("customers"));
        assert_eq!(subscribe_target("COPY (SUBSCRIBE customers) TO '/tmp/x'"), None);
        assert_eq!(subscribe_target("SELECT * FROM customers"), None);
        assert_eq!(subscribe_target("SUBSCRIBE customers WITH (SNAPSHOT = false)"), None);
    }

    #[test]
    fn copy_lines_escape_text_and_write_nulls() {
        let row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"customer":"A\tb","total":400,"category":null}"#).unwrap();
        let names = ["customer".to_owned(), "total".to_owned(), "category".to_owned()];
        assert_eq!(copy_line(7, -1, &row, &names), "7\t-1\tA\\tb\t400\t\\N\n");
    }
}
