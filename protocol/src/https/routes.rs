//! The API route table: the router and the OpenAPI 3 document are both built from
//! [`ENDPOINTS`], so the published description cannot drift from what is served.

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::{Map, Value, json};

use super::api;
use super::app::AppState;

/// What an endpoint does; picks its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Download,
    Upload,
    Delete,
    Mkdir,
    ListRoot,
    List,
    Move,
    OpenApi,
}

/// One API endpoint as documented and routed.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Lower-case HTTP method.
    pub(crate) method: &'static str,
    /// Path in OpenAPI form; `{path}` is a slash-separated path below the user's root.
    pub(crate) path: &'static str,
    pub(crate) op: Op,
    pub(crate) summary: &'static str,
    /// Request body media type, if the endpoint takes one.
    pub(crate) body: Option<&'static str>,
    /// Success responses: status and description.
    pub(crate) responses: &'static [(u16, &'static str)],
}

/// Every API endpoint.
pub(crate) const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "get",
        path: "/api/v1/files/{path}",
        op: Op::Download,
        summary: "Download a file. Honours a single `Range` (206; 416 if outside the file), `If-None-Match` (304); answers `HEAD` with the headers only.",
        body: None,
        responses: &[
            (200, "the file"),
            (206, "the requested range"),
            (304, "not modified"),
        ],
    },
    Endpoint {
        method: "put",
        path: "/api/v1/files/{path}",
        op: Op::Upload,
        summary: "Upload a file, streamed (`curl -T`). Replaces an existing file (with `If-None-Match: *`: creates only, 412 if the name holds a file); creates missing parent folders. A body cut off before its end is an interrupted upload: an existing file stays as it was.",
        body: Some("application/octet-stream"),
        responses: &[(201, "created"), (204, "replaced")],
    },
    Endpoint {
        method: "delete",
        path: "/api/v1/files/{path}",
        op: Op::Delete,
        summary: "Delete a file or an empty folder.",
        body: None,
        responses: &[(204, "deleted")],
    },
    Endpoint {
        method: "post",
        path: "/api/v1/folders/{path}",
        op: Op::Mkdir,
        summary: "Create a folder (its parent must exist).",
        body: None,
        responses: &[(201, "created")],
    },
    Endpoint {
        method: "get",
        path: "/api/v1/list",
        op: Op::ListRoot,
        summary: "List the home folder.",
        body: None,
        responses: &[(200, "the entries as JSON")],
    },
    Endpoint {
        method: "get",
        path: "/api/v1/list/{path}",
        op: Op::List,
        summary: "List a folder: `{\"path\", \"entries\": [{\"name\", \"path\", \"type\", \"size\", \"modified\", \"etag\", \"sha256\"}]}` (`sha256`: files, for users who may read them).",
        body: None,
        responses: &[(200, "the entries as JSON")],
    },
    Endpoint {
        method: "post",
        path: "/api/v1/move",
        op: Op::Move,
        summary: "Rename a file or folder in its folder, JSON `{\"from\", \"name\", \"replace\"?}` (`name` is one name: no `/` or `\\`, not `.` or `..`; else 400 `invalid_name`), or move it, JSON `{\"from\", \"to\", \"replace\"?}` (`to` is a path).",
        body: Some("application/json"),
        responses: &[(200, "the entry at its new path")],
    },
    Endpoint {
        method: "get",
        path: "/api/v1/openapi.json",
        op: Op::OpenApi,
        summary: "This document.",
        body: None,
        responses: &[(200, "OpenAPI 3.0 JSON")],
    },
];

fn handler(op: Op) -> MethodRouter<AppState> {
    match op {
        Op::Download => get(api::download),
        Op::Upload => put(api::upload),
        Op::Delete => delete(api::delete),
        Op::Mkdir => post(api::mkdir),
        Op::ListRoot | Op::List => get(api::list),
        Op::Move => post(api::rename),
        Op::OpenApi => get(api::openapi),
    }
}

/// The axum path of an OpenAPI path: `{path}` takes the rest of the URL.
fn axum_path(path: &str) -> String {
    path.replace("{path}", "{*path}")
}

/// The `/api/v1/` router, built from [`ENDPOINTS`].
pub(crate) fn api_router() -> Router<AppState> {
    let mut router = Router::new();
    for e in ENDPOINTS {
        router = router.route(&axum_path(e.path), handler(e.op));
    }
    // Unknown `/api/v1/` paths get the JSON `no_route` of the site's fallback (`app.rs`).
    router.route("/api/v1/list/", get(api::list))
}

fn operation(e: &Endpoint, id: &str, summary: &str) -> Value {
    let mut responses = Map::new();
    for (code, what) in e.responses {
        responses.insert(code.to_string(), json!({"description": what}));
    }
    if e.op != Op::OpenApi {
        responses.insert(
            "default".into(),
            json!({
                "description": "an error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
    }
    let mut op = Map::new();
    op.insert("summary".into(), json!(summary));
    op.insert("operationId".into(), json!(id));
    op.insert("responses".into(), Value::Object(responses));
    if e.path.contains("{path}") {
        op.insert(
            "parameters".into(),
            json!([{
                "name": "path", "in": "path", "required": true,
                "description": "a path below the home folder, names percent-encoded",
                "schema": {"type": "string"}
            }]),
        );
    }
    if let Some(media) = e.body {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {media: {}}}),
        );
    }
    if e.op == Op::OpenApi {
        op.insert("security".into(), json!([]));
    }
    Value::Object(op)
}

/// The OpenAPI 3.0 document of [`ENDPOINTS`].
pub(crate) fn openapi_document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for e in ENDPOINTS {
        let item = paths.entry(e.path.to_owned()).or_insert_with(|| json!({}));
        if let Value::Object(item) = item {
            item.insert(
                e.method.to_owned(),
                operation(e, &format!("{:?}", e.op), e.summary),
            );
            if e.op == Op::Download {
                item.insert(
                    "head".to_owned(),
                    operation(e, "Head", "The headers of a download, without the body."),
                );
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Coffer file API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Files and folders of the authenticated user. Errors are JSON with a stable `code`."
        },
        "servers": [{"url": "/"}],
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "example": "not_found"},
                        "message": {"type": "string"}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_every_routed_endpoint_and_method() {
        let doc = openapi_document();
        for e in ENDPOINTS {
            assert!(
                doc["paths"][e.path][e.method].is_object(),
                "{} {} missing",
                e.method,
                e.path
            );
        }
        assert!(doc["paths"]["/api/v1/files/{path}"]["head"].is_object());
        assert_eq!(doc["openapi"], "3.0.3");
        // Building the router from the same table must not panic on overlapping routes.
        let _ = api_router();
    }
}
