//! The generated gRPC code for `proto/loyalscore/v1` and the KServe V2 inference protocol
//! (`proto/inference`), shared by the server and the CLI clients.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("loyalscore.v1");
}

/// KServe V2 / Open Inference Protocol (the subset loyalscore speaks).
pub mod inference {
    tonic::include_proto!("inference");
}

/// The encoded descriptors of every message and service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loyalscore_descriptor");
