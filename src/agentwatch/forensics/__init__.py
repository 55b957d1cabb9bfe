"""From a flagged trace to a postmortem: read a trace, walk it backward (seed 003), report, draft the postmortem."""
