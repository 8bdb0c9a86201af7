//! The closed vocabularies of the API and the demo defaults built from them.
//!
//! Data models are an open set upstream (the full list is not published), so they are only
//! checked for shape. Integration types, categories and frequencies are documented in full
//! and are checked against these lists.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// The twelve integration types the v4 API supports, each with the category it belongs to.
const INTEGRATIONS: [(&str, &str); 12] = [
    ("STRIPE", "PAYMENTS"),
    ("NETSUITE", "ACCOUNTING"),
    ("XERO", "ACCOUNTING"),
    ("ZOHO_BOOKS", "ACCOUNTING"),
    ("WAFEQ", "ACCOUNTING"),
    ("QUICKBOOKS", "ACCOUNTING"),
    ("QUICKBOOKS_SANDBOX", "ACCOUNTING"),
    ("BIG_COMMERCE", "ECOMMERCE"),
    ("WOO_COMMERCE", "ECOMMERCE"),
    ("OODOO_ACCOUNTING", "ACCOUNTING"),
    ("SHOPIFY", "ECOMMERCE"),
    ("FRESHBOOKS", "ACCOUNTING"),
];

/// The categories a sync config may name.
pub(crate) const CATEGORIES: [&str; 3] = ["ACCOUNTING", "PAYMENTS", "ECOMMERCE"];

/// The frequencies a sync config may name.
pub(crate) const FREQUENCIES: [&str; 6] =
    ["DAILY", "WEEKLY", "MONTHLY", "YEARLY", "HOURLY", "NEVER"];

/// The category of a known integration type, or `None` for anything else.
pub(crate) fn category_of(integration: &str) -> Option<&'static str> {
    INTEGRATIONS
        .iter()
        .find(|(name, _)| *name == integration)
        .map(|(_, category)| *category)
}

/// Whether `name` has the shape of a v4 data model: `^[A-Z][A-Z0-9_]{0,63}$`.
pub(crate) fn is_data_model(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_upper = chars.next().is_some_and(|c| c.is_ascii_uppercase());
    let rest_ok = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    starts_upper && rest_ok && name.len() <= 64
}

/// Parses an ISO 8601 instant as the API accepts it: RFC 3339, a date-time without offset
/// (read as UTC) or a bare date (midnight UTC).
pub(crate) fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(naive.and_utc());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// One demo data model: its name, whether it is enabled, and how often it syncs.
pub(crate) struct DefaultModel {
    /// The data model name.
    pub(crate) name: &'static str,
    /// Whether syncs include it when no models are named.
    pub(crate) enabled: bool,
    /// The sync frequency.
    pub(crate) frequency: &'static str,
    /// The frequency multiplier.
    pub(crate) interval: i64,
}

const fn model(name: &'static str, enabled: bool, frequency: &'static str) -> DefaultModel {
    DefaultModel {
        name,
        enabled,
        frequency,
        interval: 1,
    }
}

const ACCOUNTING_MODELS: [DefaultModel; 7] = [
    model("ACCOUNT", true, "DAILY"),
    model("INVOICE", true, "DAILY"),
    DefaultModel {
        name: "TAX_RATE",
        enabled: true,
        frequency: "WEEKLY",
        interval: 2,
    },
    model("BANK_ACCOUNT", true, "DAILY"),
    model("CONTACT", true, "DAILY"),
    model("JOURNAL_ENTRY", false, "WEEKLY"),
    model("BILL", false, "DAILY"),
];

const PAYMENTS_MODELS: [DefaultModel; 6] = [
    model("PAYMENT_CUSTOMER", true, "DAILY"),
    model("PAYMENT_INVOICE", true, "DAILY"),
    model("PAYMENT_PAYMENT", true, "HOURLY"),
    model("PAYMENT_REFUND", true, "DAILY"),
    model("PAYMENT_PAYOUT", true, "DAILY"),
    model("PAYMENT_DISPUTE", false, "WEEKLY"),
];

const ECOMMERCE_MODELS: [DefaultModel; 5] = [
    model("ECOMMERCE_ORDER", true, "HOURLY"),
    model("ECOMMERCE_CUSTOMER", true, "DAILY"),
    model("ECOMMERCE_ITEM", true, "DAILY"),
    model("ECOMMERCE_TRANSACTION", true, "DAILY"),
    model("ECOMMERCE_REFUND", false, "WEEKLY"),
];

/// The demo data models of a category, in the order the API lists them.
pub(crate) fn default_models(category: &str) -> &'static [DefaultModel] {
    match category {
        "PAYMENTS" => &PAYMENTS_MODELS,
        "ECOMMERCE" => &ECOMMERCE_MODELS,
        _ => &ACCOUNTING_MODELS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_model_shape() {
        assert!(is_data_model("ACCOUNT"));
        assert!(is_data_model("TAX_RATE2"));
        assert!(!is_data_model("account"));
        assert!(!is_data_model("_ACCOUNT"));
        assert!(!is_data_model(""));
        assert!(!is_data_model(&"A".repeat(65)));
        assert!(is_data_model(&"A".repeat(64)));
    }

    #[test]
    fn iso_forms() {
        assert!(parse_iso("2026-01-01T00:00:00.000Z").is_some());
        assert!(parse_iso("2026-01-01T00:00:00+02:00").is_some());
        assert!(parse_iso("2026-01-01T10:00:00").is_some());
        assert!(parse_iso("2026-01-01").is_some());
        assert!(parse_iso("yesterday").is_none());
        assert!(parse_iso("2026-13-01").is_none());
    }

    #[test]
    fn categories_of_integrations() {
        assert_eq!(category_of("STRIPE"), Some("PAYMENTS"));
        assert_eq!(category_of("SHOPIFY"), Some("ECOMMERCE"));
        assert_eq!(category_of("NETSUITE"), Some("ACCOUNTING"));
        assert_eq!(category_of("ODOO_ACCOUNTING"), None);
    }
}
