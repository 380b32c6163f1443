//! Generates the etcd v3 KV client that `--target etcd` uses, from
//! `proto/etcd_kv.proto`. protoc comes from `protoc-bin-vendored`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let file = "proto/etcd_kv.proto";
    println!("cargo:rerun-if-changed={file}");
    // The server side is generated too: the tests run the generator against an
    // in-memory etcd KV service.
    tonic_prost_build::configure().compile_protos(&[file], &["proto"])?;
    Ok(())
}
