//! Integration tests: real redis-server processes, gateways on port 0, real WebSocket clients.

mod abuse;
mod bad_input;
mod browser;
mod channels;
mod cluster;
mod delivery;
mod deployment;
mod django_example;
mod faults;
mod harness;
mod history;
mod hooks;
mod http_api;
mod js_client;
mod operations;
mod permissions;
mod presence;
mod properties;
mod recovery;
mod redis_servers;
mod routes;
mod scheduler;
mod scheduler_ha;
mod security;
mod sentinel;
mod soak;
