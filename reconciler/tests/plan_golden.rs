//! Golden-file tests of the pure planner. Each case under `tests/golden/<case>/` has:
//! - `desired/`: the desired-state YAML;
//! - `applied/` (optional): the revision last applied, recorded as the ledger would;
//! - `observed.json` (optional): one-shot records, backup catalog, heartbeats, schedule
//!   and drill records;
//! - `plan.txt` and `plan.json`: the expected rendering and JSON of the plan.
//!
//! Regenerate after an intended change with
//! `TIDEMARK_BLESS=1 cargo test -p tidemark-reconciler --test plan_golden`, then review
//! the diff of the golden files like any other code change.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tidemark_reconciler::control::ObservedState;
use tidemark_reconciler::plan::{plan, render_plan};
use tidemark_reconciler::source::{DesiredStateSource, DirSource};
use tidemark_schema::control::{
    BackupRecord, ChunkRecord, Heartbeat, OneShotRecord, ScheduleRecord, SlicingAssignment,
};
use tidemark_schema::validate::{DesiredState, validate_files};

/// The time every golden plan is made at.
const NOW: &str = "2026-03-10T12:00:00Z";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObservedFixture {
    #[serde(default)]
    oneshots: Vec<OneShotRecord>,
    #[serde(default)]
    backups: Vec<BackupRecord>,
    #[serde(default)]
    heartbeats: Vec<Heartbeat>,
    #[serde(default)]
    schedules: Vec<ScheduleRecord>,
    #[serde(default)]
    drills: Vec<ScheduleRecord>,
    #[serde(default)]
    slicing: Vec<SlicingAssignment>,
    #[serde(default)]
    chunks: Vec<ChunkRecord>,
}

fn load_state(dir: &Path) -> DesiredState {
    let revision = DirSource::new(dir).load().expect("fixture directory");
    let v = validate_files(&revision.files);
    assert!(v.is_valid(), "{}: {:#?}", dir.display(), v.errors);
    v.state
}

fn check_case(case: &Path) -> Vec<String> {
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let desired = load_state(&case.join("desired"));
    let fixture: ObservedFixture = std::fs::read(case.join("observed.json"))
        .map(|b| serde_json::from_slice(&b).expect("observed.json"))
        .unwrap_or_default();
    let mut observed = ObservedState {
        backups: fixture.backups,
        heartbeats: fixture.heartbeats,
        schedules: fixture
            .schedules
            .into_iter()
            .map(|s| (s.schedule.clone(), s))
            .collect(),
        drills: fixture
            .drills
            .into_iter()
            .map(|s| (s.schedule.clone(), s))
            .collect(),
        slicing: fixture.slicing,
        chunks: fixture.chunks,
        ..Default::default()
    };
    for r in fixture.oneshots {
        observed.oneshots.insert((r.kind, r.name.clone()), r);
    }
    if case.join("applied").is_dir() {
        let applied = load_state(&case.join("applied"));
        observed.applied =
            Some(applied.to_applied("applied-revision", "2026-03-01T00:00:00Z".parse().unwrap()));
    }
    let p = plan(&desired, &observed, now);
    let text = render_plan(&p);
    let json = serde_json::to_string_pretty(&p).unwrap() + "\n";
    let mut failures = Vec::new();
    for (name, actual) in [("plan.txt", text), ("plan.json", json)] {
        let path = case.join(name);
        if std::env::var_os("TIDEMARK_BLESS").is_some() {
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}: differs from the golden file:\n{}",
                path.display(),
                similar::TextDiff::from_lines(&expected, &actual)
                    .unified_diff()
                    .header("golden", "actual")
            ));
        }
    }
    failures
}

#[test]
fn golden_plans() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "expected the golden cases in {}",
        root.display()
    );
    let failures: Vec<String> = cases.iter().flat_map(|c| check_case(c)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
