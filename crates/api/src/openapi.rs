//! The API's OpenAPI description, generated: each operation from its
//! handler's `#[utoipa::path]` (its doc comment is the summary), each body
//! from the type the handler parses or answers (`ToSchema`), and what
//! every route shares from the layers that serve them all (`Shared`):
//! a wrong `Host` (421), a node not ready (503), and for writes and
//! private reads the token (401) and the errors a command can meet.
//!
//! `routes.rs` holds the routes served against these operations, both
//! ways.

use crate::{auth, dashboard, deployments, events, health, kv, members, metrics, tasks};
use crate::{backup, error};
use std::sync::OnceLock;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal",
        version = "1",
        description = "Every node serves this API from its local replica. Writes go through the \
            master and need `Authorization: Bearer TOKEN`; reads are open while the API listens \
            on loopback. Writes honour `Idempotency-Key` (a retry returns the first outcome; the \
            same key sent with another request is refused 422 `idempotency_key_reused`). Errors \
            are `{\"error\": {\"code\", \"message\"}}`. Request bodies are capped (413 past \
            256 KiB). `Host` must name this node (421 `wrong_host` otherwise). A node whose disk \
            takes no writes answers 507 `storage`.",
    ),
    paths(
        health::health,
        health::ready,
        crate::status,
        members::nodes,
        members::remove,
        members::drain,
        members::undrain,
        crate::state,
        backup::snapshot,
        metrics::metrics,
        crate::leave,
        events::events,
        dashboard::page,
        dashboard::stream,
        dashboard::history,
        crate::serve_openapi,
        kv::read::list,
        kv::read::read,
        kv::read::range,
        kv::set,
        kv::delete,
        kv::set_if_absent,
        kv::cas,
        kv::incr,
        kv::add,
        kv::remove,
        kv::push,
        kv::lock,
        kv::keepalive,
        kv::unlock,
        kv::txn,
        tasks::submit,
        tasks::list,
        tasks::one,
        tasks::cancel,
        tasks::delete,
        tasks::logs,
        tasks::output,
        deployments::deploy,
        deployments::list,
        deployments::one,
        deployments::undeploy,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&Shared),
)]
struct ApiDoc;

/// The API's OpenAPI description as served at `/v1/openapi.json`, made
/// once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the description serializes")
    })
}

/// The answers every route shares, by the layer that gives them
/// (`host.rs`, `auth.rs`, `error.rs`) and by the node a command goes
/// through.
const SHARED: &[(&str, &str)] = &[
    ("Error", "an error"),
    (
        "WrongHost",
        "`wrong_host`: `Host` names neither this node nor a name configured for it",
    ),
    (
        "Unavailable",
        "retry: `no_quorum`, `not_joined`, `busy` (too many streams), `timeout`, `stopping`",
    ),
    ("Unauthorized", "`unauthorized`: no or a wrong API token"),
    (
        "Invalid",
        "`invalid`: a parameter, header or body the route cannot take",
    ),
    (
        "Conflict",
        "refused by the State: `wrong_type`, `overflow`, `stale_token`, `lock_held`, \
         `not_finished`, `exec_disabled`",
    ),
    ("TooLarge", "`too_large`: the body is over 256 KiB"),
    (
        "Timeout",
        "`timeout`: the master did not answer in time; retry",
    ),
    (
        "Storage",
        "`full` (a State cap) or `storage` (the disk takes no writes)",
    ),
    (
        "NotFound",
        "`not_found`: no such key, task, deployment or node",
    ),
    (
        "NotJson",
        "`unsupported_media_type`: the body was not sent as `application/json`",
    ),
    (
        "KeyReused",
        "`idempotency_key_reused`: this Idempotency-Key came with another request before",
    ),
];

/// The shared answers each operation gets, by status: every one, then a
/// write's (a command), then what needs the token.
const EVERY: &[(&str, &str)] = &[
    ("421", "WrongHost"),
    ("503", "Unavailable"),
    ("default", "Error"),
];
const COMMAND: &[(&str, &str)] = &[
    ("400", "Invalid"),
    ("409", "Conflict"),
    ("413", "TooLarge"),
    ("504", "Timeout"),
    ("507", "Storage"),
];
const TOKEN: &[(&str, &str)] = &[("401", "Unauthorized")];
const IDEMPOTENT: &[(&str, &str)] = &[("422", "KeyReused")];

