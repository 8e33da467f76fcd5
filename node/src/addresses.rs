//! Address normalisation: the one spelling of an e-mail address, phone number or domain
//! under which the directory records it (pure).

use gateways::mail_service::ServiceError;

/// E-mail addresses compare case-insensitively; phone numbers by their digits.
pub fn normalize_address(address: &str) -> Result<String, ServiceError> {
    let address = address.trim();
    if address.is_empty() || address.len() > 320 || address.contains('\0') {
        return Err(ServiceError::Invalid(format!("invalid address '{address}'")));
    }
    if address.contains('@') || address.starts_with("emp:") {
        if address.contains(char::is_whitespace) {
            return Err(ServiceError::Invalid(format!("invalid address '{address}'")));
        }
        return Ok(address.to_lowercase());
    }
    normalize_phone(address).map_err(ServiceError::Invalid)
}

/// Domains compare case-insensitively: `Health.GO.ke` is `health.go.ke`.
pub fn normalize_domain(domain: &str) -> Result<String, ServiceError> {
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_alphanumeric() || c == '-');
    if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
        return Err(ServiceError::Invalid(format!("'{domain}' is not a domain name")));
    }
    Ok(domain)
}

/// Accepts E.164 numbers with optional spaces or dashes: `+254 700-000001`.
pub fn normalize_phone(number: &str) -> Result<String, String> {
    let compact: String = number.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
    let digits = compact
        .strip_prefix('+')
        .ok_or_else(|| format!("'{number}' must be in international form, starting with +"))?;
    if digits.len() < 7 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("'{number}' is not a valid international phone number"));
    }
    Ok(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalize() {
        assert_eq!(normalize_address(" User1@Ministry.GO.ke ").unwrap(), "user1@ministry.go.ke");
        assert_eq!(normalize_address("+254 700-000001").unwrap(), "+254700000001");
        assert_eq!(normalize_address("emp:123").unwrap(), "emp:123");
        for bad in ["", "0700000001", "+25470000000x", "+12", "a b@c"] {
            assert!(normalize_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_normalize() {
        assert_eq!(normalize_domain(" Health.GO.ke. ").unwrap(), "health.go.ke");
        for bad in ["", "localhost", "a..b", "bad_domain.ke", &format!("{}.ke", "x".repeat(64))] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }
}
