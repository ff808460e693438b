//! A progress bar on the terminal while the node loads a snapshot, drawn
//! from the node's view (the node itself logs progress once a second).

use shoal_node::View;
use std::sync::Arc;
use tokio::sync::watch;

/// Draws the bar until the node stops; only call it when stderr is a
/// terminal.
pub async fn catch_up_bar(mut view: watch::Receiver<Arc<View>>) {
    let mut bar: Option<indicatif::ProgressBar> = None;
    while view.changed().await.is_ok() {
        let v = view.borrow_and_update().clone();
        match (v.catch_up, bar.as_ref()) {
            (Some(p), _) => {
                let b = bar.get_or_insert_with(|| new_bar(p.total));
                b.set_length(p.total);
                b.set_position(p.received);
                b.set_message(format!("{} entries", p.entries));
            }
            (None, Some(b)) => {
                b.finish_with_message(format!("at index {}", v.status.applied_index));
                bar = None;
            }
            (None, None) => {}
        }
    }
}

fn new_bar(total: u64) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template("catching up {bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}
