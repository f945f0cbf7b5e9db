"""Session-aware query autocompletion (issue 4): completions of a typed prefix given the session's previous query."""
