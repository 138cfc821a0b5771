//! Generates the tonic/prost code for `proto/skiff/v1/*.proto` (needs `protoc`, Debian's `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/skiff/v1/types.proto",
        "proto/skiff/v1/agent.proto",
        "proto/skiff/v1/operator.proto",
        "proto/skiff/v1/scheduler.proto",
        "proto/skiff/v1/registry.proto",
        "proto/skiff/v1/artifact.proto",
        "proto/skiff/v1/executor.proto",
        "proto/skiff/v1/acl.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().build_server(true).build_client(true).compile_protos(&protos, &["proto"]).map_err(
        |err| {
            format!(
                "compiling the .proto files failed (is `protoc` installed? apt-get install protobuf-compiler): {err}"
            )
        },
    )?;
    Ok(())
}
