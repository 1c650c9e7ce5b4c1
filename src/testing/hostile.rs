//! Scripted hostile peers (see issue 4). Placeholder.
