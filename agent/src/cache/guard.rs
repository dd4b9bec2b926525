//! The card-data guard: finds a Luhn-valid 13–19 digit number anywhere in a byte string —
//! plain (`4111111111111111`), grouped with single spaces or dashes (`4111 1111-1111 1111`),
//! inside JSON or any other text.
//!
//! Digits are read in groups (maximal runs of ASCII digits); groups joined by exactly one space
//! or dash form a chain. Every span of whole consecutive groups of a chain holding 13 to 19
//! digits is Luhn-checked, so a card number next to other numbers (`qty 2 4111 1111 1111 1111`)
//! is still found. A single run of more than 19 digits is an identifier, not a card number.
//! Not covered: numbers spelled with other separators or encodings (UTF-16, base64).

use std::ops::Range;

const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;

/// Whether `digits` (ASCII digits and separators; separators skipped) pass the Luhn check.
/// Anything other than digits, spaces and dashes makes it false.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for &b in digits.iter().rev() {
        match b {
            b'0'..=b'9' => {
                let mut d = u32::from(b - b'0');
                if count % 2 == 1 {
                    d *= 2;
                    if d > 9 {
                        d -= 9;
                    }
                }
                sum += d;
                count += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    count > 0 && sum.is_multiple_of(10)
}

fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'-'
}

/// The byte range of the first Luhn-valid 13–19 digit number in `data`, if any. The range is for
/// the caller's own checks; the number itself must never be logged.
pub fn find_card_number(data: &[u8]) -> Option<Range<usize>> {
    // The last groups of the current chain: (start, end, digits). At most MAX_DIGITS groups can
    // share a span, so older ones are dropped.
    let mut chain: Vec<(usize, usize)> = Vec::with_capacity(MAX_DIGITS + 1);
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(rest) = data.get(pos..) else { break };
        let run = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if run == 0 {
            pos = pos.saturating_add(1);
            continue;
        }
        let (start, end) = (pos, pos.saturating_add(run));
        pos = end;
        let joined = chain.last().is_some_and(|&(_, last_end)| {
            last_end.checked_add(1) == Some(start)
                && data.get(last_end).copied().is_some_and(is_separator)
        });
        if !joined {
            chain.clear();
        }
        if run > MAX_DIGITS {
            chain.clear();
            continue;
        }
        chain.push((start, end));
        if chain.len() > MAX_DIGITS {
            chain.remove(0);
        }
        // Spans ending at the new group, growing backwards.
        let mut digits = 0usize;
        for &(span_start, span_end) in chain.iter().rev() {
            digits = digits.saturating_add(span_end.saturating_sub(span_start));
            if digits > MAX_DIGITS {
                break;
            }
            if digits >= MIN_DIGITS && data.get(span_start..end).is_some_and(luhn_valid) {
                return Some(span_start..end);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VISA: &str = "4111111111111111";

    fn found(s: &str) -> Option<&str> {
        find_card_number(s.as_bytes()).map(|r| &s[r])
    }

    #[test]
    fn luhn_reference_numbers() {
        for n in [
            VISA,
            "4012888888881881",
            "378282246310005",
            "5555555555554444",
            "6011111111111117",
            "4222222222222",
            "6759649826438453",
            "4111 1111 1111 1111",
        ] {
            assert!(luhn_valid(n.as_bytes()), "{n}");
        }
        for n in ["4111111111111112", "1234567812345678", "", "12a4"] {
            assert!(!luhn_valid(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn finds_numbers_in_every_layout() {
        assert_eq!(found(VISA), Some(VISA));
        assert_eq!(found("4111 1111 1111 1111"), Some("4111 1111 1111 1111"));
        assert_eq!(found("4111-1111-1111-1111"), Some("4111-1111-1111-1111"));
        assert_eq!(found("3782-822463-10005"), Some("3782-822463-10005"));
        assert_eq!(
            found(r#"{"sale":12,"pan":"4111111111111111","exp":"12/29"}"#),
            Some(VISA)
        );
        assert_eq!(
            found("qty 2 4111 1111 1111 1111 ok"),
            Some("4111 1111 1111 1111")
        );
        assert_eq!(found("x4222222222222y"), Some("4222222222222"));
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for s in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "41111111111111111111111", // 23 digits: an identifier
            "411111111111",            // 12 digits
            "4111  1111  1111  1111",  // double spaces break the chain
            "4111.1111.1111.1111",
            r#"{"total":1999,"items":[1,2,3],"ts":1700000000000}"#,
            "",
        ] {
            assert_eq!(found(s), None, "{s}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_refusals_hold_a_luhn_run(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Some(r) = find_card_number(&data) {
                let span = data.get(r.clone()).unwrap();
                prop_assert!(luhn_valid(span));
                let digits = span.iter().filter(|b| b.is_ascii_digit()).count();
                prop_assert!((MIN_DIGITS..=MAX_DIGITS).contains(&digits));
                prop_assert!(span.first().unwrap().is_ascii_digit());
                prop_assert!(span.last().unwrap().is_ascii_digit());
            }
        }

        #[test]
        fn digit_heavy_text_never_panics(data in "[0-9 \\-a{}\":,]{0,200}") {
            if let Some(r) = find_card_number(data.as_bytes()) {
                prop_assert!(luhn_valid(&data.as_bytes()[r]));
            }
        }

        #[test]
        fn a_luhn_valid_number_is_always_found(body in proptest::collection::vec(0u8..10, 12..19), sep in prop_oneof![Just(""), Just(" "), Just("-")], prefix in "[a-z\"{: ]{0,10}", suffix in "[a-z\"} ]{0,10}") {
            // Complete `body` with the Luhn check digit.
            let mut digits: Vec<u8> = body.iter().map(|d| b'0' + d).collect();
            let check = (0..10u8).find(|c| { let mut t = digits.clone(); t.push(b'0' + c); luhn_valid(&t) }).unwrap();
            digits.push(b'0' + check);
            let mut text = prefix.clone();
            for (i, d) in digits.iter().enumerate() {
                if i > 0 && i % 4 == 0 { text.push_str(sep); }
                text.push(char::from(*d));
            }
            text.push_str(&suffix);
            prop_assert!(find_card_number(text.as_bytes()).is_some(), "{}", text);
        }
    }
}
