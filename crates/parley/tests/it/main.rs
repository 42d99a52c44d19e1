//! End-to-end tests of the real `parley` binary against PROTOCOL.md: each test starts its own
//! server process (see `harness`) and talks to it over HTTP and WebSocket only.

mod harness;

mod bad_input;
mod bench;
mod cluster;
mod delivery;
mod durability;
mod e2ee;
mod groups;
mod keys;
mod media;
mod media_store;
mod presence;
mod push;
mod rest;
mod s3;
mod sdk;
mod sync;
mod tidy;
mod web;
