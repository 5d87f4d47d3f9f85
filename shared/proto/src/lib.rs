//! Generated protobuf types of the Todo system, in modules mirroring the proto packages.

/// The encoded `FileDescriptorSet` of every proto in proto/, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("todo_descriptor");

pub mod todo {
    pub mod v1 {
        #![allow(clippy::all)]
        tonic::include_proto!("todo.v1");
    }
    pub mod events {
        pub mod v1 {
            #![allow(clippy::all)]
            tonic::include_proto!("todo.events.v1");
        }
    }
    pub mod notifications {
        pub mod v1 {
            #![allow(clippy::all)]
            tonic::include_proto!("todo.notifications.v1");
        }
    }
    pub mod audit {
        pub mod v1 {
            #![allow(clippy::all)]
            tonic::include_proto!("todo.audit.v1");
        }
    }
    pub mod sync {
        pub mod v1 {
            #![allow(clippy::all)]
            tonic::include_proto!("todo.sync.v1");
        }
    }
    pub mod deadletters {
        pub mod v1 {
            #![allow(clippy::all)]
            tonic::include_proto!("todo.deadletters.v1");
        }
    }
}

pub use prost;
pub use prost_types;

mod timestamps;
pub use timestamps::{MAX_SECONDS, MIN_SECONDS, from_timestamp, to_timestamp};
pub mod codec;
pub mod watch_cursor;
