//! How schemas change: each aggregate has its own list of steps per backend, recorded per
//! aggregate, applied in a fixed order of aggregates (users first: the others refer to it).
//! Stores made before aggregates had steps of their own recorded one number for everything;
//! `legacy` says which steps of which aggregate such a store already holds.

use super::{StoreError, StoreResult};

/// The steps of one aggregate on one backend.
pub type Steps = (&'static str, &'static [&'static str]);

/// What is to run for one aggregate: the steps after `done`, and the version it reaches.
pub struct Plan {
    pub aggregate: &'static str,
    pub pending: &'static [&'static str],
    pub version: usize,
}

/// The plan for every aggregate, given what the store records for each (`recorded` returns
/// the number of steps applied, 0 for none). A store that has more steps than this binary
/// knows was written by a newer one: an error, never a guess.
pub fn plan(schema: &[Steps], mut recorded: impl FnMut(&str) -> usize) -> StoreResult<Vec<Plan>> {
    schema
        .iter()
        .map(|&(aggregate, steps)| {
            let done = recorded(aggregate);
            if done > steps.len() {
                return Err(StoreError::Unavailable(format!(
                    "the store was written by a newer Portcullis ({aggregate} schema {done}, this one knows {})",
                    steps.len()
                )));
            }
            Ok(Plan {
                aggregate,
                pending: &steps[done..],
                version: steps.len(),
            })
        })
        .collect()
}

/// The steps per aggregate that a store of the single-number era held at `version`, from
/// `history`, where `history[v - 1]` lists what version `v` added.
pub fn legacy(
    history: &[&[(&'static str, usize)]],
    version: usize,
) -> StoreResult<Vec<(&'static str, usize)>> {
    if version > history.len() {
        return Err(StoreError::Unavailable(format!(
            "the store was written by a newer Portcullis (schema {version}, this one knows {})",
            history.len()
        )));
    }
    let mut held: Vec<(&'static str, usize)> = Vec::new();
    for added in &history[..version] {
        for &(aggregate, steps) in *added {
            match held.iter_mut().find(|(a, _)| *a == aggregate) {
                Some(entry) => entry.1 = steps,
                None => held.push((aggregate, steps)),
            }
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: [Steps; 2] = [("users", &["a", "b"]), ("sessions", &["c"])];

    #[test]
    fn only_the_steps_not_yet_applied_run() {
        let plans = plan(&SCHEMA, |a| usize::from(a == "users")).unwrap();
        let pending: Vec<_> = plans.iter().map(|p| (p.aggregate, p.pending)).collect();
        assert_eq!(pending, [("users", &["b"][..]), ("sessions", &["c"][..])]);
        assert!(plan(&SCHEMA, |a| if a == "sessions" { 2 } else { 0 }).is_err());
    }

    #[test]
    fn a_single_number_store_maps_onto_aggregates() {
        let history: &[&[(&str, usize)]] = &[&[("users", 1), ("sessions", 1)], &[("users", 2)]];
        assert_eq!(legacy(history, 0).unwrap(), []);
        assert_eq!(legacy(history, 1).unwrap(), [("users", 1), ("sessions", 1)]);
        assert_eq!(legacy(history, 2).unwrap(), [("users", 2), ("sessions", 1)]);
        assert!(legacy(history, 3).is_err());
    }
}
