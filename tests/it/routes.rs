//! `[[routes]]`: auto-subscription from the connection path, and publishing narrowed to the
//! route's groups.

use herald::config::{Config, Mode, NamespaceConfig, Overrides, RouteConfig};
use herald::gateway::Gateway;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::{Client, Node, Process, config};

#[tokio::test]
async fn a_route_subscribes_on_connect_and_narrows_publishing_to_its_groups() {
    let mut config = config(None, "solo");
    config.namespaces.insert("chat".into(), NamespaceConfig { client_publish: true, ..Default::default() });
    config.routes.push(RouteConfig {
        path: "/ws/chat/{room}".into(),
        subscribe: vec!["chat.{room}".into(), "announcements".into()],
        publish: Some(vec!["chat.{room}".into()]),
    });
    let node = Node::ready(config).await;

    let mut routed = Client::connect(&node.ws_url("/ws/chat/lobby")).await;
    // Auto-subscribed to both groups of the route, each join announced.
    for group in ["chat.lobby", "announcements"] {
        assert_eq!(routed.recv().await, json!({"type": "subscribed", "group": group}));
    }
    let mut generic = node.client().await;
    generic.subscribe("chat.lobby").await;

    // From then on the HTTP publishes reach it.
    node.publish("announcements", json!("welcome")).await;
    node.publish("chat.lobby", json!("hi")).await;
    assert_eq!(routed.message().await, ("announcements".into(), json!("welcome")));
    assert_eq!(routed.message().await, ("chat.lobby".into(), json!("hi")));
    assert_eq!(generic.message().await.1, json!("hi"));

    // The route narrows publishing to its room; /ws clients get the namespace policy.
    assert_eq!(routed.publish("chat.lobby", json!("from route")).await["type"], "reply");
    assert_eq!(generic.message().await.1, json!("from route"));
    assert_eq!(routed.publish("chat.other", json!(1)).await["code"], "forbidden");
    assert_eq!(generic.publish("chat.other", json!(1)).await["type"], "reply");
    // ... and never widens it: publishing where the namespace does not allow it is refused.
    assert_eq!(routed.publish("announcements", json!(1)).await["code"], "forbidden");

    // A path value that makes an invalid group is refused at the handshake.
    let refused = Client::open(&node.ws_url("/ws/chat/no%20spaces"), &[]).await;
    assert_eq!(refused.err(), Some(400));
}

#[tokio::test]
async fn a_config_that_does_not_compile_stops_the_process_at_start_naming_the_key() {
    let cases = [
        (
            "standalone",
            "[[routes]]\npath = \"/ws/chat/{room}\"\nsubscribe = [\"chat.{user}\"]\n",
            "routes[0].subscribe[0]",
        ),
        ("standalone", "[[routes]]\npath = \"/chat\"\n", "routes[0].path"),
        (
            "standalone",
            "auth = \"required\"\nauth_public_key_file = \"/nonexistent.pem\"\n",
            "auth_public_key_file",
        ),
        ("gateway", "auth = \"off\"\n", "redis_url"),
        ("gateway", "redis_url = \"redis://127.0.0.1:1/\"\n", "auth"),
    ];
    for (mode, toml, key) in cases {
        let (code, stderr) = Process::spawn(&[mode, "--listen", "127.0.0.1:0"], toml).wait_output();
        assert_eq!(code, Some(2), "{mode} with {toml}: {stderr}");
        assert!(stderr.contains(&format!("invalid config: {key}")), "{mode} with {toml}: {stderr}");
    }
}

#[tokio::test]
async fn the_example_config_builds_a_gateway_with_its_route() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/herald.toml");
    let config = Config::load(Some(&example), Overrides::default(), Mode::Gateway).expect("valid example");
    assert_eq!(config.routes.len(), 1);
    let gateway = Gateway::new(config, CancellationToken::new());
    assert!(gateway.is_ok(), "{:?}", gateway.err());
}
