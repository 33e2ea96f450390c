//! channels_redis' bytes, exactly as its serializers write them: `[random prefix][payload]`,
//! where the payload is the event dict in msgpack (or JSON), Fernet-encrypted when
//! `symmetric_encryption_keys` are set (each key turned into a Fernet key as channels_redis does:
//! URL-safe base64 of its SHA-256). The core layer puts 12 random bytes in front (they make every
//! queued message unique in its sorted set); the pubsub layer none.
//!
//! Events become JSON for Herald clients: msgpack maps with string keys are objects, binary
//! values (and invalid UTF-8 strings) are base64 strings, a map key that is not a string is
//! written as its JSON text, and channels-internal keys (`__asgi_*`) are removed. The event's own
//! `type` stays, so a client can dispatch on it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use rmpv::Value as Pack;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{ChannelsConfig, ChannelsLayer, ConfigError, SerializerFormat};

/// Keys channels_redis adds for its own bookkeeping.
const INTERNAL: &str = "__asgi_";

/// Why bytes read from the layer are not an event.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("shorter than the random prefix")]
    Truncated,
    #[error("not a Fernet token of any configured key (or older than the layer's expiry)")]
    Undecryptable,
    #[error("not msgpack: {0}")]
    NotMsgpack(String),
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("not a dict")]
    NotADict,
}

/// An event read from the layer: its dict without the internal keys, and the channels it was
/// addressed to (`__asgi_channel__`, set by the core layer's `group_send`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) dict: Map<String, Value>,
    pub(crate) channels: Vec<String>,
}

impl Event {
    /// The event's `type`, if it is a string.
    pub(crate) fn kind(&self) -> Option<&str> {
        self.dict.get("type").and_then(Value::as_str)
    }
}

/// Encodes and decodes one layer's messages.
pub(crate) struct Codec {
    random_prefix: usize,
    format: SerializerFormat,
    fernets: Vec<fernet::Fernet>,
    /// Fernet tokens older than this many seconds are refused (core layer: `expiry + 10`, as
    /// channels_redis does).
    ttl: Option<u64>,
}

impl Codec {
    pub(crate) fn new(config: &ChannelsConfig) -> Result<Self, ConfigError> {
        let fernets = config
            .symmetric_encryption_keys
            .iter()
            .map(|key| fernet::Fernet::new(&URL_SAFE.encode(Sha256::digest(key.as_bytes()))))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ConfigError::new("channels.symmetric_encryption_keys", "cannot derive a Fernet key")
            })?;
        let core = config.layer == ChannelsLayer::Core;
        Ok(Self {
            random_prefix: if core { config.random_prefix_length } else { 0 },
            format: config.serializer_format,
            fernets,
            ttl: core.then_some(config.expiry + 10),
        })
    }

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        let payload = bytes.get(self.random_prefix..).ok_or(DecodeError::Truncated)?;
        let plain;
        let payload = if self.fernets.is_empty() {
            payload
        } else {
            let token = std::str::from_utf8(payload).map_err(|_| DecodeError::Undecryptable)?;
            plain = self.decrypt(token).ok_or(DecodeError::Undecryptable)?;
            &plain
        };
        let value = match self.format {
            SerializerFormat::Msgpack => {
                let mut reader = payload;
                let pack = rmpv::decode::read_value(&mut reader)
                    .map_err(|e| DecodeError::NotMsgpack(e.to_string()))?;
                if !reader.is_empty() {
                    return Err(DecodeError::NotMsgpack("bytes after the message".into()));
                }
                to_json(pack)
            }
            SerializerFormat::Json => serde_json::from_slice(payload).map_err(DecodeError::NotJson)?,
        };
        let Value::Object(mut dict) = value else { return Err(DecodeError::NotADict) };
        let channels = match dict.remove("__asgi_channel__") {
            Some(Value::Array(names)) => {
                names.into_iter().filter_map(|n| n.as_str().map(str::to_owned)).collect()
            }
            Some(Value::String(name)) => vec![name],
            _ => Vec::new(),
        };
        dict.retain(|key, _| !key.starts_with(INTERNAL));
        Ok(Event { dict, channels })
    }

    fn decrypt(&self, token: &str) -> Option<Vec<u8>> {
        self.fernets.iter().find_map(|fernet| match self.ttl {
            Some(ttl) => fernet.decrypt_with_ttl(token, ttl).ok(),
            None => fernet.decrypt(token).ok(),
        })
    }

    /// The bytes channels_redis would write for `dict`.
    pub(crate) fn encode(&self, dict: &Map<String, Value>) -> Vec<u8> {
        let mut payload = match self.format {
            SerializerFormat::Msgpack => {
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, &to_pack(&Value::Object(dict.clone())))
                    .expect("writing to a Vec cannot fail");
                out
            }
            SerializerFormat::Json => serde_json::to_vec(dict).expect("JSON maps always serialize"),
        };
        if let Some(fernet) = self.fernets.first() {
            payload = fernet.encrypt(&payload).into_bytes();
        }
        let mut bytes: Vec<u8> = (0..self.random_prefix).map(|_| rand::random::<u8>()).collect();
        bytes.extend_from_slice(&payload);
        bytes
    }
}

