//! docs/architecture.md names files a contributor will open: every `src/...` and `lua/...` path
//! it puts in backticks must exist, so the page cannot silently point at moved or deleted code.

use std::path::Path;

/// The backticked spans of `text` that are repository paths under `src/` or `lua/`.
fn code_paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("src/") || span.starts_with("lua/"))
        .collect()
}

#[test]
fn every_src_and_lua_path_in_the_architecture_page_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/architecture.md")).expect("read docs/architecture.md");
    let paths = code_paths(&page);
    assert!(
        paths.len() > 20,
        "the page names the source files it describes: {paths:?}"
    );
    let missing: Vec<&str> = paths.into_iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn code_paths_are_read_from_backticks_only() {
    let text = "see `src/a.rs` and src/b.rs, `lua/c.lua`, `Store::guard`, `tests/x.rs`";
    assert_eq!(code_paths(text), ["src/a.rs", "lua/c.lua"]);
}
