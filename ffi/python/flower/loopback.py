"""A real Flower deployment of the fedotp app on one machine, on 127.0.0.1 only: a SuperLink,
N SuperNodes (node i serves partition i, its state in WORK/states/node<i>) and ``flwr run`` —
every process started here is stopped here, by PID. To try the app (docs/FLOWER.md):

    python ffi/python/flower/loopback.py --nodes 3 --set federation.rounds=3

The tests (ffi/python/tests/test_flower.py) drive the same ``Deployment``.

Flower starts detached grandchildren (``flower-superexec``, ``flwr-serverapp``,
``flwr-clientapp`` in sessions of their own), so this process makes itself a child subreaper:
orphans are re-parented to it, and ``stop`` finds every descendant through ``/proc`` and stops
it (TERM, then KILL) — also when something fails.
"""

import argparse
import ctypes
import json
import tempfile
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

PR_SET_CHILD_SUBREAPER = 36
APP_DIR = Path(__file__).resolve().parent


def free_ports(count: int) -> List[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def descendants(root: int) -> List[int]:
    """Every live descendant of ``root``."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: List[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


class Deployment:
    """A SuperLink and ``nodes`` SuperNodes in ``work`` (logs, Flower's home, node states)."""

    def __init__(self, work: Path, nodes: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.work = work
        self.nodes = nodes
        self.procs: Dict[str, subprocess.Popen] = {}
        home = work / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)
        self.env = dict(
            os.environ,
            # The SuperLink and SuperNodes start Flower's other executables by name.
            PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
            FLWR_HOME=str(home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            PYTHONUNBUFFERED="1",
        )
        self.bin = Path(bin_dir)
        self.link_port, *self.node_ports = free_ports(1 + nodes)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
            f'address = "127.0.0.1:{self.link_port}"\ninsecure = true\n'
        )

    def log(self, name: str) -> str:
        try:
            return (self.work / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def start(self, name: str, argv: List[str]) -> subprocess.Popen:
        with open(self.work / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_superlink(self, timeout: float = 60.0) -> None:
        self.start("superlink", [
            str(self.bin / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(self.link_port), "--disable-runtime-dependency-installation",
        ])
        wait_for(
            lambda: "Application startup complete" in self.log("superlink")
            or self.procs["superlink"].poll() is not None,
            timeout, "the SuperLink's start",
        )
        if self.procs["superlink"].poll() is not None:
            raise RuntimeError("the SuperLink exited:\n" + self.log("superlink")[-3000:])

    def start_node(self, index: int) -> None:
        name = f"supernode{index}"
        self.start(name, [
            str(self.bin / "flower-supernode"), "--insecure",
            "--superlink", f"127.0.0.1:{self.link_port}",
            "--host", "127.0.0.1", "--port", str(self.node_ports[index]),
            "--max-retries", "5", "--max-wait-time", "60",
            "--node-config", f"partition-id={index} state-dir=\"{self.state_dir(index)}\"",
        ])

    def state_dir(self, index: int) -> Path:
        """Where node ``index`` keeps its state."""
        return self.work / "states" / f"node{index}"

    def start_all(self, timeout: float = 90.0) -> None:
        self.start_superlink()
        for index in range(self.nodes):
            self.start_node(index)
        wait_for(
            lambda: self.log("superlink").count("Activated node_id=") >= self.nodes,
            timeout, f"{self.nodes} SuperNodes' registration",
        )

    def kill_node(self, index: int) -> None:
        """SIGKILL a SuperNode and whatever it started (its ClientApp process)."""
        proc = self.procs[f"supernode{index}"]
        for pid in [proc.pid] + descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def flwr_run(self, out_dir: Path, settings: Dict[str, object], timeout: float) -> Path:
        """``flwr run`` of the fedotp app writing under ``out_dir`` with run-config
        ``settings``; returns the run directory and checks, from its federation.json, that the
        run is done (``flwr run`` exits 0 also when the ServerApp fails)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        # A TOML file: the command line's `key=value` form cannot quote every value.
        run_config = out_dir / "run-config.toml"
        config = dict(settings, **{"out-dir": str(out_dir)})
        run_config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
        with open(self.work / "flwr-run.log", "ab") as log:
            subprocess.run(
                [str(self.bin / "flwr"), "run", str(APP_DIR), "local", "--stream",
                 "--run-config", str(run_config)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
                timeout=timeout, start_new_session=True,
            )
        runs = [p for p in out_dir.iterdir() if p.is_dir()]
        if len(runs) != 1:
            raise RuntimeError(
                f"no run directory in {out_dir}:\n{self.log('flwr-run')[-4000:]}"
            )
        status = json.loads((runs[0] / "federation.json").read_text())
        if status["status"] != "done":
            raise RuntimeError(f"the run failed: {status.get('error')}\n{self.log('flwr-run')[-4000:]}")
        return runs[0]

    def stop(self) -> List[int]:
        """Stops every process this test process started, directly or not; returns the PIDs
        it had to stop."""
        stopped: List[int] = []
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = descendants(os.getpid())
            for pid in pids:
                try:
                    os.kill(pid, sig)
                    stopped.append(pid)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while descendants(os.getpid()) and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.1)
            self.reap()
        # The processes started here, once more through their own handles: one started while
        # the others were being signalled (a SuperNode restarted by a test's thread) is not in
        # the lists above, and `Popen` must see each exit to report it.
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                stopped.append(proc.pid)
                proc.wait(timeout=10)
        return stopped

    @staticmethod
    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description="The fedotp Flower app on 127.0.0.1.")
    parser.add_argument("--nodes", type=int, default=3, help="SuperNodes (= the run's clients)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a fedotp configuration override, as `fedotp train --set` (repeatable)",
    )
    parser.add_argument("--config", default="", help="a fedotp configuration file")
    parser.add_argument("--privacy", default="none", choices=["none", "secagg", "dp-server", "dp-client"])
    parser.add_argument("--work", type=Path, help="where logs, states and the run go (default: a new temporary directory)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the run may take")
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="fedotp-flower-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # The quickstart's digits are split among as many clients as there are nodes.
    clients = [] if args.config else [f"dataset.source.clients={args.nodes}"]
    overrides = clients + ["compare=[]"] + args.set
    deployment = Deployment(work, args.nodes)
    try:
        deployment.start_all()
        run = deployment.flwr_run(
            work / "runs",
            {"fedotp-config": args.config and str(Path(args.config).resolve()),
             "fedotp-set": ";".join(overrides), "privacy": args.privacy},
            timeout=args.timeout,
        )
        summary = json.loads((run / "federation.json").read_text()).get("summary")
        print(f"run directory: {run}\n{summary or 'nothing evaluated'}")
        print(f"logs and node states: {work}")
    finally:
        deployment.stop()


if __name__ == "__main__":
    main()
