//! The cluster router's integration tests: the router conformance suite
//! (`parley_router::router_conformance!`), plus what only a cluster has (expiry, recovery,
//! presence across nodes).
//! Cluster tests use NATS at `PARLEY_TEST_NATS` and Redis at `PARLEY_TEST_REDIS` (default the
//! local servers), each test under a cluster name of its own that it deletes afterwards; the
//! outage tests start private `nats-server` and `redis-server` processes to stop and restart.

mod cluster;
mod conformance;
mod outage;
mod support;
