//! S3 event keys are URL-encoded, with `+` for a space.

/// Decodes an S3 event key (`My+File%2B1.csv` → `My File+1.csv`).
pub fn decode_s3_key(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent() {
        assert_eq!(decode_s3_key("incoming/My+File%2B1.csv"), "incoming/My File+1.csv");
        assert_eq!(decode_s3_key("incoming/caf%C3%A9.csv"), "incoming/café.csv");
        assert_eq!(decode_s3_key("100%"), "100%");
        assert_eq!(decode_s3_key("a%2"), "a%2");
        assert_eq!(decode_s3_key("a%zzb"), "a%zzb");
    }
}
