//! The demo page served at `/` (its live panel over Server-Sent Events at `/live`, both with
//! `/demo.css` and `/live-panel.js`), the JavaScript client at `/herald.js` (with its types at
//! `/herald.d.ts`), embedded in the binary so standalone mode needs no files; and, with
//! `demo_tokens` (standalone without keys of its own), `POST /demo/token`, which signs a token
//! for the name the page picks, so "Here now" shows names.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;

use super::Gateway;

const INDEX: &str = include_str!("../../assets/index.html");
const LIVE: &str = include_str!("../../assets/live.html");
const STYLE: &str = include_str!("../../assets/demo.css");
const LIVE_PANEL: &str = include_str!("../../assets/live-panel.js");
const CLIENT: &str = include_str!("../../clients/js/herald.js");
const CLIENT_TYPES: &str = include_str!("../../clients/js/herald.d.ts");
/// How long a demo token lasts.
const DEMO_TOKEN_SECS: u64 = 24 * 3600;

pub(super) fn router(gateway: &Gateway) -> Router<Arc<Gateway>> {
    let asset = |body: &'static str, kind: &'static str| ([(header::CONTENT_TYPE, kind)], body);
    let router = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/live", get(|| async { Html(LIVE) }))
        .route("/demo.css", get(move || async move { asset(STYLE, "text/css; charset=utf-8") }))
        .route(
            "/live-panel.js",
            get(move || async move { asset(LIVE_PANEL, "text/javascript; charset=utf-8") }),
        )
        .route("/herald.js", get(move || async move { asset(CLIENT, "text/javascript; charset=utf-8") }))
        .route("/herald.d.ts", get(move || async move { asset(CLIENT_TYPES, "text/plain; charset=utf-8") }));
    match gateway.config.demo_tokens {
        true => router.route("/demo/token", post(demo_token)),
        false => router,
    }
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

/// A token for `{"name": ..}`: `sub` and `info.name` are the name, no group restrictions.
async fn demo_token(State(gateway): State<Arc<Gateway>>, Json(Name { name }): Json<Name>) -> Response {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 40 {
        return (StatusCode::BAD_REQUEST, "a name of 1 to 40 characters").into_response();
    }
    let secret =
        gateway.config.auth_hmac_secret.as_deref().expect("demo_tokens is validated to have a secret");
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + DEMO_TOKEN_SECS;
    let claims = json!({"sub": name, "exp": exp, "info": {"name": name}});
    match jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
