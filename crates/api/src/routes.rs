//! Every route the API serves, as one table per module: the router is
//! built from the tables, and a test holds them against the OpenAPI
//! description both ways, so that every route served is documented and
//! every route documented is served.
//!
//! The description is generated (`openapi.rs`): each operation from its
//! handler's annotation, each body from the type the handler parses or
//! answers.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use shoal_node::NodeHandle;

/// One route: where axum serves it, and the method and path (as the
/// OpenAPI description writes them) of each documented operation it
/// answers.
pub(crate) struct Route {
    at: &'static str,
    served: MethodRouter<NodeHandle>,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the test against openapi.json")
    )]
    pub(crate) documented: Vec<(Method, String)>,
}

/// `method path` served by `handler`.
pub(crate) fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, NodeHandle>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    Route {
        at: path,
        served: axum::routing::on(filter, handler),
        documented: vec![(method, path.to_owned())],
    }
}

impl Route {
    /// A route whose handler takes any method at `at` and answers the
    /// `documented` operations (a key path, whose operations are
    /// dispatched by the handler).
    pub(crate) fn any<H, T>(
        at: &'static str,
        handler: H,
        documented: Vec<(Method, String)>,
    ) -> Route
    where
        H: Handler<T, NodeHandle>,
        T: 'static,
    {
        Route {
            at,
            served: axum::routing::any(handler),
            documented,
        }
    }

    /// The same route with its handler wrapped (a layer for it alone).
    pub(crate) fn map(
        mut self,
        f: impl FnOnce(MethodRouter<NodeHandle>) -> MethodRouter<NodeHandle>,
    ) -> Route {
        self.served = f(self.served);
        self
    }
}

/// A router serving `routes` (routes at one path share it).
pub(crate) fn router(routes: Vec<Route>) -> Router<NodeHandle> {
    routes
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.at, route.served))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) of every operation the description documents.
    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(crate::openapi::json()).unwrap();
        let mut out = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if method != "parameters" {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_served_is_documented_and_every_documented_one_served() {
        let served: BTreeSet<(String, String)> = crate::routes_served()
            .into_iter()
            .flat_map(|r| r.documented)
            .map(|(m, p)| (m.to_string(), p))
            .collect();
        let documented = documented();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served, not in openapi.json: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "in openapi.json, not served: {unserved:?}"
        );
        assert!(served.len() >= 40, "{}", served.len());
    }
}
