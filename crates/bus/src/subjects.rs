//! Event subjects: `<prefix>.<aggregate>.<event>.v1`, with the prefix `mst` in production (tests
//! use a unique prefix each). The part after the prefix is spelled once, on each payload type
//! (`mst_proto::Event::SUBJECT`).

/// Joins a prefix and a relative subject.
pub fn full(prefix: &str, relative: &str) -> String {
    format!("{prefix}.{relative}")
}

/// The relative part of a full subject, when it starts with `prefix.`.
pub fn relative<'a>(prefix: &str, full: &'a str) -> Option<&'a str> {
    full.strip_prefix(prefix)?.strip_prefix('.')
}

/// The dead-letter subject of a consumer: outside the main stream's `<prefix>.>` space, so that
/// subscribers of the event feed never see dead letters.
pub fn dead_letter(prefix: &str, durable: &str) -> String {
    format!("{prefix}_deadletter.{durable}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_through_the_prefix() {
        let s = full("mst", "dossier.status_changed.v1");
        assert_eq!(s, "mst.dossier.status_changed.v1");
        assert_eq!(relative("mst", &s), Some("dossier.status_changed.v1"));
        assert_eq!(relative("mstx", &s), None);
        assert!(!dead_letter("mst", "oscars").starts_with("mst."));
    }
}
