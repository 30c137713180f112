//! The integration tests: one binary, real files, real binaries, real servers on loopback.

mod cli;
mod experiment;
mod helm;
mod moto;
mod registry;
mod server;
mod skew;
mod support;
mod trainer;