fn to_json(pack: Pack) -> Value {
    match pack {
        Pack::Nil => Value::Null,
        Pack::Boolean(b) => Value::Bool(b),
        Pack::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::Null,
        },
        Pack::F32(f) => serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Pack::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Pack::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => Value::Null,
        },
        Pack::Binary(bytes) => Value::String(STANDARD.encode(bytes)),
        Pack::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Pack::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Pack::String(s) if s.is_str() => s.into_str().unwrap_or_default(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(value))
                })
                .collect(),
        ),
        Pack::Ext(_, data) => Value::String(STANDARD.encode(data)),
    }
}

fn to_pack(value: &Value) -> Pack {
    match value {
        Value::Null => Pack::Nil,
        Value::Bool(b) => Pack::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Pack::from(i),
            (None, Some(u), _) => Pack::from(u),
            (_, _, Some(f)) => Pack::F64(f),
            _ => Pack::Nil,
        },
        Value::String(s) => Pack::from(s.as_str()),
        Value::Array(items) => Pack::Array(items.iter().map(to_pack).collect()),
        Value::Object(map) => {
            Pack::Map(map.iter().map(|(k, v)| (Pack::from(k.as_str()), to_pack(v))).collect())
        }
    }
}

/// channels_redis' `_consistent_hash`: which of `ring` hosts holds `value` (CRC32 of its UTF-8,
/// its low 12 bits, scaled to the ring).
pub(crate) fn shard(value: &str, ring: usize) -> usize {
    if ring <= 1 {
        return 0;
    }
    let bucket = crc32fast::hash(value.as_bytes()) & 0xFFF;
    (f64::from(bucket) / (4096.0 / ring as f64)) as usize
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn codec(edit: impl FnOnce(&mut ChannelsConfig)) -> Codec {
        let mut config = ChannelsConfig { groups: vec!["*".into()], ..ChannelsConfig::default() };
        edit(&mut config);
        Codec::new(&config).unwrap()
    }

    #[test]
    fn round_trips_what_channels_redis_writes_and_drops_internal_keys() {
        for edit in [
            (|_: &mut ChannelsConfig| {}) as fn(&mut ChannelsConfig),
            |c| c.symmetric_encryption_keys = vec!["one".into(), "two".into()],
            |c| c.serializer_format = SerializerFormat::Json,
            |c| c.layer = ChannelsLayer::Pubsub,
        ] {
            let codec = codec(edit);
            let dict =
                json!({"type": "chat.message", "text": "hé", "n": -3, "f": 1.5, "__asgi_channel__": ["x!y"]});
            let bytes = codec.encode(dict.as_object().unwrap());
            let event = codec.decode(&bytes).unwrap();
            assert_eq!(
                Value::Object(event.dict),
                json!({"type": "chat.message", "text": "hé", "n": -3, "f": 1.5})
            );
            assert_eq!(event.channels, ["x!y"]);
        }
    }

    #[test]
    fn binary_values_become_base64_and_bad_bytes_are_refused() {
        let codec = codec(|c| c.random_prefix_length = 0);
        let pack = Pack::Map(vec![
            (Pack::from("type"), Pack::from("file")),
            (Pack::from("blob"), Pack::Binary(vec![0, 255])),
            (Pack::from(7), Pack::from(true)),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &pack).unwrap();
        let event = codec.decode(&bytes).unwrap();
        assert_eq!(Value::Object(event.dict), json!({"type": "file", "blob": "AP8=", "7": true}));
        assert!(matches!(codec.decode(&[0xa5, b'a']), Err(DecodeError::NotMsgpack(_))), "truncated");
        assert!(matches!(codec.decode(&[0x93, 1, 2, 3]), Err(DecodeError::NotADict)));
        let prefixed = codec_with_prefix();
        assert!(matches!(prefixed.decode(&[1, 2, 3]), Err(DecodeError::Truncated)));
        let encrypted = self::codec(|c| c.symmetric_encryption_keys = vec!["k".into()]);
        let other = self::codec(|c| c.symmetric_encryption_keys = vec!["other".into()]);
        let bytes = encrypted.encode(json!({"type": "x"}).as_object().unwrap());
        assert!(matches!(other.decode(&bytes), Err(DecodeError::Undecryptable)));
    }

    fn codec_with_prefix() -> Codec {
        codec(|_| {})
    }

    #[test]
    fn shards_as_channels_redis_does() {
        // binascii.crc32(b"chat.lobby") & 0xFFF = 1544, over a ring of 3: int(1544 / 1365.33) = 1.
        assert_eq!(crc32fast::hash(b"chat.lobby") & 0xFFF, 1544);
        assert_eq!(shard("chat.lobby", 3), 1);
        assert_eq!(shard("chat.lobby", 1), 0);
    }
}
