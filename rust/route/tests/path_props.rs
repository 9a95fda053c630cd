//! Path normalization on arbitrary input: never a panic, idempotent, and no
//! dot segment or (when merging) empty segment survives.

use meshfast_route::{normalize_path, Normalization};
use proptest::prelude::*;

const MODES: [Normalization; 4] = [
    Normalization::None,
    Normalization::Base,
    Normalization::MergeSlashes,
    Normalization::DecodeAndMergeSlashes,
];

/// Paths built from the pieces that make normalization interesting.
fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5C".to_owned()),
        Just("\\".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("%61".to_owned()),
        Just("%C3%A9".to_owned()),
        "[a-z~_-]{1,3}",
        "\\PC{1,2}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| format!("/{}", p.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn normalizing_twice_changes_nothing(p in path(), mode in 0usize..4) {
        let how = MODES[mode];
        let once = normalize_path(&p, how).into_owned();
        let twice = normalize_path(&once, how).into_owned();
        prop_assert_eq!(&once, &twice);
        prop_assert!(once.starts_with('/'));
    }

    #[test]
    fn no_dot_segment_survives(p in path(), mode in 1usize..4) {
        let how = MODES[mode];
        let out = normalize_path(&p, how);
        prop_assert!(!out.split('/').any(|s| s == "." || s == ".."), "{} -> {}", p, out);
        prop_assert!(!out.contains('\\'), "{} -> {}", p, out);
        if how != Normalization::Base {
            prop_assert!(!out.contains("//"), "{} -> {}", p, out);
        }
    }

    #[test]
    fn none_is_the_identity(p in "\\PC*") {
        prop_assert_eq!(normalize_path(&p, Normalization::None), p.as_str());
    }
}
