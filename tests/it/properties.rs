//! Property tests: arbitrary input to every parser never panics and always yields either a
//! valid value or a typed error.

use std::io::Write;

use herald::auth::Verifier;
use herald::config::{Config, Mode, Overrides};
use herald::group::GroupName;
use herald::protocol::{self, ErrorCode, Request};
use proptest::prelude::*;

fn frame_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""type":"subscribe""#.to_string()),
        Just(r#""type":"publish""#.to_string()),
        Just(r#""type":"auth""#.to_string()),
        "\"type\":\"[a-z]{0,8}\"",
        "\"group\":\"[A-Za-z0-9_. -]{0,12}\"",
        "\"id\":-?[0-9]{1,22}",
        "\"data\":(null|true|[0-9]{1,5}|\"x\"|\\{\\}|\\[1,2\\])",
        "\"since\":\\{\"offset\":[0-9]{1,3},\"epoch\":\"e\"\\}",
        "\"token\":(1|\"t\")",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_frame_decoder_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = protocol::decode(&text);
    }

    #[test]
    fn frames_built_from_fields_decode_or_fail_with_a_code(fields in prop::collection::vec(frame_field(), 0..5)) {
        let text = format!("{{{}}}", fields.join(","));
        match protocol::decode(&text) {
            Ok(incoming) => {
                if let Request::Subscribe { group, .. } | Request::Publish { group, .. } = &incoming.request {
                    prop_assert!(GroupName::new(group.as_str()).is_ok());
                }
            }
            Err(e) => prop_assert!(!e.message.is_empty() && e.code != ErrorCode::Internal),
        }
    }

    #[test]
    fn group_names_are_valid_exactly_when_they_match_the_rule(name in "[A-Za-z0-9_.\\- é\"]{0,110}") {
        let rule = !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        prop_assert_eq!(GroupName::new(&name).is_ok(), rule);
    }

    #[test]
    fn tokens_never_panic_the_verifier(token in "[A-Za-z0-9_.=+/-]{0,300}") {
        let config = Config { auth_hmac_secret: Some("property-test-secret-32-bytes!!".into()), ..Config::default() };
        let verifier = Verifier::from_config(&config).unwrap().unwrap();
        prop_assert!(verifier.verify(&token).is_err(), "no random token is valid");
    }

    #[test]
    fn config_files_load_or_name_what_is_wrong(lines in prop::collection::vec(config_line(), 0..6)) {
        let mut file = tempfile();
        writeln!(file.1, "{}", lines.join("\n")).unwrap();
        if let Err(e) = Config::load(Some(&file.0), Overrides::default(), Mode::Standalone) {
            prop_assert!(e.to_string().starts_with("invalid config: "));
        }
        let _ = std::fs::remove_file(&file.0);
    }
}

fn config_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("redis_prefix"),
        Just("node_id"),
        Just("max_frame_bytes"),
        Just("outbound_queue"),
        Just("auth"),
        Just("auth_timeout"),
        Just("rate_limit"),
        Just("ping_interval"),
        Just("api_keys"),
        Just("typo"),
    ];
    let value = prop_oneof![
        Just("\"127.0.0.1:9\"".to_string()),
        Just("\"required\"".to_string()),
        Just("\"5s\"".to_string()),
        Just("0".to_string()),
        Just("65536".to_string()),
        Just("[\"a\"]".to_string()),
        Just("\"\"".to_string()),
        "\"[a-z0-9 ]{0,10}\"",
        "-?[0-9]{1,12}",
        Just("{".to_string()),
    ];
    (key, value).prop_map(|(k, v)| format!("{k} = {v}"))
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("herald-prop-{}-{n}.toml", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}
