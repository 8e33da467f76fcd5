//! Backups of a whole cluster: [`format`] (the backup directory: one file per group and
//! a manifest; reading, writing and checking them) and [`restore`] (`umsd restore`: a
//! fresh cluster from a backup). Taking one is `umsctl backup create`, which reads every
//! group from a node holding it through `GET /api/v1/backup/groups/{group}`.

pub mod format;
pub mod restore;
