//! Compiles the .proto files with protox (pure Rust: no system `protoc` needed) and generates the
//! prost messages, and the tonic stubs when the `grpc` feature is on.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/casesync/v1/event.proto",
        "proto/casesync/v1/store.proto",
        "proto/casesync/v1/sync.proto",
        "proto/casesync/v1/cases.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("casesync_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    // Stubs only with the `grpc` feature, so the engine builds without tonic.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let mut builder = tonic_prost_build::configure().bytes(".").build_client(grpc).build_server(grpc);
    // The local case service's read models double as the CLI's `--json` output.
    for message in [
        "Value",
        "NamedValue",
        "VersionView",
        "FieldView",
        "EntryView",
        "CaseView",
        "CaseList",
        "HistoryItem",
        "HistoryReply",
        "ConflictItem",
        "ConflictList",
        "PeerStatus",
        "NodeStatus",
        "RefusedAuthor",
        "ForkedDevice",
        "SyncNowReply",
        "PeerSyncResult",
        "CaseChange",
        "DeviceInfo",
        "DeviceList",
        "FenceReply",
        "InviteReply",
    ] {
        builder = builder.type_attribute(format!(".casesync.v1.{message}"), "#[derive(serde::Serialize)]");
    }
    builder.compile_fds(descriptors)?;
    Ok(())
}
