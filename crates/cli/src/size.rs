//! Byte sizes on the command line: `1GB` (10^9), `64MiB` (2^26), `4096`.

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (examples: 1GB, 64MiB, 4096)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        u => return Err(format!("unknown size unit {u:?} in {s:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
    };
    let v = (n * mult).round();
    if v < 1.0 {
        return Err(format!("{s:?}: a size must be at least 1 byte"));
    }
    if v > 1e18 {
        return Err(format!("{s:?}: a size must be at most 1 EB (10^18 bytes)"));
    }
    Ok(v as u64)
}

pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.2} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("1.5kb"), Ok(1500));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("0").unwrap_err().contains("at least 1 byte"));
        assert!(parse_size("99999999999999999999").unwrap_err().contains("at most 1 EB"));
    }
}
