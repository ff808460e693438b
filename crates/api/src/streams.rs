//! Streams a client holds open (`/v1/events`, the dashboard's, a task's
//! output): a cap on how many at once, with a clear 503 past it, and each
//! one pulled by the client's pace. Nothing runs for a stream but the
//! stream itself: a frame is made when the connection can take one, so a
//! client that stops reading holds one frame's worth of memory until the
//! server gives up on it (`ServeLimits::write_timeout`), and a client that
//! goes away takes its stream with it.

use crate::{ApiError, ErrorCode};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The streams open at once, shared by every stream route.
#[derive(Clone, Debug)]
pub(crate) struct Streams {
    open: Arc<Semaphore>,
    max: usize,
}

impl Streams {
    pub(crate) fn new(max: usize) -> Self {
        Streams {
            open: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more stream, or 503 when all are taken.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.open.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Busy,
                format!(
                    "this node serves {} streams at once and all are open \
                     (shoal up --api-max-streams); try again later",
                    self.max
                ),
            )
        })
    }
}

/// Server-sent events from `frames`, holding `permit` as long as the
/// client holds the stream.
pub(crate) fn sse(
    permit: OwnedSemaphorePermit,
    frames: impl Stream<Item = SseEvent> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let frames = frames.map(move |e| {
        let _held = &permit;
        Ok(e)
    });
    Sse::new(frames).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_holds_its_place_until_dropped() {
        let streams = Streams::new(2);
        let a = streams.admit().unwrap();
        let b = sse(streams.admit().unwrap(), futures::stream::empty());
        assert!(streams.admit().is_err(), "the third is refused");
        drop(b);
        let c = streams.admit().expect("a dropped stream frees its place");
        drop((a, c));
    }
}
