//! Runs the Argo CD health check for `Apply` (`config/argocd/health.lua`) in a real Lua
//! interpreter, the way Argo CD does, so tests can check it against baton's statuses.

use std::path::{Path, PathBuf};

use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table};

/// The `argocd-cm` key Argo CD reads the health check of `baton.dev/Apply` from.
pub const HEALTH_KEY: &str = "resource.customizations.health.baton.dev_Apply";

pub fn argocd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("config").join("argocd")
}

pub fn health_script() -> String {
    let path = argocd_dir().join("health.lua");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What the health check returned.
#[derive(Debug, PartialEq)]
pub struct Health {
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing` or `Unknown`.
    pub status: String,
    /// What the script says.
    pub message: String,
}

/// Runs health.lua the way Argo CD does: `obj` is the live object as a Lua table, and the
/// script returns `{status = ..., message = ...}`.
pub fn health_of_json(object: &serde_json::Value) -> Health {
    let lua = Lua::new();
    // Absent stays absent: a JSON null must read as nil in Lua, as it does in Argo CD.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let obj = lua.to_value_with(object, options).expect("the object converts to Lua");
    lua.globals().set("obj", obj).expect("obj is set");
    let result: Table = lua
        .load(health_script())
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed: {e}"));
    Health {
        status: result.get("status").expect("the result has a string status"),
        message: result.get("message").expect("the result has a string message"),
    }
}
