//! `maxAge` values such as `30d`, `12h` or `1w2d`.

use std::time::Duration;

/// A parsed `maxAge`, keeping the user's spelling for messages and canonical output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxAge {
    pub text: String,
    pub duration: Duration,
}

/// Parses one or more `<number><unit>` groups, units `s`, `m`, `h`, `d`, `w`.
pub fn parse_max_age(text: &str) -> Result<MaxAge, String> {
    let expected = "expected a duration such as 30d, 12h or 1w2d (units s, m, h, d, w)";
    if text.is_empty() {
        return Err(format!("is empty; {expected}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{text:?} has the unit {c:?}; {expected}")),
        };
        if digits.is_empty() {
            return Err(format!("{text:?} has a unit without a number; {expected}"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("{text:?} ends without a unit; {expected}"));
    }
    if total == 0 {
        return Err(format!("{text:?} is zero; a maxAge must be positive"));
    }
    Ok(MaxAge {
        text: text.to_string(),
        duration: Duration::from_secs(total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(
            parse_max_age("30d").unwrap().duration.as_secs(),
            30 * 86_400
        );
        assert_eq!(parse_max_age("12h").unwrap().duration.as_secs(), 12 * 3600);
        assert_eq!(
            parse_max_age("1w2d").unwrap().duration.as_secs(),
            9 * 86_400
        );
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "30", "d", "30x", "0d", "99999999999999999999d"] {
            assert!(parse_max_age(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
