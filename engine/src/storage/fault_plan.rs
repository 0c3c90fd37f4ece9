//! Tests only: storage failures injected by position in a workload. Every storage operation a
//! store makes through [`super::Db`] is counted (a write batch, a WAL sync, a flush, an ingest of
//! external files, a drop of files, a named step of a multi-step write); a plan makes the Nth of
//! them fail, once or every one from the Nth on, with the I/O error kind it names (a full disk is
//! `StorageFull`). A plan is attached to a database directory, so it follows a workload through
//! reopens, the writes an open makes included. The `testkit` feature builds it for other crates'
//! tests (`testkit::Disk`), which use only a part of it.

#![cfg_attr(not(test), allow(dead_code))]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which operations of a plan fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultMode {
    /// Only the Nth operation.
    Once,
    /// The Nth and every one after it, until [`FaultPlan::lift`].
    FromThenOn,
}

#[derive(Debug)]
struct PlanState {
    /// Operations counted so far.
    counted: u64,
    /// The operation that fails first (1 is the first operation counted), if any.
    fail_at: Option<u64>,
    mode: FaultMode,
    kind: ErrorKind,
    /// Operations failed so far.
    injected: u64,
    /// The name of each operation counted, in order.
    names: Vec<&'static str>,
}

/// Storage faults by position (see the module documentation).
#[derive(Debug)]
pub(crate) struct FaultPlan {
    state: Mutex<PlanState>,
}

/// Plans attached to database directories.
static ATTACHED: Mutex<Vec<(PathBuf, Arc<FaultPlan>)>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl FaultPlan {
    /// A plan that counts operations and fails none.
    pub(crate) fn counting() -> Arc<FaultPlan> {
        FaultPlan::new(None, FaultMode::Once, ErrorKind::Other)
    }

    /// A plan that fails operation `n` (1-based) and, with [`FaultMode::FromThenOn`], every one
    /// after it, with an error of `kind`.
    pub(crate) fn failing(n: u64, mode: FaultMode, kind: ErrorKind) -> Arc<FaultPlan> {
        assert!(n >= 1, "operations are counted from 1");
        FaultPlan::new(Some(n), mode, kind)
    }

    fn new(fail_at: Option<u64>, mode: FaultMode, kind: ErrorKind) -> Arc<FaultPlan> {
        let state = PlanState { counted: 0, fail_at, mode, kind, injected: 0, names: Vec::new() };
        Arc::new(FaultPlan { state: Mutex::new(state) })
    }

    /// Operations counted so far.
    pub(crate) fn operations(&self) -> u64 {
        lock(&self.state).counted
    }

    /// Operations failed so far.
    pub(crate) fn injected(&self) -> u64 {
        lock(&self.state).injected
    }

    /// The names of the operations counted so far, in order.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        lock(&self.state).names.clone()
    }

    /// The next operation fails and, with [`FaultMode::FromThenOn`], every one after it, with an
    /// error of `kind`.
    pub(crate) fn fail_next(&self, mode: FaultMode, kind: ErrorKind) {
        let mut state = lock(&self.state);
        state.fail_at = Some(state.counted + 1);
        (state.mode, state.kind) = (mode, kind);
    }

    /// No operation fails from now on (they are still counted): the disk has room again.
    pub(crate) fn lift(&self) {
        lock(&self.state).fail_at = None;
    }

    /// Counts one operation; fails it when the plan says so.
    pub(crate) fn check(&self, operation: &'static str) -> Result<(), std::io::Error> {
        let mut state = lock(&self.state);
        state.counted += 1;
        state.names.push(operation);
        let n = state.counted;
        let fails = match (state.fail_at, state.mode) {
            (Some(at), FaultMode::Once) => n == at,
            (Some(at), FaultMode::FromThenOn) => n >= at,
            (None, _) => false,
        };
        if !fails {
            return Ok(());
        }
        state.injected += 1;
        Err(std::io::Error::new(state.kind, format!("injected fault at storage operation {n} ({operation})")))
    }

    /// Attaches `plan` to the database in `path`: every [`super::Db`] opened there from now on
    /// counts its operations in it, until [`FaultPlan::detach`].
    pub(crate) fn attach(path: &Path, plan: Arc<FaultPlan>) {
        let mut attached = lock(&ATTACHED);
        attached.retain(|(p, _)| p != path);
        attached.push((path.to_path_buf(), plan));
    }

    /// Detaches the plan of `path`, if any (databases already open keep counting in it).
    pub(crate) fn detach(path: &Path) {
        lock(&ATTACHED).retain(|(p, _)| p != path);
    }

    /// The plan attached to `path`, if any.
    pub(crate) fn attached(path: &Path) -> Option<Arc<FaultPlan>> {
        lock(&ATTACHED).iter().find(|(p, _)| p == path).map(|(_, plan)| plan.clone())
    }
}
