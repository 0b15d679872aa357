// Compiles proto/ with protox (pure Rust), so building needs no system protoc.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("berth/v1/berth.proto"),
        root.join("berth/internal/v1/internal.proto"),
    ];
    println!("cargo:rerun-if-changed=build.rs");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The public package alone feeds gRPC server reflection on the API port; the internal
    // services are not served there.
    let public = protox::compile([&files[0]], [&root])?;
    std::fs::write(
        out.join("berth_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Public messages print as camelCase JSON in the CLI's `-o json`.
        .type_attribute(
            ".berth.v1",
            "#[derive(serde::Serialize)] #[serde(rename_all = \"camelCase\")]",
        )
        .compile_fds(fds)?;
    Ok(())
}
