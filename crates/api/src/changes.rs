//! `GET /api/v1/changes`: the store's changes as server-sent events, so a
//! page (the console) shows workflows progressing as the server learns of
//! them, with no polling. Each event names what changed
//! (`{"kind":"workflow","id":…,"op":"put"}`); the reader fetches it if it
//! shows it. A reader that falls behind gets `resync` and reloads.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use crate::AppState;

/// How often an idle stream carries a comment, and how soon a stream
/// notices the server stopping.
const TICK: Duration = Duration::from_secs(5);

/// How often the reader's token is checked again: a revoked token stops
/// hearing changes within this.
const RECHECK: Duration = Duration::from_secs(30);

pub(crate) async fn serve(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = state.store.subscribe();
    let hub = state.workers.clone();
    let auth = state.auth.clone();
    // Bounded: a reader that does not read holds this task, not memory.
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut checked = tokio::time::Instant::now();
        while !hub.is_stopped() {
            if checked.elapsed() >= RECHECK {
                if auth.operator(&headers).await.is_err() {
                    return; // revoked: the stream ends
                }
                checked = tokio::time::Instant::now();
            }
            let next = tokio::select! {
                () = tx.closed() => return, // the reader left
                next = tokio::time::timeout(TICK, changes.recv()) => next,
            };
            let event = match next {
                Err(_) => continue, // idle: the keep-alive covers it
                Ok(Ok(change)) => match serde_json::to_string(&change) {
                    Ok(json) => Event::default().event("change").data(json),
                    Err(_) => continue,
                },
                Ok(Err(RecvError::Lagged(_))) => Event::default().event("resync").data("{}"),
                Ok(Err(RecvError::Closed)) => return,
            };
            if tx.send(event).await.is_err() {
                return; // the reader left
            }
        }
    });
    Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::new().interval(TICK))
}