/// Adds what every route shares to each operation (`SHARED`), and the
/// token scheme.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in SHARED {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(error::ErrorBody::name())))
                .build();
            let response = ResponseBuilder::new()
                .description(*what)
                .content("application/json", content)
                .build();
            components.responses.insert((*name).into(), response.into());
        }
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        closed_variants(components, "TxnOp");
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let write = method != "get";
                let token = write || auth::private(path);
                let mut shared: Vec<(&str, &str)> = EVERY.to_vec();
                if write {
                    shared.extend(COMMAND);
                }
                if takes_idempotency_key(op) {
                    shared.extend(IDEMPOTENT);
                }
                if token {
                    shared.extend(TOKEN);
                    let token = SecurityRequirement::new("token", Vec::<String>::new());
                    op.security.get_or_insert_with(Vec::new).push(token);
                }
                add_responses(op, &shared);
                describe_responses(op);
            }
        }
    }
}

/// utoipa does not carry `#[serde(deny_unknown_fields)]` to the variants
/// of an internally tagged enum; `name`'s variants refuse other fields, so
/// their schemas say so here.
fn closed_variants(components: &mut utoipa::openapi::Components, name: &str) {
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) else {
        return;
    };
    for variant in one_of.items.iter_mut() {
        if let RefOr::T(Schema::Object(object)) = variant {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
    }
}

/// Whether `op` documents `Idempotency-Key` (a write that honours it).
fn takes_idempotency_key(op: &Operation) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.name == "Idempotency-Key",
        RefOr::Ref(_) => false,
    })
}

/// Each operation of `item`, with its method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

/// Refers `op`'s answers to the shared ones, where the handler did not
/// say more of that status itself.
fn add_responses(op: &mut Operation, shared: &[(&str, &str)]) {
    for (status, name) in shared {
        op.responses
            .responses
            .entry((*status).into())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
    }
}

/// Gives each answer the handler did not describe its status's reason
/// ("OK"): OpenAPI 3.1 asks every response for a description.
fn describe_responses(op: &mut Operation) {
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(r) = response {
            if r.description.is_empty() {
                let reason = status
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                    .and_then(|s| s.canonical_reason());
                r.description = reason.unwrap_or("the answer").to_owned();
            }
        }
    }
}

/// A response named in `SHARED`, for a handler's own list:
/// `(status = 404, response = NotFound)`.
macro_rules! shared_response {
    ($($name:ident),*) => {$(
        pub(crate) struct $name;

        impl utoipa::ToResponse<'static> for $name {
            fn response() -> (&'static str, RefOr<Response>) {
                (stringify!($name), RefOr::Ref(Ref::from_response_name(stringify!($name))))
            }
        }
    )*};
}
shared_response!(NotFound, NotJson, Invalid, Timeout, Conflict, Unauthorized);

/// `Shoal-Fence`, which a key-value write honours (`kv.rs`: `fence`).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "describes a header that kv.rs reads by name")]
pub(crate) struct Fence {
    /// LOCK:TOKEN; the write applies only while that lock holds that token.
    #[param(
        rename = "Shoal-Fence",
        value_type = String,
        required = false,
        min_length = 3,
        max_length = 534,
        pattern = "^[^:]+:[0-9]{1,19}$"
    )]
    fence: Option<String>,
}

/// `Idempotency-Key`, which the writes that name it honour (`kv.rs`:
/// `command_id`).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "describes a header that kv.rs reads by name")]
pub(crate) struct Idempotency {
    /// A client-chosen command id (1 to 128 printable bytes): a retry with
    /// the same key returns the first outcome.
    #[param(
        rename = "Idempotency-Key",
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 128,
        pattern = "^[ -~]+$"
    )]
    idempotency_key: Option<String>,
}

/// A task's or a member's id in a path (`/v1/tasks/{id}`,
/// `/v1/nodes/{id}`), as the lists give it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter handlers take as text"
)]
pub(crate) struct Id {
    /// 1 to 128 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    id: String,
}

/// `?consistent=true`: read after a barrier through the master.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "describes a query parameter parsed with others")]
pub(crate) struct Consistent {
    /// Read at an index the master confirmed with a majority, not from
    /// this replica as it is.
    consistent: Option<bool>,
}

#[cfg(test)]
mod tests;
