//! The limits every value is checked against before any store sees it, the same for both
//! stores (docs/schema.md, "Limits"). They keep each value within what PostgreSQL can
//! index and parse, and what a device can hold in memory for a pull page.

/// The longest primary key, in bytes of UTF-8. PostgreSQL refuses an index entry over
/// 2 704 bytes, and keys are indexed together with their table's name.
pub const MAX_KEY_BYTES: usize = 1024;

/// The largest value of one column (text or blob), in bytes. Larger content belongs in a
/// file column, which travels apart from rows.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The deepest nesting of arrays and objects in a JSON column. PostgreSQL's jsonb parser
/// runs out of stack at a few thousand levels; real documents stay far below this.
pub const MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in JSON text (outside strings). Counts
/// brackets without parsing, so it is safe on any input, however deep.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(r#"["[[[[", "\"{{{"]"#), 1);
        assert_eq!(json_depth(&"[".repeat(100_000)), 100_000);
    }
}
