//! Aligned tables for list commands (`subs list`, `subs deliveries`, `keys list`): columns
//! sized to their widest cell, numbers right-aligned, no borders, so the output reads well
//! and still splits on whitespace in scripts.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement, Table};

/// A table with these headers; the columns at `right` (0-based) are right-aligned.
pub fn new(headers: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, 2));
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Prints the table; the last column's padding is trimmed from every line.
pub fn print(t: &Table) {
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}

/// Prints a table (`headers` and `right` as in [`new`]) of one row per object of the JSON
/// array `items` (none when it is not an array), its cells the values at the JSON pointers
/// `fields` (`/id`, `/webhook/url`) as [`cell`] shows them.
pub fn print_json(headers: &[&str], right: &[usize], items: &serde_json::Value, fields: &[&str]) {
    let mut t = new(headers, right);
    for item in items.as_array().into_iter().flatten() {
        t.add_row(
            fields
                .iter()
                .map(|f| cell(item.pointer(f).unwrap_or(&serde_json::Value::Null)))
                .collect::<Vec<_>>(),
        );
    }
    print(&t);
}

/// A cell from a JSON value: strings bare, numbers as written, null and absence as `-`.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) if s.is_empty() => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = new(&["SEQ", "STATUS", "NAME"], &[0]);
        t.add_row(vec![
            cell(&json!(7)),
            cell(&json!("failed")),
            cell(&json!(null)),
        ]);
        t.add_row(vec![
            cell(&json!(12345)),
            cell(&json!("ok")),
            cell(&json!("x y")),
        ]);
        let lines: Vec<String> = t.lines().map(|l| l.trim_end().to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(
            col(&lines[0], "STATUS"),
            col(&lines[1], "failed"),
            "{lines:?}"
        );
        assert_eq!(col(&lines[1], "failed"), col(&lines[2], "ok"), "{lines:?}");
        // Right-aligned: the numbers end where the header ends.
        assert_eq!(
            col(&lines[1], "7") + 1,
            col(&lines[2], "12345") + 5,
            "{lines:?}"
        );
        assert!(lines[1].ends_with('-'), "{lines:?}");
    }
}
