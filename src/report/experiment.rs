//! The A/B read-out as a page (`experiment-report --html`).
