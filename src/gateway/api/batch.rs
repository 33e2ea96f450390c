//! Batches of `POST /api/publish`: a JSON array of `{"group":G,"data":X}` objects, or the same
//! objects one per line with `Content-Type: application/x-ndjson`. The batch goes to Redis in one
//! pipeline, in order (so in order per group), and is answered per message, in order:
//! `{"results":[{"ok":true},{"error":{"code":..,"message":..}},..]}`. A message that is not valid
//! (bad JSON, an invalid group, data over `max_frame_bytes`) fails alone.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::group::GroupName;
use crate::protocol::ErrorCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    group: String,
    #[serde(deserialize_with = "crate::protocol::present")]
    data: Option<Box<RawValue>>,
}

/// One message of a batch, or why it cannot be published.
pub(super) type Message = Result<(GroupName, Box<RawValue>), (ErrorCode, String)>;

/// The messages of a JSON array body; `None` when the body is not a JSON array.
pub(super) fn from_array(body: &[u8], max_frame_bytes: usize) -> Option<Vec<Message>> {
    let items: Vec<Box<RawValue>> = serde_json::from_slice(body).ok()?;
    Some(items.iter().map(|item| message(item.get().as_bytes(), max_frame_bytes)).collect())
}

/// The messages of an NDJSON body: one per non-empty line.
pub(super) fn from_lines(body: &[u8], max_frame_bytes: usize) -> Vec<Message> {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| message(line, max_frame_bytes))
        .collect()
}

fn message(bytes: &[u8], max_frame_bytes: usize) -> Message {
    let item: Item =
        serde_json::from_slice(bytes).map_err(|e| (ErrorCode::BadRequest, format!("not a message: {e}")))?;
    let group = GroupName::new(&item.group)
        .map_err(|e| (ErrorCode::InvalidGroup, format!("{:?}: {e}", item.group)))?;
    let data = item.data.ok_or((ErrorCode::BadRequest, "missing field data".to_string()))?;
    if data.get().len() > max_frame_bytes {
        return Err((
            ErrorCode::TooLarge,
            format!("data is larger than max_frame_bytes ({max_frame_bytes})"),
        ));
    }
    Ok((group, data))
}

/// The answer for one message.
pub(super) fn result(outcome: Result<(), (ErrorCode, String)>) -> Value {
    match outcome {
        Ok(()) => json!({"ok": true}),
        Err((code, message)) => json!({"error": {"code": code, "message": message}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(messages: &[Message]) -> Vec<Option<ErrorCode>> {
        messages.iter().map(|m| m.as_ref().err().map(|(code, _)| *code)).collect()
    }

    #[test]
    fn arrays_and_lines_give_one_message_each_in_order() {
        let array = br#"[{"group":"a","data":1},{"group":"a b","data":2},{"group":"b"},{"group":"c","data":"xxxxxxxxxx"},3]"#;
        let messages = from_array(array, 8).unwrap();
        assert_eq!(
            codes(&messages),
            [
                None,
                Some(ErrorCode::InvalidGroup),
                Some(ErrorCode::BadRequest),
                Some(ErrorCode::TooLarge),
                Some(ErrorCode::BadRequest)
            ]
        );
        assert!(from_array(b"{\"group\":\"a\"}", 8).is_none(), "an object is not a batch");
        let lines = b"{\"group\":\"a\",\"data\":null}\n\n{nope\n{\"group\":\"b\",\"data\":[1]}\n";
        let messages = from_lines(lines, 64);
        assert_eq!(codes(&messages), [None, Some(ErrorCode::BadRequest), None]);
        assert_eq!(messages[2].as_ref().unwrap().1.get(), "[1]");
    }
}
