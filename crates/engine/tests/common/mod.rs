//! The engine's steps in-process, as the pipeline runs them (shared by the
//! engine's integration tests).

use fanfold_engine::*;

/// Runs the engine steps in-process: scan every chunk with a guess, re-scan
/// the chunks that guessed wrong, merge, format.
pub fn run(csv: &[u8], spec: &Spec, chunk: u64) -> Result<Vec<u8>, String> {
    let head = read_head(csv, csv.len() as u64, &spec.csv).map_err(|e| e.to_string())?.unwrap();
    let compiled = head.compile(spec).map_err(|e| e.to_string())?;
    let ranges = plan_chunks(head.data_start, csv.len() as u64, chunk);
    let mut results: Vec<(ChunkReport, Vec<u8>)> =
        ranges.iter().map(|r| scan_slice(&compiled, &head, *r, csv, StartState::Guess)).collect();
    let reports: Vec<ChunkReport> = results.iter().map(|r| r.0.clone()).collect();
    for (i, state) in resolve_chain(&reports) {
        results[i as usize] = scan_slice(&compiled, &head, ranges[i as usize], csv, StartState::Known(state));
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
