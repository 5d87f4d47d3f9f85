//! Caller identity: the shared rules of `todo-auth`.

pub use todo_auth::*;
