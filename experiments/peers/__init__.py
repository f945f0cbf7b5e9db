"""Peer libraries (libpecos, napkinXC, omikuji) and xmr runners, each run in its own subprocess."""
