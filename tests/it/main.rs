//! The integration tests: one binary, real files, real binaries, real servers on loopback.

mod support;
mod trainer;
