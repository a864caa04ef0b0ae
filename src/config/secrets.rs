//! The environment variables that carry secrets, never written in the file
//! (docs/configuration.md#secrets), and how a secret is read: each has a `*_file` key as its
//! alternative, and the variable wins.

use super::ConfigError;

/// Bearer token of the HTTP approval API (or `approvals.token_file`).
pub const APPROVAL_TOKEN: &str = "REMEDIATOR_APPROVAL_TOKEN";
/// Key that signs answers on the approvals topic (or `approvals.hmac_key_file`).
pub const APPROVAL_HMAC_KEY: &str = "REMEDIATOR_APPROVAL_HMAC_KEY";
/// Bearer token of the Alertmanager intake (or `alertmanager.token_file`).
pub const ALERTMANAGER_TOKEN: &str = "REMEDIATOR_ALERTMANAGER_TOKEN";
/// Notification webhook URL (or `notify.webhook_url_file`).
pub const WEBHOOK_URL: &str = "REMEDIATOR_WEBHOOK_URL";
/// All of them.
pub const ALL: [&str; 4] = [APPROVAL_TOKEN, APPROVAL_HMAC_KEY, ALERTMANAGER_TOKEN, WEBHOOK_URL];

/// A secret from the environment variable `var`, else from the file at `file` ("" = none),
/// trimmed. Secrets never live in the YAML that ships in `config/`.
pub fn secret(var: &str, file: &str) -> Result<Option<String>, ConfigError> {
    secret_from(std::env::var(var).ok().as_deref(), file)
}

/// [`secret`] with the variable's value given (`None`: unset); a blank value counts as unset.
pub fn secret_from(env_value: Option<&str>, file: &str) -> Result<Option<String>, ConfigError> {
    if let Some(v) = env_value.map(str::trim).filter(|v| !v.is_empty()) {
        return Ok(Some(v.to_string()));
    }
    if file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
        path: file.into(),
        source: e,
    })?;
    Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
}
