//! Compiles `csi.proto` without a system `protoc`: protox parses and links it in pure Rust
//! (the well-known `google/protobuf/*.proto` files are bundled with it), then
//! tonic-prost-build generates the messages and the gRPC client and server code.
//!
//! Two outputs land in `OUT_DIR`:
//! - `csi.v1.rs`: the generated code, included by `volbridge_proto::csi`;
//! - `csi_descriptor.bin`: the encoded `FileDescriptorSet` of `csi.proto`, custom options
//!   (`csi_secret`, `alpha_*`) included, exposed as `csi::FILE_DESCRIPTOR_SET`.

#[cfg(feature = "csi")]
use std::path::PathBuf;

fn main() {
    // Only the `csi` feature generates code; the models the engine uses need none.
    #[cfg(feature = "csi")]
    generate();
}

#[cfg(feature = "csi")]
fn generate() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let proto = manifest_dir.join("csi.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler =
        protox::Compiler::new([&manifest_dir]).unwrap_or_else(|e| panic!("protox: {e}"));
    compiler
        .include_imports(false)
        .include_source_info(false)
        .open_file(&proto)
        .unwrap_or_else(|e| panic!("csi.proto: {e:?}"));

    // The embedded descriptor: no source info (smaller), extension options kept. Only this
    // encoder keeps them: prost_types drops unknown fields, and so would a decode/encode trip.
    let encoded = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("csi_descriptor.bin"), encoded).expect("write csi_descriptor.bin");

    // Code generation gets the comments of the .proto as doc comments, and the imported
    // well-known files so that it can resolve their types (they map to prost-types).
    compiler.include_source_info(true).include_imports(true);
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("tonic-prost-build: {e}"));
}
