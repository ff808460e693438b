//! Server-sent events read from a blocking response, as the CLI and the
//! tests follow `/v1/events`, `/v1/tasks/{id}/output` and the dashboard
//! stream.
//!
//! Written here rather than taken from a crate: the maintained SSE clients
//! (`eventsource-client`, `reqwest-eventsource`) are async and bring their
//! own HTTP stack, while the CLI reads with blocking `reqwest`; what it
//! needs of the format (WHATWG "server-sent events": fields, multi-line
//! data, frames ended by a blank line, comments) is this one reader.

use serde_json::Value;
use std::io::BufRead;

/// (event name, JSON data) per frame; a frame whose data is not JSON has
/// `Value::Null`. Ends with the stream, or at the first read error.
#[derive(Debug)]
pub struct SseFrames<R> {
    lines: std::io::Lines<R>,
}

impl<R: BufRead> SseFrames<R> {
    pub fn new(from: R) -> Self {
        SseFrames {
            lines: from.lines(),
        }
    }
}

impl<R: BufRead> Iterator for SseFrames<R> {
    type Item = (String, Value);

    fn next(&mut self) -> Option<(String, Value)> {
        let mut kind = String::new();
        let mut data: Option<String> = None;
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if line.is_empty() {
                // A blank line ends a frame; one without data is no event.
                if let Some(d) = data.take() {
                    let v = serde_json::from_str(&d).unwrap_or(Value::Null);
                    return Some((std::mem::take(&mut kind), v));
                }
                kind.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => kind = value.to_owned(),
                "data" => match data.as_mut() {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                // Comments (keep-alives), ids and retry hints.
                _ => {}
            }
        }
        // A stream that ends mid-frame: what came is still a frame.
        let d = data?;
        Some((kind, serde_json::from_str(&d).unwrap_or(Value::Null)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_follow_the_format() {
        let text = ": keep-alive\n\
                    event: view\ndata: {\"a\":1}\n\n\
                    event:output\nid: 7\ndata: {\"text\":\n\
                    data: \"x\"}\n\n\
                    event: nothing\n\n\
                    data: 3\n\n\
                    data: not json\n\n\
                    event: end\ndata: {}";
        let frames: Vec<_> = SseFrames::new(text.as_bytes()).collect();
        assert_eq!(
            frames,
            [
                ("view".to_owned(), json!({"a": 1})),
                ("output".to_owned(), json!({"text": "x"})),
                (String::new(), json!(3)),
                (String::new(), Value::Null),
                ("end".to_owned(), json!({})),
            ]
        );
    }
}
