//! Property tests (issue 9, point 5): the config loader and the sticky-key
//! parsing never panic on hostile input, and every config error carries a
//! position. Case counts are bounded (256 per property) so this runs in
//! seconds; raise them with `PROPTEST_CASES=100000 cargo test --test
//! fuzz_props` for a longer run.

use proptest::prelude::*;
use switchyard::config::{self, ConfigError};
use switchyard::release::bucket::{bucket, cookie_value};

/// The reference config: every key, commented.
const REFERENCE: &str = include_str!("../config/switchyard.yaml");
const NAME: &str = "fuzz.yaml";

fn cases() -> ProptestConfig {
    ProptestConfig {
        // The default unless PROPTEST_CASES says otherwise.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        // Shrinking a parse failure can take many steps; keep it bounded.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// `parse` must not panic; an error must render as `FILE:LINE:COL: message`
/// lines with LINE and COL ≥ 1 and LINE within the text (or one past its
/// end, for "unexpected end of file").
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let result = std::panic::catch_unwind(|| config::parse(text, NAME));
    let result = match result {
        Ok(result) => result,
        Err(_) => return Err(TestCaseError::fail(format!("parse panicked on {text:?}"))),
    };
    let Err(err) = result else {
        return Ok(());
    };
    prop_assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    let rendered = err.to_string();
    prop_assert!(!rendered.is_empty(), "an error with no diagnostic");
    let lines_in_text = text.lines().count() as u64 + 1;
    for line in rendered.lines() {
        let rest = line
            .strip_prefix(NAME)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(|| TestCaseError::fail(format!("no file name: {line:?}")))?;
        let mut parts = rest.splitn(3, ':');
        let (l, c, message) = (parts.next(), parts.next(), parts.next());
        let l: u64 = l
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no line: {line:?}")))?;
        let c: u64 = c
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no column: {line:?}")))?;
        prop_assert!(l >= 1 && c >= 1, "{line:?}");
        prop_assert!(
            l <= lines_in_text,
            "line {l} past the text's {lines_in_text} lines: {line:?}"
        );
        let message = message.unwrap_or("");
        prop_assert!(
            message.starts_with(' ') && !message.trim().is_empty(),
            "{line:?}"
        );
    }
    Ok(())
}

/// Applies byte flips (position, new byte) to the reference config.
fn flipped(flips: &[(usize, u8)]) -> String {
    let mut bytes = REFERENCE.as_bytes().to_vec();
    for &(at, b) in flips {
        let at = at % bytes.len();
        bytes[at] = b;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The reference config without the given lines.
fn without_lines(drop: &[usize]) -> String {
    let lines: Vec<&str> = REFERENCE.lines().collect();
    let drop: Vec<usize> = drop.iter().map(|i| i % lines.len()).collect();
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// YAML-looking noise: keys, colons, dashes, quotes, brackets, indentation.
fn yamlish() -> impl Strategy<Value = String> {
    "([a-z_]{1,12}|:|-|\"|'|\\{|\\}|\\[|\\]|,|#|&a|\\*a|!!str|[0-9]{1,6}|[0-9]{1,3}(ms|s|m)|\\n|  | )*"
}

#[test]
fn the_reference_config_is_valid() {
    if let Err(e) = config::parse(REFERENCE, NAME) {
        panic!("config/switchyard.yaml does not parse:\n{e}");
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_parse(&text)?;
    }

    #[test]
    fn parse_never_panics_on_yaml_like_noise(text in yamlish()) {
        check_parse(&text)?;
    }

    #[test]
    fn parse_never_panics_on_byte_flips_of_the_reference(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)
    ) {
        check_parse(&flipped(&flips))?;
    }

    #[test]
    fn parse_never_panics_on_printable_flips_of_the_reference(
        flips in prop::collection::vec((any::<usize>(), prop::sample::select(b" :-#\"'{}[],\n\t0a".to_vec())), 1..6)
    ) {
        check_parse(&flipped(&flips))?;
    }

    #[test]
    fn parse_never_panics_on_line_deletions_of_the_reference(
        drop in prop::collection::vec(any::<usize>(), 1..10)
    ) {
        check_parse(&without_lines(&drop))?;
    }

    #[test]
    fn cookie_value_only_returns_slices_of_its_input(
        header in prop::collection::vec(any::<u8>(), 0..200),
        name in "[a-zA-Z0-9_-]{0,12}",
    ) {
        if let Some(value) = cookie_value(&header, &name) {
            let (start, end) = (header.as_ptr() as usize, header.as_ptr() as usize + header.len());
            let (v0, v1) = (value.as_ptr() as usize, value.as_ptr() as usize + value.len());
            prop_assert!(value.is_empty() || (v0 >= start && v1 <= end), "not a slice of the input");
            prop_assert!(!value.starts_with(b" ") && !value.ends_with(b" "), "{value:?}");
        }
    }

    #[test]
    fn cookie_value_finds_a_cookie_among_noise(
        before in "[a-z]{1,8}=[a-z0-9]{0,8}",
        value in "[a-zA-Z0-9]{0,16}",
        after in "[a-z]{1,8}=[a-z0-9]{0,8}",
    ) {
        prop_assume!(!before.starts_with("sy-users=") && !after.starts_with("sy-users="));
        let header = format!("{before}; sy-users={value} ;{after}");
        prop_assert_eq!(cookie_value(header.as_bytes(), "sy-users"), Some(value.as_bytes()));
        let quoted = format!("{before};sy-users=\"{value}\"");
        prop_assert_eq!(cookie_value(quoted.as_bytes(), "sy-users"), Some(value.as_bytes()));
    }

    #[test]
    fn bucket_is_always_in_range(key in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(bucket(&key) < 10_000);
    }
}
