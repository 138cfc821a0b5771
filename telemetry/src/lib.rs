//! What Skiff's daemons tell operators: metrics in the Prometheus text format on an HTTP listener of
//! their own (`--metrics-listen`), and logs as text or JSON lines (`--log-format`).
//!
//! Layout:
//! - [`endpoint`]: the `/metrics` listener (loopback only unless the operator says the network is
//!   trusted), with a hook that brings gauges up to date before each scrape;
//! - [`labels`]: the labels both daemons' metrics share (task states, reasons, resources);
//! - [`logs`]: the log format of every daemon.
#![forbid(unsafe_code)]

pub mod endpoint;
pub mod labels;
pub mod logs;

pub use endpoint::{MetricsEndpoint, Refresh};
pub use logs::LogFormat;
pub use prometheus_client;
