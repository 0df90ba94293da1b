//! The engine's steps in-process, as the pipeline runs them (shared by the
//! engine's integration tests).

use fanfold_engine::*;

/// Runs the engine steps in-process: scan every chunk with a guess, re-scan
/// the chunks that guessed wrong, merge, format.
pub fn run(csv: &[u8], spec: &Spec, chunk: u64) -> Result<Vec<u8>, String> {
    run_in_pieces(csv, spec, chunk, 1)
}

/// Scans `range` as a worker with `pieces` scan threads does: each piece
/// from a guess (the first from `state`), the wrong guesses again, joined.
pub fn scan_chunk(
    compiled: &Compiled,
    head: &Head,
    range: ChunkRange,
    csv: &[u8],
    state: StartState,
    pieces: usize,
) -> (ChunkReport, Vec<u8>) {
    let cut = pieces::cut(range, pieces, 1);
    if cut.len() == 1 {
        return scan_slice(compiled, head, range, csv, state);
    }
    let guess = |i: usize| if i == 0 { state } else { StartState::Guess };
    let mut scanned: Vec<(ChunkReport, Vec<u8>)> =
        cut.iter().enumerate().map(|(i, p)| scan_slice(compiled, head, *p, csv, guess(i))).collect();
    let reports: Vec<ChunkReport> = scanned.iter().map(|s| s.0.clone()).collect();
    for (i, known) in pieces::wrong_guesses(&reports) {
        scanned[i] = scan_slice(compiled, head, cut[i], csv, StartState::Known(known));
    }
    let reports: Vec<ChunkReport> = scanned.iter().map(|s| s.0.clone()).collect();
    assert!(pieces::wrong_guesses(&reports).is_empty(), "a piece re-scanned from the known state is right");
    pieces::join(compiled, range, scanned, Vec::new()).expect("runs in memory merge")
}

/// [`run`] with every chunk scanned in `pieces` pieces.
pub fn run_in_pieces(csv: &[u8], spec: &Spec, chunk: u64, pieces: usize) -> Result<Vec<u8>, String> {
    let head = read_head(csv, csv.len() as u64, &spec.csv).map_err(|e| e.to_string())?.unwrap();
    let compiled = head.compile(spec).map_err(|e| e.to_string())?;
    let ranges = plan_chunks(head.data_start, csv.len() as u64, chunk);
    let mut results: Vec<(ChunkReport, Vec<u8>)> =
        ranges.iter().map(|r| scan_chunk(&compiled, &head, *r, csv, StartState::Guess, pieces)).collect();
    let reports: Vec<ChunkReport> = results.iter().map(|r| r.0.clone()).collect();
    for (i, state) in resolve_chain(&reports) {
        results[i as usize] = scan_chunk(&compiled, &head, ranges[i as usize], csv, StartState::Known(state), pieces);
    }
    let reports: Vec<ChunkReport> = results.iter().map(|r| r.0.clone()).collect();
    assert!(resolve_chain(&reports).is_empty(), "a re-scan with the known state is always right");
    let lines = LineIndex::new(&head, &reports);
    if let Some(e) =
        reports.iter().filter_map(|r| r.error.clone().map(|e| lines.globalize(r.index, e))).min_by_key(|e| e.byte)
    {
        return Err(e.to_string());
    }
    if let Some(a) = reports.iter().find_map(|r| r.overflow) {
        return Err(Error::SumOverflow { aggregate: compiled.aggs[a].name.clone() }.to_string());
    }
    let names = compiled.aggs.iter().map(|a| a.name.clone()).collect();
    let mut m = Merger::new(results.iter().map(|r| &r.1[..]).collect(), names).unwrap();
    let mut f = RowFormatter::new(b',');
    let mut out = f.header(&compiled.output_header);
    while let Some((k, a, t)) = m.next_group().map_err(|e| e.to_string())? {
        f.row(k, a, t, &mut out);
    }
    Ok(out)
}
