//! `GET /api/v1/changes`: the store's changes as server-sent events, so a
//! page (the console) shows workflows progressing as the server learns of
//! them, with no polling. Each event names what changed
//! (`{"kind":"workflow","id":…,"op":"put"}`); the reader fetches it if it
//! shows it. A reader that falls behind gets `resync` and reloads.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use crate::AppState;

/// How often an idle stream carries a comment, and how soon a stream
/// notices the server stopping.
const TICK: Duration = Duration::from_secs(5);

pub(crate) async fn serve(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = state.store.subscribe();
    let hub = state.workers.clone();
    // Bounded: a reader that does not read holds this task, not memory.
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        while !hub.is_stopped() {
            let event = match tokio::time::timeout(TICK, changes.recv()).await {
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
