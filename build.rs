//! Embeds the browser UI (`static/` and `templates/index.html`) into the
//! binary so `cargo run --release` serves it from any directory.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            collect(&path, &rel, out);
        } else {
            out.push((rel, path));
        }
    }
}

/// FNV-1a: a stable content hash for ETags; not security-relevant.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=static");
    println!("cargo:rerun-if-changed=templates");
    let mut files = Vec::new();
    collect(&root.join("static"), "", &mut files);

    let mut code = String::from(
        "/// Files of `static/`: (path, bytes, etag).\npub static STATIC_FILES: &[(&str, &[u8], &str)] = &[\n",
    );
    for (rel, path) in &files {
        let bytes = fs::read(path).expect("readable static file");
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?}), \"\\\"{:016x}\\\"\"),",
            path.display().to_string(),
            fnv1a(&bytes)
        )
        .unwrap();
    }
    code.push_str("];\n");
    let index = root.join("templates/index.html");
    if index.exists() {
        writeln!(
            code,
            "/// `templates/index.html`.\npub static INDEX_TEMPLATE: &str = include_str!({:?});",
            index.display().to_string()
        )
        .unwrap();
    } else {
        code.push_str("/// `templates/index.html` (missing at build time).\npub static INDEX_TEMPLATE: &str = \"<!doctype html><title>roomcast</title><p>templates/index.html was missing when this binary was built.\";\n");
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("ui_assets.rs");
    fs::write(out, code).expect("writable OUT_DIR");
}
