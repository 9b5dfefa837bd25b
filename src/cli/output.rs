//! Shared output helpers: JSON documents for scripts, step lines for people on a terminal.

use crate::pipeline::Event;
use std::io::IsTerminal;

pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints build steps on stderr when it is a terminal (they are also kept in the build log, so
/// a pipe loses nothing by staying quiet), and notes always.
pub fn step_printer() -> impl FnMut(Event) {
    let show_steps = std::io::stderr().is_terminal();
    move |event: Event| match event {
        Event::Note(text) => eprintln!("note: {text}"),
        Event::Step(text) if show_steps => eprintln!("  {text}"),
        Event::Step(_) => {}
    }
}

/// A table with aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
