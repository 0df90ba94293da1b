//! The first rows of a result file, for the page's preview.

/// Bytes of the first part read for a preview.
pub const BYTES: u64 = 64 * 1024;
/// Rows shown.
pub const ROWS: usize = 20;

/// Splits CSV text (as fanfold writes it: `"` quotes, doubled inside) into
/// the header and up to `max` complete rows. A row cut off by the end of
/// `text` is left out.
pub fn rows(text: &[u8], delimiter: u8, max: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let mut records: Vec<Vec<String>> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let (mut quoted, mut i) = (false, 0);
    while i < text.len() && records.len() <= max {
        let b = text[i];
        if quoted {
            if b == b'"' && text.get(i + 1) == Some(&b'"') {
                field.push(b'"');
                i += 1;
            } else if b == b'"' {
                quoted = false;
            } else {
                field.push(b);
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == delimiter {
            fields.push(String::from_utf8_lossy(&field).into_owned());
            field.clear();
        } else if b == b'\n' {
            fields.push(String::from_utf8_lossy(&field).into_owned());
            field.clear();
            records.push(std::mem::take(&mut fields));
        } else if b != b'\r' {
            field.push(b);
        }
        i += 1;
    }
    let mut it = records.into_iter();
    let header = it.next().unwrap_or_default();
    (header, it.take(max).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_quoted_fields_and_drops_a_cut_row() {
        let text = b"Song,Date,n\n\"a,b\",2020,1\n\"say \"\"hi\"\"\nthere\",2021,2\nc,2022,3\nd,20";
        let (h, rows) = super::rows(text, b',', 10);
        assert_eq!(h, ["Song", "Date", "n"]);
        assert_eq!(rows, [vec!["a,b", "2020", "1"], vec!["say \"hi\"\nthere", "2021", "2"], vec!["c", "2022", "3"]]);
        let (_, rows) = super::rows(text, b',', 1);
        assert_eq!(rows.len(), 1);
    }
}
