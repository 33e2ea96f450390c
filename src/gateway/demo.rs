//! The demo page served at `/` and the JavaScript client at `/herald.js` (with its types at
//! `/herald.d.ts`), embedded in the binary so standalone mode needs no files.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::Html;
use axum::routing::get;

use super::Gateway;

const INDEX: &str = include_str!("../../assets/index.html");
const CLIENT: &str = include_str!("../../clients/js/herald.js");
const CLIENT_TYPES: &str = include_str!("../../clients/js/herald.d.ts");

pub(super) fn router() -> Router<Arc<Gateway>> {
    let javascript = |body: &'static str, kind: &'static str| ([(header::CONTENT_TYPE, kind)], body);
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/herald.js", get(move || async move { javascript(CLIENT, "text/javascript; charset=utf-8") }))
        .route(
            "/herald.d.ts",
            get(move || async move { javascript(CLIENT_TYPES, "text/plain; charset=utf-8") }),
        )
}
