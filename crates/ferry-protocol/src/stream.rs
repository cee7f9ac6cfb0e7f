//! The messages of `GET /v1/stream`: each is the JSON of one WebSocket text frame the server
//! sends. They carry notifications only, never rows.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamMessage {
    /// Once, on connect. The server pings this often; a client that hears nothing for three
    /// intervals should treat the stream as down.
    Hello { ping_interval_ms: u64 },
    /// Rows the device may read changed (other than by its own pushes): pull.
    Changed,
    /// Another device of the user uploaded a file: the file worker may fetch it now.
    Files,
}

impl StreamMessage {
    /// The message as the frame's text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("stream messages serialize")
    }

    /// Reads a frame's text; `None` for a message this version does not know (a newer
    /// server's), which a client skips.
    pub fn parse(text: &str) -> Option<StreamMessage> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_documented_json() {
        assert_eq!(StreamMessage::Changed.to_text(), r#"{"type":"changed"}"#);
        assert_eq!(StreamMessage::Files.to_text(), r#"{"type":"files"}"#);
        let hello = StreamMessage::Hello { ping_interval_ms: 15000 };
        assert_eq!(hello.to_text(), r#"{"type":"hello","ping_interval_ms":15000}"#);
        assert_eq!(StreamMessage::parse(r#"{"ping_interval_ms":15000,"type":"hello"}"#), Some(hello));
        assert_eq!(
            StreamMessage::parse(r#"{"type":"changed","since":"later fields are fine"}"#),
            Some(StreamMessage::Changed)
        );
        assert_eq!(StreamMessage::parse(r#"{"type":"news"}"#), None);
    }
}
