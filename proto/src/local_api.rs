//! The local API's envelope: newline-delimited JSON over the agent's Unix socket, one request
//! per line, one response line per request. Any POS application in any language can speak it
//! (see docs/local-api.md).
//!
//! Request:  `{"v":1,"id":7,"method":"status","params":{}}`
//! Response: `{"v":1,"id":7,"ok":true,"result":{…}}` or
//!           `{"v":1,"id":7,"ok":false,"error":{"code":"unknown_method","message":"…"}}`

use serde::{Deserialize, Serialize};

/// Longest request line, in bytes, newline included.
pub const MAX_LINE: usize = 64 * 1024;

/// A request id chosen by the client: a number or a short string, echoed in the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A number.
    Number(u64),
    /// A string (at most 64 bytes).
    Text(String),
}

/// One request line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Protocol version: must be [`crate::version::LOCAL_API_VERSION`].
    pub v: u32,
    /// Echoed in the response.
    pub id: RequestId,
    /// The method name, e.g. `status`, `login`, `audit.record`.
    pub method: String,
    /// Method parameters (an object); absent means `{}`.
    #[serde(default)]
    pub params: serde_json::Value,
}

/// Stable error codes. Detail for people goes in `message`; programs branch on the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The line is not JSON, or not a request object.
    BadJson,
    /// The protocol version is not supported.
    UnsupportedVersion,
    /// No such method.
    UnknownMethod,
    /// Parameters missing or of the wrong type.
    BadParams,
    /// The line is longer than [`MAX_LINE`].
    LineTooLong,
    /// This peer (uid) may not use the API.
    Forbidden,
    /// The agent is at its connection limit.
    Busy,
    /// The session token is missing, unknown or expired.
    Unauthenticated,
    /// The session's role may not do this.
    PermissionDenied,
    /// Login refused (wrong secret, unknown clerk…): deliberately not more specific.
    LoginFailed,
    /// A TOTP code is required to complete this login.
    MfaRequired,
    /// Too many failures: try again after `retry_after_secs`.
    Throttled,
    /// The clerk is locked out.
    LockedOut,
    /// The terminal is in lockdown: only a SuperAdmin may log in.
    Lockdown,
    /// The request conflicts with the current state (e.g. the same person approving).
    Conflict,
    /// A payload was refused because it holds card data.
    CardData,
    /// A store is full.
    Full,
    /// The audit journal cannot store events (its disk is full or failed): nothing was
    /// recorded. The agent's status says why.
    JournalUnavailable,
    /// Not found.
    NotFound,
    /// Something failed inside the agent (details are in its log).
    Internal,
}

/// The error part of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// A human-readable sentence; never contains secrets.
    pub message: String,
    /// For `throttled` and `locked_out`: seconds until a retry can succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// The request's id; `null` when the request could not be read far enough to know it.
    pub id: Option<RequestId>,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// A success.
    pub fn ok(id: Option<RequestId>, result: serde_json::Value) -> Self {
        Response {
            v: crate::version::LOCAL_API_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: Option<RequestId>, error: ApiError) -> Self {
        Response {
            v: crate::version::LOCAL_API_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }
}

/// Longest piece of a request (a method or field name) that an error message names back.
pub const MAX_ECHO: usize = 32;

/// Longest error message built from a decoder's report of a request.
const MAX_DETAIL: usize = 200;

/// Whether `text` from a request may be named back in an error message: at most [`MAX_ECHO`]
/// bytes of `[A-Za-z0-9_.-]` with at most 4 digits, so that it cannot carry a card number, a
/// PIN or a flood of bytes back to the client's screen or logs.
pub fn echoable(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_ECHO
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && text.bytes().filter(u8::is_ascii_digit).count() <= 4
}

/// A decoder's message (serde: ``unknown field `x` ``, `invalid type: string "…"`) made safe
/// to send back: every quoted part (in backticks or double quotes, escapes honoured) that is not
/// [`echoable`] is replaced by `…`, and the whole is cut to 200 bytes. The quoted parts are
/// where serde puts what came from the request.
pub fn safe_detail(message: &str) -> String {
    let mut out = String::new();
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if out.len() >= MAX_DETAIL {
            out.push('…');
            break;
        }
        if c != '`' && c != '"' {
            out.push(c);
            continue;
        }
        let mut quoted = String::new();
        let mut escaped = false;
        for q in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if q == '\\' && c == '"' {
                escaped = true;
                continue;
            } else if q == c {
                break;
            }
            // Bounded: a part longer than MAX_ECHO is withheld whatever follows.
            if quoted.len() <= MAX_ECHO {
                quoted.push(q);
            }
        }
        out.push(c);
        out.push_str(if echoable(&quoted) { &quoted } else { "…" });
        out.push(c);
    }
    out
}

