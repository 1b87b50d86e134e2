//! The README's "CNI error codes" table is the one [`ErrorCode`] holds: same codes, same
//! meanings, same order. A code added in one place and not the other fails here.

use weft_cni::proto::ErrorCode;

const HEADING: &str = "#### CNI error codes";

/// (code, meaning) of every row of the table under [`HEADING`] in the repository's README.
fn readme_table() -> Vec<(u32, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md at the repository root");
    let after = readme
        .split_once(HEADING)
        .unwrap_or_else(|| panic!("README.md has no {HEADING:?} section"))
        .1;
    after
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        // The header row and the |---| separator.
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let [code, meaning] = cells.as_slice() else {
                panic!("README error-code row {row:?} is not | code | meaning |");
            };
            let code = code
                .parse()
                .unwrap_or_else(|_| panic!("README error-code row {row:?}: {code:?} is no number"));
            (code, meaning.to_string())
        })
        .collect()
}

#[test]
fn readme_lists_every_error_code_with_the_codes_meaning() {
    let in_code: Vec<(u32, String)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.code(), c.meaning().to_string()))
        .collect();
    assert_eq!(readme_table(), in_code);
}

#[test]
fn codes_are_distinct_in_order_and_round_trip() {
    let numbers: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        numbers, sorted,
        "ErrorCode::ALL is sorted and has no duplicates"
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        assert!(!code.meaning().is_empty());
    }
    assert_eq!(ErrorCode::from_code(2), None);
}
