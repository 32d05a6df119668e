#!/usr/bin/env python3
"""The guest harness: real Debian kernels in QEMU guests for kpctl's kernel tests.

    harness.py image --arch A --kernel K  build (or reuse) the guest image
    harness.py run --arch A --kernel K [--timeout S] -- CMD
    harness.py shell --arch A --kernel K
    harness.py test --arch A --kernel K   tests/kernel in one pytest process
    harness.py test-all ARCH/KERNEL... [--paths P...] [--job NAME[@ARCH/KERNEL,...][~SECONDS]=CMD]...
                                          those guests' tests, image builds and other
                                          jobs in lanes, one per core (lanes.py)

Images live in a per-user cache keyed by a hash of their recipe (build-image.sh), so a
changed recipe rebuilds them. Guests use TCG (software emulation): this machine's
/dev/kvm cannot run a stock guest, and a guest has one vCPU, so as many guests run at
once as the machine has cores, whoever starts them. Standard library only: it runs
before anything else is installed.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lanes

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kpctl"
BINFMT_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
SUITES = {"6.1": "bookworm", "6.12": "trixie"}
ARCHES = ("x86_64", "arm64")
# Lines in a guest's kernel log that mean the kernel itself went wrong during a run.
SPLAT = re.compile(
    r"WARNING: |BUG: |kernel BUG|Oops|general protection fault|Call Trace:|"
    r"possible circular locking|lockdep|KASAN|UBSAN|Kernel panic|detected stall|"
    r"soft lockup|hard LOCKUP|blocked for more than"
)
# A test that makes the kernel warn on purpose (a kernel bug it shows kpctl survives)
# brackets that in the kernel log: EXPECT_WARNING followed by the warning's message,
# then EXPECTED_END. Only a WARN block ("[ cut here ]" ... "---[ end trace") whose
# message says so is excused in between; any other splat still counts.
EXPECT_WARNING = "kpctl-test: expect warning: "
EXPECTED_END = "kpctl-test: expected warnings end"
_CUT_HERE = "------------[ cut here ]------------"
_END_TRACE = "---[ end trace "
# A kernel message on the console (CONFIG_PRINTK_TIME), as opposed to the command's own
# output, which the guest copies there too and which may quote a splat.
KERNEL_LINE = re.compile(rb"\[ *\d+\.\d{6}\] (.*)")
# How long a guest may go on after a splat on its console, so the log holds its
# backtrace, before the harness stops it.
SPLAT_GRACE = 5.0


class HarnessError(Exception):
    """A failure of a guest or of the harness, with the guest named in the message."""


@dataclass(frozen=True)
class Guest:
    arch: str
    kernel: str

    def __str__(self) -> str:
        return f"{self.arch}/{self.kernel}"

    @property
    def suite(self) -> str:
        return SUITES[self.kernel]

    @property
    def image_dir(self) -> Path:
        recipe = (HERE / "build-image.sh").read_bytes()
        key = hashlib.sha256(recipe).hexdigest()[:12]
        return CACHE / "images" / f"{self.arch}-{self.suite}-{key}"


def _locked(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def ensure_image(guest: Guest) -> Path:
    image = guest.image_dir
    fd = _locked(image.with_suffix(".lock"))
    try:
        if not (image / "rootfs.ext4").exists():
            if guest.arch == "arm64" and os.uname().machine != "aarch64" and not BINFMT_AARCH64.exists():
                raise HarnessError(f"image {guest}: qemu-aarch64 is not registered in binfmt_misc; run `make setup`")
            # Images of an older recipe are stale: drop them so the cache does not grow.
            for old in image.parent.glob(f"{guest.arch}-{guest.suite}-*"):
                if old != image and old.is_dir() and not old.name.endswith(".tmp"):
                    shutil.rmtree(old)
            started = time.monotonic()
            log = image.parent / f"{image.name}.build.log"
            print(f"harness: building image {guest} ({guest.suite}), log {log}", file=sys.stderr, flush=True)
            # Each line stamped with the seconds since the start: where a build's time goes.
            with open(log, "w") as logf:
                proc = subprocess.Popen(
                    [str(HERE / "build-image.sh"), guest.arch, guest.suite, str(image)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )
                assert proc.stdout is not None
                for line in proc.stdout:
                    logf.write(f"{time.monotonic() - started:7.1f} {line.decode(errors='replace')}")
                    logf.flush()
                returncode = proc.wait()
            if returncode != 0:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise HarnessError(f"image {guest}: build failed (exit {returncode}); last lines of {log}:\n" + "\n".join(tail))
            print(f"harness: image {guest} built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        os.close(fd)
    return image


def ensure_initrd(image: Path) -> Path:
    """Pack the tiny initrd: cheap, so it is keyed by initrd-init.sh alone."""
    init = (HERE / "initrd-init.sh").read_bytes()
    initrd = image / f"initrd-{hashlib.sha256(init).hexdigest()[:12]}"
    if initrd.exists():
        return initrd
    with tempfile.TemporaryDirectory(dir=image) as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(image / "initrd-parts", root, symlinks=True)
        for d in ("dev", "proc", "sys", "newroot"):
            (root / d).mkdir(exist_ok=True)
        (root / "init").write_bytes(init)
        (root / "init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files, capture_output=True, check=True).stdout
        packed = Path(tmp) / "initrd"
        packed.write_bytes(cpio)
        os.replace(packed, initrd)
    return initrd


def guest_slots() -> int:
    """How many guests may run at once: one per core (KPCTL_LANES to change)."""
    return max(1, int(os.environ.get("KPCTL_LANES") or os.cpu_count() or 1))


def _guest_slot(guest: Guest) -> int:
    """Hold one of guest_slots() locks for as long as a guest runs, whoever starts it
    (make test's lanes, two `make vm-run` side by side): the lock's fd."""
    waiting = False
    while True:
        for slot in range(guest_slots()):
            path = CACHE / f"guest-slot-{slot}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        if not waiting:
            print(f"harness: guest {guest}: waiting for a free core ({guest_slots()} guests run)", file=sys.stderr, flush=True)
            waiting = True
        time.sleep(1)


def _kmod_builds_for(image: Path, outdir: Path) -> Path:
    """The run's own copy of the module build folders kept with the image, so that
    guests of one image side by side never write into the same folder."""
    copy = outdir / "kmod-build"
    fd = _locked(image / "kmod-build.lock")
    try:
        kept = image / "kmod-build"
        if kept.is_dir():
            shutil.copytree(kept, copy, symlinks=True)  # copy2: make compares the times
        else:
            copy.mkdir()
    finally:
        os.close(fd)
    return copy


def _keep_kmod_builds(image: Path, copy: Path) -> None:
    """Each build folder of a finished run (one per module and kernel) replaces the
    image's by a rename: whole, never mixed with a neighbour's files."""
    kept = image / "kmod-build"
    fd = _locked(image / "kmod-build.lock")
    try:
        kept.mkdir(exist_ok=True)
        for entry in copy.iterdir():
            target, old = kept / entry.name, kept / f".{entry.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.rename(target, old)
            os.rename(entry, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(fd)


def pycache(image: Path) -> Path:
    path = image / "pycache"
    path.mkdir(exist_ok=True)
    return path


@dataclass
class Session:
    image: Path
    outdir: Path
    kmod_builds: Path


@contextlib.contextmanager
def _session(guest: Guest) -> Iterator[Session]:
    """A guest's image, a run folder of its own and a free core for as long as it runs;
    its module builds kept with the image when its command finished."""
    image = ensure_image(guest)
    outdir, outlock = _new_outdir(guest)
    session = Session(image, outdir, _kmod_builds_for(image, outdir))
    slot = _guest_slot(guest)
    try:
        yield session
    finally:
        os.close(slot)
        if (outdir / "rc").exists():
            _keep_kmod_builds(image, session.kmod_builds)
        os.close(outlock)


def qemu_command(guest: Guest, session: Session, interactive: bool) -> list[str]:
    image, outdir = session.image, session.outdir
    initrd = ensure_initrd(image)
    if guest.arch == "x86_64":
        cmd = ["qemu-system-x86_64", "-M", "pc", "-cpu", "max"]
        console = "ttyS0"
    else:
        # cortex-a57: -cpu max emulates pointer authentication and is 2-4x slower.
        cmd = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"]
        console = "ttyAMA0"
    append = f"root=/dev/vda console={console} panic=-1 kpctl.run=1 loglevel=4"
    cmd += [
        "-accel", "tcg,thread=multi", "-m", "2048", "-smp", "1",
        "-nodefaults", "-no-reboot", "-display", "none",
        "-serial", "mon:stdio" if interactive else "stdio",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(initrd), "-append", append,
        "-drive", f"file={image / 'rootfs.ext4'},format=raw,if=virtio,snapshot=on",
        "-virtfs", f"local,path={CHECKOUT},mount_tag=kpctl,security_model=none,id=kpctl",
        "-virtfs", f"local,path={outdir},mount_tag=out,security_model=none,id=out",
        # The kernel module's build folders outlive the guest, kept with the image whose
        # headers they were built against: make then rebuilds only what changed.
        "-virtfs", f"local,path={session.kmod_builds},mount_tag=kmodbuild,security_model=none,id=kmodbuild",
        # Python's bytecode of the image's modules and the checkout's, shared by every
        # guest of the image and kept: a boot no longer compiles pytest, click, pyroute2
        # and bcc again (writes are atomic renames, so guests side by side are safe).
        "-virtfs", f"local,path={pycache(image)},mount_tag=pycache,security_model=none,id=pycache",
    ]
    return cmd


@dataclass
class RunResult:
    guest: Guest
    returncode: int
    output: str
    dmesg: str
    kernel_release: str
    console_log: Path


def _new_outdir(guest: Guest) -> tuple[Path, int]:
    """A run folder, with the fd of the lock it holds while the run lasts: the oldest
    folders beyond the last 40 go, but never one that a running guest holds."""
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[:-40]:
        fd = os.open(old / "lock", os.O_RDWR | os.O_CREAT, 0o644) if old.is_dir() else None
        if fd is None:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)
    outdir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-") + f"{guest.arch}-{guest.kernel}-", dir=runs))
    lock = os.open(outdir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return outdir, lock


def run(guest: Guest, command: str, timeout: float = 1800, echo: bool = True) -> RunResult:
    """Boot the guest, run command as root at the checkout's root, power off.

    Raises HarnessError when the guest crashed, hung past timeout, or its kernel log
    shows a splat; otherwise returns the command's own exit code and output.
    """
    with _session(guest) as session:
        return _run_in(guest, session, command, timeout, echo)


def _run_in(guest: Guest, session: Session, command: str, timeout: float, echo: bool) -> RunResult:
    outdir = session.outdir
    (outdir / "cmd.sh").write_text(command + "\n")
    console_log = outdir / "console.log"
    watch = ConsoleWatch()
    started = time.monotonic()
    with open(console_log, "wb") as log:
        proc = subprocess.Popen(
            qemu_command(guest, session, interactive=False),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            chunk = proc.stdout.read()
            if chunk:
                log.write(chunk)
                log.flush()
                watch.feed(chunk)
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            if proc.poll() is not None and not chunk:
                break
            now = time.monotonic()
            if watch.seen_at is not None and now - watch.seen_at > SPLAT_GRACE:
                # A kernel that has splatted may never power off: stop it now.
                proc.kill()
                proc.wait()
                break
            if now - started > timeout:
                proc.kill()
                proc.wait()
                raise HarnessError(
                    f"guest {guest}: hung: no power-off after {timeout:.0f} s; "
                    f"console log kept at {console_log}"
                )
            if not chunk:
                time.sleep(0.05)
    rc_file = outdir / "rc"
    console = console_log.read_text(errors="replace")
    panic = next((line.strip() for line in console.splitlines() if "Kernel panic" in line), None)
    if panic or (not rc_file.exists() and watch.first is None):
        why = panic or f"qemu exited with {proc.returncode} before the command finished"
        raise HarnessError(f"guest {guest}: crashed: {why}; console log kept at {console_log}")
    if watch.first is not None:
        raise HarnessError(
            f"guest {guest}: kernel log shows a splat: {watch.first}; console log kept at "
            f"{console_log}; the console from there:\n{watch.excerpt()}"
        )
    dmesg = (outdir / "dmesg").read_text(errors="replace")
    found = splats(dmesg)
    if found:
        raise HarnessError(
            f"guest {guest}: kernel log shows a splat: {found[0].strip()}; "
            f"full log at {outdir / 'dmesg'}"
        )
    release = re.search(r"kpctl-guest: \S+ (\S+)", console)
    return RunResult(
        guest=guest,
        returncode=int(rc_file.read_text().strip() or 1),
        output=(outdir / "output").read_text(errors="replace") if (outdir / "output").exists() else "",
        dmesg=dmesg,
        kernel_release=release.group(1) if release else "?",
        console_log=console_log,
    )


class SplatFilter:
    """Tells, kernel message by message, which are splats: every line SPLAT matches,
    except those of a warning a test said it expects (EXPECT_WARNING)."""

    def __init__(self) -> None:
        self._expected: str | None = None
        self._cut_here = False  # the line before was "[ cut here ]" in an expected window
        self._excusing = False  # inside an expected warning's block

    def is_splat(self, message: str) -> bool:
        if EXPECT_WARNING in message:
            self._expected = message.split(EXPECT_WARNING, 1)[1].strip()
        elif EXPECTED_END in message:
            self._expected = None
        if self._excusing:
            self._excusing = _END_TRACE not in message
            return False
        if self._cut_here:
            self._cut_here = False
            if self._expected and self._expected in message:
                self._excusing = True
                return False
        if _CUT_HERE in message and self._expected:
            self._cut_here = True
            return False
        return SPLAT.search(message) is not None


def splats(log: str) -> list[str]:
    """The splat lines of a kernel log (dmesg), expected warnings left out."""
    judge = SplatFilter()
    return [line for line in log.splitlines() if judge.is_splat(line)]


class ConsoleWatch:
    """Finds the first kernel splat in a guest's console output as it streams."""

    def __init__(self) -> None:
        self._partial = b""
        self.first: str | None = None
        self.seen_at: float | None = None
        self._after: list[str] = []
        self._judge = SplatFilter()

    def feed(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode(errors="replace")
            if self.first is not None:
                self._after.append(line)
                continue
            kernel = KERNEL_LINE.search(raw)
            if kernel and self._judge.is_splat(kernel.group(1).decode(errors="replace")):
                self.first = line.strip()
                self.seen_at = time.monotonic()
                self._after.append(line)

    def excerpt(self, lines: int = 60) -> str:
        return "\n".join(self._after[:lines])


def shell(guest: Guest) -> int:
    with _session(guest) as session:
        (session.outdir / "interactive").touch()
        return subprocess.call(qemu_command(guest, session, interactive=True))


def test(guest: Guest, paths: str = "tests/kernel", timeout: float = 2400) -> int:
    """Run the kernel tests in one pytest process in the guest (Python starts slowly
    under emulation); print a one-line verdict with the guest's kernel and count."""
    started = time.monotonic()
    result = run(guest, f"python3 -m pytest -p no:cacheprovider -q -rs --durations=5 "
                        f"--junitxml=/kpctl-out/junit.xml {paths}", timeout=timeout)
    summary = _pytest_summary(result.output)
    line = f"harness: guest {guest} ({result.guest.arch}, kernel {result.kernel_release}): {summary}"
    print(line, flush=True)
    junit = result.console_log.with_name("junit.xml")
    if junit.exists():
        # Where a guest's time goes, for README's time budgets.
        files = ", ".join(f"{name} {seconds:.0f}" for name, seconds in seconds_by_file(junit.read_text()))
        print(f"harness: guest {guest}: {time.monotonic() - started:.0f} s in all; pytest seconds by file: {files}",
              flush=True)
    if result.returncode != 0:
        raise HarnessError(f"guest {guest}: kernel tests failed (pytest exit {result.returncode}): {summary}")
    return 0


# Seconds a job takes when no earlier run on this machine says otherwise: they order the
# lanes' picks (README's time budgets).
FIRST_ESTIMATES = {"image x86_64": 100, "image arm64/6.1": 300, "image arm64/6.12": 750,
                   "x86_64": 680, "arm64": 1050}


def test_all(guests: list[Guest], paths: str = "tests/kernel", extra: list[str] | None = None,
             budget: lanes.Budget | None = None) -> int:
    """The kernel tests of every guest, the images they need and any extra jobs
    ("NAME[@ARCH/KERNEL,...][~SECONDS]=COMMAND", run by sh after those guests' images
    are built; SECONDS orders it until a run has measured it)
    in lanes, one per core; every job's verdict in a summary at the end."""
    seconds_file = CACHE / "lane-seconds.json"
    known = lanes.load_seconds(seconds_file)
    me = [sys.executable, str(Path(__file__).resolve())]
    jobs: list[lanes.Job] = []
    cold = False

    def image_job(guest: Guest) -> str:
        nonlocal cold
        name = f"image {guest}"
        if all(job.name != name for job in jobs):
            built = (guest.image_dir / "rootfs.ext4").exists()
            cold = cold or not built
            first = FIRST_ESTIMATES.get(name, FIRST_ESTIMATES["image x86_64"])
            jobs.append(lanes.Job(name, [*me, "image", "--arch", guest.arch, "--kernel", guest.kernel],
                                  estimate=0.0 if built else known.get(name, first)))
        return name

    for guest in guests:
        jobs.append(lanes.Job(str(guest), [*me, "test", "--arch", guest.arch, "--kernel", guest.kernel, *paths.split()],
                              needs=(image_job(guest),),
                              estimate=known.get(str(guest), FIRST_ESTIMATES[guest.arch])))
    for spec in extra or []:
        head, _, command = spec.partition("=")
        head, _, seconds = head.partition("~")
        name, _, images = head.partition("@")
        if not command or not name or not (seconds or "0").isdigit():
            raise HarnessError(f"a job is NAME[@ARCH/KERNEL,...][~SECONDS]=COMMAND, not {spec!r}")
        needs = tuple(image_job(parse_guest(g)) for g in images.split(",") if g)
        jobs.append(lanes.Job(name, ["sh", "-c", command], needs=needs,
                              estimate=known.get(name, float(seconds or 120))))
    started = time.monotonic()
    logdir = CACHE / "lanes" / time.strftime("%Y%m%d-%H%M%S")
    print(f"harness: {len(jobs)} jobs in {min(guest_slots(), len(jobs))} lanes; their logs in {logdir}", flush=True)
    outcomes = lanes.Lanes(jobs, min(guest_slots(), len(jobs)), logdir).run()
    # A quick loop's guests ran chosen files only: their seconds would put a whole suite
    # last in the next full run's order.
    whole = paths == "tests/kernel"
    lanes.save_seconds(seconds_file, [o for o in outcomes if whole or o.job.name not in {str(g) for g in guests}])
    for line in lanes.summary(outcomes, time.monotonic() - started, cold, budget):
        print(line, flush=True)
    return 0 if all(o.verdict == "passed" for o in outcomes) else 1


def parse_guest(spec: str) -> Guest:
    arch, _, kernel = spec.partition("/")
    if arch not in ARCHES or kernel not in SUITES:
        raise HarnessError(f"a guest is ARCH/KERNEL ({'|'.join(ARCHES)} / {'|'.join(sorted(SUITES))}), not {spec!r}")
    return Guest(arch, kernel)


def seconds_by_file(junit_xml: str) -> list[tuple[str, float]]:
    """pytest's JUnit XML summed per test file (setup and teardown included), slowest
    first."""
    import xml.etree.ElementTree as ElementTree

    seconds: dict[str, float] = {}
    for case in ElementTree.fromstring(junit_xml).iter("testcase"):
        # Dotted from pytest's rootdir: tests.kernel.test_count, or ...test_count.TestClass.
        classname = case.get("classname", "")
        name = next((part for part in reversed(classname.split(".")) if part.startswith("test_")), classname)
        seconds[name] = seconds.get(name, 0.0) + float(case.get("time", "0"))
    return sorted(seconds.items(), key=lambda item: -item[1])


def _pytest_summary(output: str) -> str:
    for line in reversed(output.splitlines()):
        if re.search(r"\d+ (passed|failed|error)|no tests ran", line):
            return line.strip("= ").strip()
    return "no pytest summary in the output"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in ("image", "run", "shell", "test"):
        p = sub.add_parser(verb)
        p.add_argument("--arch", choices=ARCHES, default="x86_64")
        p.add_argument("--kernel", choices=sorted(SUITES), default="6.1")
        if verb in ("run", "test"):
            p.add_argument("--timeout", type=float, default=2400)
        if verb == "run":
            p.add_argument("command", nargs=argparse.REMAINDER)
        if verb == "test":
            p.add_argument("paths", nargs="*", default=["tests/kernel"])
    every = sub.add_parser("test-all")
    every.add_argument("guests", nargs="*", metavar="ARCH/KERNEL")
    every.add_argument("--paths", default="tests/kernel", help="test files or folders, in every guest")
    every.add_argument("--job", action="append", default=[], metavar="NAME[@ARCH/KERNEL,...][~SECONDS]=COMMAND",
                       help="another job, run once those guests' images are built; SECONDS it takes before a run measures it")
    every.add_argument("--budget", nargs=2, type=float, metavar=("WARM", "COLD"),
                       help="minutes a warm and a cold run may take: the last line says when one took longer")
    args = parser.parse_args(argv)
    try:
        if args.verb == "test-all":
            budget = lanes.Budget(*args.budget) if args.budget else None
            return test_all([parse_guest(g) for g in args.guests], args.paths, args.job, budget)
        guest = Guest(args.arch, args.kernel)
        if args.verb == "image":
            print(ensure_image(guest))
            return 0
        if args.verb == "shell":
            return shell(guest)
        if args.verb == "test":
            return test(guest, " ".join(args.paths), args.timeout)
        command = " ".join(a for a in args.command if a != "--") or "true"
        result = run(guest, command, timeout=args.timeout)
        return result.returncode
    except HarnessError as e:
        print(f"harness: FAILED: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
