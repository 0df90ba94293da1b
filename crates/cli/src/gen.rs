//! `fanfold gen`: reproducible test data.
//!
//! - `bmat`: the BMAT task's demo file — `Song,Date,Number of Plays`, a song
//!   of 4 random lowercase letters, a date between 1994-08-08 and today,
//!   plays 1..=100000. Almost every row is its own group.
//! - `zipf`: 5,200 songs whose popularity follows Zipf's law (s = 1) over
//!   the days of 2025, plays 1..=10000: about 1.9 M groups, hot keys.
//! - `zipf-long`: the same columns with another shape: 60,000 songs named
//!   "artist - title" (20–45 characters, spaces inside), Zipf s = 1.1 over
//!   the days of 2024 and 2025, plays 1..=1000.
//! - `catalogue`: a product catalogue of 12 columns (`sku,category,brand,
//!   name,color,size,price,cost,stock,weight_kg,rating,updated`): 40
//!   categories, 800 brands with Zipf popularity, prices with two decimals.

use std::io::{self, Write};

use fanfold_engine::number::write_u64;

/// wyrand: small, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x2545_f491_4f6c_dd1d)
    }
    #[inline]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128) * ((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }
    /// Uniform in `0..n`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// Days since 1970-01-01 → (year, month, day).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn date_table(from: i64, to: i64) -> Vec<[u8; 10]> {
    (from..=to)
        .map(|d| {
            let (y, m, dd) = civil(d);
            let s = format!("{y:04}-{m:02}-{dd:02}");
            s.as_bytes().try_into().expect("10 bytes")
        })
        .collect()
}

