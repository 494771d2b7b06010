"""The controller: decisions (pure), state, work keys, the write steps and drift."""
