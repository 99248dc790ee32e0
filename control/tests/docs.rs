//! docs/control-plane.md against the machine: its transition table must say exactly what
//! [`allowed`] and [`step`] do, and its "what each state watches" table must have one row per
//! state. A change to either side without the other fails here.

use std::collections::BTreeSet;

use shadowtap_control::machine::{allowed, step, Event, Rollout, State};

const STATES: [State; 8] = [
    State::Stable,
    State::Shadow,
    State::Testing,
    State::Paused,
    State::Live,
    State::Degraded,
    State::Removing,
    State::Removed,
];

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-plane.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the table under the heading that starts with `heading`: cells per row.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .lines()
        .position(|l| l.starts_with("## ") && l[3..].starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading:?} in docs/control-plane.md"));
    let rows: Vec<Vec<String>> = doc
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the rule
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "section {heading:?} has no table");
    rows
}

/// The names in backquotes in `cell`, outside parentheses (which explain).
fn names(cell: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut depth = 0;
    let mut rest = cell;
    while let Some(c) = rest.chars().next() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '`' if depth == 0 => {
                let end = rest[1..].find('`').expect("closed backquote") + 1;
                out.insert(rest[1..end].to_owned());
                rest = &rest[end..];
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn state(name: &str) -> State {
    *STATES
        .iter()
        .find(|s| s.as_str() == name)
        .unwrap_or_else(|| panic!("the doc names a state the machine lacks: {name}"))
}

/// Events of every kind, with the values that reach each outcome (a recovery short of 100%
/// stays degraded; one to 100% is live).
fn events() -> Vec<Event> {
    vec![
        Event::Shadow {
            mirror_percentage: 5.0,
        },
        Event::Testing {
            initial_percentage: 10.0,
        },
        Event::Shift { to: 20.0 },
        Event::Pause,
        Event::Resume,
        Event::Live,
        Event::Degrade { to: 50.0 },
        Event::Recover { to: 80.0 },
        Event::Recover { to: 100.0 },
        Event::Rollback,
        Event::Remove,
        Event::Removed,
    ]
}

#[test]
fn the_transition_table_in_the_docs_is_the_machines() {
    let doc = doc();
    let mut seen = BTreeSet::new();
    for row in table(&doc, "Transitions") {
        assert_eq!(row.len(), 3, "{row:?}");
        let (allowed_doc, to_doc) = (names(&row[1]), names(&row[2]));
        for from in names(&row[0]) {
            let s = state(&from);
            assert!(seen.insert(from.clone()), "{from} has two rows");
            let machine: BTreeSet<String> = allowed(s).iter().map(|e| (*e).to_owned()).collect();
            assert_eq!(allowed_doc, machine, "the events allowed in {from}");
            let r = Rollout {
                state: s,
                traffic_percentage: 50.0,
                ..Rollout::default()
            };
            let reached: BTreeSet<String> = events()
                .iter()
                .filter_map(|e| step(&r, e).ok())
                .map(|(next, _)| next.state.as_str().to_owned())
                .collect();
            assert_eq!(to_doc, reached, "the states reached from {from}");
        }
    }
    let all: BTreeSet<String> = STATES.iter().map(|s| s.as_str().to_owned()).collect();
    assert_eq!(seen, all, "every state has a row");
}

#[test]
fn what_each_state_watches_has_one_row_per_state() {
    let doc = doc();
    let rows = table(&doc, "What each state watches");
    let mut seen = BTreeSet::new();
    for row in &rows {
        assert_eq!(row.len(), 3, "{row:?}");
        for s in names(&row[0]) {
            state(&s);
            assert!(seen.insert(s.clone()), "{s} has two rows");
        }
    }
    let all: BTreeSet<String> = STATES.iter().map(|s| s.as_str().to_owned()).collect();
    assert_eq!(seen, all, "every state has a row");
}
