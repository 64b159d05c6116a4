//! Herald's gRPC contracts, generated from `proto/herald/v1/*.proto`.
//!
//! - [`v1::notification_service_server`]: the write side (`SendNotification`), served by the ingress.
//! - [`v1::query_service_server`]: the read side (`GetNotification`, `ListInbox`), served by
//!   `query-grpc`.
//! - [`FILE_DESCRIPTOR_SET`] and [`standard_services`]: health, and gRPC reflection (v1 and
//!   v1alpha, listing only the service a server serves) so `grpcurl` works.
//! - [`server`]: the server settings both servers share (keepalive, timeouts, limits).
//! - [`tls`]: TLS on both servers (certificate reloaded when its files change, optional mutual
//!   TLS), or plaintext without it.
//! - [`store_status`] (`status.rs`): the one mapping from store errors to gRPC statuses;
//!   [`FieldViolation`]: a refused request field as INVALID_ARGUMENT with a `BadRequest` detail.

/// Generated code for the `herald.v1` package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("herald.v1");
}

/// The encoded descriptor set of every herald.v1 file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");

pub mod convert;
pub mod server;
mod status;
pub mod tls;
mod violation;

pub use status::store_status;
pub use violation::FieldViolation;

/// Why the reflection service could not be built.
pub use tonic_reflection::server::Error as ReflectionError;

/// The gRPC health service's name.
const HEALTH: &str = "grpc.health.v1.Health";

/// The standard services both Herald servers register: `grpc.health.v1` (reporting `SERVING`
/// for each of `service_names`) and server reflection in both versions clients speak (`v1`, and
/// the older `v1alpha` that `grpcio-reflection`, older grpcurl and several GUI tools use), so
/// `grpcurl` works without local proto files. Reflection lists only what this server serves:
/// `service_names`, health and reflection itself — not another server's Herald service, whose
/// definitions it still knows.
#[allow(clippy::type_complexity)]
pub async fn standard_services(
    service_names: &[&str],
) -> Result<
    (
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ReflectionError,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    Ok((
        health,
        reflection(service_names).build_v1()?,
        reflection(service_names).build_v1alpha()?,
    ))
}

/// A reflection builder that knows every file a Herald server uses and lists the services one
/// serves.
fn reflection(service_names: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .with_service_name(HEALTH)
        .with_service_name(REFLECTION_V1)
        .with_service_name(REFLECTION_V1ALPHA);
    service_names
        .iter()
        .fold(builder, |b, name| b.with_service_name(*name))
}

/// The reflection services' names.
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// The older reflection service's name.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
