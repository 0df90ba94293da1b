//! Times one thread's chunk scan phases on a file: `scanbench FILE [CHUNK_MB] [MAX_MB]`
//! (`SPEC=spec.json` for another spec than the BMAT job).
use std::time::Instant;

use fanfold_engine::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = std::fs::read(&args[1]).expect("read");
    let chunk: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(64) << 20;
    let max: usize = args.get(3).map(|s| s.parse::<usize>().unwrap() << 20).unwrap_or(file.len()).min(file.len());
    let file = &file[..max];
    let spec = match std::env::var("SPEC") {
        Ok(p) => Spec::from_json(&std::fs::read_to_string(p).expect("read the spec")).expect("a valid spec"),
        Err(_) => Spec::default(),
    };
    let head = read_head(file, file.len() as u64, &spec.csv).unwrap().unwrap();
    let compiled = head.compile(&spec).unwrap();
    let (mut feed, mut fin) = (0.0, 0.0);
    let mut rows = 0;
    let mut buffers = ScanBuffers::default();
    let mut runs = Vec::new();
    let ranges = plan_chunks(head.data_start, file.len() as u64, chunk);
    // The chain first, from the reports alone (as the plan step does), so
    // that the timed scans below are the right ones, wrong guesses rescanned.
    let reports: Vec<ChunkReport> =
        ranges.iter().map(|&r| scan_slice(&compiled, &head, r, file, StartState::Guess).0).collect();
    let mut states = vec![StartState::Guess; ranges.len()];
    for (i, s) in resolve_chain(&reports) {
        states[i as usize] = StartState::Known(s);
    }
    println!("{} of {} chunks guessed wrong", states.iter().filter(|s| **s != StartState::Guess).count(), ranges.len());
    for (range, state) in ranges.into_iter().zip(states) {
        let t = Instant::now();
        let mut s = ChunkScanner::with_buffers(
            &compiled,
            range,
            file.len() as u64,
            range.start == head.data_start,
            state,
            buffers,
        );
        while !s.is_done() {
            let p = s.position() as usize;
            s.feed(&file[p..]);
        }
        let t1 = Instant::now();
        let (report, run, b) = s.finish_with_buffers();
        buffers = b;
        let t2 = Instant::now();
        feed += (t1 - t).as_secs_f64();
        fin += (t2 - t1).as_secs_f64();
        rows += report.rows;
        runs.push(run.clone());
    }
    let t = Instant::now();
    let mut merger = Merger::new(runs.iter().map(|r| &r[..]).collect(), vec![]).unwrap();
    let mut fmt = RowFormatter::new(b',');
    let mut out = Vec::new();
    let mut groups = 0u64;
    while let Some((key, accs, texts)) = merger.next_group().unwrap() {
        fmt.row(key, accs, texts, &mut out);
        groups += 1;
        if out.len() > 1 << 20 {
            out.clear();
        }
    }
    let merge = t.elapsed().as_secs_f64();
    println!(
        "rows {rows} groups {groups}: feed {feed:.3}s ({:.1} ns/row) finish {fin:.3}s ({:.1} ns/row) merge {merge:.3}s",
        feed * 1e9 / rows as f64,
        fin * 1e9 / rows as f64
    );
}
