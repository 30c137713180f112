//! Progress bars on stderr (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

use crate::trainer::{Progress, Tick};

pub struct Bars;

struct Bar(ProgressBar);

impl Tick for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish();
    }
}

pub fn bar(label: &str, total: u64, bytes: bool) -> ProgressBar {
    let template = if bytes {
        "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:30} [{bar:30}] {pos}/{len} eta {eta}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(label.to_string())
}

impl Progress for Bars {
    fn start(&self, label: &str, total: u64) -> Box<dyn Tick + '_> {
        Box::new(Bar(bar(label, total, false)))
    }
}
