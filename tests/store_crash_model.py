"""Crash states of a traced sequence of system calls, in the manner of ALICE.

ALICE (Pillai et al., "All File Systems Are Not Created Equal: On the Complexity of Crafting
Crash-Consistent Applications", OSDI 2014) records the system calls of an update, turns them
into logical file-system operations and builds every on-disk state a crash could leave
under an abstract persistence model; the application must recover from each. This module
does that for short traces (one save), and is not collected by pytest.

**Operations** (from ``strace -f -y -e trace=file,desc -xx -s BIG``): ``creat`` (an ``open``
that created a file), ``write`` (bytes at an offset), ``truncate``, ``rename``, ``unlink``,
``fsync`` of a file and ``fsync`` of a directory. Calls that change nothing on disk (stat,
read, close, fchmod's mode bits, ...) are dropped; a call that would change something and
is not modelled fails the parse, so the model cannot silently miss a step.

**Persistence model** (conservative, as ALICE's default): a crash after the first *k*
operations leaves on disk

* every operation covered by a later ``fsync`` among those *k*: a file's data operations
  by an fsync of that file, a directory's entries (creat, rename, unlink) by an fsync of
  that directory;
* and **any subset** of the other operations, in any order — they may be lost or
  reordered — where a write that reaches the disk may do so only partly: its first half,
  or its full length as zeros (the size updated but not the data).

The states are applied to the initial directory in trace order and deduplicated.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# Calls that change nothing we model (data, names, sizes). Anything else must be modelled.
_HARMLESS = {
    "access", "close", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64",
    "fchmod", "fchmodat", "fcntl", "fstat", "fstatfs", "getcwd", "getdents64", "ioctl",
    "lseek", "lstat", "mmap", "newfstatat", "pread64", "read", "readlink", "readlinkat",
    "readv", "stat", "statfs", "statx",
}  # fmt: skip
_MODELLED = {
    "open", "openat", "creat", "write", "pwrite64", "ftruncate", "rename", "renameat",
    "renameat2", "unlink", "unlinkat", "fsync", "fdatasync",
}  # fmt: skip

_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_FD = re.compile(r"(\w+)<((?:\\x[0-9a-f]{2})*)>")  # strace -y: 4</path/of/fd 4>


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


@dataclass(frozen=True)
class Syscall:
    name: str
    args: list[str | bytes]  # strings decoded to bytes, everything else as text
    result: int
    fd_paths: dict[int, str] = field(default_factory=dict)  # argument index -> path (-y)


@dataclass(frozen=True)
class Op:
    """One logical file-system operation."""

    kind: str  # creat, write, truncate, rename, unlink, fsync-file, fsync-dir
    inode: int = -1
    path: str = ""  # creat/unlink: the name; rename: the source; fsync-dir: the directory
    dest: str = ""  # rename: the target
    offset: int = 0
    data: bytes = b""
    size: int = 0

    def directories(self) -> set[str]:
        """The directories whose entries this operation changes."""
        if self.kind in ("creat", "unlink"):
            return {os.path.dirname(self.path)}
        if self.kind == "rename":
            return {os.path.dirname(self.path), os.path.dirname(self.dest)}
        return set()

    def covered_by(self, barrier: Op) -> bool:
        if barrier.kind == "fsync-file":
            return self.kind in ("write", "truncate") and self.inode == barrier.inode
        if barrier.kind == "fsync-dir":
            return barrier.path in self.directories() and self.directories() <= {barrier.path}
        return False

    def __str__(self) -> str:
        if self.kind == "write":
            return f"write(#{self.inode}, {len(self.data)} bytes at {self.offset})"
        if self.kind == "rename":
            return f"rename({os.path.basename(self.path)} -> {os.path.basename(self.dest)})"
        if self.kind in ("fsync-file", "truncate"):
            return f"{self.kind}(#{self.inode})"
        return f"{self.kind}({os.path.basename(self.path) or self.path})"


def _split_args(text: str) -> tuple[list[str | bytes], dict[int, str]]:
    """Split strace's argument text at top-level commas; decode ``-xx`` strings; take the
    paths ``-y`` prints after file descriptors out of them (returned by argument index)."""
    args: list[str | bytes] = []
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
    args.append(text[start:].strip())
    out: list[str | bytes] = []
    fd_paths: dict[int, str] = {}
    for index, arg in enumerate(args):
        assert isinstance(arg, str)
        string, fd = _STRING.fullmatch(arg), _FD.fullmatch(arg)
        if string:
            out.append(_unhex(string.group(1)))
        elif fd:
            out.append(fd.group(1))
            fd_paths[index] = _unhex(fd.group(2)).decode()
        else:
            out.append(arg)
    return out, fd_paths


def _hex(text: str) -> str:
    """``text`` as strace -xx prints it inside a string."""
    return "".join(f"\\x{byte:02x}" for byte in text.encode())


def parse_strace(text: str, begin: str, end: str) -> list[Syscall]:
    """The system calls between the marker calls naming ``begin`` and ``end``.

    Only the lines between the markers are parsed: the rest of the trace (the interpreter
    starting, reading its modules) is megabytes of hex.
    """
    lines = text.splitlines()
    begin_hex, end_hex = f'"{_hex(begin)}"', f'"{_hex(end)}"'
    first = next((i for i, line in enumerate(lines) if begin_hex in line), None)
    if first is None:
        raise ValueError("the trace has no begin marker")
    calls: list[Syscall] = []
    for line in lines[first + 1 :]:
        if end_hex in line:
            return calls
        if "resumed>" in line or "<unfinished" in line:
            raise ValueError(f"interleaved call in the traced part: {line}")
        match = _LINE.match(line)
        if match:
            name, args_text, result = match.group(2), match.group(3), match.group(4)
            args, fd_paths = _split_args(args_text)
            calls.append(Syscall(name, args, int(result) if result != "?" else -1, fd_paths))
    raise ValueError("the trace has no end marker")


@dataclass
class _Namespace:
    """The file system as the traced process saw it (everything executed, nothing lost)."""

    names: dict[str, int]  # path -> inode
    next_inode: int
    fds: dict[int, tuple[str, int | str]] = field(default_factory=dict)  # fd -> (kind, inode|dir)
    sizes: dict[int, int] = field(default_factory=dict)  # inode -> size, for write()'s offset


def to_operations(calls: list[Syscall], initial: dict[str, bytes]) -> list[Op]:
    """Turn system calls into :class:`Op`s; ``initial`` (path -> content) is the directory
    before the first call, and gives the inode numbers 0.. in sorted path order."""
    space = _Namespace({p: i for i, p in enumerate(sorted(initial))}, len(initial))
    space.sizes = {i: len(initial[p]) for p, i in space.names.items()}
    ops: list[Op] = []
    for call in calls:
        if call.result < 0:
            continue  # a failed call changed nothing
        if call.name in _HARMLESS:
            if call.name == "close":
                space.fds.pop(int(str(call.args[0])), None)
            continue
        if call.name not in _MODELLED:
            raise ValueError(f"system call {call.name} is not modelled: {call}")
        ops.extend(_operation(call, space))
    return ops


def _fd(call: Syscall, index: int, space: _Namespace) -> tuple[str, int | str]:
    """What the file descriptor argument ``index`` refers to: opened in the traced part,
    or before it (then strace -y named its path)."""
    fd = int(str(call.args[index]))
    if fd not in space.fds:
        path = call.fd_paths.get(index)
        assert path, f"file descriptor {fd} opened before the trace and no -y path: {call}"
        if path in space.names:
            space.fds[fd] = ("file", space.names[path])
        else:
            space.fds[fd] = ("dir", path)  # not a file we know: a directory
    return space.fds[fd]


def _path(call: Syscall, dirfd_index: int | None, path_index: int, space: _Namespace) -> str:
    path = call.args[path_index]
    assert isinstance(path, bytes), call
    text = path.decode()
    if dirfd_index is not None and not text.startswith("/"):
        dirfd = str(call.args[dirfd_index])
        if dirfd != "AT_FDCWD":
            kind, where = _fd(call, dirfd_index, space)
            assert kind == "dir", call
            text = os.path.join(str(where), text)
    assert text.startswith("/"), f"relative paths are not modelled: {call}"
    return os.path.normpath(text)


def _operation(call: Syscall, space: _Namespace) -> list[Op]:
    name, args = call.name, call.args
    if name in ("open", "openat", "creat"):
        at = name == "openat"
        path = _path(call, 0 if at else None, 1 if at else 0, space)
        flags = "O_CREAT|O_TRUNC" if name == "creat" else str(args[2 if at else 1])
        if "O_DIRECTORY" in flags:
            space.fds[call.result] = ("dir", path)
            return []
        ops: list[Op] = []
        if path not in space.names:
            assert "O_CREAT" in flags, call
            space.names[path] = space.next_inode
            space.next_inode += 1
            ops.append(Op("creat", space.names[path], path))
        inode = space.names[path]
        if "O_TRUNC" in flags:
            space.sizes[inode] = 0
            ops.append(Op("truncate", inode, size=0))
        space.fds[call.result] = ("file", inode)
        return ops
    if name in ("write", "pwrite64"):
        kind, inode = _fd(call, 0, space)
        assert kind == "file" and isinstance(inode, int) and isinstance(args[1], bytes), call
        data = args[1][: call.result]
        # write() without O_APPEND writes at the file position, which in these traces (no
        # lseek between) is where the previous writes ended: the size so far.
        size = space.sizes.get(inode, 0)
        offset = int(str(args[3])) if name == "pwrite64" else size
        space.sizes[inode] = max(size, offset + len(data))
        return [Op("write", inode, offset=offset, data=data)]
    if name == "ftruncate":
        kind, inode = _fd(call, 0, space)
        assert isinstance(inode, int)
        space.sizes[inode] = int(str(args[1]))
        return [Op("truncate", inode, size=int(str(args[1])))]
    if name in ("fsync", "fdatasync"):
        kind, where = _fd(call, 0, space)
        if kind == "dir":
            return [Op("fsync-dir", path=str(where))]
        assert isinstance(where, int)
        return [Op("fsync-file", where)]
    if name in ("rename", "renameat", "renameat2"):
        if name == "rename":
            source, dest = _path(call, None, 0, space), _path(call, None, 1, space)
        else:
            source, dest = _path(call, 0, 1, space), _path(call, 2, 3, space)
        inode = space.names.pop(source)
        space.names[dest] = inode
        return [Op("rename", inode, source, dest)]
    if name in ("unlink", "unlinkat"):
        path = _path(call, 0 if name == "unlinkat" else None, 1 if name == "unlinkat" else 0, space)
        return [Op("unlink", space.names.pop(path), path)]
    raise ValueError(f"system call {name} is not modelled: {call}")


@dataclass(frozen=True)
class CrashState:
    files: tuple[tuple[str, bytes], ...]  # (path, content), sorted
    how: str  # the first way found to reach it, for messages

    def as_dict(self) -> dict[str, bytes]:
        return dict(self.files)


def crash_states(
    initial: dict[str, bytes], ops: list[Op], *, after_all: bool = False
) -> list[CrashState]:
    """Every distinct directory content a crash can leave (see the module docstring).

    ``after_all``: only crashes after the last operation (the save has returned), the
    states a *durable* save must survive with the new value.
    """
    states: dict[tuple[tuple[str, bytes], ...], str] = {}
    points = [len(ops)] if after_all else range(len(ops) + 1)
    for k in points:
        executed = ops[:k]
        durable, volatile = [], []
        for j, op in enumerate(executed):
            if op.kind.startswith("fsync"):
                continue
            if any(op.covered_by(later) for later in executed[j + 1 :]):
                durable.append(j)
            else:
                volatile.append(j)
        if len(volatile) > 12:
            raise ValueError(f"{len(volatile)} unsynced operations: too many states to try")
        for count in range(len(volatile) + 1):
            for chosen in itertools.combinations(volatile, count):
                writes = [j for j in chosen if executed[j].kind == "write"]
                for variants in itertools.product(("full", "half", "zeros"), repeat=len(writes)):
                    how_write = dict(zip(writes, variants, strict=True))
                    persisted = sorted([*durable, *chosen])
                    files = _apply(initial, executed, persisted, how_write)
                    if files not in states:
                        lost = [str(executed[j]) for j in volatile if j not in chosen]
                        partial = [
                            f"{executed[j]} {v}" for j, v in how_write.items() if v != "full"
                        ]
                        states[files] = (
                            f"crash after {k} of {len(ops)} operations"
                            + (f"; lost: {', '.join(lost)}" if lost else "")
                            + (f"; partly written: {', '.join(partial)}" if partial else "")
                        )
    return [CrashState(files, how) for files, how in states.items()]


def _apply(
    initial: dict[str, bytes], ops: list[Op], persisted: list[int], how_write: dict[int, str]
) -> tuple[tuple[str, bytes], ...]:
    names = {path: inode for inode, path in enumerate(sorted(initial))}
    contents = {inode: bytearray(initial[path]) for path, inode in names.items()}
    for j in persisted:
        op = ops[j]
        if op.kind == "creat":
            names[op.path] = op.inode
            contents.setdefault(op.inode, bytearray())
        elif op.kind == "write":
            data = op.data
            if how_write.get(j) == "half":
                data = data[: len(data) // 2]
            elif how_write.get(j) == "zeros":
                data = bytes(len(data))
            buffer = contents.setdefault(op.inode, bytearray())
            if len(buffer) < op.offset + len(data):
                buffer.extend(bytes(op.offset + len(data) - len(buffer)))
            buffer[op.offset : op.offset + len(data)] = data
        elif op.kind == "truncate":
            buffer = contents.setdefault(op.inode, bytearray())
            del buffer[op.size :]
        elif op.kind == "rename":
            if names.get(op.path) == op.inode:
                del names[op.path]
            names[op.dest] = op.inode  # the inode with whatever of its data persisted
        elif op.kind == "unlink" and names.get(op.path) == op.inode:
            del names[op.path]
    return tuple(sorted((path, bytes(contents.get(inode, b""))) for path, inode in names.items()))


def materialise(state: CrashState, old_root: Path, new_root: Path) -> None:
    """Write ``state``'s files (paths under ``old_root``) under ``new_root``."""
    new_root.mkdir(parents=True, exist_ok=True)
    for path, content in state.files:
        relative = Path(path).relative_to(old_root)
        target = new_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def states_of_trace(
    trace: str, begin: str, end: str, initial_dir: Path, traced_dir: Path
) -> tuple[list[Op], list[CrashState], list[CrashState]]:
    """Parse ``trace``, model it against the snapshot ``initial_dir`` (the content of
    ``traced_dir`` before the traced part); return the operations, the crash states of a
    crash at any point, and those of a crash after the traced part returned."""
    initial = {
        str(traced_dir / p.relative_to(initial_dir)): p.read_bytes()
        for p in sorted(initial_dir.rglob("*"))
        if p.is_file()
    }
    ops = to_operations(parse_strace(trace, begin, end), initial)
    return ops, crash_states(initial, ops), crash_states(initial, ops, after_all=True)
