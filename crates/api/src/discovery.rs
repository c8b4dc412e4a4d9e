//! Discovery on the server: a machine's report becomes a `discovered`
//! record, the rules are tried on it, and the worker learns whether to
//! reboot into its workflow.

use tonic::{Request, Response, Status};

use crate::worker::service::WorkerService;

/// `Discover`: store the report, try the rules, answer.
pub(crate) async fn report(
    _service: &WorkerService,
    _request: Request<bellows_rpc::v1::DiscoverRequest>,
) -> Result<Response<bellows_rpc::v1::DiscoverReply>, Status> {
    Err(Status::unimplemented("discovery is being built"))
}
