//! The exit-code table (also in the README). Scripts and CI depend on it; never renumber.

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: success; for `diff`, no changes.
    Ok,
    /// 1: invalid desired state, or a failure (unreadable source, control plane, …).
    Failure,
    /// 2: `diff` found changes (like `terraform plan -detailed-exitcode`).
    Changes,
    /// 3: `reconcile --once`: operations are still running (run it again to follow them).
    Running,
    /// 2 for `status`: a schedule's newest good backup is older than its RPO.
    RpoBreached,
    /// 2 for `status`: a restore drill's last run failed (the backup it tried is not
    /// proven restorable).
    DrillFailed,
    /// 4: `reconcile --once`: another reconciler holds the lease; nothing was done.
    NotLeader,
    /// 5: `cancel-*`: the operation cannot be cancelled (it ended, its outcome is decided,
    /// or a restore is past go without fallback); it goes on.
    CancelRefused,
    /// 64: the command line itself is wrong (EX_USAGE).
    Usage,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(match s {
            ExitStatus::Ok => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes => 2,
            ExitStatus::Running => 3,
            ExitStatus::RpoBreached | ExitStatus::DrillFailed => 2,
            ExitStatus::NotLeader => 4,
            ExitStatus::CancelRefused => 5,
            ExitStatus::Usage => 64,
        })
    }
}
