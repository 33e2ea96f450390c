//! The demo page served at `/`, embedded in the binary so standalone mode needs no files.

use std::sync::Arc;

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use super::Gateway;

const INDEX: &str = include_str!("../../assets/index.html");

pub(super) fn router() -> Router<Arc<Gateway>> {
    Router::new().route("/", get(|| async { Html(INDEX) }))
}
