//! Maps a YAML key path (`session.idle_timeout`, `network.allow[2]`) to where it stands in the
//! source, so that validation errors can say `FILE:LINE:COL`. Reads positions only; the values
//! themselves come from serde.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column, both 1-based, as editors show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

impl Position {
    pub const START: Position = Position { line: 1, col: 1 };
}

/// Positions of every key and value in a document, by dotted path.
#[derive(Default)]
pub struct Locator {
    positions: HashMap<String, Position>,
}

impl Locator {
    pub fn new(source: &str) -> Locator {
        let mut walker = Walker::default();
        // A syntax error stops the walk early; serde reports that error itself.
        let _ = Parser::new_from_str(source).load(&mut walker, false);
        Locator {
            positions: walker.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that is present in the file.
    pub fn find(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return Position::START,
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

impl Walker {
    /// Path of the node that is about to start, advancing the parent's cursor.
    /// `None` when the node is a mapping key.
    fn next_path(&mut self, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    *key = Some(scalar.unwrap_or_default().to_string());
                    None
                }
            },
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.next_path(Some(&value)) {
                    self.positions.insert(path, position(&mark));
                } else if let Some(Frame::Map { path, key: Some(k) }) = self.stack.last() {
                    // Remember where the key is, for errors about the whole entry.
                    self.positions
                        .entry(join(path, k))
                        .or_insert_with(|| position(&mark));
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_path(None) {
                    self.positions.insert(path, position(&mark));
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.positions
                    .entry(path.clone())
                    .or_insert(position(&mark));
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.positions
                    .entry(path.clone())
                    .or_insert(position(&mark));
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_list_items() {
        let src = "listen: 0.0.0.0:8080\nsession:\n  idle_timeout: 24m\nnetwork:\n  allow:\n    - 10.0.0.1\n    - bad\n";
        let loc = Locator::new(src);
        let cases = [
            ("listen", 1, 9),
            ("session.idle_timeout", 3, 17),
            ("network.allow[1]", 7, 7),
            ("network.allow[9]", 5, 3),
            ("missing.key", 1, 1),
        ];
        for (path, line, col) in cases {
            assert_eq!(loc.find(path), Position { line, col }, "{path}");
        }
    }
}
