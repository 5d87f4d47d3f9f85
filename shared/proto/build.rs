//! Compiles every .proto under proto/ once, with protox (pure Rust, no protoc needed).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "todo/v1/task.proto",
        "todo/v1/task_service.proto",
        "todo/events/v1/task_events.proto",
        "todo/events/v1/reminder_events.proto",
        "todo/events/v1/occurrence_events.proto",
        "todo/notifications/v1/notification_service.proto",
        "todo/audit/v1/audit_service.proto",
        "todo/sync/v1/sync_service.proto",
        "todo/deadletters/v1/dead_letter_service.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The descriptor set served by gRPC reflection.
    std::fs::write(
        out.join("todo_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Undecodable requests are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
