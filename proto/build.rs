//! Generates the herald.v1 gRPC code and the descriptor set served by gRPC reflection.
//! `protoc` comes from `protoc-bin-vendored`, so a fresh machine needs nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("herald_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                "herald/v1/common.proto",
                "herald/v1/notification.proto",
                "herald/v1/query.proto",
                "herald/v1/management.proto",
            ],
            &["."],
        )?;
    Ok(())
}
