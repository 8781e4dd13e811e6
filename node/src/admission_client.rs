//! `coditect token ...` and `coditect peer revoke`: admission through a
//! member's HTTP API (which forwards to the leader).

use coditect_node::start::NodeError;

use crate::api_client::{api_url, http, problem, unreachable};

/// Parses `90`, `90s`, `15m`, `1h` or `7d` into seconds.
pub(crate) fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid --ttl {text:?}: expected a number with s, m, h or d, like 1h"
            ))
        }
    };
    let value: u64 = digits.parse().map_err(|_| {
        format!("invalid --ttl {text:?}: expected a number with s, m, h or d, like 1h")
    })?;
    match value.checked_mul(scale) {
        Some(0) => Err("--ttl must be more than 0".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("--ttl {text:?} is too long")),
    }
}

async fn check(api: &str, response: reqwest::Response) -> Result<reqwest::Response, NodeError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = problem(response).await;
    if status.is_client_error() && status != reqwest::StatusCode::CONFLICT {
        Err(NodeError::BadInput(format!("{api}: {message}")))
    } else {
        Err(NodeError::Failed(format!("{api}: {message}")))
    }
}

/// `coditect token create`: prints the token alone on stdout.
pub(crate) async fn token_create(
    api: &str,
    ttl: Option<&str>,
    uses: Option<u32>,
) -> Result<u8, NodeError> {
    let ttl_secs = ttl
        .map(parse_ttl)
        .transpose()
        .map_err(NodeError::BadInput)?;
    if uses == Some(0) {
        return Err(NodeError::BadInput("--uses must be at least 1".into()));
    }
    let request = http()?
        .post(api_url(api, "/api/tokens")?)
        .json(&serde_json::json!({"ttl_secs": ttl_secs, "uses": uses}));
    let (body, token) = text_answer(api, request, "token").await?;
    println!("{token}");
    let validity = match ttl_secs {
        Some(secs) => format!("valid for {secs} s"),
        None => "valid until revoked".to_string(),
    };
    let uses = match uses {
        Some(n) => format!("{n} use(s)"),
        None => "any number of uses".to_string(),
    };
    eprintln!(
        "join token {} ({validity}, {uses}); start a node with --bootstrap <member address> --join-token <token>",
        body["id"].as_str().unwrap_or("?")
    );
    Ok(0)
}

/// Sends `request` and reads the text field `field` of its JSON answer;
/// the whole answer too.
async fn text_answer(
    api: &str,
    request: reqwest::RequestBuilder,
    field: &str,
) -> Result<(serde_json::Value, String), NodeError> {
    let response = request.send().await.map_err(unreachable(api))?;
    let body: serde_json::Value = check(api, response)
        .await?
        .json()
        .await
        .map_err(|error| NodeError::Failed(format!("{api} answered no JSON: {error}")))?;
    let text = body[field]
        .as_str()
        .ok_or_else(|| NodeError::Failed(format!("{api} answered no {field}")))?
        .to_string();
    Ok((body, text))
}

/// Sends one body-less admission request and says what it did.
async fn act(api: &str, method: reqwest::Method, path: &str, done: &str) -> Result<u8, NodeError> {
    let response = http()?
        .request(method, api_url(api, path)?)
        .send()
        .await
        .map_err(unreachable(api))?;
    check(api, response).await?;
    eprintln!("{done}");
    Ok(0)
}

/// `coditect token revoke ID`.
pub(crate) async fn token_revoke(api: &str, id: &str) -> Result<u8, NodeError> {
    let path = format!("/api/tokens/{id}");
    act(
        api,
        reqwest::Method::DELETE,
        &path,
        &format!("join token {id} revoked"),
    )
    .await
}

/// `coditect token rotate`.
pub(crate) async fn token_rotate(api: &str) -> Result<u8, NodeError> {
    let done = "join secret rotated: admitted peers stay, every earlier token is void";
    act(api, reqwest::Method::POST, "/api/admission/rotate", done).await
}

/// `coditect token rotate-api`: prints the new API token alone on stdout.
pub(crate) async fn api_token_rotate(api: &str) -> Result<u8, NodeError> {
    let request = http()?.post(api_url(api, "/api/admission/api-token/rotate")?);
    let (_, token) = text_answer(api, request, "api_token").await?;
    println!("{token}");
    eprintln!(
        "API token rotated: the old one is refused from now on; every node writes the new one to its DATA_DIR/api-token as the change reaches it (clients reading that file, or --api-token-file, follow)"
    );
    Ok(0)
}

/// `coditect peer revoke PEER_ID`.
pub(crate) async fn peer_revoke(api: &str, peer: &str) -> Result<u8, NodeError> {
    let done =
        format!("peer {peer} revoked: every node disconnects it and its tasks are placed again");
    act(
        api,
        reqwest::Method::DELETE,
        &format!("/api/peers/{peer}"),
        &done,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_people_write_them() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3_600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        for bad in ["", "h", "1y", "-1h", "0", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
