"""The errors that stop a run once it has started, in a module of their own so that the launcher
can tell them apart without loading torch: the run's logs end at the last good round and its
newest checkpoint stays (docs/algorithms.md §9), and the errors of its files (§10)."""


class BadUpdateError(RuntimeError):
    """A client sent a non-finite upload and ``federation.on_bad_update`` is 'fail'."""


class DivergenceError(RuntimeError):
    """The global adapter or the test loss stopped being finite."""


class DamagedFileError(RuntimeError):
    """A file of a run folder failed its check where it was read: unreadable, cut short, or its
    checksum does not match. The message is one line: the file, what is wrong, what to do."""

    def __init__(self, path: object, problem: str, remedy: str = "") -> None:
        self.path, self.problem, self.remedy = str(path), problem, remedy
        super().__init__(f"{path}: {problem}" + (f"; {remedy}" if remedy else ""))

    def __reduce__(self) -> tuple[object, ...]:  # whole across processes (a Ray actor raises it)
        return (type(self), (self.path, self.problem, self.remedy))


class DiskFullError(OSError):
    """No space left on the device while writing a run's file. Raised before the write when the
    free space is known to be short, else when the write fails; the temporary file is removed and
    the run's files stay as the last complete round left them."""

    def __init__(self, path: object, needed_bytes: int | None = None, free_bytes: int | None = None) -> None:
        self.path, self.needed_bytes, self.free_bytes = str(path), needed_bytes, free_bytes
        need = f" ({needed_bytes / 1e6:.1f} MB needed" if needed_bytes is not None else ""
        if need and free_bytes is not None:
            need += f", {free_bytes / 1e6:.1f} MB free"
        super().__init__(
            28,
            f"no space left on device while writing {path}{need + ')' if need else ''}. The run stopped "
            "at its last complete checkpoint: free space (or copy the run folder to a bigger disk) and "
            "resume it",
        )

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.needed_bytes, self.free_bytes))
