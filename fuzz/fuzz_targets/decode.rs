//! Feeds arbitrary bytes to the client frame decoder: it must never panic, and whatever it
//! accepts must name a valid group.
#![no_main]

use herald::group::GroupName;
use herald::protocol::{self, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(incoming) = protocol::decode(text) {
        if let Request::Subscribe { group, .. } | Request::Publish { group, .. } = incoming.request {
            assert!(GroupName::new(group.as_str()).is_ok());
        }
    }
});
