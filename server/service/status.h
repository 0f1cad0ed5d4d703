// The one place where absl::Status becomes grpc::Status (codes map one to one).
#ifndef DANET_SERVER_SERVICE_STATUS_H_
#define DANET_SERVER_SERVICE_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace danet::service {

grpc::Status ToGrpcStatus(const absl::Status& status);

// "INVALID_ARGUMENT" etc., for metrics labels and logs.
std::string GrpcCodeName(grpc::StatusCode code);

}  // namespace danet::service

#endif  // DANET_SERVER_SERVICE_STATUS_H_
