//! Compiles proto/ into OUT_DIR (with a file descriptor set for gRPC reflection) and records
//! the git commit for the manifest's lineage.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so a fresh machine needs nothing installed; $PROTOC still wins.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("loyalscore_descriptor.bin"))
        .codec_path("crate::proto::codec::LargeMessageCodec")
        .compile_protos(
            &[
                "proto/loyalscore/v1/scoring.proto",
                "proto/loyalscore/v1/registry.proto",
                "proto/loyalscore/v1/state.proto",
                "proto/inference/grpc_predict_v2.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");

    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=LOYALSCORE_GIT_COMMIT={commit}");
    for f in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
