//! Tool arguments, read so that a wrongly typed one (`"tags": 5`) is a tool error naming
//! its path (`tasks[0].tags`), which the model can act on, rather than the protocol error
//! rmcp's own extractor answers.

use rmcp::{
    handler::server::{common::FromContextPart, tool::ToolCallContext},
    schemars::{self, JsonSchema},
};
use serde::de::DeserializeOwned;

use crate::{failure::ToolFailure, identity::Caller, tools::TodoTools, words::BadArgument};

/// A tool call's typed arguments and its caller, or why the call cannot go on (an argument
/// is wrong, or the call has no identity): read before the tool runs, so that every tool
/// opens with `let (p, caller) = opened?;`. Named `Parameters` like rmcp's wrapper, because
/// the `#[tool]` macro finds a tool's input schema (`P`'s) by that name.
#[derive(Debug)]
pub struct Parameters<P>(pub Result<(P, Caller), ToolFailure>);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        P::json_schema(generator)
    }
}

impl<P: DeserializeOwned> FromContextPart<ToolCallContext<'_, TodoTools>> for Parameters<P> {
    fn from_context_part(
        context: &mut ToolCallContext<TodoTools>,
    ) -> Result<Self, rmcp::ErrorData> {
        let arguments = serde_json::Value::Object(context.arguments.take().unwrap_or_default());
        // The arguments first: a wrong one is named even when the identity is missing too.
        let opened = read(arguments).map_err(ToolFailure::from).and_then(|p| {
            let parts = context
                .request_context
                .extensions
                .get::<http::request::Parts>();
            Ok((p, context.service.caller(parts)?))
        });
        Ok(Self(opened))
    }
}

/// `P` from a tool call's arguments; an error names the argument's path.
pub fn read<P: DeserializeOwned>(arguments: serde_json::Value) -> Result<P, BadArgument> {
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "arguments".to_owned()
        } else {
            path
        };
        BadArgument::new(field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tools::AddTasks;

    #[test]
    fn a_wrongly_typed_argument_is_named_by_its_path() {
        let bad = read::<AddTasks>(serde_json::json!({
            "tasks": [{ "title": "a" }, { "title": "b", "tags": 5 }]
        }))
        .unwrap_err();
        assert_eq!(bad.field, "tasks[1].tags");
        let missing = read::<AddTasks>(serde_json::json!({})).unwrap_err();
        assert_eq!(missing.field, "arguments");
        assert!(missing.reason.contains("tasks"), "{missing:?}");
        assert!(read::<AddTasks>(serde_json::json!({ "tasks": [{ "title": "a" }] })).is_ok());
    }
}
