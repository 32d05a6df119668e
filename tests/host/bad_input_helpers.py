"""What test_bad_input.py runs kpctl with: a child process under a time and a memory
limit, aimed at a fake kernel built in a scratch directory (never the machine's tracefs,
debugfs or /proc), a snapshot of that fake kernel to show a refusal changed nothing, and
the mutations its property tests start from valid specs."""
from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from captured import DATA
from hypothesis import strategies as st

CAPTURE = DATA / "x86_64-6.1"
EVENTS = "p:kpctl/open do_sys_openat2 dfd=$arg1:s32 path=+0($arg2):ustring\nr10:kpctl/open_ret do_sys_openat2 ret=$retval:s32\n"
TIME_LIMIT = 20  # seconds, for every run
MEMORY_LIMIT = 1 << 30  # bytes of address space
REFUSAL_LIMIT = 4096  # bytes of output, stdout and stderr together, for a refusal

# The child runs `python -m kpctl` with sys.argv[1] (taken out) as the root of its
# machine: tracefs, debugfs, /proc and /run/kpctl all under it, so nothing it does
# reaches the real ones, whatever the command (conftest does so for in-process runs).
_BOOTSTRAP = """\
import runpy, sys
from pathlib import Path
root = Path(sys.argv.pop(1))
import kpctl.tracefs, kpctl.owners
kpctl.tracefs.TRACEFS_MOUNTS = (root / "tracing", root / "debug/tracing")
kpctl.owners.STATE, kpctl.owners.SETTINGS = root / "run/owners", root / "run/settings"
kpctl.owners.Owners.__init__.__defaults__ = (root / "run/owners", root / "proc")
kpctl.owners.SavedSettings.__init__.__defaults__ = (root / "run/settings", root / "proc")
import kpctl.cli.main
kpctl.cli.main.open_tracefs = lambda: kpctl.tracefs.Tracefs(root / "tracing", root / "debug", root / "proc")
sys.argv[0] = "kpctl"
runpy.run_module("kpctl", run_name="__main__", alter_sys=True)
"""


class Run(NamedTuple):
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def kpctl(kernel: Path, *args: str | bytes, stdin: bytes = b"", timeout: float = TIME_LIMIT) -> Run:
    """kpctl ARGS in a child process, under TIME_LIMIT and MEMORY_LIMIT, against the fake
    kernel at kernel (make_kernel(); a path that does not exist: no kernel at all)."""
    done = subprocess.run(
        [sys.executable, "-c", _BOOTSTRAP, str(kernel), *(os.fsencode(a) for a in args)],
        input=stdin, capture_output=True, timeout=timeout, preexec_fn=_limit_memory, check=False,
        env={**os.environ, "KPCTL_GROUP": "kpctl", "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    return Run(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def make_kernel(root: Path) -> Path:
    """A fake kernel under root, as kpctl reads one: tracefs with two kpctl probes and
    their counts, debugfs's kprobes list, /proc/kallsyms. Returns root."""
    tracing, debugfs, proc = root / "tracing", root / "debug", root / "proc"
    for d in (tracing, debugfs / "kprobes", proc):
        d.mkdir(parents=True)
    shutil.copy(CAPTURE / "README", tracing / "README")
    (tracing / "kprobe_events").write_text(EVENTS)
    (tracing / "kprobe_profile").write_text("  open  12  0\n  open_ret  11  1\n")
    (tracing / "available_filter_functions").write_text((CAPTURE / "available_filter_functions.sample").read_text())
    (tracing / "error_log").write_text("")
    for event in ("open", "open_ret"):
        d = tracing / "instances/kpctl/events/kpctl" / event
        d.mkdir(parents=True)
        (d / "enable").write_text("1\n")
        (d / "filter").write_text("none\n")
    (tracing / "instances/kpctl/trace").write_text("")
    (debugfs / "kprobes/list").write_text((CAPTURE / "kprobes-list").read_text())
    (debugfs / "kprobes/blacklist").write_text((CAPTURE / "blacklist.head").read_text())
    (proc / "kallsyms").write_text((CAPTURE / "kallsyms.sample").read_text())
    return root


class Entry(NamedTuple):
    """What a snapshot keeps of a path: enough to see it replaced, retyped or rewritten."""
    inode: int
    kind: int  # stat.S_IFMT of its mode
    content: bytes | str | None  # a file's bytes, a link's target; None for the rest


def entry(path: Path) -> Entry:
    status = path.lstat()
    kind = stat.S_IFMT(status.st_mode)
    content: bytes | str | None = None
    if stat.S_ISREG(status.st_mode):
        content = path.read_bytes()
    elif stat.S_ISLNK(status.st_mode):
        content = os.readlink(path)
    return Entry(status.st_ino, kind, content)


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path under root (root's own entry too), never following a link nor opening
    anything but regular files (a FIFO there must not block the test)."""
    found = {".": entry(root)}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = entry(path)
    return found


# --- mutations of valid specs ----------------------------------------------------------

VALID_TARGETS = ["vfs_read", "vfs_read+5", "ext4:ext4_file_open", "0xffffffff81000000", "vfs_read%return",
                 "do_sys_openat2,vfs_write"]
VALID_FETCHARGS = ["size=$arg3:u64", "path=+0($arg2):ustring", "bf=$arg3:b4@2/32", "$retval", "c=$comm",
                   "one=\\1234", 's=\\"hello"', "st=$stack0:x64", "sp=$stack", "r=%di:x32", "m=@jiffies+8:u64",
                   "a=+8(-u16($arg1)):s8[4]", "f=file->f_path.dentry", "$arg*", "@0x1000"]
VALID_NAMES = ["vfs_read_size", "_x", "open2"]
VALID_GROUPS = ["kpctl", "my_group"]
# The characters specs are made of, and some they should never hold: controls, other
# scripts' digits and spaces, and a byte that is not UTF-8 (as Python decodes argv).
ALPHABET = "$%+-()@:=\\\"[]/*.,0123456789abrsuxgk_ \t\n\x00é١\u00a0\u2028\udcff"


@st.composite
def mutated(draw: st.DrawFn, valid: list[str]) -> str:
    """One of valid with up to five characters inserted, deleted or replaced."""
    text = draw(st.sampled_from(valid))
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(("insert", "delete", "replace")))
        char = draw(st.sampled_from(ALPHABET) | st.characters())
        if action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + char + text[at + 1:]
    return text


def spec_text(valid: list[str], longest: int = 100_000) -> st.SearchStrategy[str]:
    """Text for one part of a spec: a mutated valid one, anything, or either repeated
    up to longest characters."""
    short = mutated(valid) | st.text(ALPHABET, max_size=40) | st.text(max_size=20)
    return short | st.tuples(short, st.integers(2, longest)).map(lambda t: (t[0] * t[1])[:longest])


def argv_bytes(text: str) -> bytes:
    """text as a command line holds it: no NUL, \\udcff back as the byte 0xff, other lone
    surrogates (no byte decodes to them) as '?', 100,000 bytes at most (the kernel takes
    128 KiB of an argument; the cut may split a character: more bytes that are not UTF-8)."""
    text = "".join("?" if "\ud800" <= c <= "\udfff" and not "\udc80" <= c <= "\udcff" else c
                   for c in text.replace("\x00", ""))
    return text.encode(errors="surrogateescape")[:100_000]
