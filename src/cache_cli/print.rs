//! What the commands print for people: a table for `ls`, blocks for
//! `show`, one line for `purge`, in human units.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

use super::{Failure, Target};

/// Prints to stdout; a closed pipe (`| head`) is not an error.
pub(super) fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Unusable(format!("cannot write the output: {e}"))),
    }
}

/// The admin API's body as it came, ending with a newline.
pub(super) fn out_raw(body: &[u8]) -> Result<(), Failure> {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    out(&text)
}

/// `ls`: an aligned table and a count line.
pub(super) fn table(answer: &Value) -> String {
    let empty = Vec::new();
    let entries = answer["entries"].as_array().unwrap_or(&empty);
    let truncated = answer["truncated"].as_bool().unwrap_or(false);
    // The part of the cache shows only when the rows come from several.
    let first_ns = entries.first().map(|e| &e["namespace"]);
    let several = entries.iter().any(|e| Some(&e["namespace"]) != first_ns);
    let mut header = vec!["STATUS", "AGE", "TTL", "SIZE", "VARIANTS", "TAGS"];
    if several {
        header.push("CACHE");
    }
    header.push("URL");
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for e in entries {
        let tags: Vec<&str> = e["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut row = vec![
            scalar(&e["status"]),
            e["age"].as_i64().map_or_else(|| "?".into(), duration),
            e["ttl"].as_i64().map_or_else(|| "?".into(), ttl),
            e["size"].as_u64().map_or_else(|| "?".into(), size),
            scalar(&e["variants"]),
            if tags.is_empty() {
                "-".into()
            } else {
                tags.join(",")
            },
        ];
        if several {
            row.push(scalar(&e["namespace"]));
        }
        row.push(scalar(&e["url"]));
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    if !entries.is_empty() {
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
    }
    let n = entries.len();
    let _ = write!(text, "{n} {}", if n == 1 { "entry" } else { "entries" });
    if truncated {
        text.push_str(" (more: use --limit)");
    }
    text.push('\n');
    text
}

/// `show`: the URL, its keys, and one block per variant.
pub(super) fn describe(answer: &Value) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "URL:  {}", scalar(&answer["url"]));
    let empty = Vec::new();
    for key in answer["keys"].as_array().unwrap_or(&empty) {
        let _ = writeln!(text, "Key:  {}", scalar(key));
    }
    let variants = answer["variants"].as_array().unwrap_or(&empty);
    for (i, v) in variants.iter().enumerate() {
        let _ = writeln!(
            text,
            "\nVariant {} of {} ({})",
            i + 1,
            variants.len(),
            scalar(&v["namespace"])
        );
        let field = |text: &mut String, name: &str, value: &str| {
            let _ = writeln!(text, "  {:<9} {value}", format!("{name}:"));
        };
        field(&mut text, "Status", &scalar(&v["status"]));
        let vary: Vec<String> = v["vary"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, value)| match value.as_str() {
                        Some(value) => format!("{name}: {value}"),
                        None => format!("{name}: (absent)"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        field(
            &mut text,
            "Vary",
            &if vary.is_empty() {
                "-".into()
            } else {
                vary.join("; ")
            },
        );
        field(
            &mut text,
            "Age",
            &v["age"].as_i64().map_or_else(|| "?".into(), duration),
        );
        let mut lifetime = v["ttl"].as_i64().map_or_else(|| "?".into(), ttl);
        if let Some(l) = v["freshness_lifetime"].as_i64() {
            let heuristic = if v["heuristic"].as_bool() == Some(true) {
                ", heuristic"
            } else {
                ""
            };
            let _ = write!(lifetime, " (lifetime {}{heuristic})", duration(l));
        }
        field(&mut text, "TTL", &lifetime);
        let mut stored = v["size"].as_u64().map_or_else(|| "?".into(), size);
        if let Some(body) = v["body_bytes"].as_u64() {
            let _ = write!(stored, " (body {})", size(body));
        }
        field(&mut text, "Size", &stored);
        let tags: Vec<&str> = v["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        field(
            &mut text,
            "Tags",
            &if tags.is_empty() {
                "-".into()
            } else {
                tags.join(", ")
            },
        );
        text.push_str("  Headers:\n");
        if let Some(headers) = v["headers"].as_object() {
            for (name, values) in headers {
                for value in values.as_array().unwrap_or(&empty) {
                    let _ = writeln!(text, "    {name}: {}", scalar(value));
                }
            }
        }
    }
    text
}

/// `purge`: `purged 3 URLs by tag shoes`.
pub(super) fn purged(answer: &Value, target: &Target) -> String {
    let n = answer["purged"].as_u64().unwrap_or(0);
    let verb = if answer["soft"].as_bool() == Some(true) {
        "soft-purged"
    } else {
        "purged"
    };
    let urls = if n == 1 { "URL" } else { "URLs" };
    let what = match answer["selector"].as_str() {
        Some("url") => format!(": {}", scalar(&answer["target"])),
        Some("prefix") => format!(" under {}", scalar(&answer["target"])),
        Some("tag") => {
            let tags: Vec<&str> = answer["target"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let label = if tags.len() == 1 { "tag" } else { "tags" };
            format!(" by {label} {}", tags.join(", "))
        }
        _ => String::new(),
    };
    let scope = match (&target.route, target.forward) {
        (Some(route), _) => format!(" in route {route}"),
        (None, true) => " in the forward cache".into(),
        (None, false) => String::new(),
    };
    format!("{verb} {n} {urls}{what}{scope}\n")
}

/// A JSON string without quotes; anything else as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `42s`, `5m12s`, `3h`, `2d4h`: the two largest units.
fn duration(secs: i64) -> String {
    if secs < 0 {
        return format!("-{}", duration(secs.saturating_neg()));
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, n)| secs >= *n) else {
        return "0s".into();
    };
    let (name, n) = units[first];
    let mut text = format!("{}{name}", secs / n);
    if let Some((name, m)) = units.get(first + 1) {
        let rest = secs % n / m;
        if rest > 0 {
            let _ = write!(text, "{rest}{name}");
        }
    }
    text
}

/// The time left to live; stale (no longer fresh) at zero and below.
fn ttl(secs: i64) -> String {
    if secs > 0 {
        duration(secs)
    } else {
        format!("{} (stale)", duration(secs))
    }
}

/// `512 B`, `1.2 KiB`, `3.0 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3600), "1h");
        assert_eq!(duration(3599), "59m59s");
        assert_eq!(duration(90_061), "1d1h");
        assert_eq!(ttl(-5), "-5s (stale)");
        assert_eq!(ttl(0), "0s (stale)");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1229), "1.2 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn a_table_with_a_count() {
        let answer = serde_json::json!({
            "entries": [
                {"key": "forward http://a.test:80/x", "namespace": "forward",
                 "url": "http://a.test:80/x", "status": 200, "variants": 1,
                 "age": 3, "ttl": -5, "size": 2048, "tags": ["a", "b"]},
            ],
            "truncated": true,
        });
        let text = table(&answer);
        assert!(
            text.starts_with("STATUS  AGE  TTL          SIZE     VARIANTS  TAGS  URL\n"),
            "{text}"
        );
        assert!(
            text.contains("-5s (stale)") && text.contains("2.0 KiB"),
            "{text}"
        );
        assert!(text.contains("a,b   http://a.test:80/x"), "{text}");
        assert!(text.ends_with("1 entry (more: use --limit)\n"), "{text}");
    }
}
