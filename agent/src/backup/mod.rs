//! The physical backup of one node, one file per stage: open the cursor and copy
//! (`run`), the parallel upload (`copy`), the snapshot hand-over of external backups
//! (`external`), the changed ranges of an incremental one (`increment`), and the manifest
//! written last (`manifest`).

mod copy;
mod external;
pub(crate) mod increment;
pub(crate) mod manifest;
mod run;

pub use run::run;