/// Writes the buffer out once it holds a megabyte.
fn flush_full(buf: &mut Vec<u8>, out: &mut impl Write, written: &mut u64) -> io::Result<()> {
    if buf.len() >= 1 << 20 {
        out.write_all(buf)?;
        *written += buf.len() as u64;
        buf.clear();
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Profile {
    Bmat,
    Zipf,
    ZipfLong,
    Catalogue,
}

/// Letters a–z, `n` of them.
fn letters(rng: &mut Rng, n: usize, out: &mut Vec<u8>) {
    for _ in 0..n {
        out.push(b'a' + rng.below(26) as u8);
    }
}

/// Words of 2–9 letters separated by spaces, about `len` bytes.
fn words(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    while out.len() - start < len {
        if out.len() > start {
            out.push(b' ');
        }
        let n = 2 + rng.below(8) as usize;
        letters(rng, n, out);
    }
}

/// Cumulative Zipf weights 1/r^s for ranks 1..=n, and their total.
fn zipf_cdf(n: usize, s: f64) -> (Vec<f64>, f64) {
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0f64;
    for r in 1..=n {
        acc += 1.0 / (r as f64).powf(s);
        cdf.push(acc);
    }
    (cdf, acc)
}

/// A rank drawn from a Zipf CDF.
fn zipf_rank(rng: &mut Rng, cdf: &[f64], total: f64) -> usize {
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

/// Play counts: a song drawn by Zipf rank, a uniform date, plays 1..=max.
struct Plays {
    names: Vec<Vec<u8>>,
    dates: Vec<[u8; 10]>,
    zipf: (Vec<f64>, f64),
    max: u64,
}

impl Plays {
    fn write(
        &self,
        rng: &mut Rng,
        size: u64,
        buf: &mut Vec<u8>,
        out: &mut impl Write,
        written: &mut u64,
    ) -> io::Result<()> {
        while *written + (buf.len() as u64) < size {
            let r = zipf_rank(rng, &self.zipf.0, self.zipf.1);
            buf.extend_from_slice(&self.names[r]);
            buf.push(b',');
            buf.extend_from_slice(&self.dates[rng.below(self.dates.len() as u64) as usize]);
            buf.push(b',');
            write_u64(1 + rng.below(self.max), buf);
            buf.push(b'\n');
            flush_full(buf, out, written)?;
        }
        Ok(())
    }
}

/// `v / 100` with two decimals.
fn cents(v: u64, out: &mut Vec<u8>) {
    write_u64(v / 100, out);
    out.push(b'.');
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Writes about `size` bytes (whole rows; stops at the first row that reaches it).
pub fn generate(profile: Profile, size: u64, seed: u64, out: &mut impl Write) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(match profile {
        Profile::Catalogue => {
            b"sku,category,brand,name,color,size,price,cost,stock,weight_kg,rating,updated\n".as_slice()
        }
        _ => b"Song,Date,Number of Plays\n".as_slice(),
    });
    let mut written = 0u64;
    let today = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        / 86_400) as i64;
    match profile {
        Profile::Bmat => {
            let dates = date_table(days_from_civil(1994, 8, 8), today.max(days_from_civil(1994, 8, 8)));
            while written + (buf.len() as u64) < size {
                for _ in 0..4 {
                    buf.push(b'a' + rng.below(26) as u8);
                }
                buf.push(b',');
                buf.extend_from_slice(&dates[rng.below(dates.len() as u64) as usize]);
                buf.push(b',');
                write_u64(1 + rng.below(100_000), &mut buf);
                buf.push(b'\n');
                flush_full(&mut buf, out, &mut written)?;
            }
        }
        Profile::Zipf => {
            const SONGS: usize = 5_200;
            let dates = date_table(days_from_civil(2025, 1, 1), days_from_civil(2025, 12, 31));
            // Song names: 3–12 letters, derived from the rank, so key order is not popularity order.
            let mut names_rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
            let names: Vec<Vec<u8>> = (0..SONGS)
                .map(|r| {
                    let len = 3 + names_rng.below(10) as usize;
                    let mut n: Vec<u8> = (0..len).map(|_| b'a' + names_rng.below(26) as u8).collect();
                    n.push(b'-');
                    n.extend_from_slice(r.to_string().as_bytes());
                    n
                })
                .collect();
            let plays = Plays { names, dates, zipf: zipf_cdf(SONGS, 1.0), max: 10_000 };
            plays.write(&mut rng, size, &mut buf, out, &mut written)?;
        }
        Profile::ZipfLong => {
            const SONGS: usize = 60_000;
            let dates = date_table(days_from_civil(2024, 1, 1), days_from_civil(2025, 12, 31));
            let mut names_rng = Rng::new(seed.wrapping_mul(37).wrapping_add(11));
            let names: Vec<Vec<u8>> = (0..SONGS)
                .map(|_| {
                    let mut n = Vec::new();
                    let artist = 6 + names_rng.below(12) as usize;
                    words(&mut names_rng, artist, &mut n);
                    n.extend_from_slice(b" - ");
                    let title = 8 + names_rng.below(16) as usize;
                    words(&mut names_rng, title, &mut n);
                    n
                })
                .collect();
            let plays = Plays { names, dates, zipf: zipf_cdf(SONGS, 1.1), max: 1_000 };
            plays.write(&mut rng, size, &mut buf, out, &mut written)?;
        }
        Profile::Catalogue => {
            const CATEGORIES: usize = 40;
            const BRANDS: usize = 800;
            const COLORS: [&[u8]; 12] = [
                b"black", b"white", b"red", b"blue", b"green", b"grey", b"navy", b"beige", b"brown", b"pink",
                b"orange", b"yellow",
            ];
            const SIZES: [&[u8]; 6] = [b"XS", b"S", b"M", b"L", b"XL", b"XXL"];
            let mut names_rng = Rng::new(seed.wrapping_mul(41).wrapping_add(13));
            let mut named = |n: usize, lo: usize, span: u64| -> Vec<Vec<u8>> {
                (0..n)
                    .map(|_| {
                        let mut v = Vec::new();
                        let len = lo + names_rng.below(span) as usize;
                        words(&mut names_rng, len, &mut v);
                        v
                    })
                    .collect()
            };
            let categories = named(CATEGORIES, 4, 10);
            let brands = named(BRANDS, 3, 12);
            let dates = date_table(days_from_civil(2023, 1, 1), days_from_civil(2025, 12, 31));
            let (cdf, total) = zipf_cdf(BRANDS, 0.9);
            let mut sku = 100_000u64;
            while written + (buf.len() as u64) < size {
                sku += 1 + rng.below(3);
                buf.extend_from_slice(b"SKU-");
                write_u64(sku, &mut buf);
                buf.push(b',');
                buf.extend_from_slice(&categories[rng.below(CATEGORIES as u64) as usize]);
                buf.push(b',');
                buf.extend_from_slice(&brands[zipf_rank(&mut rng, &cdf, total)]);
                buf.push(b',');
                let len = 10 + rng.below(20) as usize;
                words(&mut rng, len, &mut buf);
                buf.push(b',');
                buf.extend_from_slice(COLORS[rng.below(12) as usize]);
                buf.push(b',');
                buf.extend_from_slice(SIZES[rng.below(6) as usize]);
                buf.push(b',');
                let price = 100 + rng.below(99_900);
                cents(price, &mut buf);
                buf.push(b',');
                cents(price * (40 + rng.below(50)) / 100, &mut buf);
                buf.push(b',');
                write_u64(rng.below(5_001), &mut buf);
                buf.push(b',');
                let grams = 100 + rng.below(49_900);
                write_u64(grams / 1000, &mut buf);
                buf.push(b'.');
                write_u64(grams / 100 % 10, &mut buf);
                buf.push(b',');
                let rating = 10 + rng.below(41);
                write_u64(rating / 10, &mut buf);
                buf.push(b'.');
                write_u64(rating % 10, &mut buf);
                buf.push(b',');
                buf.extend_from_slice(&dates[rng.below(dates.len() as u64) as usize]);
                buf.push(b'\n');
                flush_full(&mut buf, out, &mut written)?;
            }
        }
    }
    out.write_all(&buf)?;
    written += buf.len() as u64;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_roundtrip() {
        assert_eq!(civil(days_from_civil(1994, 8, 8)), (1994, 8, 8));
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn same_seed_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(Profile::Zipf, 10_000, 3, &mut a).unwrap();
        generate(Profile::Zipf, 10_000, 3, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(a.len() >= 10_000 && a.len() < 10_100);
        let mut c = Vec::new();
        generate(Profile::Bmat, 5_000, 1, &mut c).unwrap();
        let text = String::from_utf8(c).unwrap();
        let row = text.lines().nth(1).unwrap();
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0].len(), 4);
        assert!(f[1] >= "1994-08-08" && f[2].parse::<u32>().unwrap() >= 1);
    }

    #[test]
    fn every_profile_writes_rows_of_its_header() {
        for (profile, columns) in [(Profile::ZipfLong, 3), (Profile::Catalogue, 12)] {
            let mut out = Vec::new();
            generate(profile, 50_000, 5, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let mut rows = 0;
            for line in text.lines() {
                assert_eq!(line.split(',').count(), columns, "{profile:?}: {line}");
                rows += 1;
            }
            assert!(rows > 100, "{profile:?}");
        }
    }
}