/// Parses one request line (without its newline). The error response carries the id when the
/// line got far enough to have one.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        Response::err(
            None,
            ApiError::new(ErrorCode::BadJson, safe_detail(&format!("not JSON: {e}"))),
        )
    })?;
    // Echoed only when it is an id this API accepts (a string of at most 64 bytes).
    let id = value
        .get("id")
        .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok())
        .filter(|id| !matches!(id, RequestId::Text(t) if t.len() > 64));
    let request: Request = serde_json::from_value(value).map_err(|e| {
        Response::err(
            id.clone(),
            ApiError::new(
                ErrorCode::BadJson,
                safe_detail(&format!("not a request object: {e}")),
            ),
        )
    })?;
    if let RequestId::Text(t) = &request.id
        && t.len() > 64
    {
        return Err(Response::err(
            None,
            ApiError::new(ErrorCode::BadJson, "id longer than 64 bytes"),
        ));
    }
    if request.v != crate::version::LOCAL_API_VERSION {
        return Err(Response::err(
            Some(request.id),
            ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this agent speaks {})",
                    request.v,
                    crate::version::LOCAL_API_VERSION
                ),
            ),
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_and_echoes_ids_in_errors() {
        let r = parse_request(br#"{"v":1,"id":7,"method":"status"}"#).unwrap();
        assert_eq!(r.id, RequestId::Number(7));
        assert!(r.params.is_null());
        let e = parse_request(br#"{"v":2,"id":"a","method":"status"}"#).unwrap_err();
        assert_eq!(e.id, Some(RequestId::Text("a".into())));
        assert_eq!(e.error.unwrap().code, ErrorCode::UnsupportedVersion);
        let e = parse_request(b"{nope").unwrap_err();
        assert_eq!(e.error.unwrap().code, ErrorCode::BadJson);
        let e = parse_request(br#"{"v":1,"id":3,"method":5}"#).unwrap_err();
        assert_eq!(e.id, Some(RequestId::Number(3)));
        let e = parse_request(br#"{"v":1,"id":3,"method":"x","extra":1}"#).unwrap_err();
        assert_eq!(e.error.unwrap().code, ErrorCode::BadJson);
    }

    #[test]
    fn details_name_plain_words_and_withhold_the_rest() {
        assert!(echoable("no_such_field") && echoable("cache.rotate_key"));
        assert!(!echoable("4111111111111111") && !echoable("a b") && !echoable(""));
        assert!(!echoable(&"m".repeat(MAX_ECHO + 1)));
        assert_eq!(
            safe_detail("unknown field `extra`, expected `token`"),
            "unknown field `extra`, expected `token`"
        );
        assert_eq!(
            safe_detail(r#"invalid type: string "4111 1111 \"1111\" 1111", expected u64"#),
            r#"invalid type: string "…", expected u64"#
        );
        assert_eq!(
            safe_detail("invalid type: integer `4111111111111111`, expected a string"),
            "invalid type: integer `…`, expected a string"
        );
        let long = format!("unknown variant `{}`", "x".repeat(10_000));
        assert_eq!(safe_detail(&long), "unknown variant `…`");
        assert!(safe_detail(&"y".repeat(10_000)).len() < MAX_DETAIL + 8);
        // An unterminated quote withholds the rest.
        assert_eq!(safe_detail("bad `4111111111111111"), "bad `…`");
    }

    #[test]
    fn oversized_ids_are_not_echoed() {
        let long = "i".repeat(65);
        let line = format!(r#"{{"v":1,"id":"{long}","method":5}}"#);
        let e = parse_request(line.as_bytes()).unwrap_err();
        assert_eq!(e.id, None);
        assert!(!e.error.unwrap().message.contains("iiii"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_request(&line);
        }
    }
}
