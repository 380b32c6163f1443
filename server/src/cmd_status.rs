//! The one conversion of a store's [`CmdError`] into a gRPC answer, for the Kv and
//! Admin services.
//!
//! A service answers a store result in one of three ways: the value; a region error
//! in the response's `region_error`, which the client retries or re-routes on; or a
//! gRPC status. [`CmdResultExt::into_answer`] decides for commands (reads, writes,
//! split, merge, checksum):
//!
//! - `Region` goes in the response as it is; `Dropped` (the command certainly was not
//!   applied) as `StaleCommand`; `Undetermined` (its outcome is unknown) as
//!   `Undetermined` (see [`CmdError::to_region_error`]);
//! - `Invalid` (the request can never succeed as given) is `InvalidArgument`;
//! - a storage failure is `Internal`.
//!
//! [`CmdResultExt::into_query_answer`] decides for a region query (GetRegion): only
//! `Region` goes in the response, every other error is `Unavailable`.
//!
//! The orphan rule forbids `impl From<CmdError> for tonic::Status` in this crate
//! (both types are foreign), hence an extension trait on the store's results.

use shoal_proto::errorpb::RegionError;
use shoal_raftstore::CmdError;
use tonic::Status;

/// A store result as a service answers it; see the module docs.
pub(crate) trait CmdResultExt<T> {
    /// A command's result: `Ok(Ok(value))`, `Ok(Err(region_error))` for the errors
    /// that go in the response (`region_id` names the region in `StaleCommand` and
    /// `Undetermined`), `Err(status)` for the others.
    fn into_answer(self, region_id: u64) -> Result<Result<T, RegionError>, Status>;

    /// A region query's result: `Region` errors go in the response, any other error
    /// is `Unavailable`.
    fn into_query_answer(self) -> Result<Result<T, RegionError>, Status>;
}

impl<T> CmdResultExt<T> for Result<T, CmdError> {
    fn into_answer(self, region_id: u64) -> Result<Result<T, RegionError>, Status> {
        let e = match self {
            Ok(v) => return Ok(Ok(v)),
            Err(e) => e,
        };
        if let Some(re) = e.to_region_error(region_id) {
            return Ok(Err(re));
        }
        match e {
            CmdError::Invalid(m) => Err(Status::invalid_argument(m)),
            other => Err(Status::internal(other.to_string())),
        }
    }

    fn into_query_answer(self) -> Result<Result<T, RegionError>, Status> {
        match self {
            Ok(v) => Ok(Ok(v)),
            Err(CmdError::Region(e)) => Ok(Err(e)),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::errorpb::{region_error::Kind, RegionNotFound};
    use tonic::Code;

    fn not_found() -> RegionError {
        RegionError {
            message: "region 7 not found".into(),
            kind: Some(Kind::RegionNotFound(RegionNotFound { region_id: 7 })),
        }
    }

    fn answer(e: CmdError) -> Result<Result<(), RegionError>, Status> {
        Err::<(), _>(e).into_answer(7)
    }

    fn kind(r: Result<Result<(), RegionError>, Status>) -> Option<Kind> {
        r.expect("a region error, not a status")
            .expect_err("a region error, not a value")
            .kind
    }

    #[test]
    fn region_errors_go_in_the_response() {
        assert_eq!(Ok::<_, CmdError>(3).into_answer(7).unwrap(), Ok(3));
        assert_eq!(
            answer(CmdError::Region(not_found())).unwrap(),
            Err(not_found())
        );
        assert!(matches!(
            kind(answer(CmdError::Dropped("gone".into()))),
            Some(Kind::StaleCommand(s)) if s.region_id == 7 && s.reason == "gone"
        ));
        assert!(matches!(
            kind(answer(CmdError::Undetermined("moved".into()))),
            Some(Kind::Undetermined(u)) if u.region_id == 7 && u.reason == "moved"
        ));
    }

    #[test]
    fn invalid_requests_and_storage_failures_are_statuses() {
        let invalid = answer(CmdError::Invalid("split at the start key".into())).unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "split at the start key");
        let storage = answer(CmdError::Storage("disk".into())).unwrap_err();
        assert_eq!(storage.code(), Code::Internal);
        assert_eq!(storage.message(), "storage error: disk");
    }

    #[test]
    fn a_query_answers_only_region_errors_in_the_response() {
        let region = Err::<(), _>(CmdError::Region(not_found())).into_query_answer();
        assert_eq!(region.unwrap(), Err(not_found()));
        let dropped = Err::<(), _>(CmdError::Dropped("the store stopped".into()))
            .into_query_answer()
            .unwrap_err();
        assert_eq!(dropped.code(), Code::Unavailable);
        assert_eq!(dropped.message(), "proposal dropped: the store stopped");
    }
}
