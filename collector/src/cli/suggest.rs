//! "Did you mean …?": the nearest known name to a mistyped one, so that a typo in an incident
//! (a device id, an event kind, a state) is an error that names the fix instead of an empty
//! answer. Pure; shared by every subcommand that checks a name against the known ones.

/// The known name closest to `input` by edit distance (case-insensitive), if one is close
/// enough to be a plausible typo: at most a third of the longer name's length, and at least 1
/// edit allowed. Ties go to the first in `known`. `None` when nothing is close.
pub fn nearest<'a>(input: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input = input.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for name in known {
        let d = distance(&input, &name.to_lowercase());
        let longer = input.chars().count().max(name.chars().count());
        if d > (longer / 3).max(1) {
            continue;
        }
        if best.is_none_or(|(b, _)| d < b) {
            best = Some((d, name));
        }
    }
    best.map(|(_, name)| name)
}

/// The message tail for an unknown name: `; did you mean "x"?` or the empty string.
pub fn hint<'a>(input: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    nearest(input, known)
        .map(|n| format!("; did you mean {n:?}?"))
        .unwrap_or_default()
}

/// Levenshtein distance with adjacent transpositions (optimal string alignment): `till-12`
/// for `till-21` is one edit, as a person counts it. Inputs are names (a few dozen chars):
/// three rows of that length.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        if let Some(c0) = cur.first_mut() {
            *c0 = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let del = prev
                .get(j + 1)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let ins = cur.get(j).copied().unwrap_or(usize::MAX).saturating_add(1);
            let sub = prev
                .get(j)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(cost);
            let mut d = del.min(ins).min(sub);
            if i > 0 && j > 0 && a.get(i - 1) == Some(cb) && b.get(j - 1) == Some(ca) {
                d = d.min(
                    prev2
                        .get(j - 1)
                        .copied()
                        .unwrap_or(usize::MAX)
                        .saturating_add(1),
                );
            }
            if let Some(c) = cur.get_mut(j + 1) {
                *c = d;
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.get(b.len()).copied().unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICES: [&str; 4] = ["till-01", "till-02", "till-12", "kiosk-7"];

    #[test]
    fn one_typo_of_each_kind_finds_the_name() {
        for (typo, want) in [
            ("tlil-12", "till-12"),  // transposition
            ("till-1", "till-01"),   // deletion
            ("tilll-02", "till-02"), // insertion
            ("tell-02", "till-02"),  // substitution
            ("TILL-02", "till-02"),  // case
            ("kiosk7", "kiosk-7"),
        ] {
            assert_eq!(nearest(typo, DEVICES), Some(want), "{typo}");
        }
    }

    #[test]
    fn an_exact_name_is_its_own_nearest() {
        for d in DEVICES {
            assert_eq!(nearest(d, DEVICES), Some(d));
        }
    }

    #[test]
    fn nothing_close_is_no_suggestion() {
        for far in ["no-such-till", "x", "", "warehouse-scanner-99"] {
            assert_eq!(nearest(far, DEVICES), None, "{far}");
        }
        assert_eq!(nearest("till-01", []), None);
        assert_eq!(hint("no-such-till", DEVICES), "");
        assert_eq!(hint("till-1", DEVICES), "; did you mean \"till-01\"?");
    }

    #[test]
    fn distance_is_symmetric_and_zero_only_for_equal() {
        let words = [
            "",
            "a",
            "ab",
            "ba",
            "abc",
            "login_failed",
            "locked_out",
            "lockdown",
        ];
        for a in words {
            for b in words {
                assert_eq!(distance(a, b), distance(b, a), "{a} {b}");
                assert_eq!(distance(a, b) == 0, a == b, "{a} {b}");
            }
        }
        assert_eq!(distance("login_failed", "login_faild"), 1);
        assert_eq!(distance("abc", ""), 3);
    }
}
