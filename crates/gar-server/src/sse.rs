//! Server-Sent Events from the engine thread's events. The receiver lives inside the response
//! stream: when the client disconnects, hyper drops the stream, the engine's next send fails and
//! generation stops.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::worker::GenEvent;

/// `first` events, then `render(event)` for each engine event until the job is done.
pub fn stream<F>(
    rx: UnboundedReceiver<GenEvent>,
    first: Vec<Event>,
    render: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: FnMut(GenEvent) -> Vec<Event> + Send + 'static,
{
    let head = stream::iter(first.into_iter().map(Ok));
    let body = stream::unfold((rx, render), |(mut rx, mut render)| async move {
        let event = rx.recv().await?;
        let out = render(event);
        Some((stream::iter(out.into_iter().map(Ok)), (rx, render)))
    })
    .flatten();
    // Comments every 15 s keep proxies from closing a stream that waits in the queue.
    Sse::new(head.chain(body)).keep_alive(KeepAlive::default())
}

/// A `data:` event holding JSON.
pub fn json(name: Option<&str>, value: &serde_json::Value) -> Event {
    let event = Event::default().data(value.to_string());
    match name {
        Some(n) => event.event(n),
        None => event,
    }
}
