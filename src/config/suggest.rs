//! "Did you mean" suggestions for misspelt names.
//!
//! Owns: edit distance and the choice of the closest candidate. Must not:
//! format whole error messages.

/// The candidate closest to `input`, if it is close enough to be a likely
/// typo: at most one edit for short names, two for names of 5+ characters,
/// three for names of 10+. Ties go to the earlier candidate.
pub(crate) fn did_you_mean<'c, I>(input: &str, candidates: I) -> Option<&'c str>
where
    I: IntoIterator<Item = &'c str>,
{
    let limit = match input.chars().count() {
        0..=4 => 1,
        5..=9 => 2,
        _ => 3,
    };
    let lowered = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lowered, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` or the empty string.
pub(crate) fn did_you_mean_suffix<'c, I>(input: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'c str>,
{
    match did_you_mean(input, candidates) {
        Some(c) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

/// Optimal string alignment distance: Levenshtein plus adjacent swaps, so a
/// transposition ("shceduler") costs one edit.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("maglev", "maglev"), 0);
        assert_eq!(edit_distance("mglev", "maglev"), 1);
        assert_eq!(edit_distance("shceduler", "scheduler"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_only_close_names() {
        let names = ["rr", "wrr", "lc", "sh", "maglev"];
        assert_eq!(did_you_mean("mglev", names), Some("maglev"));
        assert_eq!(did_you_mean("MAGLEV", names), Some("maglev"));
        assert_eq!(did_you_mean("wrrr", names), Some("wrr"));
        assert_eq!(did_you_mean("random", names), None);
        assert_eq!(
            did_you_mean_suffix("services", ["service"]),
            " (did you mean \"service\"?)"
        );
        assert_eq!(did_you_mean_suffix("zzz", ["service"]), "");
    }
}
