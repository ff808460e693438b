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

/// Declares the frames a stream sends: an enum of their names (`as_str`
/// names a frame on the wire; its schema says the same, a test holds
/// them equal), and the schema of one frame as a client parses it, for
/// the OpenAPI description.
macro_rules! frames {
    ($(#[$doc:meta])* $frame:ident, $kind:ident { $($variant:ident = $name:literal),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub(crate) enum $kind {
            $($variant),*
        }

        impl $kind {
            #[cfg(test)]
            const ALL: &'static [$kind] = &[$($kind::$variant),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($kind::$variant => $name),*
                }
            }
        }

        $(#[$doc])*
        #[derive(utoipa::ToSchema)]
        #[expect(dead_code, reason = "describes a frame as a client parses it")]
        pub(crate) struct $frame {
            event: $kind,
            /// One JSON value.
            data: String,
            /// Where the stream resumes after this frame (`Last-Event-ID`).
            id: Option<String>,
            retry: Option<u64>,
        }
    };
}

frames!(
    /// A frame of `/v1/events`.
    EventFrame,
    EventKind {
        Snapshot = "snapshot",
        State = "state",
        SnapshotEnd = "snapshot_end",
        Event = "event",
        Behind = "behind",
    }
);

frames!(
    /// A frame of a task's output (`/v1/tasks/{id}/output`).
    OutputFrame,
    OutputKind {
        Output = "output",
        Status = "status",
        Lagged = "lagged",
        End = "end",
    }
);

frames!(
    /// A frame of the dashboard's view (`/v1/dashboard/stream`).
    ViewFrame,
    ViewKind { View = "view" }
);

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
    use super::{EventKind, OutputKind, ViewKind};

    #[test]
    fn a_frame_is_named_on_the_wire_as_its_schema_says() {
        fn same<K: serde::Serialize + Copy>(all: &[K], name: fn(K) -> &'static str) {
            for k in all {
                assert_eq!(serde_json::to_value(k).unwrap(), name(*k));
            }
        }
        same(EventKind::ALL, EventKind::as_str);
        same(OutputKind::ALL, OutputKind::as_str);
        same(ViewKind::ALL, ViewKind::as_str);
        assert_eq!(EventKind::SnapshotEnd.as_str(), "snapshot_end");
    }

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
