//! The generated gRPC code for `proto/loyalscore/v1`, shared by the server and the CLI client.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("loyalscore.v1");
}

/// The encoded descriptors of every message and service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loyalscore_descriptor");
