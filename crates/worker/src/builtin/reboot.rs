//! `reboot`: end the workflow's run on this boot by rebooting (or powering
//! off) the machine.
//!
//! The action does not reboot by itself: it succeeds with
//! [`AfterSuccess::Reboot`], and the worker reboots once the server has
//! acknowledged the report, so the workflow's state is never lost with the
//! machine's memory. Environment:
//!
//! - `ACTION`: `reboot` (default) or `poweroff` (also spelled `power-off`,
//!   `shutdown`, `halt`), any case; `poweroff` gives
//!   [`AfterSuccess::PowerOff`]. Anything else fails the action.

use std::collections::BTreeMap;

use crate::runtime::{AfterSuccess, RunResult};

/// What `ACTION` asks for; `Err` names a value we do not know.
pub fn after_from_env(env: &BTreeMap<String, String>) -> Result<AfterSuccess, String> {
    let action = env
        .get("ACTION")
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match action.as_str() {
        "" | "reboot" | "restart" => Ok(AfterSuccess::Reboot),
        "poweroff" | "power-off" | "shutdown" | "halt" => Ok(AfterSuccess::PowerOff),
        other => Err(format!("ACTION {other:?} is neither reboot nor poweroff")),
    }
}

/// Runs the action: a success that tells the worker what to do next.
pub(crate) fn run(env: &BTreeMap<String, String>) -> RunResult {
    match after_from_env(env) {
        Ok(after) => {
            let what = match after {
                AfterSuccess::PowerOff => "power off",
                _ => "reboot",
            };
            RunResult {
                after,
                ..RunResult::success(format!(
                    "the machine will {what} once the server has this report"
                ))
            }
        }
        Err(message) => RunResult::failed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RunOutcome;

    fn env(action: Option<&str>) -> BTreeMap<String, String> {
        action
            .map(|a| BTreeMap::from([("ACTION".to_string(), a.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn reboot_by_default() {
        let result = run(&env(None));
        assert_eq!(result.outcome, RunOutcome::Success);
        assert_eq!(result.after, AfterSuccess::Reboot);
        assert_eq!(run(&env(Some("Reboot"))).after, AfterSuccess::Reboot);
    }

    #[test]
    fn poweroff() {
        for value in ["poweroff", "POWEROFF", " power-off ", "shutdown", "halt"] {
            let result = run(&env(Some(value)));
            assert_eq!(result.outcome, RunOutcome::Success, "{value}");
            assert_eq!(result.after, AfterSuccess::PowerOff, "{value}");
        }
    }

    #[test]
    fn unknown_action_fails() {
        let result = run(&env(Some("kexec")));
        assert_eq!(result.outcome, RunOutcome::Failed);
        assert_eq!(result.after, AfterSuccess::Continue);
        assert!(result.message.contains("\"kexec\""));
    }
}
