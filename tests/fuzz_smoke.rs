//! The fuzz targets on the stable toolchain, without libFuzzer: every target of
//! `fuzz/src/targets.rs` (the same code `cargo fuzz` runs) over its seeds, its committed corpus
//! `fuzz/corpus/<target>/` and a fixed number of deterministic pseudo-random mutations of them.
//! A panic is a bug: payguard panicked on request data, or a property of the target broke.
//! Long coverage-guided runs are `scripts/fuzz` (nightly).
//!
//! `PAYGUARD_FUZZ_WRITE_SEEDS=1` makes [`every_target_has_a_fuzz_target_and_a_corpus`] write
//! the seeds into the corpus directories first (`fuzz/seed` does that).

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::fs;
use std::path::{Path, PathBuf};

use targets::{Target, TARGETS};

/// Mutated inputs per target: about ten thousand in total, a few seconds in a debug build.
const MUTATIONS: usize = 600;

/// [`MUTATIONS`], but fewer for `config_load`, whose inputs each go through YAML, the whole JSON
/// Schema and the config build.
fn mutations(name: &str) -> usize {
    if name == "config_load" {
        MUTATIONS / 2
    } else {
        MUTATIONS
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    files.iter().map(|f| fs::read(f).expect("corpus file")).collect()
}

/// SplitMix64: a fixed sequence, so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes and tokens the parsers under test treat specially.
const TOKENS: &[&[u8]] = &[
    b"%",
    b"%2F",
    b"%25",
    b"%00",
    b"%E6%B5",
    b"+",
    b"&",
    b"&&",
    b"=",
    b";",
    b"/",
    b"..",
    b"./",
    b"?",
    b"\n\n",
    b"<![CDATA[",
    b"]]>",
    b"<!DOCTYPE x>",
    b"&amp;",
    b"&#0;",
    b"</xml>",
    b"<xml>",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"1e400",
    b"-0",
    b"0.001",
    b"92233720368547758.08",
    b"-",
    b".",
    b"\\u0000",
    b"\xff",
    b"\xe6\xb5\x8b",
];

fn mutate(base: &[u8], pool: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => {
                let other = &pool[rng.below(pool.len())];
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            5 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// A target over its seeds, its corpus and [`mutations`] mutations of them.
fn smoke(name: &str) {
    let target = target(name);
    let mut pool = (target.seeds)();
    pool.extend(corpus(name));
    assert!(!pool.is_empty(), "{name} has neither seeds nor corpus");
    for input in &pool {
        (target.run)(input);
    }
    let mut rng = Rng(name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    }));
    for _ in 0..mutations(name) {
        let base = &pool[rng.below(pool.len())];
        let input = mutate(base, &pool, &mut rng);
        (target.run)(&input);
    }
}

macro_rules! smoke_tests {
    ($($name:ident),* $(,)?) => {
        /// The targets with a smoke test here.
        const SMOKED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                smoke(stringify!($name));
            }
        )*
    };
}

smoke_tests!(
    alipay_verify,
    alipay_signed_body,
    unionpay_verify,
    unionpay_signed_body,
    wechatpay_v3_verify,
    wechatpay_v3_resource,
    wechatpay_v2_verify,
    wechatpay_v2_signed_body,
    stripe_verify,
    stripe_signed_body,
    standard_webhooks_verify,
    standard_webhooks_signed_body,
    form_decode,
    xml_flat,
    amount_decimal,
    canonical_request,
    config_load,
);

#[test]
fn every_target_has_a_fuzz_target_and_a_corpus() {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(names, SMOKED, "every target has a smoke test here");
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let write = std::env::var_os("PAYGUARD_FUZZ_WRITE_SEEDS").is_some();
    for t in TARGETS {
        let source = fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{}.rs", t.name)))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{}.rs: {e}", t.name));
        assert!(
            source.contains(&format!("payguard_fuzz::targets::{}(data)", t.name)),
            "fuzz/fuzz_targets/{}.rs runs its target",
            t.name
        );
        assert!(
            manifest.contains(&format!("name = \"{}\"\npath = \"fuzz_targets/{}.rs\"", t.name, t.name)),
            "fuzz/Cargo.toml lists {}",
            t.name
        );
        let dir = fuzz_dir().join("corpus").join(t.name);
        if write {
            fs::create_dir_all(&dir).expect("corpus directory");
            for (i, seed) in (t.seeds)().iter().enumerate() {
                fs::write(dir.join(format!("seed-{i:02}")), seed).expect("seed written");
            }
        }
        let files = corpus(t.name).len();
        assert!(
            (1..=64).contains(&files),
            "fuzz/corpus/{} holds {files} files (1 to 64)",
            t.name
        );
    }
}
