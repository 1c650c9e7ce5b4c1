//! A scripted stand-in for Neon's proxy (see issue 3). Placeholder.
