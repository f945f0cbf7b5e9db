"""Session-aware query autocompletion (issue 4): completions of a typed prefix given the session's previous query."""

from xmr.qac.model import CompletionModel
from xmr.qac.mpc import MostPopularCompletion
from xmr.qac.sessions import SessionPair, read_query_log, session_pairs

__all__ = ["CompletionModel", "MostPopularCompletion", "SessionPair", "read_query_log", "session_pairs"]
