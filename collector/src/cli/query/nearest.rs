//! The nearest known name to a mistyped one, for error messages. (A private helper until the
//! shared `cli::suggest::nearest` lands; then this file goes.)

/// `; did you mean "x"?` for the known name nearest to `input` within a few edits, else "".
pub(super) fn hint<'a>(input: &str, known: impl Iterator<Item = &'a str>) -> String {
    // Within a third of the input's length: closer than that is a typo, further a guess.
    let limit = (input.chars().count() / 3).max(2);
    known
        .map(|k| (distance(input, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| format!("; did you mean {k:?}?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters (both inputs are short identifiers).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        if let Some(first) = row.first_mut() {
            *first = i.saturating_add(1);
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j.saturating_add(1)).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let replace = diagonal.saturating_add(usize::from(ca != *cb));
            let best = replace
                .min(above.saturating_add(1))
                .min(left.saturating_add(1));
            diagonal = above;
            if let Some(cell) = row.get_mut(j.saturating_add(1)) {
                *cell = best;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_the_nearest_and_a_stranger_names_nothing() {
        let kinds = ["login_failed", "login_succeeded", "locked_out"];
        assert_eq!(
            hint("login_faild", kinds.into_iter()),
            "; did you mean \"login_failed\"?"
        );
        assert_eq!(
            hint("lockedout", kinds.into_iter()),
            "; did you mean \"locked_out\"?"
        );
        assert_eq!(hint("coffee", kinds.into_iter()), "");
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
