"""The errors that stop a run once it has started, in a module of their own so that the launcher
can tell them apart without loading torch: the run's logs end at the last good round and its
newest checkpoint stays (docs/algorithms.md §9)."""


class BadUpdateError(RuntimeError):
    """A client sent a non-finite upload and ``federation.on_bad_update`` is 'fail'."""


class DivergenceError(RuntimeError):
    """The global adapter or the test loss stopped being finite."""
