//! The admin token check, shared by every service that needs it.

use tonic::{Request, Status};

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `authorization: Bearer <token>` with the configured token, or `UNAUTHENTICATED` naming
/// what `what` needs.
pub fn require_bearer<T>(req: &Request<T>, token: &str, what: &str) -> Result<(), Status> {
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !given.is_empty() && !token.is_empty() && same(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated(format!(
            "{what} needs `authorization: Bearer <admin token>`"
        )))
    }
}
