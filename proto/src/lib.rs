//! Herald's gRPC contracts, generated from `proto/herald/v1/*.proto`.
//!
//! - [`v1::notification_service_server`]: the write side (`SendNotification`), served by the ingress.
//! - [`v1::query_service_server`]: the read side (`GetNotification`, `ListInbox`), served by
//!   `query-grpc`.
//! - [`FILE_DESCRIPTOR_SET`]: what both servers hand to gRPC reflection so `grpcurl` works.
//! - [`store_status`] (`status.rs`): the one mapping from store errors to gRPC statuses.

/// Generated code for the `herald.v1` package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("herald.v1");
}

/// The encoded descriptor set of every herald.v1 file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");

pub mod convert;
mod status;

pub use status::store_status;

/// Why the reflection service could not be built.
pub use tonic_reflection::server::Error as ReflectionError;

/// The standard services both Herald servers register: `grpc.health.v1` (reporting `SERVING`
/// for `service_name`) and server reflection over every herald.v1 file, so `grpcurl` works
/// without local proto files.
pub async fn standard_services(
    service_name: &str,
) -> Result<
    (
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service_name, tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok((health, reflection))
}
