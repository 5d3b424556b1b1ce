//! docs/cli.md holds the `--help` output of every command; this test fails when they drift
//! (regenerate with `CDL_UPDATE_DOCS=1 cargo test --test native cli_docs`).

use std::process::Command;

const COMMANDS: [&[&str]; 17] = [
    &[],
    &["train"],
    &["sample"],
    &["eval"],
    &["export"],
    &["experiment"],
    &["experiment", "toy"],
    &["experiment", "images"],
    &["bench"],
    &["bench", "ops"],
    &["bench", "train"],
    &["bench", "sample"],
    &["bench", "model"],
    &["bench", "quality"],
    &["info"],
    &["tune"],
    &["sweep"],
];

fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let out = Command::new(env!("CARGO_BIN_EXE_cdl")).args(&all).env("COLUMNS", "100").output().expect("run cdl");
    assert!(out.status.success(), "cdl {all:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn render() -> String {
    let mut s = String::from(
        "# `cdl` command reference\n\nThe `--help` output of every command (checked by `tests/native/cli_docs.rs`).\n",
    );
    for args in COMMANDS {
        let name = if args.is_empty() { "cdl".to_string() } else { format!("cdl {}", args.join(" ")) };
        s += &format!("\n## `{name}`\n\n```text\n{}\n```\n", help(args));
    }
    s
}

#[test]
fn docs_cli_md_is_the_help_output() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md");
    let want = render();
    if std::env::var("CDL_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(path, &want).expect("write docs/cli.md");
    }
    let got = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        got == want,
        "docs/cli.md differs from the --help output; run CDL_UPDATE_DOCS=1 cargo test --test native cli_docs"
    );
}
