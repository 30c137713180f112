//! loyalscore: churn probability and customer lifetime value for loyalty programmes.
//!
//! # Layout
//! - [`features`]: `CustomerSummary` and the feature function, shared by trainer and server.
pub mod cli;
pub mod drift;
pub mod exposure;
pub mod features;
pub mod flags;
pub mod forest;
pub mod hashing;
pub mod model;
pub mod proto;
pub mod registry;
pub mod report;
pub mod routing;
pub mod scoring;
pub mod server;
pub mod state;
pub mod stream;
pub mod time;
pub mod trainer;
