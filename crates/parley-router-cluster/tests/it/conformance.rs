//! The router conformance suite (`parley_router::conformance`) against three cluster routers over
//! NATS and Redis in this process.

parley_router::router_conformance!(crate::support::ClusterNodes::start());
