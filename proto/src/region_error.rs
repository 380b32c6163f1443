//! [`HasRegionError`]: the answers that may carry a region error (the Kv calls and
//! the Admin calls routed to a region's leader), for code that handles them alike:
//! the client's retry loop and the node's request metrics.

use crate::adminpb::{
    ChangePeerResponse, GetRegionResponse, MergeResponse, SplitResponse, TransferLeaderResponse,
};
use crate::errorpb::RegionError;
use crate::kvrpcpb::{
    BatchWriteResponse, CompareAndSwapResponse, DeleteResponse, GetResponse, PutResponse,
    ScanResponse,
};

/// An answer that may carry a region error.
pub trait HasRegionError {
    /// The region error, if any.
    fn region_error(&self) -> Option<&RegionError>;
    /// Takes the region error out of the answer.
    fn take_region_error(&mut self) -> Option<RegionError>;
}

macro_rules! has_region_error {
    ($($t:ty),*) => {$(
        impl HasRegionError for $t {
            fn region_error(&self) -> Option<&RegionError> {
                self.region_error.as_ref()
            }
            fn take_region_error(&mut self) -> Option<RegionError> {
                self.region_error.take()
            }
        }
    )*};
}

has_region_error!(
    GetResponse,
    ScanResponse,
    PutResponse,
    DeleteResponse,
    BatchWriteResponse,
    CompareAndSwapResponse,
    GetRegionResponse,
    SplitResponse,
    MergeResponse,
    ChangePeerResponse,
    TransferLeaderResponse
);
